/* api_interactions.c - POST /v1/interactions (the generic ingest every channel adapter also
 * ends in) and GET /v1/interactions/{id}. An ingest is acknowledged (202) only from the
 * ingest script's reply: if Redis did not confirm the write, the client gets 503. */
#include <stdlib.h>
#include <string.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/metrics.h"
#include "omnicc/router.h"
#include "omnicc/segments.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

static void ingest_replied(const struct ingest_result *res, void *arg)
{
    struct http_req *r = arg;
    if (res->status >= 400) {
        if (res->status == 503)
            http_reply_unavailable(r, res->error);
        else
            http_reply_error(r, res->status, res->error_code, "%s", res->error);
        return;
    }
    json_t *conflicts = json_loads(res->conflicts, 0, NULL);
    json_t *out = json_pack("{s:s,s:s,s:s,s:b,s:o}", "id", res->id, "case_id", res->case_id,
                            "customer_id", res->customer_id, "duplicate", res->duplicate,
                            "conflicts", conflicts ? conflicts : json_array());
    if (res->reservation && *res->reservation)
        json_object_set_new(out, "reservation", json_string(res->reservation));
    if (!res->duplicate)
        metrics_ingest_latency(monotonic_ms() - r->started_ms);
    http_reply_json(r, res->duplicate ? 200 : 202, out);
}

void api_ingest(struct http_req *r, const struct interaction *ix)
{
    ingest_submit(api_config(), ix, ingest_replied, r);
}

static void post_interaction(struct http_req *r)
{
    json_t *obj = http_body_json_object(r);
    if (!obj)
        return;
    struct interaction ix;
    char *err = NULL;
    int rc = ix_from_json(api_config(), obj, &ix, &err);
    json_decref(obj);
    if (rc < 0) {
        http_reply_error(r, 400, "invalid_field", "%s", err);
        free(err);
        return;
    }
    api_ingest(r, &ix);
    ix_free(&ix);
}

/* A read script answers with JSON text; jansson turns Lua's empty tables ({}) into objects,
 * so the list fields are put right here. */
static void fix_empty_lists(json_t *obj, const char *const *keys)
{
    for (; *keys; keys++) {
        json_t *v = json_object_get(obj, *keys);
        if (v && json_is_object(v) && json_object_size(v) == 0)
            json_object_set_new(obj, *keys, json_array());
    }
}

void api_reply_script_json(struct http_req *r, const redisReply *reply, const char *err,
                           const char *const *list_keys)
{
    api_reply_script_json_status(r, 200, reply, err, list_keys);
}

void api_reply_script_json_status(struct http_req *r, int status, const redisReply *reply,
                                  const char *err, const char *const *list_keys)
{
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        http_reply_error(r, 500, "internal", "unexpected storage reply");
        return;
    }
    json_t *obj = json_loadb(reply->str, reply->len, 0, NULL);
    if (!obj) {
        http_reply_error(r, 500, "internal", "unreadable storage reply");
        return;
    }
    if (list_keys)
        fix_empty_lists(obj, list_keys);
    http_reply_json(r, status, obj);
}

static void get_done(const redisReply *reply, const char *err, void *arg)
{
    api_reply_script_json(arg, reply, err, NULL);
}

static void get_interaction(struct http_req *r)
{
    if (!id_is_valid(r->params[0], 'I')) {
        http_reply_error(r, 404, "not_found", "no interaction with that id");
        return;
    }
    const char *argv[1] = {r->params[0]};
    if (store_script(SCRIPT_GET_INTERACTION, 1, argv, NULL, get_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

/* ---- after the offer: wrap-up, complete, transfer, abandon, cancel ---- */

static void work_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    json_t *out = json_pack("{s:s}", "id", reply->element[0]->str);
    const char *second = reply->element[1]->str;
    if (strncmp(second, "R-", 2) == 0)
        json_object_set_new(out, "reservation", json_string(second));
    else if (*second)
        json_object_set_new(out, "state", json_string(second));
    http_reply_json(r, 200, out);
}

/* Validate the body against the fields op accepts, then run the work script. */
static void work(struct http_req *r, const char *op, const char *const *fields)
{
    if (!id_is_valid(r->params[0], 'I')) {
        http_reply_error(r, 404, "not_found", "no interaction with that id");
        return;
    }
    json_t *args = r->body_len ? http_body_json_object(r) : json_object();
    if (!args)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(args, k, v)
    {
        bool ok = false;
        for (const char *const *f = fields; *f; f++)
            ok = ok || strcmp(*f, k) == 0;
        const char *why = NULL;
        if (!ok)
            why = "unknown field";
        else if (!json_is_string(v) || json_string_length(v) > 8000 ||
                 !text_is_clean_utf8(json_string_value(v), json_string_length(v)))
            why = "must be text of at most 8000 bytes";
        else if (strcmp(k, "note") != 0 && !name_is_valid(json_string_value(v), 64))
            why = "letters, digits, _ - . : only";
        if (why) {
            http_reply_error(r, 400, "invalid_field", "%.40s: %s", k, why);
            json_decref(args);
            return;
        }
    }
    if (strcmp(op, "transfer") == 0) {
        bool q = json_object_get(args, "queue"), a = json_object_get(args, "agent");
        if (q == a) {
            http_reply_error(r, 400, "invalid_field", "queue or agent: give exactly one");
            json_decref(args);
            return;
        }
    }
    char *text = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    const char *argv[4] = {r->params[0], op, r->auth_sha, text};
    if (store_script(SCRIPT_WORK, 4, argv, NULL, work_done, r) < 0)
        http_reply_unavailable(r, store_status());
    free(text);
}

static void wrapup_interaction(struct http_req *r)
{
    static const char *const f[] = {"disposition", "note", NULL};
    work(r, "wrapup", f);
}

static void complete_interaction(struct http_req *r)
{
    static const char *const f[] = {"note", NULL};
    work(r, "complete", f);
}

static void transfer_interaction(struct http_req *r)
{
    static const char *const f[] = {"queue", "agent", "note", NULL};
    work(r, "transfer", f);
}

static void abandon_interaction(struct http_req *r)
{
    static const char *const f[] = {"reason", NULL};
    work(r, "abandon", f);
}

static void cancel_interaction(struct http_req *r)
{
    static const char *const f[] = {"reason", NULL};
    work(r, "cancel", f);
}

const struct http_route api_interactions_routes[] = {
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/wrapup", HTTP_AUTH_AGENT, wrapup_interaction, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/complete", HTTP_AUTH_AGENT, complete_interaction, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/transfer", HTTP_AUTH_AGENT, transfer_interaction, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/abandon", HTTP_AUTH_ADMIN, abandon_interaction, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/cancel", HTTP_AUTH_ADMIN, cancel_interaction, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions", HTTP_AUTH_ADMIN, post_interaction, "application/json", NULL, false},
    {EVHTTP_REQ_GET, "/v1/interactions/{id}", HTTP_AUTH_ADMIN, get_interaction, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
