/* api_cases.c - cases: the history every channel reads (paged oldest first with a cursor),
 * close, reopen, notes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/api.h"
#include "omnicc/interaction.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define CASE_PAGE_DEFAULT 50
#define CASE_PAGE_MAX 500
#define NOTE_MAX 8000

static const char *const case_lists[] = {"history", NULL};

static void case_done(const redisReply *reply, const char *err, void *arg)
{
    api_reply_script_json(arg, reply, err, case_lists);
}

static bool stream_id_valid(const char *s)
{
    /* "1700000000000-0" */
    const char *dash = strchr(s, '-');
    if (!dash || dash == s || !dash[1] || strlen(s) > 41)
        return false;
    for (const char *p = s; *p; p++)
        if (p != dash && (*p < '0' || *p > '9'))
            return false;
    return true;
}

static void get_case(struct http_req *r)
{
    if (!id_is_valid(r->params[0], 'C')) {
        http_reply_error(r, 404, "not_found", "no case with that id");
        return;
    }
    const char *cursor = http_query(r, "cursor");
    const char *limit_s = http_query(r, "limit");
    long limit = CASE_PAGE_DEFAULT;
    if (cursor && !stream_id_valid(cursor)) {
        http_reply_error(r, 400, "invalid_field", "cursor: not a cursor from a previous page");
        return;
    }
    if (limit_s) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || limit < 1 || limit > CASE_PAGE_MAX) {
            http_reply_error(r, 400, "invalid_field", "limit: must be 1-%d", CASE_PAGE_MAX);
            return;
        }
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *argv[3] = {r->params[0], cursor ? cursor : "", lim};
    if (store_script(SCRIPT_GET_CASE, 3, argv, NULL, case_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void update_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    json_t *out = json_pack("{s:s,s:s}", "id", reply->element[0]->str, "status",
                            reply->element[1]->str);
    if (reply->element[2]->len)
        json_object_set_new(out, "history_id", json_string(reply->element[2]->str));
    http_reply_json(r, 200, out);
}

static void case_action(struct http_req *r, const char *action, bool text_required)
{
    if (!id_is_valid(r->params[0], 'C')) {
        http_reply_error(r, 404, "not_found", "no case with that id");
        return;
    }
    char *text = NULL, *author = NULL;
    if (r->body_len > 0 || text_required) {
        json_t *obj = http_body_json_object(r);
        if (!obj)
            return;
        const char *field = text_required ? "text" : "reason";
        json_t *t = json_object_get(obj, field);
        json_t *a = json_object_get(obj, "author");
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
            if (strcmp(key, field) != 0 && strcmp(key, "author") != 0) {
                http_reply_error(r, 400, "invalid_field", "%.40s: unknown field", key);
                json_decref(obj); /* owns key: only after the reply is formatted */
                return;
            }
        }
        if ((t && !json_is_string(t)) || (text_required && (!t || !json_string_length(t))) ||
            (t && (json_string_length(t) > NOTE_MAX ||
                   !text_is_clean_utf8(json_string_value(t), json_string_length(t))))) {
            json_decref(obj);
            http_reply_error(r, 400, "invalid_field", "%s: %s text of at most %d bytes", field,
                             text_required ? "required," : "optional", NOTE_MAX);
            return;
        }
        if (a && (!json_is_string(a) || !name_is_valid(json_string_value(a), 64))) {
            json_decref(obj);
            http_reply_error(r, 400, "invalid_field", "author: letters, digits, _ - . : only");
            return;
        }
        text = t ? xstrdup(json_string_value(t)) : NULL;
        author = a ? xstrdup(json_string_value(a)) : NULL;
        json_decref(obj);
    }
    const char *argv[4] = {r->params[0], action, text ? text : "", author ? author : "admin"};
    if (store_script(SCRIPT_CASE_UPDATE, 4, argv, NULL, update_done, r) < 0)
        http_reply_unavailable(r, store_status());
    free(text);
    free(author);
}

static void close_case(struct http_req *r)
{
    case_action(r, "close", false);
}

static void reopen_case(struct http_req *r)
{
    case_action(r, "reopen", false);
}

static void note_auth_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err)
        api_reply_script_error(r, err);
    else
        case_action(r, "note", true);
}

/* The admin token, or an agent's token writing as itself: "author" must be that agent's id
 * (checked against the token's hash before the note is written). */
static void note_case(struct http_req *r)
{
    if (r->is_admin) {
        case_action(r, "note", true);
        return;
    }
    json_t *obj = json_loadb(r->body, r->body_len, 0, NULL);
    const char *author = json_string_value(json_object_get(obj, "author"));
    if (!author || !name_is_valid(author, 64)) {
        json_decref(obj);
        http_reply_error(r, 400, "invalid_field", "author: required with an agent token: your agent id");
        return;
    }
    const char *argv[3] = {"auth", author, r->auth_sha};
    int rc = store_script(SCRIPT_AGENT_READ, 3, argv, NULL, note_auth_done, r);
    json_decref(obj);
    if (rc < 0)
        http_reply_unavailable(r, store_status());
}

const struct http_route api_cases_routes[] = {
    {EVHTTP_REQ_GET, "/v1/cases/{id}", HTTP_AUTH_ADMIN, get_case, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/close", HTTP_AUTH_ADMIN, close_case, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/reopen", HTTP_AUTH_ADMIN, reopen_case, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/cases/{id}/notes", HTTP_AUTH_AGENT, note_case, "application/json", NULL,
     false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
