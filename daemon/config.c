/* config.c - the INI reader and the one table of keys. Each key has a type, a default,
 * bounds, whether SIGHUP may change it, and a line of documentation from which
 * `omniccd --print-config` writes the sample file. Sections named "[queue NAME]" repeat. */
#include "omnicc/config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/identity.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

enum cfg_type { CFG_STR, CFG_INT, CFG_SIZE, CFG_DOUBLE, CFG_LEVEL, CFG_LISTEN, CFG_CHOICE, CFG_RULE };

struct cfg_key {
    const char *section; /* "queue" for [queue NAME] sections */
    const char *key;
    enum cfg_type type;
    size_t offset;       /* into struct config, or struct queue_conf for "queue" */
    long long min, max;
    const char *def;     /* NULL: no default */
    const char *choices; /* CFG_CHOICE: "|a|b|c|" */
    const char *doc;
};

#define C(f) offsetof(struct config, f)
#define Q(f) offsetof(struct queue_conf, f)

static const struct cfg_key cfg_keys[] = {
    {"daemon", "state_dir", CFG_STR, C(state_dir), 1, 200, "/var/lib/omnicc", NULL,
     "Directory for attachments, the embedded Redis and its AOF."},
    {"daemon", "log_level", CFG_LEVEL, C(log_level), 0, 0, "info", NULL,
     "error, warn, info or debug."},
    {"http", "listen", CFG_LISTEN, C(listen), 0, 0, "127.0.0.1:8080", NULL,
     "host:port to serve the API on; repeat the key for several addresses."},
    {"http", "max_body", CFG_SIZE, C(max_body), 1024, 64LL << 20, "1048576", NULL,
     "Largest request body in bytes; larger requests get 413."},
    {"http", "import_max_body", CFG_SIZE, C(import_max_body), 1024, 1LL << 30, "67108864", NULL,
     "Largest policyholder import (NDJSON) accepted by POST /v1/customers/import."},
    {"http", "read_timeout", CFG_INT, C(read_timeout), 1, 3600, "30", NULL,
     "Seconds a client may take to send a request."},
    {"redis", "url", CFG_STR, C(redis_url), 1, 1024, NULL, NULL,
     "redis://host:port/db or unix:///path. Empty: omniccd runs its own redis-server."},
    {"redis", "user", CFG_STR, C(redis_user), 1, 128, NULL, NULL, "ACL user name (AUTH user pass)."},
    {"redis", "password_file", CFG_STR, C(redis_password_file), 1, 1024, NULL, NULL,
     "File holding the Redis password (first line)."},
    {"redis", "prefix", CFG_STR, C(redis_prefix), 1, 64, "omnicc", NULL,
     "Prefix of every key, so several deployments can share one Redis."},
    {"redis", "command_timeout", CFG_INT, C(redis_command_timeout), 50, 60000, "2000", NULL,
     "Milliseconds to wait for a Redis reply before reconnecting (requests get 503)."},
    {"redis", "server", CFG_STR, C(redis_server), 1, 1024, "redis-server", NULL,
     "Embedded mode only: the redis-server binary to run."},
    {"redis", "appendfsync", CFG_CHOICE, C(redis_appendfsync), 0, 0, "everysec",
     "|everysec|always|", "Embedded mode only: AOF fsync policy (always loses nothing acknowledged)."},
    {"api", "token", CFG_STR, C(api_token), 16, 512, NULL, NULL,
     "Admin bearer token (at least 16 characters). Prefer token_file."},
    {"api", "token_file", CFG_STR, C(api_token_file), 1, 1024, NULL, NULL,
     "File holding the admin bearer token; re-read on SIGHUP."},
    {"identity", "default_country_code", CFG_STR, C(default_country_code), 1, 3, "34", NULL,
     "Country calling code for phone numbers written without one (digits only)."},
    {"identity", "policy_pattern", CFG_STR, C(policy_pattern), 1, 512, "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}",
     NULL, "POSIX extended regex a policy number must match in full (after upper-casing)."},
    {"segments", "premium_high", CFG_DOUBLE, C(premium_high), 0, 100000000, "2000", NULL,
     "Annual premium from which a policyholder is high value."},
    {"segments", "premium_medium", CFG_DOUBLE, C(premium_medium), 0, 100000000, "600", NULL,
     "Annual premium from which a policyholder is medium value."},
    {"segments", "tenure_loyal", CFG_INT, C(tenure_loyal), 0, 100, "5", NULL,
     "Years as a customer from which a policyholder counts as loyal..."},
    {"segments", "claims_loyal_max", CFG_INT, C(claims_loyal_max), 0, 100, "2", NULL,
     "...provided they made at most this many claims in the last 3 years."},
    {"segments", "boost_platinum", CFG_INT, C(boost_platinum), 0, 86400, "600", NULL,
     "Seconds of queue head start for high value and loyal policyholders."},
    {"segments", "boost_gold", CFG_INT, C(boost_gold), 0, 86400, "300", NULL,
     "Seconds of head start for high value, or medium value and loyal."},
    {"segments", "boost_silver", CFG_INT, C(boost_silver), 0, 86400, "120", NULL,
     "Seconds of head start for medium value, or loyal."},
    {"routing", "default_queue", CFG_STR, C(default_queue), 1, 64, "default", NULL,
     "Queue for interactions that name none and match no rule."},
    {"routing", "rule", CFG_RULE, C(rules), 0, 0, NULL, NULL,
     "Repeatable: channel=voice intent=claims skill=lang_es -> QUEUE (first match wins)."},
    {"routing", "priority_step", CFG_INT, C(priority_step), 0, 3600, "60", NULL,
     "Seconds of head start per point of an interaction's explicit priority (0-100)."},
    {"routing", "boost_voice", CFG_INT, C(boost_voice), 0, 86400, "120", NULL,
     "Channel base priority in seconds: a caller on the line waits least."},
    {"routing", "boost_webchat", CFG_INT, C(boost_webchat), 0, 86400, "90", NULL,
     "Channel base priority for web chat."},
    {"routing", "boost_branch", CFG_INT, C(boost_branch), 0, 86400, "90", NULL,
     "Channel base priority for branch work."},
    {"routing", "boost_email", CFG_INT, C(boost_email), 0, 86400, "0", NULL,
     "Channel base priority for email."},
    {"routing", "boost_fax", CFG_INT, C(boost_fax), 0, 86400, "0", NULL,
     "Channel base priority for fax."},
    {"routing", "offer_timeout_voice", CFG_INT, C(offer_timeout_voice), 3, 3600, "15", NULL,
     "Seconds an agent has to accept a voice offer before it moves on (a no-answer)."},
    {"routing", "offer_timeout_webchat", CFG_INT, C(offer_timeout_webchat), 3, 3600, "30", NULL,
     "Seconds to accept a web chat offer."},
    {"routing", "offer_timeout_branch", CFG_INT, C(offer_timeout_branch), 3, 3600, "60", NULL,
     "Seconds to accept branch work."},
    {"routing", "offer_timeout_email", CFG_INT, C(offer_timeout_email), 3, 86400, "120", NULL,
     "Seconds to accept an email offer."},
    {"routing", "offer_timeout_fax", CFG_INT, C(offer_timeout_fax), 3, 86400, "120", NULL,
     "Seconds to accept a fax offer."},
    {"routing", "reject_block", CFG_INT, C(reject_block), 0, 86400, "300", NULL,
     "Seconds during which an agent who rejected (or missed) an offer is not offered it again."},
    {"routing", "max_no_answer", CFG_INT, C(max_no_answer), 1, 100, "3", NULL,
     "Consecutive offer timeouts after which an agent is set away (reason no-answer)."},
    {"routing", "stats_window", CFG_INT, C(stats_window), 1, 120, "15", NULL,
     "Minutes of the sliding window for queue statistics."},
    {"queue", "channels", CFG_STR, Q(channels), 1, 256, "voice email fax branch webchat", NULL,
     "Channels this queue serves."},
    {"queue", "skills", CFG_STR, Q(skills), 0, 1024, "", NULL,
     "Required skills with minimum level 1-5: \"claims:2 lang_es:1\"."},
    {"queue", "sla_seconds", CFG_INT, Q(sla_seconds), 1, 86400, "20", NULL,
     "Service-level target: answered within this many seconds."},
    {"queue", "strategy", CFG_CHOICE, Q(strategy), 0, 0, "longest-idle",
     "|longest-idle|least-occupied|round-robin|", "Which eligible agent gets the next offer."},
    {"queue", "sticky_seconds", CFG_INT, Q(sticky_seconds), 0, 86400 * 30, "0", NULL,
     "Prefer the case's last agent for this long after their last contact, if available."},
    {"queue", "overflow_after", CFG_INT, Q(overflow_after), 0, 86400, "0", NULL,
     "Seconds of waiting after which overflow applies (0: never)."},
    {"queue", "overflow_skills", CFG_STR, Q(overflow_skills), 0, 1024, NULL, NULL,
     "Relaxed skill requirements after overflow_after."},
    {"queue", "overflow_queue", CFG_STR, Q(overflow_queue), 1, 64, NULL, NULL,
     "Queue to move waiting work to after overflow_after."},
    {"queue", "max_wait", CFG_INT, Q(max_wait), 0, 86400 * 7, "0", NULL,
     "Seconds after which on_max_wait applies (0: never)."},
    {"queue", "on_max_wait", CFG_CHOICE, Q(on_max_wait), 0, 0, "close",
     "|close|callback|voicemail|auto-reply|", "What happens at max_wait."},
};

