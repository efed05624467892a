/* branch_api.c - the branch registry and its figures for administrators: branches from the
 * [branch ID] sections (written to Redis each time the store connects) or POST /v1/branches,
 * GET /v1/branches/{id}/stats from the counters the branch scripts keep, and the
 * append-only access log of teller lookups (GET /v1/access-log). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branch.h"
#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define LIST_MAX 500

static struct {
    const struct config *cfg;
    struct event *timer;
    bool synced, syncing;
} ba;

/* ---- validation shared by the config sync and POST ---- */

static json_t *services_doc(const char *text)
{
    json_t *out = json_object();
    char *copy = xstrdup(text), *save = NULL;
    for (char *t = strtok_r(copy, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
        char *colon = strchr(t, ':');
        if (!colon)
            continue;
        *colon = '\0';
        json_object_set_new(out, t, json_string(colon + 1));
    }
    free(copy);
    return out;
}

static json_t *config_branches(const struct config *cfg)
{
    json_t *list = json_array();
    for (int i = 0; i < cfg->n_branches; i++) {
        const struct branch_conf *b = cfg->branches[i];
        json_array_append_new(list,
                              json_pack("{s:s,s:s,s:s,s:s,s:o,s:i}", "id", b->id, "name",
                                        b->name ? b->name : b->id, "bank", b->bank ? b->bank : "",
                                        "region", b->region ? b->region : "", "services",
                                        services_doc(b->services), "counters", b->counters));
    }
    return list;
}

static char *check_line(json_t *body, const char *field)
{
    json_t *v = json_object_get(body, field);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v) || json_string_length(v) > 200 ||
        !text_is_clean_utf8(json_string_value(v), json_string_length(v)) ||
        strchr(json_string_value(v), '\n'))
        return xasprintf("%s: one line of at most 200 bytes", field);
    return NULL;
}

static json_t *branch_doc(json_t *body, char **err)
{
    static const char *const allowed[] = {"id",       "name",     "bank", "region",
                                          "services", "counters", NULL};
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, k) == 0;
        if (!ok) {
            *err = xasprintf("%.40s: unknown field", k);
            return NULL;
        }
    }
    json_t *id = json_object_get(body, "id");
    if (!json_is_string(id) || !branch_id_valid(json_string_value(id))) {
        *err = xstrdup("id: required, 1-32 letters, digits, _ or -");
        return NULL;
    }
    const char *lines[] = {"name", "bank", "region"};
    for (size_t i = 0; i < ARRAY_SIZE(lines); i++)
        if ((*err = check_line(body, lines[i])) != NULL)
            return NULL;
    json_t *svc = json_object_get(body, "services");
    if (!json_is_object(svc) || json_object_size(svc) == 0 || json_object_size(svc) > 16) {
        *err = xstrdup("services: required, an object of 1-16 SERVICE: QUEUE");
        return NULL;
    }
    json_object_foreach(svc, k, v)
    {
        if (!branch_id_valid(k)) {
            *err = xasprintf("services.%.40s: a service name (letters, digits, _ -)", k);
            return NULL;
        }
        if (!json_is_string(v) || !config_queue(ba.cfg, json_string_value(v))) {
            *err = xasprintf("services.%s: no such queue", k);
            return NULL;
        }
        if (!router_queue_serves(ba.cfg, json_string_value(v), "branch")) {
            *err = xasprintf("services.%s: queue %s does not serve the branch channel", k,
                             json_string_value(v));
            return NULL;
        }
    }
    json_t *counters = json_object_get(body, "counters");
    if (counters && (!json_is_integer(counters) || json_integer_value(counters) < 1 ||
                     json_integer_value(counters) > 999)) {
        *err = xstrdup("counters: an integer 1-999");
        return NULL;
    }
    json_t *doc = json_pack("{s:O,s:O,s:I}", "id", id, "services", svc, "counters",
                            counters ? json_integer_value(counters) : 1);
    for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
        json_t *s = json_object_get(body, lines[i]);
        json_object_set_new(doc, lines[i],
                            json_string(json_is_string(s)               ? json_string_value(s)
                                        : strcmp(lines[i], "name") == 0 ? json_string_value(id)
                                                                        : ""));
    }
    return doc;
}

/* ---- config sync: each time the store (re)connects ---- */

static void sync_done(const redisReply *reply, const char *err, void *arg)
{
    ba.syncing = false;
    if (err) {
        log_warn("branch: writing the configured branches failed: %s", err);
        return;
    }
    ba.synced = true;
    log_info("branch: %lld configured branches registered", reply->integer);
}

static void on_sync_timer(evutil_socket_t fd, short what, void *arg)
{
    if (!store_ready()) {
        ba.synced = false;
        return;
    }
    if (ba.synced || ba.syncing)
        return;
    json_t *list = config_branches(ba.cfg);
    char *text = json_dumps(list, JSON_COMPACT);
    json_decref(list);
    const char *argv[2] = {"sync", text};
    if (store_script(SCRIPT_BRANCH_ADMIN, 2, argv, NULL, sync_done, NULL) == 0)
        ba.syncing = true;
    free(text);
}

