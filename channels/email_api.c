/* email_api.c - the email channel's HTTP routes and its struct channel:
 *
 *   POST /v1/email/inbound[?mailbox=NAME]   one raw RFC 5322 message (an MTA pipe transport,
 *        an inbound-parse service): the [email] inbound_token or the admin token; at most
 *        [email] max_message bytes. 202 stored, 200 duplicate or delivery status notification.
 *   POST /v1/interactions/{id}/reply         {"body": "...", "cc": ["..."], "attachments": [{"filename",
 *        "content_type", "content_base64"} | {"sha256"}]}: the agent holding the interaction
 *        (its own token) or an admin. 202 once the message is on the outbox stream.
 *
 * Replies and acknowledgements are queued by one email_reply.lua call each; the Message-ID
 * is made here so the caller learns it at once. */
#include <event2/http.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "email.h"
#include "omnicc/api.h"
#include "omnicc/attachments.h"
#include "omnicc/channel.h"
#include "omnicc/config.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/metrics.h"
#include "omnicc/store.h"
#include "omnicc/util.h"


/* ---- POST /v1/email/inbound ---- */

static bool inbound_authorised(struct http_req *r)
{
    const struct config *cfg = api_config();
    const char *h = r->req ? evhttp_find_header(evhttp_request_get_input_headers(r->req),
                                                "Authorization")
                           : NULL;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    const char *tokens[2] = {cfg->api_token_value, cfg->email_inbound_token};
    for (int i = 0; i < 2; i++)
        if (tokens[i] && secure_equals(h, strlen(h), tokens[i], strlen(tokens[i])))
            return true;
    return false;
}

static void inbound_done(const struct email_ingest_result *res, void *arg)
{
    struct http_req *r = arg;
    switch (res->outcome) {
    case EMAIL_STORED:
    case EMAIL_DUPLICATE: {
        json_t *out = json_pack("{s:s,s:s,s:s,s:b}", "id", res->ix->id, "case_id",
                                res->ix->case_id, "customer_id", res->ix->customer_id,
                                "duplicate", res->ix->duplicate);
        if (!res->ix->duplicate)
            metrics_ingest_latency(monotonic_ms() - r->started_ms);
        http_reply_json(r, res->outcome == EMAIL_STORED ? 202 : 200, out);
        break;
    }
    case EMAIL_DSN:
        http_reply_json(r, 200, json_pack("{s:s,s:s,s:s}", "dsn", res->dsn_match, "case_id",
                                          res->dsn_case, "note",
                                          "delivery status notification: recorded, not a new case"));
        break;
    case EMAIL_REJECTED:
        http_reply_error(r, res->status, res->status == 413 ? "too_large" : "invalid_message", "%s",
                         res->error ? res->error : "unreadable message");
        break;
    case EMAIL_FAILED:
        http_reply_unavailable(r, res->error);
        break;
    }
}

static void post_inbound(struct http_req *r)
{
    const struct config *cfg = api_config();
    if (!inbound_authorised(r)) {
        if (r->req)
            evhttp_add_header(evhttp_request_get_output_headers(r->req), "WWW-Authenticate",
                              "Bearer realm=\"omnicc\"");
        http_reply_error(r, 401, "unauthorized", "missing or wrong bearer token");
        return;
    }
    if ((long long)r->body_len > cfg->email_max_message) {
        http_reply_error(r, 413, "too_large", "message larger than %lld bytes",
                         cfg->email_max_message);
        return;
    }
    const struct mailbox_conf *mb = NULL;
    const char *name = http_query(r, "mailbox");
    if (name && !(mb = config_mailbox(cfg, name))) {
        http_reply_error(r, 400, "invalid_field", "mailbox: no [mailbox %.64s] configured", name);
        return;
    }
    email_ingest_raw(cfg, mb, r->body, r->body_len, inbound_done, r);
}

/* ---- replies ---- */

static const char *domain_of(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at && at[1] ? at + 1 : NULL;
}