/* Line each key of the unnamed sections was last set on, for errors found after parsing. */
static int key_line[ARRAY_SIZE(cfg_keys)];

static int line_of(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].key, key) == 0 && strcmp(cfg_keys[i].section, "queue") != 0 &&
            key_line[i])
            return key_line[i];
    return 0;
}

static const char *section_doc(const char *section)
{
    static const char *docs[][2] = {
        {"daemon", "Process-wide settings."},
        {"http", "The REST API and webhook listener."},
        {"redis", "Where state lives. Without url, omniccd starts its own redis-server."},
        {"api", "Admin authentication (bearer token)."},
        {"identity", "How customer identifiers are normalised."},
        {"segments", "Policyholder segments from the import, and the priority each earns."},
        {"routing", "Priority bases and the default queue."},
        {"queue", "One [queue NAME] section per queue."},
    };
    for (size_t i = 0; i < ARRAY_SIZE(docs); i++)
        if (strcmp(docs[i][0], section) == 0)
            return docs[i][1];
    return "";
}

void config_print_sample(FILE *out)
{
    const char *cur = NULL;
    fprintf(out, "# omniccd configuration. Every key with its default; generated by\n"
                 "# `omniccd --print-config`. Lines starting with # or ; are comments.\n");
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!cur || strcmp(cur, k->section) != 0) {
            cur = k->section;
            fprintf(out, "\n# %s\n[%s%s]\n", section_doc(cur), cur,
                    strcmp(cur, "queue") == 0 ? " default" : "");
        }
        fprintf(out, "# %s\n", k->doc);
        if (k->def)
            fprintf(out, "%s%s = %s\n", strcmp(k->key, "state_dir") == 0 ? "" : ";", k->key,
                    k->def);
        else
            fprintf(out, ";%s =\n", k->key);
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static char **str_field(void *base, size_t off)
{
    return (char **)((char *)base + off);
}

