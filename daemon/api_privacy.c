/* api_privacy.c - data rights (docs/API.md "Data rights"): GET /v1/customers/{id}/export
 * (everything held on a person), POST /v1/customers/{id}/erase (admin, with a reason),
 * POST/DELETE /v1/cases/{id}/hold (legal hold, which blocks erasure), GET /v1/audit; and the
 * append-only audit stream every report, export and erasure is written to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omnicc/analytics.h"
#include "omnicc/api.h"
#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/filestore.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

static void audit_done(const redisReply *reply, const char *err, void *arg)
{
    (void)reply, (void)arg;
    if (err)
        log_warn("audit: %s", err);
}

static const char *actor_of(struct http_req *r)
{
    return r->is_admin ? "admin" : "agent";
}

void analytics_audit(struct http_req *r, const char *action, const char *object, const char *detail)
{
    char *key = xasprintf("%saudit", store_key_base());
    char at[24];
    snprintf(at, sizeof(at), "%lld", (long long)now_ms());
    char *peer = NULL;
    ev_uint16_t port = 0;
    if (r->evcon)
        evhttp_connection_get_peer(r->evcon, &peer, &port);
    const char *argv[] = {"XADD", key, "*", "at", at, "action", action, "object", object ? object : "",
                          "actor", actor_of(r), "peer", peer ? peer : "", "detail",
                          detail ? detail : ""};
    if (store_command((int)ARRAY_SIZE(argv), argv, NULL, audit_done, NULL) < 0)
        log_warn("audit: Redis not reachable, %s not recorded", action);
    free(key);
}

static void export_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    api_reply_script_json(r, reply, err, NULL);
}

static void customer_export(struct http_req *r)
{
    const char *argv[2] = {r->params[0], actor_of(r)};
    if (store_script(SCRIPT_CUSTOMER_EXPORT, 2, argv, NULL, export_done, r) < 0)
        http_reply_unavailable(r, "Redis not reachable");
}

/* The erased person's attachment files: unlinked by a file store worker, never the loop. */
struct erase_files {
    struct http_req *r;
    char *state_dir;
    size_t n;
    char (*sha)[65];
    bool *removed;
};

static void erase_files_work(void *arg)
{
    struct erase_files *e = arg;
    for (size_t i = 0; i < e->n; i++) {
        char *path = xasprintf("%s/attachments/%.2s/%s", e->state_dir, e->sha[i], e->sha[i]);
        char *meta = xasprintf("%s.meta", path);
        e->removed[i] = unlink(path) == 0;
        unlink(meta);
        free(path);
        free(meta);
    }
}

static void erase_files_after(void *arg, bool ran)
{
    struct erase_files *e = arg;
    if (!ran) /* the pool stopped first: the daemon is going down, finish here */
        erase_files_work(e);
    json_t *removed = json_array();
    for (size_t i = 0; i < e->n; i++)
        if (e->removed[i])
            json_array_append_new(removed, json_string(e->sha[i]));
    http_reply_json(e->r, 200, json_pack("{s:s,s:b,s:o}", "customer_id", e->r->params[0],
                                          "erased", 1, "attachments_removed", removed));
    free(e->state_dir);
    free(e->sha);
    free(e->removed);
    free(e);
}

static void erase_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (api_reply_script_error(r, err))
        return;
    struct erase_files *e = xcalloc(1, sizeof(*e));
    e->r = r;
    e->state_dir = xstrdup(api_config()->state_dir);
    size_t n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
    e->sha = xcalloc(n ? n : 1, sizeof(*e->sha));
    e->removed = xcalloc(n ? n : 1, sizeof(*e->removed));
    for (size_t i = 1; i < n; i++) {
        const char *sha = reply->element[i]->str;
        if (sha && attachment_sha_valid(sha))
            memcpy(e->sha[e->n++], sha, 65);
    }
    /* the erasure is done in Redis and cannot be asked for again (the hashes are gone with
     * the metadata): when the pool cannot take the job, the files go at once, here */
    if (filestore_run(erase_files_work, erase_files_after, e) < 0) {
        log_warn("erase: file store busy: %zu attachment(s) removed on the loop thread", e->n);
        erase_files_after(e, false);
    }
}

