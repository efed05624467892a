/* email_api.c - the email channel's HTTP routes and its struct channel:
 *
 *   POST /v1/email/inbound[?mailbox=NAME]   one raw RFC 5322 message (an MTA pipe transport,
 *        an inbound-parse service): the [email] inbound_token or the admin token; at most
 *        [email] max_message bytes. 202 stored, 200 duplicate or delivery status notification.
 *   POST /v1/interactions/{id}/reply         {"body": "...", "cc": ["..."], "attachments": [{"filename",
 *        "content_type", "content_base64"} | {"sha256"}]}: the agent holding the interaction
 *        (its own token) or an admin. 202 once the attachments are durably stored (off the
 *        loop, filestore.h) and the message is on the outbox stream.
 *
 * Replies and acknowledgements are queued by one email_reply.lua call each; the Message-ID
 * is made here so the caller learns it at once. */
#include <ctype.h>
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
#include "omnicc/filestore.h"
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
    bool duplicate = strcmp(reply->element[1]->str ? reply->element[1]->str : "", "duplicate") == 0;
    if (!duplicate)
        email_outbox_kick();
    http_reply_json(r, duplicate ? 200 : 202,
                    json_pack("{s:s,s:s,s:b}", "message_id", reply->element[0]->str, "status",
                              "queued", "duplicate", duplicate));
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

/* ---- an agent's reply: its attachments checked and stored by one job on the file store's
 * workers (decoded, each written to a temporary file, fsynced, renamed, directory fsynced;
 * references by sha256 looked up), and only then the reply queued and answered 202. A 4xx
 * answer stores nothing. ---- */

struct reply_att {
    json_t *spec; /* the request's object: read by the worker, untouched by the loop meanwhile */
    char sha[65];
    char *filename, *content_type; /* as given, or from the stored sidecar */
    long long len;
};

struct reply_job {
    struct http_req *r;
    json_t *obj; /* the request body, kept for body and the specs */
    char *state_dir;
    long long max_att, max_total;
    size_t n;
    struct reply_att *att;
    char *bad;  /* a 400 message for the agent */
    char *fail; /* a storage failure: 503 */
};

static void reply_job_free(struct reply_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->att[i].filename);
        free(j->att[i].content_type);
    }
    free(j->att);
    json_decref(j->obj);
    free(j->state_dir);
    free(j->bad);
    free(j->fail);
    free(j);
}

/* Worker thread: first every check (nothing is written when one fails), then the writes. */
static void reply_store(void *arg)
{
    struct reply_job *j = arg;
    unsigned char **data = xcalloc(j->n ? j->n : 1, sizeof(*data));
    long long total = 0;
    for (size_t i = 0; i < j->n && !j->bad; i++) {
        struct reply_att *a = &j->att[i];
        const char *sha = json_string_value(json_object_get(a->spec, "sha256"));
        const char *b64 = json_string_value(json_object_get(a->spec, "content_base64"));
        size_t len = 0;
        if (sha) {
            char *ct = NULL, *fn = NULL;
            unsigned char *d = attachment_get(j->state_dir, sha, (size_t)j->max_att, &len, &ct, &fn);
            if (!d) {
                j->bad = xasprintf("attachments[%zu]: sha256: no stored attachment with that hash "
                                   "(or too large)", i);
            } else {
                snprintf(a->sha, sizeof(a->sha), "%s", sha);
                if (!a->filename)
                    a->filename = fn ? fn : xstrdup("attachment");
                else
                    free(fn);
                if (!a->content_type)
                    a->content_type = ct ? ct : xstrdup("application/octet-stream");
                else
                    free(ct);
            }
            free(d);
        } else {
            data[i] = base64_decode(b64, strlen(b64), &len);
            if (!data[i])
                j->bad = xasprintf("attachments[%zu]: content_base64: not base64", i);
            else if ((long long)len > j->max_att)
                j->bad = xasprintf("attachments[%zu]: larger than [email] max_attachment", i);
        }
        a->len = (long long)len;
        total += (long long)len;
        if (!j->bad && total > j->max_total)
            j->bad = xasprintf("attachments[%zu]: all together larger than [email] "
                               "max_attachments_total", i);
    }
    for (size_t i = 0; i < j->n && !j->bad && !j->fail; i++) {
        struct reply_att *a = &j->att[i];
        if (!data[i])
            continue;
        char *err = NULL;
        if (attachment_put(j->state_dir, data[i], (size_t)a->len, NULL, a->content_type,
                           a->filename, a->sha, &err) < 0)
            j->fail = err ? err : xstrdup("cannot store");
        else
            free(err);
    }
    for (size_t i = 0; i < j->n; i++)
        free(data[i]);
    free(data);
}