/* Set one key. Returns NULL or an error message (without the file:line prefix). */
static char *cfg_set(const struct cfg_key *k, void *base, const char *val)
{
    char *end;
    switch (k->type) {
    case CFG_STR: {
        size_t n = strlen(val);
        if ((long long)n < k->min || (long long)n > k->max)
            return xasprintf("length must be %lld-%lld characters", k->min, k->max);
        char **f = str_field(base, k->offset);
        free(*f);
        *f = xstrdup(val);
        return NULL;
    }
    case CFG_CHOICE: {
        char probe[128];
        snprintf(probe, sizeof(probe), "|%s|", val);
        if (!*val || strchr(val, '|') || !strstr(k->choices, probe))
            return xasprintf("must be one of %s", k->choices);
        char **f = str_field(base, k->offset);
        free(*f);
        *f = xstrdup(val);
        return NULL;
    }
    case CFG_INT:
    case CFG_SIZE: {
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end)
            return xasprintf("not an integer: \"%s\"", val);
        if (v < k->min || v > k->max)
            return xasprintf("must be between %lld and %lld", k->min, k->max);
        if (k->type == CFG_INT)
            *(int *)((char *)base + k->offset) = (int)v;
        else
            *(long long *)((char *)base + k->offset) = v;
        return NULL;
    }
    case CFG_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end)
            return xasprintf("not a number: \"%s\"", val);
        if (v < (double)k->min || v > (double)k->max)
            return xasprintf("must be between %lld and %lld", k->min, k->max);
        *(double *)((char *)base + k->offset) = v;
        return NULL;
    }
    case CFG_LEVEL: {
        int lvl = log_level_parse(val);
        if (lvl < 0)
            return xasprintf("must be error, warn, info or debug");
        *(int *)((char *)base + k->offset) = lvl;
        return NULL;
    }
    case CFG_RULE: {
        struct config *cfg = base;
        if (cfg->n_rules >= CONFIG_MAX_RULES)
            return xasprintf("at most %d rules", CONFIG_MAX_RULES);
        const char *arrow = strstr(val, "->");
        if (!arrow)
            return xasprintf("expected conditions -> queue");
        struct routing_rule *r = &cfg->rules[cfg->n_rules];
        memset(r, 0, sizeof(*r));
        char *tail = xstrdup(arrow + 2);
        r->queue = xstrdup(trim(tail));
        free(tail);
        char *conds = xstrndup(val, (size_t)(arrow - val)), *save = NULL, *err = NULL;
        for (char *t = strtok_r(conds, " \t", &save); t && !err; t = strtok_r(NULL, " \t", &save)) {
            char *eq = strchr(t, '=');
            char **slot = NULL;
            if (eq && strncmp(t, "channel=", 8) == 0)
                slot = &r->channel;
            else if (eq && strncmp(t, "intent=", 7) == 0)
                slot = &r->intent;
            else if (eq && strncmp(t, "skill=", 6) == 0)
                slot = &r->skill;
            if (!slot || !eq[1] || *slot)
                err = xasprintf("bad condition \"%s\" (channel=, intent=, skill=, once each)", t);
            else
                *slot = xstrdup(eq + 1);
        }
        free(conds);
        if (!err && !*r->queue)
            err = xasprintf("no queue after ->");
        if (err) {
            free(r->channel);
            free(r->intent);
            free(r->skill);
            free(r->queue);
            memset(r, 0, sizeof(*r));
            return err;
        }
        cfg->n_rules++;
        return NULL;
    }
    case CFG_LISTEN: {
        struct config *cfg = base;
        const char *colon = strrchr(val, ':');
        if (!colon || colon == val || !colon[1])
            return xasprintf("expected host:port, got \"%s\"", val);
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 0 || port > 65535)
            return xasprintf("bad port in \"%s\"", val);
        if (cfg->n_listen >= CONFIG_MAX_LISTEN)
            return xasprintf("at most %d listen addresses", CONFIG_MAX_LISTEN);
        cfg->listen[cfg->n_listen++] = xstrdup(val);
        return NULL;
    }
    }
    return xstrdup("unknown key type");
}