static const char *msgid_domain(const struct config *cfg, const struct mailbox_conf *mb)
{
    if (cfg->email_msgid_domain)
        return cfg->email_msgid_domain;
    if (mb && domain_of(mb->address))
        return domain_of(mb->address);
    if (domain_of(cfg->email_from_address))
        return domain_of(cfg->email_from_address);
    for (int i = 0; i < cfg->n_mailboxes; i++)
        if (domain_of(cfg->mailboxes[i]->address))
            return domain_of(cfg->mailboxes[i]->address);
    return "omnicc.invalid";
}

static int queue_reply(const char *ix_id, const char *sha, json_t *args, store_cb *cb, void *arg)
{
    char *text = json_dumps(args, JSON_COMPACT);
    const char *argv[3] = {ix_id, sha, text};
    int rc = store_script(SCRIPT_EMAIL_REPLY, 3, argv, NULL, cb, arg);
    free(text);
    return rc;
}

static void ack_queued(const redisReply *reply, const char *err, void *arg)
{
    char *ix_id = arg;
    if (err)
        log_warn("email: %s: acknowledgement not queued: %s", ix_id, err);
    else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 && reply->element[0]->len)
        email_outbox_kick();
    else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2)
        log_debug("email: %s: no acknowledgement (%s)", ix_id, reply->element[1]->str);
    free(ix_id);
}

void email_queue_ack(const struct config *cfg, const struct mailbox_conf *mb, const char *ix_id,
                     const char *case_id)
{
    /* {case} in the configured text becomes the case id */
    const char *t = mb->ack_text;
    size_t cap = strlen(t) + 16 * strlen(case_id) + 1, n = 0;
    char *body = xmalloc(cap);
    for (const char *p = t; *p && n + strlen(case_id) + 1 < cap;) {
        if (strncmp(p, "{case}", 6) == 0) {
            memcpy(body + n, case_id, strlen(case_id));
            n += strlen(case_id);
            p += 6;
        } else {
            body[n++] = *p++;
        }
    }
    body[n] = '\0';
    char *mid = email_new_message_id(msgid_domain(cfg, mb));
    json_t *args = json_pack("{s:s,s:s,s:s,s:i,s:[]}", "mode", "ack", "body", body, "message_id",
                             mid, "ack_rate", mb->ack_rate_seconds, "attachments");
    char *id = xstrdup(ix_id);
    if (queue_reply(ix_id, "", args, ack_queued, id) < 0) {
        log_warn("email: %s: acknowledgement not queued: %s", ix_id, store_status());
        free(id);
    }
    json_decref(args);
    free(mid);
    free(body);
}

struct transcript_req {
    char *ix_id;
    email_transcript_cb *done;
    void *arg;
};

static void transcript_queued(const redisReply *reply, const char *err, void *arg)
{
    struct transcript_req *t = arg;
    const char *outcome = "unavailable";
    if (err) {
        log_warn("email: %s: chat transcript not queued: %s", t->ix_id, err);
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 && reply->element[0]->len) {
        email_outbox_kick();
        outcome = "requested";
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
               reply->element[1]->type == REDIS_REPLY_STRING) {
        const char *why = reply->element[1]->str;
        log_debug("email: %s: no chat transcript (%s)", t->ix_id, why);
        /* sent once per session: asking again is answered as the first time */
        outcome = strcmp(why, "already_sent") == 0 ? "requested"
                  : strcmp(why, "no_email") == 0   ? "no_email"
                  : strcmp(why, "automatic") == 0  ? "automatic"
                                                   : "unavailable";
    }
    if (t->done)
        t->done(outcome, t->arg);
    free(t->ix_id);
    free(t);
}

int email_queue_transcript(const struct config *cfg, const char *ix_id, const char *session,
                           email_transcript_cb *done, void *arg)
{
    const char *from = cfg->email_from_address;
    for (int i = 0; (!from || !*from) && i < cfg->n_mailboxes; i++)
        from = cfg->mailboxes[i]->address;
    if (!cfg->email_smtp_url || !*cfg->email_smtp_url || !from || !*from)
        return -1;
    char *mid = email_new_message_id(msgid_domain(cfg, NULL));
    json_t *args = json_pack("{s:s,s:s,s:s,s:s,s:s,s:[]}", "mode", "transcript", "session", session,
                             "message_id", mid, "from", from, "from_name",
                             cfg->email_from_name ? cfg->email_from_name : "", "attachments");
    struct transcript_req *t = xmalloc(sizeof(*t));
    t->ix_id = xstrdup(ix_id);
    t->done = done;
    t->arg = arg;
    int rc = queue_reply(ix_id, "", args, transcript_queued, t);
    if (rc < 0) {
        log_warn("email: %s: chat transcript not queued: %s", ix_id, store_status());
        free(t->ix_id);
        free(t);
    }
    json_decref(args);
    free(mid);
    return rc;
}

