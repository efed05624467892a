/* fuzz_api.c - libFuzzer target for the JSON bodies of the REST API: each route below is
 * looked up in the route tables the server dispatches from (daemon/http.c: the core tables
 * and every channel's) and its handler is called as dispatch() calls it, with the fuzzer's
 * bytes as the body, once the route, authentication and size checks have passed. Redis is
 * not there, so a body that passes validation ends in a 503: what is fuzzed is everything
 * a handler does with the body before it would reach Redis (interaction model, agents and
 * their state, case notes and actions, customer import and merge, erase and legal hold,
 * branches, web chat sessions and messages, work on interactions).
 * Every request must be answered exactly once (the server's in-flight count drops by one)
 * and nothing may leak; checked here, so the fuzzer reports a violation as a crash.
 * The first byte picks the route, the second how the caller authenticates (bit 0: the web
 * chat visitor token instead of the admin bearer token; bit 1: an agent rather than the
 * admin; bit 2: the visitor cookie is the body's first line, as the browser sent it), the
 * rest is the body.
 * Built with -Dfuzzing=true as a libFuzzer binary (tests/fuzz/meson.build); with any
 * compiler the corpus (corpus/api/) is replayed by driver.c in 'fuzz-smoke'. */
#include <event2/event.h>
#include <event2/http.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include "branch.h"
#include "omnicc/analytics.h"
#include "omnicc/api.h"
#include "omnicc/channel.h"
#include "omnicc/config.h"
#include "omnicc/http.h"
#include "omnicc/identity.h"
#include "omnicc/util.h"
#include "webchat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ADMIN_TOKEN "fuzz-admin-token-0123456789"
#define VISITOR_KEY "fuzz-visitor-key-0123456789abcdef"
#define SESSION "S-0123456789abcdef0123456789abcdef"

static const struct {
    enum evhttp_cmd_type method;
    const char *pattern;
    const char *param; /* {id} */
} routes[] = {
    {EVHTTP_REQ_POST, "/v1/interactions", NULL},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/wrapup", "I-1"},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/complete", "I-1"},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/transfer", "I-1"},
    {EVHTTP_REQ_POST, "/v1/agents", NULL},
    {EVHTTP_REQ_PATCH, "/v1/agents/{id}", "alice"},
    {EVHTTP_REQ_PUT, "/v1/agents/{id}/state", "alice"},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/notes", "C-1"},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/close", "C-1"},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/reopen", "C-1"},
    {EVHTTP_REQ_POST, "/v1/customers/import", NULL},
    {EVHTTP_REQ_POST, "/v1/customers/{id}/merge", "P-1"},
    {EVHTTP_REQ_POST, "/v1/customers/{id}/erase", "P-1"},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/hold", "C-1"},
    {EVHTTP_REQ_POST, "/v1/branches", NULL},
    {EVHTTP_REQ_POST, "/v1/chat/sessions", NULL},
    {EVHTTP_REQ_POST, "/v1/chat/sessions/{id}/messages", SESSION},
    {EVHTTP_REQ_POST, "/v1/chat/sessions/{id}/close", SESSION},
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static const struct http_route *handlers[N_ROUTES];
static struct config *cfg;
static char *visitor_token;

static const struct http_route *find_route(enum evhttp_cmd_type method, const char *pattern)
{
    const struct http_route *const core[] = {api_interactions_routes, api_customers_routes,
                                             api_cases_routes,        api_agents_routes,
                                             api_privacy_routes,      NULL};
    for (const struct http_route *const *t = core; *t; t++)
        for (const struct http_route *rt = *t; rt->pattern; rt++)
            if (rt->method == method && strcmp(rt->pattern, pattern) == 0)
                return rt;
    for (const struct channel *const *c = channel_table; *c; c++)
        for (const struct http_route *rt = (*c)->routes; rt && rt->pattern; rt++)
            if (rt->method == method && strcmp(rt->pattern, pattern) == 0)
                return rt;
    return NULL;
}

static char *write_secret(const char *dir, const char *name, const char *value)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%s\n", value) < 0 || fclose(f) != 0)
        abort();
    return path;
}