static const struct cfg_key *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].section, section) == 0 && strcmp(cfg_keys[i].key, key) == 0)
            return &cfg_keys[i];
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].section, section) == 0)
            return true;
    return false;
}

static void apply_defaults(const char *section, void *base)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (strcmp(k->section, section) != 0 || !k->def || k->type == CFG_LISTEN)
            continue;
        char *e = cfg_set(k, base, k->def);
        if (e) {
            log_error("config: default of %s.%s invalid: %s", section, k->key, e);
            abort();
        }
    }
}

/* "claims:2 lang_es" -> skill requirements (level defaults to 1). */
static char *parse_skills(const char *text, struct skill_req *out, int *n_out)
{
    char *copy = xstrdup(text), *save = NULL;
    int n = 0;
    char *err = NULL;
    for (char *tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        if (n >= CONFIG_MAX_QUEUE_SKILLS) {
            err = xasprintf("at most %d skills", CONFIG_MAX_QUEUE_SKILLS);
            break;
        }
        char *colon = strchr(tok, ':');
        int level = 1;
        if (colon) {
            *colon = '\0';
            char *end;
            long v = strtol(colon + 1, &end, 10);
            if (*end || v < 1 || v > 5) {
                err = xasprintf("skill \"%s\": level must be 1-5", tok);
                break;
            }
            level = (int)v;
        }
        size_t len = strlen(tok);
        bool ok = len > 0 && len <= 64;
        for (size_t i = 0; ok && i < len; i++)
            ok = isalnum((unsigned char)tok[i]) || tok[i] == '_' || tok[i] == '-';
        if (!ok) {
            err = xasprintf("bad skill name \"%s\"", tok);
            break;
        }
        out[n].name = xstrdup(tok);
        out[n].level = level;
        n++;
    }
    free(copy);
    if (err) {
        for (int i = 0; i < n; i++)
            xfree(out[i].name);
        return err;
    }
    *n_out = n;
    return NULL;
}