/* The request's required "reason" (erasure and legal hold are audited with it), or NULL
 * once the 400 is answered. *body holds the parsed request for the caller to release. */
static const char *body_reason(struct http_req *r, json_t **body)
{
    *body = http_body_json_object(r);
    if (!*body)
        return NULL;
    const char *reason = json_string_value(json_object_get(*body, "reason"));
    if (!reason || !*reason || strlen(reason) > 1000) {
        json_decref(*body);
        http_reply_error(r, 400, "invalid", "reason: required (text, up to 1000 bytes)");
        return NULL;
    }
    return reason;
}

static void customer_erase(struct http_req *r)
{
    json_t *body;
    const char *reason = body_reason(r, &body);
    if (!reason)
        return;
    const char *argv[4] = {"erase", r->params[0], reason, actor_of(r)};
    if (store_script(SCRIPT_ERASE, 4, argv, NULL, erase_done, r) < 0)
        http_reply_unavailable(r, "Redis not reachable");
    json_decref(body);
}

static void hold_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (api_reply_script_error(r, err))
        return;
    (void)reply;
    http_reply_json(r, 200, json_pack("{s:s,s:b}", "case_id", r->params[0], "legal_hold",
                                      r->req && evhttp_request_get_command(r->req) == EVHTTP_REQ_POST));
}

static void case_hold(struct http_req *r)
{
    json_t *body;
    const char *reason = body_reason(r, &body);
    if (!reason)
        return;
    const char *argv[4] = {"hold", r->params[0], reason, actor_of(r)};
    if (store_script(SCRIPT_ERASE, 4, argv, NULL, hold_done, r) < 0)
        http_reply_unavailable(r, "Redis not reachable");
    json_decref(body);
}

static void case_unhold(struct http_req *r)
{
    const char *argv[4] = {"unhold", r->params[0], "", actor_of(r)};
    if (store_script(SCRIPT_ERASE, 4, argv, NULL, hold_done, r) < 0)
        http_reply_unavailable(r, "Redis not reachable");
}

static void audit_read_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (api_reply_script_error(r, err))
        return;
    json_t *out = json_array();
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
            continue;
        json_t *o = json_pack("{s:s}", "id", e->element[0]->str);
        const redisReply *f = e->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2)
            json_object_set_new(o, f->element[j]->str, json_string(f->element[j + 1]->str));
        json_array_append_new(out, o);
    }
    http_reply_json(r, 200, json_pack("{s:o}", "entries", out));
}

static void audit_list(struct http_req *r)
{
    const char *after = http_query(r, "after");
    char *key = xasprintf("%saudit", store_key_base());
    char *start = xasprintf("(%s", after && *after ? after : "0-0");
    if (after && strspn(after, "0123456789-") != strlen(after)) {
        free(key);
        free(start);
        http_reply_error(r, 400, "invalid", "after: an audit entry id");
        return;
    }
    const char *argv[] = {"XRANGE", key, start, "+", "COUNT", "1000"};
    if (store_command((int)ARRAY_SIZE(argv), argv, NULL, audit_read_done, r) < 0)
        http_reply_unavailable(r, "Redis not reachable");
    free(key);
    free(start);
}

const struct http_route api_privacy_routes[] = {
    {EVHTTP_REQ_GET, "/v1/customers/{id}/export", HTTP_AUTH_ADMIN, customer_export, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/customers/{id}/erase", HTTP_AUTH_ADMIN, customer_erase, "application/json",
     NULL, false},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/hold", HTTP_AUTH_ADMIN, case_hold, "application/json", NULL, false},
    {EVHTTP_REQ_DELETE, "/v1/cases/{id}/hold", HTTP_AUTH_ADMIN, case_unhold, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/audit", HTTP_AUTH_ADMIN, audit_list, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