static void reply_queued(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        http_reply_error(r, 500, "internal", "unexpected storage reply");
        return;
    }
    email_outbox_kick();
    http_reply_json(r, 202, json_pack("{s:s,s:s}", "message_id", reply->element[0]->str,
                                      "status", "queued"));
}

static unsigned char *base64_decode(const char *in, size_t inlen, size_t *outlen)
{
    unsigned char *out = xmalloc(inlen / 4 * 3 + 4);
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    int n1 = 0, n2 = 0;
    EVP_DecodeInit(ctx);
    if (EVP_DecodeUpdate(ctx, out, &n1, (const unsigned char *)in, (int)inlen) < 0 ||
        EVP_DecodeFinal(ctx, out + n1, &n2) < 0) {
        EVP_ENCODE_CTX_free(ctx);
        free(out);
        return NULL;
    }
    EVP_ENCODE_CTX_free(ctx);
    *outlen = (size_t)(n1 + n2);
    return out;
}

static bool plain_text(const char *s, size_t max, const char *forbidden)
{
    return s && *s && strlen(s) <= max && text_is_clean_utf8(s, strlen(s)) &&
           !strpbrk(s, forbidden);
}

/* Each attachment into the store; returns the list for the job, or NULL after replying 400. */
static json_t *reply_attachments(struct http_req *r, json_t *list)
{
    const struct config *cfg = api_config();
    json_t *out = json_array();
    if (!list)
        return out;
    if (!json_is_array(list) || (int)json_array_size(list) > cfg->email_max_attachments) {
        http_reply_error(r, 400, "invalid_field", "attachments: an array of at most %d",
                         cfg->email_max_attachments);
        json_decref(out);
        return NULL;
    }
    size_t i;
    json_t *a;
    long long total = 0;
    json_array_foreach(list, i, a)
    {
        const char *sha = json_string_value(json_object_get(a, "sha256"));
        const char *fname = json_string_value(json_object_get(a, "filename"));
        const char *ctype = json_string_value(json_object_get(a, "content_type"));
        const char *b64 = json_string_value(json_object_get(a, "content_base64"));
        const char *why = NULL;
        char stored[65];
        char *meta_type = NULL, *meta_name = NULL;
        if ((fname && !plain_text(fname, 200, "\r\n\t\"/\\")) ||
            (ctype && (!plain_text(ctype, 100, "\r\n\t\"\\;, ") || !strchr(ctype, '/'))))
            why = "filename and content_type: plain text (type/subtype)";
        else if (sha && !b64) {
            size_t len = 0;
            unsigned char *d = attachment_get(cfg->state_dir, sha, (size_t)cfg->email_max_attachment,
                                              &len, &meta_type, &meta_name);
            if (!d)
                why = "sha256: no stored attachment with that hash (or too large)";
            else
                snprintf(stored, sizeof(stored), "%s", sha);
            total += (long long)len;
            free(d);
        } else if (b64 && !sha) {
            size_t len = 0;
            unsigned char *d = base64_decode(b64, strlen(b64), &len);
            char *err = NULL;
            if (!d)
                why = "content_base64: not base64";
            else if ((long long)len > cfg->email_max_attachment)
                why = "larger than [email] max_attachment";
            else if (attachment_put(cfg->state_dir, d, len, NULL, ctype, fname, stored, &err) < 0) {
                log_error("email: reply attachment: %s", err);
                why = "cannot be stored";
            }
            total += (long long)len;
            free(err);
            free(d);
        } else {
            why = "give content_base64 or sha256";
        }
        if (!why && total > cfg->email_max_attachments_total)
            why = "all together larger than [email] max_attachments_total";
        if (why) {
            http_reply_error(r, 400, "invalid_field", "attachments[%zu]: %s", i, why);
            free(meta_type);
            free(meta_name);
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, json_pack("{s:s,s:s,s:s}", "sha256", stored, "filename",
                                             fname ? fname : meta_name ? meta_name : "attachment",
                                             "content_type",
                                             ctype ? ctype : meta_type ? meta_type : "application/octet-stream"));
        free(meta_type);
        free(meta_name);
    }
    return out;
}