static void queue_free(struct queue_conf *q)
{
    if (!q)
        return;
    free(q->name);
    free(q->channels);
    free(q->skills);
    free(q->strategy);
    free(q->overflow_skills);
    free(q->overflow_queue);
    free(q->on_max_wait);
    for (int i = 0; i < q->n_skills; i++)
        free(q->skill[i].name);
    free(q);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (strcmp(k->section, "queue") != 0 && (k->type == CFG_STR || k->type == CFG_CHOICE))
            free(*str_field(cfg, k->offset));
    }
    for (int i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i]);
    for (int i = 0; i < cfg->n_queues; i++)
        queue_free(cfg->queues[i]);
    for (int i = 0; i < cfg->n_rules; i++) {
        free(cfg->rules[i].channel);
        free(cfg->rules[i].intent);
        free(cfg->rules[i].skill);
        free(cfg->rules[i].queue);
    }
    free(cfg->api_token_value);
    free(cfg->redis_password);
    free(cfg->path);
    free(cfg);
}

static bool valid_queue_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

#define FAIL(line, key, ...)                                                                       \
    do {                                                                                           \
        char *m_ = xasprintf(__VA_ARGS__);                                                         \
        *err = xasprintf("%s:%d: %s: %s", path, (line), (key), m_);                                \
        free(m_);                                                                                  \
        goto fail;                                                                                 \
    } while (0)

static int check_queue(const char *path, struct config *cfg, struct queue_conf *q, char **err)
{
    char *e = parse_skills(q->skills ? q->skills : "", q->skill, &q->n_skills);
    if (e) {
        *err = xasprintf("%s:%d: skills: %s", path, q->line, e);
        free(e);
        return -1;
    }
    char *copy = xstrdup(q->channels), *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save), n++) {
        static const char *known = "|voice|email|fax|branch|webchat|";
        char probe[80];
        snprintf(probe, sizeof(probe), "|%s|", t);
        if (!strstr(known, probe)) {
            *err = xasprintf("%s:%d: channels: unknown channel \"%s\"", path, q->line, t);
            free(copy);
            return -1;
        }
    }
    free(copy);
    if (n == 0) {
        *err = xasprintf("%s:%d: channels: no channel", path, q->line);
        return -1;
    }
    if (q->overflow_skills) {
        struct skill_req tmp[CONFIG_MAX_QUEUE_SKILLS];
        int nt = 0;
        e = parse_skills(q->overflow_skills, tmp, &nt);
        if (e) {
            *err = xasprintf("%s:%d: overflow_skills: %s", path, q->line, e);
            free(e);
            return -1;
        }
        for (int i = 0; i < nt; i++)
            free(tmp[i].name);
    }
    (void)cfg;
    return 0;
}