void branch_api_start(struct event_base *base, const struct config *cfg)
{
    ba.cfg = cfg;
    if (cfg->n_branches == 0)
        return;
    ba.timer = event_new(base, -1, EV_PERSIST, on_sync_timer, NULL);
    struct timeval tv = {0, 20 * 1000};
    event_add(ba.timer, &tv);
}

bool branch_api_synced(void)
{
    return ba.synced || !ba.timer;
}

void branch_api_stop(void)
{
    if (ba.timer)
        event_free(ba.timer);
    ba.timer = NULL;
}

/* ---- routes ---- */

static void upsert_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    json_t *b = json_loadb(reply->element[1]->str, reply->element[1]->len, 0, NULL);
    http_reply_json(r, reply->element[0]->integer ? 201 : 200, b ? b : json_object());
}

static void post_branch(struct http_req *r)
{
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    char *err = NULL;
    json_t *doc = branch_doc(body, &err);
    json_decref(body);
    if (!doc) {
        http_reply_error(r, 400, "invalid_field", "%s", err);
        free(err);
        return;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    const char *argv[2] = {"upsert", text};
    if (store_script(SCRIPT_BRANCH_ADMIN, 2, argv, NULL, upsert_done, r) < 0)
        http_reply_unavailable(r, store_status());
    free(text);
}

static void json_done(const redisReply *reply, const char *err, void *arg)
{
    static const char *const lists[] = {"branches", "entries", NULL};
    api_reply_script_json(arg, reply, err, lists);
}

static void get_branch(struct http_req *r)
{
    if (!branch_id_valid(r->params[0])) {
        http_reply_error(r, 404, "not_found", "no branch with that id");
        return;
    }
    const char *argv[2] = {"get", r->params[0]};
    if (store_script(SCRIPT_BRANCH_ADMIN, 2, argv, NULL, json_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static bool page_limit(struct http_req *r, long *limit)
{
    const char *s = http_query(r, "limit");
    if (!s)
        return true;
    char *end;
    *limit = strtol(s, &end, 10);
    if (*end || *limit < 1 || *limit > LIST_MAX) {
        http_reply_error(r, 400, "invalid_field", "limit: must be 1-%d", LIST_MAX);
        return false;
    }
    return true;
}

static void list_branches(struct http_req *r)
{
    long limit = 100;
    const char *cursor = http_query(r, "cursor");
    if (cursor && !branch_id_valid(cursor)) {
        http_reply_error(r, 400, "invalid_field", "cursor: not a cursor from a previous page");
        return;
    }
    if (!page_limit(r, &limit))
        return;
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *argv[3] = {"list", cursor ? cursor : "", lim};
    if (store_script(SCRIPT_BRANCH_ADMIN, 3, argv, NULL, json_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void branch_stats(struct http_req *r)
{
    if (!branch_id_valid(r->params[0])) {
        http_reply_error(r, 404, "not_found", "no branch with that id");
        return;
    }
    const char *argv[2] = {"stats", r->params[0]};
    if (store_script(SCRIPT_BRANCH_ADMIN, 2, argv, NULL, json_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static bool stream_id_valid(const char *s)
{
    const char *dash = strchr(s, '-');
    if (!dash || dash == s || !dash[1] || strlen(s) > 41)
        return false;
    for (const char *p = s; *p; p++)
        if (p != dash && (*p < '0' || *p > '9'))
            return false;
    return true;
}

/* GET /v1/access-log?customer=P-1 | agent=ID | branch=ID [&limit=N&before=ENTRY_ID] */
static void access_log(struct http_req *r)
{
    static const char *const by[] = {"customer", "agent", "branch"};
    const char *kind = "all", *id = "";
    int given = 0;
    for (size_t i = 0; i < ARRAY_SIZE(by); i++) {
        const char *v = http_query(r, by[i]);
        if (!v)
            continue;
        given++;
        kind = by[i];
        id = v;
    }
    if (given > 1) {
        http_reply_error(r, 400, "invalid_field", "give at most one of customer, agent, branch");
        return;
    }
    if ((strcmp(kind, "customer") == 0 && !id_is_valid(id, 'P')) ||
        (strcmp(kind, "agent") == 0 && !name_is_valid(id, 64)) ||
        (strcmp(kind, "branch") == 0 && !branch_id_valid(id))) {
        http_reply_error(r, 400, "invalid_field", "%s: not a valid id", kind);
        return;
    }
    const char *before = http_query(r, "before");
    if (before && !stream_id_valid(before)) {
        http_reply_error(r, 400, "invalid_field", "before: an entry id from a previous page");
        return;
    }
    long limit = 100;
    if (!page_limit(r, &limit))
        return;
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *argv[5] = {"access", kind, id, before ? before : "", lim};
    if (store_script(SCRIPT_BRANCH_ADMIN, 5, argv, NULL, json_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

const struct http_route branch_api_routes[] = {
    {EVHTTP_REQ_POST, "/v1/branches", HTTP_AUTH_ADMIN, post_branch, "application/json", NULL,
     false},
    {EVHTTP_REQ_GET, "/v1/branches", HTTP_AUTH_ADMIN, list_branches, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/branches/{id}", HTTP_AUTH_ADMIN, get_branch, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/branches/{id}/stats", HTTP_AUTH_ADMIN, branch_stats, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/access-log", HTTP_AUTH_ADMIN, access_log, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
