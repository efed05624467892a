/* conf.c - omnicc-teller's configuration: "key = value" lines, # comments.
 *
 *   server = branch-bridge.insurer.example:7443   [branch] listen of omniccd
 *   server_name = branch-bridge.insurer.example   name on the server certificate (optional)
 *   ca = /etc/omnicc-teller/server-ca.pem         CA of the server certificate
 *   cert = /etc/omnicc-teller/terminal.pem        this terminal's certificate (its branch CA)
 *   key = /etc/omnicc-teller/terminal.key
 *   spool = /var/lib/omnicc-teller                journal of work not yet delivered
 *   counter = 2                                   this desk's counter
 *   handover_queue = callcentre                   the contact centre's queue for handovers
 *   timeout = 15                                  seconds before an unanswered link is dropped */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "teller.h"

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int teller_conf_load(const char *path, struct teller_conf *c, char **err)
{
    memset(c, 0, sizeof(*c));
    c->timeout_s = 15;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (asprintf(err, "%s: cannot open", path) < 0)
            *err = NULL;
        return -1;
    }
    char buf[1200];
    int lineno = 0;
    while (fgets(buf, sizeof(buf), f)) {
        lineno++;
        char *s = trim(buf);
        if (!*s || *s == '#' || *s == ';')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            if (asprintf(err, "%s:%d: expected key = value", path, lineno) < 0)
                *err = NULL;
            fclose(f);
            return -1;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        struct {
            const char *name;
            char **slot;
        } keys[] = {{"server", &c->server},   {"server_name", &c->server_name},
                    {"ca", &c->ca},           {"cert", &c->cert},
                    {"key", &c->key},         {"spool", &c->spool},
                    {"counter", &c->counter}, {"handover_queue", &c->handover_queue}};
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            if (strcmp(keys[i].name, k) == 0) {
                free(*keys[i].slot);
                *keys[i].slot = strdup(v);
                known = true;
            }
        }
        if (strcmp(k, "timeout") == 0) {
            c->timeout_s = atoi(v);
            known = c->timeout_s >= 2 && c->timeout_s <= 600;
        }
        if (!known) {
            if (asprintf(err, "%s:%d: %s: unknown key or bad value", path, lineno, k) < 0)
                *err = NULL;
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    const char *missing = !c->server  ? "server"
                          : !c->ca    ? "ca"
                          : !c->cert  ? "cert"
                          : !c->key   ? "key"
                          : !c->spool ? "spool"
                                      : NULL;
    if (missing) {
        if (asprintf(err, "%s: %s is required", path, missing) < 0)
            *err = NULL;
        return -1;
    }
    if (!c->counter)
        c->counter = strdup("1");
    if (!c->handover_queue)
        c->handover_queue = strdup("default");
    return 0;
}

void teller_conf_free(struct teller_conf *c)
{
    free(c->server);
    free(c->server_name);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c->spool);
    free(c->counter);
    free(c->handover_queue);
    memset(c, 0, sizeof(*c));
}