#define REPLY_CC_MAX 10

/* One plain address, local@domain: printable ASCII without spaces, quotes, brackets or
 * separators, so it can go into the Cc header and the RCPT command as it is. */
static bool plain_address(const char *a)
{
    size_t n = a ? strlen(a) : 0;
    const char *at = a ? strchr(a, '@') : NULL;
    if (n < 3 || n > 254 || !at || at == a || !at[1] || strchr(at + 1, '@') ||
        !strchr(at + 1, '.') || at[strlen(at) - 1] == '.')
        return false;
    for (const char *p = a; *p; p++)
        if (*p <= ' ' || *p >= 127 || strchr("<>()[],;:\\\"", *p))
            return false;
    return true;
}

static bool reply_cc_valid(json_t *cc)
{
    if (!json_is_array(cc) || json_array_size(cc) > REPLY_CC_MAX)
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(cc, i, v)
    {
        if (!json_is_string(v) || !plain_address(json_string_value(v)))
            return false;
    }
    return true;
}

static void post_reply(struct http_req *r)
{
    const struct config *cfg = api_config();
    if (!id_is_valid(r->params[0], 'I')) {
        http_reply_error(r, 404, "not_found", "no interaction with that id");
        return;
    }
    json_t *obj = http_body_json_object(r);
    if (!obj)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (strcmp(k, "body") != 0 && strcmp(k, "attachments") != 0 && strcmp(k, "cc") != 0) {
            http_reply_error(r, 400, "invalid_field", "%.40s: unknown field", k);
            json_decref(obj);
            return;
        }
    }
    json_t *body = json_object_get(obj, "body");
    if (!json_is_string(body) || json_string_length(body) == 0 ||
        json_string_length(body) > EMAIL_REPLY_BODY_MAX ||
        !text_is_clean_utf8(json_string_value(body), json_string_length(body))) {
        http_reply_error(r, 400, "invalid_field", "body: required text of at most %d bytes",
                         EMAIL_REPLY_BODY_MAX);
        json_decref(obj);
        return;
    }
    json_t *cc = json_object_get(obj, "cc");
    if (cc && !json_is_null(cc) && !reply_cc_valid(cc)) {
        http_reply_error(r, 400, "invalid_field",
                         "cc: an array of at most %d email addresses (local@domain)", REPLY_CC_MAX);
        json_decref(obj);
        return;
    }
    json_t *att = reply_attachments(r, json_object_get(obj, "attachments"));
    if (!att) {
        json_decref(obj);
        return;
    }
    char *mid = email_new_message_id(msgid_domain(cfg, NULL));
    json_t *args = json_pack("{s:s,s:O,s:s,s:o}", "mode", "agent", "body", body, "message_id", mid,
                             "attachments", att);
    if (json_is_array(cc) && json_array_size(cc) > 0)
        json_object_set(args, "cc", cc);
    if (queue_reply(r->params[0], r->auth_sha, args, reply_queued, r) < 0)
        http_reply_unavailable(r, store_status());
    json_decref(args);
    json_decref(obj);
    free(mid);
}

static const struct http_route email_routes[] = {
    {EVHTTP_REQ_POST, "/v1/email/inbound", HTTP_AUTH_NONE, post_inbound, NULL, NULL, true},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/reply", HTTP_AUTH_AGENT, post_reply,
     "application/json", NULL, true},
    {0, NULL, 0, NULL, NULL, NULL, false},
};

/* ---- the channel ---- */

static int email_start(struct event_base *base, const struct config *cfg, char **err)
{
    email_mime_init();
    if (email_outbox_start(base, cfg, err) < 0)
        return -1;
    return email_imap_start(base, cfg, err);
}

static void email_stop(void)
{
    email_imap_stop();
    email_outbox_stop();
}

const struct channel email_channel = {
    .name = "email",
    .routes = email_routes,
    .start = email_start,
    .stop = email_stop,
};