/* Loop thread, once the job has run (or the pool stopped first). */
static void reply_stored(void *arg, bool ran)
{
    struct reply_job *j = arg;
    struct http_req *r = j->r;
    const struct config *cfg = api_config();
    if (!ran || j->fail) {
        log_error("email: %s: reply attachments not stored: %s", r->params[0],
                  ran ? j->fail : "shutting down");
        http_reply_unavailable(r, "cannot store the attachments");
        reply_job_free(j);
        return;
    }
    if (j->bad) {
        http_reply_error(r, 400, "invalid_field", "%s", j->bad);
        reply_job_free(j);
        return;
    }
    json_t *att = json_array();
    for (size_t i = 0; i < j->n; i++)
        json_array_append_new(att, json_pack("{s:s,s:s,s:s}", "sha256", j->att[i].sha, "filename",
                                             j->att[i].filename, "content_type",
                                             j->att[i].content_type));
    char *mid = email_new_message_id(msgid_domain(cfg, NULL));
    json_t *args = json_pack("{s:s,s:O,s:s,s:o}", "mode", "agent", "body",
                             json_object_get(j->obj, "body"), "message_id", mid, "attachments", att);
    json_t *cc = json_object_get(j->obj, "cc");
    if (json_is_array(cc) && json_array_size(cc) > 0)
        json_object_set(args, "cc", cc);
    json_t *cid = json_object_get(j->obj, "client_id");
    if (json_is_string(cid))
        json_object_set(args, "client_id", cid);
    if (queue_reply(r->params[0], r->auth_sha, args, reply_queued, r) < 0)
        http_reply_unavailable(r, store_status());
    json_decref(args);
    free(mid);
    reply_job_free(j);
}

/* What can be checked without the disk; a job with one entry per attachment, or NULL after
 * replying 400. */
static struct reply_job *reply_job_new(struct http_req *r, json_t *obj)
{
    const struct config *cfg = api_config();
    json_t *list = json_object_get(obj, "attachments");
    if (list && (!json_is_array(list) || (int)json_array_size(list) > cfg->email_max_attachments)) {
        http_reply_error(r, 400, "invalid_field", "attachments: an array of at most %d",
                         cfg->email_max_attachments);
        return NULL;
    }
    struct reply_job *j = xcalloc(1, sizeof(*j));
    j->r = r;
    j->obj = json_incref(obj);
    j->state_dir = xstrdup(cfg->state_dir);
    j->max_att = cfg->email_max_attachment;
    j->max_total = cfg->email_max_attachments_total;
    j->n = list ? json_array_size(list) : 0;
    j->att = xcalloc(j->n ? j->n : 1, sizeof(*j->att));
    for (size_t i = 0; i < j->n; i++) {
        json_t *a = json_array_get(list, i);
        const char *sha = json_string_value(json_object_get(a, "sha256"));
        const char *fname = json_string_value(json_object_get(a, "filename"));
        const char *ctype = json_string_value(json_object_get(a, "content_type"));
        const char *b64 = json_string_value(json_object_get(a, "content_base64"));
        const char *why = NULL;
        if (!json_is_object(a) || (!sha == !b64))
            why = "give content_base64 or sha256";
        else if ((fname && !plain_text(fname, 200, "\r\n\t\"/\\")) ||
                 (ctype && (!plain_text(ctype, 100, "\r\n\t\"\\;, ") || !strchr(ctype, '/'))))
            why = "filename and content_type: plain text (type/subtype)";
        else if (sha && !attachment_sha_valid(sha))
            why = "sha256: no stored attachment with that hash (or too large)";
        else if (b64 && (long long)(strlen(b64) / 4 * 3) > cfg->email_max_attachment + 3)
            why = "larger than [email] max_attachment";
        if (why) {
            http_reply_error(r, 400, "invalid_field", "attachments[%zu]: %s", i, why);
            reply_job_free(j);
            return NULL;
        }
        j->att[i].spec = a;
        j->att[i].filename = fname ? xstrdup(fname) : b64 ? xstrdup("attachment") : NULL;
        j->att[i].content_type = ctype ? xstrdup(ctype)
                                 : b64 ? xstrdup("application/octet-stream")
                                       : NULL;
    }
    return j;
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

/* A reply's client_id: the desktop's id for one message the agent wrote. */
static bool client_id_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 8 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("_-.", s[i]))
            return false;
    return true;
}

static void post_reply(struct http_req *r)
{
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
        if (strcmp(k, "body") != 0 && strcmp(k, "attachments") != 0 && strcmp(k, "cc") != 0 &&
            strcmp(k, "client_id") != 0) {
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
    json_t *cid = json_object_get(obj, "client_id");
    if (cid && !client_id_valid(json_string_value(cid))) {
        http_reply_error(r, 400, "invalid_field",
                         "client_id: 8 to 64 letters, digits, _ - . (one per message written)");
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
    struct reply_job *j = reply_job_new(r, obj);
    json_decref(obj);
    if (!j)
        return;
    if (filestore_run(reply_store, reply_stored, j) < 0) {
        http_reply_unavailable(r, "the file store is busy or stopped");
        reply_job_free(j);
    }
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