struct config *config_load(const char *path, char **err)
{
    struct config *cfg = xcalloc(1, sizeof(*cfg));
    struct queue_conf *cur_queue = NULL;
    char section[80] = "";
    char line_buf[4096];
    int lineno = 0;
    FILE *f = NULL;

    cfg->path = xstrdup(path);
    *err = NULL;
    memset(key_line, 0, sizeof(key_line));
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (i == 0 || strcmp(cfg_keys[i].section, cfg_keys[i - 1].section) != 0)
            if (strcmp(cfg_keys[i].section, "queue") != 0)
                apply_defaults(cfg_keys[i].section, cfg);

    f = fopen(path, "r");
    if (!f) {
        *err = xasprintf("%s:0: -: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    while (fgets(line_buf, sizeof(line_buf), f)) {
        lineno++;
        if (!strchr(line_buf, '\n') && !feof(f))
            FAIL(lineno, "-", "line longer than %zu bytes", sizeof(line_buf) - 2);
        char *s = trim(line_buf);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1])
                FAIL(lineno, "-", "malformed section header");
            *close = '\0';
            char *name = trim(s + 1);
            char *space = strpbrk(name, " \t");
            char *arg = NULL;
            if (space) {
                *space = '\0';
                arg = trim(space + 1);
            }
            if (!section_known(name))
                FAIL(lineno, name, "unknown section");
            snprintf(section, sizeof(section), "%s", name);
            cur_queue = NULL;
            if (strcmp(name, "queue") == 0) {
                if (!arg || !valid_queue_name(arg))
                    FAIL(lineno, "queue", "needs a name of letters, digits, _ or -");
                if (config_queue(cfg, arg))
                    FAIL(lineno, "queue", "queue \"%s\" defined twice", arg);
                if (cfg->n_queues >= CONFIG_MAX_QUEUES)
                    FAIL(lineno, "queue", "at most %d queues", CONFIG_MAX_QUEUES);
                cur_queue = xcalloc(1, sizeof(*cur_queue));
                cur_queue->name = xstrdup(arg);
                cur_queue->line = lineno;
                apply_defaults("queue", cur_queue);
                cfg->queues[cfg->n_queues++] = cur_queue;
            } else if (arg) {
                FAIL(lineno, name, "section takes no name");
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq)
            FAIL(lineno, s, "expected key = value");
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (!*section)
            FAIL(lineno, key, "key outside any section");
        const struct cfg_key *k = find_key(section, key);
        if (!k)
            FAIL(lineno, key, "unknown key in [%s]", section);
        if (!cur_queue)
            key_line[k - cfg_keys] = lineno;
        char *e = cfg_set(k, cur_queue ? (void *)cur_queue : (void *)cfg, val);
        if (!e && k->type == CFG_RULE)
            cfg->rules[cfg->n_rules - 1].line = lineno;
        if (e) {
            *err = xasprintf("%s:%d: %s: %s", path, lineno, key, e);
            free(e);
            goto fail;
        }
    }
    fclose(f);
    f = NULL;

    if (cfg->n_listen == 0)
        cfg->listen[cfg->n_listen++] = xstrdup("127.0.0.1:8080");
    if (!config_queue(cfg, cfg->default_queue)) {
        /* The default queue always exists: every channel, no skills required. */
        struct queue_conf *q = xcalloc(1, sizeof(*q));
        q->name = xstrdup(cfg->default_queue);
        apply_defaults("queue", q);
        cfg->queues[cfg->n_queues++] = q;
    }
    for (int i = 0; i < cfg->n_rules; i++) {
        if (!config_queue(cfg, cfg->rules[i].queue)) {
            *err = xasprintf("%s:%d: rule: no queue named \"%s\"", path, cfg->rules[i].line,
                             cfg->rules[i].queue);
            goto fail;
        }
    }
    for (int i = 0; i < cfg->n_queues; i++) {
        const struct queue_conf *q = cfg->queues[i];
        if (q->overflow_queue && !config_queue(cfg, q->overflow_queue)) {
            *err = xasprintf("%s:%d: overflow_queue: no queue named \"%s\"", path, q->line,
                             q->overflow_queue);
            goto fail;
        }
        if (q->overflow_queue && q->overflow_skills) {
            *err = xasprintf("%s:%d: overflow_skills: set overflow_skills or overflow_queue, "
                             "not both", path, q->line);
            goto fail;
        }
    }
    for (int i = 0; i < cfg->n_queues; i++)
        if (check_queue(path, cfg, cfg->queues[i], err) < 0)
            goto fail;
    if (cfg->api_token && cfg->api_token_file)
        FAIL(line_of("token_file"), "token", "set token or token_file, not both");
    if (cfg->api_token_file) {
        char *e = NULL;
        cfg->api_token_value = read_secret_file(cfg->api_token_file, &e);
        if (!cfg->api_token_value) {
            *err = xasprintf("%s:%d: token_file: %s", path, line_of("token_file"), e);
            free(e);
            goto fail;
        }
    } else if (cfg->api_token) {
        cfg->api_token_value = xstrdup(cfg->api_token);
    } else {
        FAIL(lineno, "token", "[api] token or token_file is required");
    }
    if (cfg->redis_password_file) {
        char *e = NULL;
        cfg->redis_password = read_secret_file(cfg->redis_password_file, &e);
        if (!cfg->redis_password) {
            *err = xasprintf("%s:%d: password_file: %s", path, line_of("password_file"), e);
            free(e);
            goto fail;
        }
    }
    if (cfg->redis_url && strncmp(cfg->redis_url, "redis://", 8) != 0 &&
        strncmp(cfg->redis_url, "unix://", 7) != 0)
        FAIL(line_of("url"), "url", "must start with redis:// or unix://");
    for (const char *p = cfg->default_country_code; *p; p++)
        if (!isdigit((unsigned char)*p))
            FAIL(line_of("default_country_code"), "default_country_code", "digits only, e.g. 34");
    if (cfg->premium_medium > cfg->premium_high)
        FAIL(line_of("premium_medium"), "premium_medium", "must not exceed premium_high");
    {
        char *e = NULL;
        if (identity_init(cfg->default_country_code, cfg->policy_pattern, &e) < 0) {
            *err = xasprintf("%s:%d: policy_pattern: %s", path, line_of("policy_pattern"), e);
            free(e);
            goto fail;
        }
    }
    return cfg;
fail:
    if (f)
        fclose(f);
    config_free(cfg);
    return NULL;
}

const struct queue_conf *config_queue(const struct config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_queues; i++)
        if (strcmp(cfg->queues[i]->name, name) == 0)
            return cfg->queues[i];
    return NULL;
}

int config_channel_boost(const struct config *cfg, const char *channel)
{
    if (strcmp(channel, "voice") == 0)
        return cfg->boost_voice;
    if (strcmp(channel, "webchat") == 0)
        return cfg->boost_webchat;
    if (strcmp(channel, "branch") == 0)
        return cfg->boost_branch;
    if (strcmp(channel, "email") == 0)
        return cfg->boost_email;
    if (strcmp(channel, "fax") == 0)
        return cfg->boost_fax;
    return 0;
}