static void setup(void)
{
    char dir[] = "/tmp/omnicc-fuzz-api-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char *key = write_secret(dir, "visitor.key", VISITOR_KEY);
    char *secret = write_secret(dir, "identity.secret", "fuzz-identity-secret-0123456789");
    char *text = xasprintf("[daemon]\nstate_dir = %s\n"
                           "[api]\ntoken = " ADMIN_TOKEN "\n"
                           "[http]\nmax_body = 8192\nimport_max_body = 8192\n"
                           "[routing]\ndefault_queue = general\n"
                           "rule = channel=voice intent=claims -> claims\n"
                           "[queue general]\nchannels = voice email fax branch webchat\n"
                           "[queue claims]\nchannels = voice webchat branch\n"
                           "skills = claims:2 lang_es:1\n"
                           "[queue sales]\nchannels = webchat\nskills = sales\n"
                           "[webchat]\ntopics = general claims:claims sales:sales\n"
                           "visitor_key_file = %s\nidentity_secret_file = %s\n"
                           "[branch B001]\nservices = policy_inquiry:general claim_fnol:claims\n",
                           dir, key, secret);
    FILE *f = fmemopen(text, strlen(text), "r");
    char *err = NULL;
    cfg = f ? config_read(f, "fuzz.conf", &err) : NULL;
    if (f)
        fclose(f);
    if (!cfg) {
        fprintf(stderr, "fuzz_api: %s\n", err ? err : "no config");
        abort();
    }
    api_set_config(cfg);
    http_set_config(cfg);
    struct event_base *base = event_base_new();
    for (const struct channel *const *c = channel_table; *c; c++)
        if (strcmp((*c)->name, "webchat") == 0 && (*c)->start(base, cfg, &err) < 0) {
            fprintf(stderr, "fuzz_api: %s\n", err);
            abort();
        }
    branch_api_start(base, cfg);
    for (size_t i = 0; i < N_ROUTES; i++)
        if (!(handlers[i] = find_route(routes[i].method, routes[i].pattern))) {
            fprintf(stderr, "fuzz_api: no route %s\n", routes[i].pattern);
            abort();
        }
    visitor_token = webchat_token_mint((const unsigned char *)VISITOR_KEY, strlen(VISITOR_KEY),
                                       "0123456789abcdef0123456789abcdef", 4102444800LL);
    /* the files were read: nothing is left behind */
    unlink(key);
    unlink(secret);
    rmdir(dir);
    free(key);
    free(secret);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cfg)
        setup();
    if (size < 2 || size - 2 > (size_t)cfg->max_body)
        return 0;
    size_t which = data[0] % N_ROUTES;
    uint8_t flags = data[1];
    struct http_req *r = xcalloc(1, sizeof(*r));
    r->req = evhttp_request_new(NULL, NULL);
    r->route = handlers[which];
    TAILQ_INIT(&r->query);
    if (routes[which].param)
        r->params[0] = xstrdup(routes[which].param);
    const char *body = (const char *)data + 2;
    size_t body_len = size - 2;
    char *cookie = NULL;
    if (flags & 4) {
        const char *nl = memchr(body, '\n', body_len);
        size_t n = nl ? (size_t)(nl - body) : body_len;
        cookie = xasprintf("omnicc_chat=%.*s", (int)n, body);
        body += nl ? n + 1 : n;
        body_len -= nl ? n + 1 : n;
    }
    r->body_len = body_len;
    r->body = xmalloc(body_len + 1);
    memcpy(r->body, body, body_len);
    r->body[body_len] = '\0';
    /* admin routes: only the admin token gets this far */
    r->is_admin = r->route->auth != HTTP_AUTH_AGENT || !(flags & 2);
    if (!r->is_admin)
        snprintf(r->auth_sha, sizeof(r->auth_sha), "%064d", 7);
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    if (cookie)
        evhttp_add_header(h, "Cookie", cookie); /* refused when it holds CR or LF */
    else if (flags & 1)
        evhttp_add_header(h, "X-Omnicc-Visitor", visitor_token);
    else
        evhttp_add_header(h, "Authorization", "Bearer " ADMIN_TOKEN);
    evhttp_add_header(h, "Content-Type", "application/json");
    free(cookie);
    int before = http_inflight();
    r->route->handler(r); /* answers, and frees r and its request */
    if (http_inflight() != before - 1)
        abort(); /* not answered, or answered twice */
    return 0;
}

__attribute__((destructor)) static void fuzz_api_done(void)
{
    free(visitor_token);
    if (cfg)
        config_free(cfg);
    identity_shutdown();
}
