/* api_agents.c - agents (admin CRUD, tokens), presence, reservations, and the SSE streams
 * of agents and supervisors. Agent tokens are stored hashed; an agent acts only on its
 * own state and reservations (the scripts check the token's hash against the agent). */
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/events.h"
#include "omnicc/interaction.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define AGENT_PAGE_MAX 500

static const char *const agent_lists[] = {"queues", NULL};
static char created_marker;
#define CREATED ((void *)&created_marker) /* r->data of a POST that created the agent */

static void agent_json_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    api_reply_script_json_status(r, r->data == CREATED ? 201 : 200, reply, err, agent_lists);
}

static void read_agent(struct http_req *r, const char *id)
{
    const char *argv[3] = {"one", id, ""};
    if (store_script(SCRIPT_AGENT_READ, 3, argv, NULL, agent_json_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void upsert_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    if (r->route->method == EVHTTP_REQ_POST)
        r->data = CREATED; /* answer with the agent as stored, 201 */
    read_agent(r, reply->element[0]->str);
}

static void upsert(struct http_req *r, json_t *body, const char *mode)
{
    char *err = NULL;
    json_t *doc = router_agent_doc(api_config(), body, &err);
    if (!doc) {
        http_reply_error(r, 400, "invalid_field", "%s", err);
        free(err);
        return;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    const char *argv[2] = {mode, text};
    if (store_script(SCRIPT_AGENT_UPSERT, 2, argv, NULL, upsert_done, r) < 0)
        http_reply_unavailable(r, store_status());
    free(text);
}

static void create_agent(struct http_req *r)
{
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    upsert(r, body, "create");
    json_decref(body);
}

/* PATCH: the stored agent is read first, the patch applied over it, then saved whole. */
static void patch_read_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    json_t *cur = json_loadb(reply->str, reply->len, 0, NULL);
    json_t *patch = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *merged = json_object();
    static const char *const keep[] = {"id", "name", "skills", "capacity", "capacity_total",
                                       "wrapup", "softphone", "branch"};
    for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
        json_t *v = json_object_get(cur, keep[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && !json_string_length(v)))
            json_object_set(merged, keep[i], v);
    }
    json_object_update(merged, patch);
    json_object_set_new(merged, "id", json_string(r->params[0]));
    json_decref(cur);
    json_decref(patch);
    upsert(r, merged, "update");
    json_decref(merged);
}

static void patch_agent(struct http_req *r)
{
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    json_t *id = json_object_get(body, "id");
    if (id && (!json_is_string(id) || strcmp(json_string_value(id), r->params[0]) != 0)) {
        json_decref(body);
        http_reply_error(r, 400, "invalid_field", "id: cannot be changed");
        return;
    }
    json_decref(body);
    const char *argv[3] = {"one", r->params[0], ""};
    if (store_script(SCRIPT_AGENT_READ, 3, argv, NULL, patch_read_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void get_agent(struct http_req *r)
{
    if (!name_is_valid(r->params[0], 64)) {
        http_reply_error(r, 404, "not_found", "no agent with that id");
        return;
    }
    read_agent(r, r->params[0]);
}

static void list_done(const redisReply *reply, const char *err, void *arg)
{
    static const char *const lists[] = {"agents", NULL};
    api_reply_script_json(arg, reply, err, lists);
}

static void list_agents(struct http_req *r)
{
    const char *cursor = http_query(r, "cursor");
    const char *limit_s = http_query(r, "limit");
    long limit = 100;
    if (cursor && !name_is_valid(cursor, 64)) {
        http_reply_error(r, 400, "invalid_field", "cursor: not a cursor from a previous page");
        return;
    }
    if (limit_s) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || limit < 1 || limit > AGENT_PAGE_MAX) {
            http_reply_error(r, 400, "invalid_field", "limit: must be 1-%d", AGENT_PAGE_MAX);
            return;
        }
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *argv[3] = {"list", cursor ? cursor : "", lim};
    if (store_script(SCRIPT_AGENT_READ, 3, argv, NULL, list_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void delete_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (!err)
        http_reply_raw(r, 204, "application/json", "", 0);
    else
        api_reply_script_error(r, err);
}

static void delete_agent(struct http_req *r)
{
    const char *argv[1] = {r->params[0]};
    if (!name_is_valid(r->params[0], 64)) {
        http_reply_error(r, 404, "not_found", "no agent with that id");
        return;
    }
    if (store_script(SCRIPT_AGENT_DELETE, 1, argv, NULL, delete_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void state_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    http_reply_json(r, 200, json_pack("{s:s,s:s,s:I}", "id", r->params[0], "presence",
                                      reply->element[0]->str, "offers",
                                      (json_int_t)reply->element[1]->integer));
}

static void put_state(struct http_req *r)
{
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    json_t *st = json_object_get(body, "state");
    json_t *reason = json_object_get(body, "reason");
    const char *s = json_string_value(st);
    const char *why = NULL;
    if (!s || (strcmp(s, "available") != 0 && strcmp(s, "away") != 0 && strcmp(s, "offline") != 0))
        why = "state: must be available, away or offline";
    else if (reason && !json_is_null(reason) &&
             (!json_is_string(reason) || !name_is_valid(json_string_value(reason), 64)))
        why = "reason: a short code (letters, digits, _ - . :)";
    else if (json_object_size(body) > (size_t)(1 + (reason ? 1 : 0)))
        why = "only state and reason are allowed";
    if (why || !name_is_valid(r->params[0], 64)) {
        json_decref(body);
        http_reply_error(r, 400, "invalid_field", "%s", why ? why : "agent id");
        return;
    }
    const char *argv[4] = {r->params[0], s, json_is_string(reason) ? json_string_value(reason) : "",
                           r->auth_sha};
    if (store_script(SCRIPT_AGENT_STATE, 4, argv, NULL, state_done, r) < 0)
        http_reply_unavailable(r, store_status());
    json_decref(body);
}

static void token_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        free(r->data);
        r->data = NULL;
        api_reply_script_error(r, err);
        return;
    }
    char *token = r->data;
    r->data = NULL;
    json_t *out = json_pack("{s:s,s:s}", "agent", r->params[0], "token", token);
    free(token);
    http_reply_json(r, 201, out);
}

static void create_token(struct http_req *r)
{
    unsigned char raw[24], md[SHA256_DIGEST_LENGTH];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        http_reply_error(r, 500, "internal", "no randomness");
        return;
    }
    char *token = xmalloc(2 * sizeof(raw) + 5), sha[65];
    memcpy(token, "oat_", 4);
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(token + 4 + 2 * i, 3, "%02x", raw[i]);
    SHA256((unsigned char *)token, strlen(token), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
    r->data = token;
    const char *argv[3] = {r->params[0], "add", sha};
    if (store_script(SCRIPT_AGENT_TOKEN, 3, argv, NULL, token_done, r) < 0) {
        free(token);
        r->data = NULL;
        http_reply_unavailable(r, store_status());
    }
}

static void revoke_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err)
        api_reply_script_error(r, err);
    else
        http_reply_json(r, 200, json_pack("{s:s,s:I}", "agent", r->params[0], "revoked",
                                          (json_int_t)reply->integer));
}

static void revoke_tokens(struct http_req *r)
{
    const char *argv[3] = {r->params[0], "revoke", ""};
    if (store_script(SCRIPT_AGENT_TOKEN, 3, argv, NULL, revoke_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void reservation_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    http_reply_json(r, 200, json_pack("{s:s,s:s,s:s}", "reservation", r->params[0],
                                      "interaction", reply->element[0]->str, "state",
                                      reply->element[1]->str));
}

static void reservation_op(struct http_req *r, const char *op)
{
    if (!id_is_valid(r->params[0], 'R')) {
        http_reply_error(r, 404, "not_found", "no reservation with that id");
        return;
    }
    const char *argv[4] = {r->params[0], op, r->auth_sha, ""};
    if (store_script(SCRIPT_RESERVATION, 4, argv, NULL, reservation_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void accept_reservation(struct http_req *r)
{
    reservation_op(r, "accept");
}

static void reject_reservation(struct http_req *r)
{
    reservation_op(r, "reject");
}

static void stream_auth_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    events_subscribe(r, r->params[0]);
}

static void agent_events(struct http_req *r)
{
    if (!name_is_valid(r->params[0], 64)) {
        http_reply_error(r, 404, "not_found", "no agent with that id");
        return;
    }
    const char *argv[3] = {"auth", r->params[0], r->auth_sha};
    if (store_script(SCRIPT_AGENT_READ, 3, argv, NULL, stream_auth_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void all_events(struct http_req *r)
{
    events_subscribe(r, NULL);
}

const struct http_route api_agents_routes[] = {
    {EVHTTP_REQ_POST, "/v1/agents", HTTP_AUTH_ADMIN, create_agent, "application/json", NULL, false},
    {EVHTTP_REQ_GET, "/v1/agents", HTTP_AUTH_ADMIN, list_agents, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/agents/{id}", HTTP_AUTH_ADMIN, get_agent, NULL, NULL, false},
    {EVHTTP_REQ_PATCH, "/v1/agents/{id}", HTTP_AUTH_ADMIN, patch_agent, "application/json", NULL, false},
    {EVHTTP_REQ_DELETE, "/v1/agents/{id}", HTTP_AUTH_ADMIN, delete_agent, NULL, NULL, false},
    {EVHTTP_REQ_PUT, "/v1/agents/{id}/state", HTTP_AUTH_AGENT, put_state, "application/json", NULL, false},
    {EVHTTP_REQ_POST, "/v1/agents/{id}/tokens", HTTP_AUTH_ADMIN, create_token, NULL, NULL, false},
    {EVHTTP_REQ_DELETE, "/v1/agents/{id}/tokens", HTTP_AUTH_ADMIN, revoke_tokens, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/agents/{id}/events", HTTP_AUTH_AGENT, agent_events, NULL, "/v1/agents/{id}/events", false},
    {EVHTTP_REQ_GET, "/v1/events", HTTP_AUTH_ADMIN, all_events, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/reservations/{id}/accept", HTTP_AUTH_AGENT, accept_reservation, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/reservations/{id}/reject", HTTP_AUTH_AGENT, reject_reservation, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
