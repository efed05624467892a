/* email_ingest.c - one raw message into omnicc, the same way for the IMAP pollers and
 * POST /v1/email/inbound: parse (email_mime.c), keep the raw message and its attachments in
 * the content-addressed store, then exactly one script call:
 *
 *   - a delivery status notification (or anything from MAILER-DAEMON) -> email_dsn.lua:
 *     recorded on the case of the message it reports on; never an interaction or a case;
 *   - anything else -> the ingest script, as an interaction whose external id is the
 *     Message-ID (or a hash of the content), with the threading hints the script resolves
 *     in the same call (metadata.thread: In-Reply-To/References against msgid:<id>, the
 *     [#C-n] subject token, the claims+C-n@ plus-address).
 *
 * The files are written (and fsynced, off the loop thread: filestore.h) before Redis is
 * asked: a message is acknowledged (IMAP flag or move, HTTP 2xx) only once both hold it. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "email.h"
#include "fax.h"
#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define HISTORY_TEXT_MAX 4000

struct pending {
    const struct config *cfg;
    const struct mailbox_conf *mb;
    email_ingest_done_fn *cb;
    void *arg;
    bool may_ack;
    /* while the files are written (filestore.h): the parsed message and the caller's raw
     * bytes, both lent to the file store one document at a time */
    struct email_msg m;
    const char *raw;
    size_t len;
    size_t next_att; /* m.n_att: the raw message itself */
    char raw_sha[65];
};

struct email_limits email_limits_of(const struct config *cfg)
{
    struct email_limits l = {
        .max_message = (size_t)cfg->email_max_message,
        .max_attachment = (size_t)cfg->email_max_attachment,
        .max_total = (size_t)cfg->email_max_attachments_total,
        .max_attachments = cfg->email_max_attachments,
    };
    return l;
}

static void finish(email_ingest_done_fn *cb, void *arg, enum email_outcome o, int status,
                   const char *error)
{
    struct email_ingest_result res = {.outcome = o, .status = status, .error = error};
    cb(&res, arg);
}

/* ---- delivery status notifications ---- */

static void dsn_done(const redisReply *reply, const char *err, void *arg)
{
    struct pending *p = arg;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        finish(p->cb, p->arg, EMAIL_FAILED, 503, err ? err : "unexpected storage reply");
    } else {
        struct email_ingest_result res = {.outcome = EMAIL_DSN,
                                          .status = 200,
                                          .dsn_match = reply->element[0]->str,
                                          .dsn_case = reply->element[1]->str};
        log_info("email: delivery status notification: %s %s", res.dsn_match, res.dsn_case);
        p->cb(&res, p->arg);
    }
    free(p);
}

static bool is_bounce(const struct email_msg *m)
{
    return m->is_dsn || (m->from.addr && strncasecmp(m->from.addr, "mailer-daemon@", 14) == 0);
}

static void submit_dsn(struct pending *p, const struct email_msg *m)
{
    json_t *d = json_pack("{s:s}", "dsn_id", m->external_id);
    struct {
        const char *k, *v;
    } f[] = {{"original", m->dsn.original_message_id}, {"action", m->dsn.action},
             {"status", m->dsn.status},                {"recipient", m->dsn.recipient},
             {"diagnostic", m->dsn.diagnostic}};
    for (size_t i = 0; i < ARRAY_SIZE(f); i++)
        if (f[i].v)
            json_object_set_new(d, f[i].k, json_string(f[i].v));
    /* a bounce that is not RFC 3464 still names the message it returns, if anywhere */
    if (!m->dsn.original_message_id && m->in_reply_to)
        json_object_set_new(d, "original", json_string(m->in_reply_to));
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    const char *argv[1] = {text};
    if (store_script(SCRIPT_EMAIL_DSN, 1, argv, NULL, dsn_done, p) < 0) {
        finish(p->cb, p->arg, EMAIL_FAILED, 503, store_status());
        free(p);
    }
    free(text);
}

/* ---- interactions ---- */

static void ingested(const struct ingest_result *res, void *arg)
{
    struct pending *p = arg;
    struct email_ingest_result out = {.ix = res, .status = res->status};
    if (res->status >= 500) {
        out.outcome = EMAIL_FAILED;
        out.error = res->error;
    } else if (res->status >= 400) {
        out.outcome = EMAIL_REJECTED;
        out.error = res->error;
    } else {
        out.outcome = res->duplicate ? EMAIL_DUPLICATE : EMAIL_STORED;
        if (!res->duplicate && p->may_ack && p->mb && strcmp(p->mb->ack_reply, "yes") == 0)
            email_queue_ack(p->cfg, p->mb, res->id, res->case_id);
    }
    p->cb(&out, p->arg);
    free(p);
}

static json_t *addr_list_json(const struct email_addr *a, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n && i < 50; i++)
        json_array_append_new(arr, json_string(a[i].addr));
    return arr;
}

/* What the reply script and the agent desktop need later, and the threading hints. */
static json_t *metadata(const struct config *cfg, const struct mailbox_conf *mb,
                        const struct email_msg *m, const char *raw_sha)
{
    json_t *md = json_object();
    json_object_set_new(md, "mailbox", json_string(mb ? mb->name : ""));
    const char *from = mb && mb->address ? mb->address : cfg->email_from_address;
    const char *from_name = mb && mb->address ? mb->display_name : cfg->email_from_name;
    if (from)
        json_object_set_new(md, "reply_from", json_string(from));
    if (from_name)
        json_object_set_new(md, "reply_from_name", json_string(from_name));
    if (m->message_id)
        json_object_set_new(md, "message_id", json_string(m->message_id));
    json_t *refs = json_array();
    for (size_t i = 0; i < m->n_references; i++)
        json_array_append_new(refs, json_string(m->references[i]));
    json_object_set_new(md, "references", refs);
    json_object_set_new(md, "to", addr_list_json(m->to, m->n_to));
    json_object_set_new(md, "cc", addr_list_json(m->cc, m->n_cc));
    json_object_set_new(md, "reply_to", addr_list_json(m->reply_to, m->n_reply_to));
    if (m->date)
        json_object_set_new(md, "date", json_string(m->date));
    json_t *att = json_array();
    for (size_t i = 0; i < m->n_att; i++)
        json_array_append_new(att, json_pack("{s:s,s:s,s:s,s:I}", "sha256", m->att[i].sha256,
                                             "filename", m->att[i].filename, "content_type",
                                             m->att[i].content_type, "size",
                                             (json_int_t)m->att[i].len));
    json_object_set_new(md, "attachments", att);
    if (m->att_skipped)
        json_object_set_new(md, "attachments_skipped", json_integer(m->att_skipped));
    json_object_set_new(md, "raw_sha256", json_string(raw_sha));
    json_object_set_new(md, "auto_submitted", json_boolean(m->auto_submitted));
    json_object_set_new(md, "bulk", json_boolean(m->bulk));
    json_object_set_new(md, "from_daemon", json_boolean(m->from_daemon));

    /* thread: In-Reply-To first, then References newest first (see ingest.lua) */
    json_t *thread = json_object();
    json_t *trefs = json_array();
    if (m->in_reply_to)
        json_array_append_new(trefs, json_string(m->in_reply_to));
    for (size_t i = m->n_references; i-- > 0;)
        if (!m->in_reply_to || strcmp(m->references[i], m->in_reply_to) != 0)
            json_array_append_new(trefs, json_string(m->references[i]));
    json_object_set_new(thread, "refs", trefs);
    const char *named = m->case_token ? m->case_token : m->plus_case;
    if (named)
        json_object_set_new(thread, "case", json_string(named));
    if (m->message_id)
        json_object_set_new(thread, "msgid", json_string(m->message_id));
    size_t tl = strlen(m->text_trimmed);
    if (tl > HISTORY_TEXT_MAX) {
        tl = HISTORY_TEXT_MAX;
        while (tl > 0 && ((unsigned char)m->text_trimmed[tl] & 0xc0) == 0x80)
            tl--; /* never cut a UTF-8 sequence */
    }
    json_object_set_new(thread, "text", json_stringn(m->text_trimmed, tl));
    json_object_set_new(md, "thread", thread);
    return md;
}

static char *bounded(const char *s, size_t max)
{
    if (!s || !*s)
        return NULL;
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    return xstrndup(s, n);
}

/* A policy number written in the subject ("Claim PL-2024-001234") identifies the customer
 * and picks the case like one given by any other channel. */
static char *policy_in(const char *subject)
{
    char *copy = xstrdup(subject), *save = NULL, *found = NULL;
    for (char *t = strtok_r(copy, " \t,;:()[]#", &save); t && !found;
         t = strtok_r(NULL, " \t,;:()[]#", &save)) {
        char norm[IDENT_MAX];
        const char *why;
        if (strlen(t) >= 6 && identity_policy(t, norm, sizeof(norm), &why) == 0)
            found = xstrdup(norm);
    }
    free(copy);
    return found;
}

static void fill_interaction(const struct config *cfg, const struct mailbox_conf *mb,
                             const struct email_msg *m, const char *raw_sha,
                             struct interaction *ix)
{
    memset(ix, 0, sizeof(*ix));
    ix->channel = CH_EMAIL;
    ix->direction = xstrdup("inbound");
    if (strlen(m->external_id) <= IX_MAX_EXTERNAL_ID) {
        ix->external_id = xstrdup(m->external_id);
    } else {
        /* an absurdly long Message-ID: its hash is as unique and fits the key */
        char sha[65];
        attachment_sha256(m->external_id, strlen(m->external_id), sha);
        ix->external_id = xasprintf("sha256:%s", sha);
    }
    ix->from = bounded(m->from.addr, IX_MAX_ADDRESS);
    const char *to = mb && mb->address ? mb->address : m->n_to ? m->to[0].addr : NULL;
    ix->to = bounded(to, IX_MAX_ADDRESS);
    ix->subject = bounded(m->subject, IX_MAX_SUBJECT);
    if (*m->text)
        ix->body = xstrdup(m->text);
    else if (m->n_att)
        ix->body = xasprintf("(no text; %zu attachment%s)", m->n_att, m->n_att == 1 ? "" : "s");
    ix->customer_name = bounded(m->from.name, IX_MAX_NAME);
    char norm[IDENT_MAX];
    const char *why;
    if (m->from.addr && identity_email(m->from.addr, norm, sizeof(norm), &why) == 0)
        ix->ident[IDENT_EMAIL] = xstrdup(norm);
    ix->ident[IDENT_POLICY] = policy_in(m->subject);
    if (mb && mb->queue)
        ix->queue = xstrdup(mb->queue);
    json_t *md = metadata(cfg, mb, m, raw_sha);
    ix->metadata = json_dumps(md, JSON_COMPACT);
    json_decref(md);
}

/* ---- the files: each attachment, then the raw message, written and fsynced off the loop
 * thread one after the other; the script is called (and so the message acknowledged) only
 * once all of them are durably stored ---- */

static void store_next(struct pending *p);

static void store_failed(struct pending *p, const char *err)
{
    log_error("email: cannot store attachments: %s", err);
    finish(p->cb, p->arg, EMAIL_FAILED, 503, "cannot store attachments");
    email_msg_free(&p->m);
    free(p);
}

static void stored(void *arg, const char *sha, const char *err)
{
    struct pending *p = arg;
    if (err) {
        store_failed(p, err);
        return;
    }
    if (p->next_att == p->m.n_att)
        snprintf(p->raw_sha, sizeof(p->raw_sha), "%s", sha);
    p->next_att++;
    store_next(p);
}

static void store_next(struct pending *p)
{
    int rc;
    if (p->next_att < p->m.n_att) {
        const struct email_attachment *a = &p->m.att[p->next_att];
        rc = attachment_put_async(p->cfg->state_dir, a->data, a->len, a->sha256, a->content_type,
                                  a->filename, stored, p);
    } else if (p->next_att == p->m.n_att) {
        rc = attachment_put_async(p->cfg->state_dir, p->raw, p->len, NULL, NULL, NULL, stored, p);
    } else {
        struct interaction ix;
        fill_interaction(p->cfg, p->mb, &p->m, p->raw_sha, &ix);
        email_msg_free(&p->m);
        p->raw = NULL; /* the caller's again */
        ingest_submit(p->cfg, &ix, ingested, p);
        ix_free(&ix);
        return;
    }
    if (rc < 0)
        store_failed(p, "the file store is busy or stopped");
}

void email_ingest_raw(const struct config *cfg, const struct mailbox_conf *mb, const char *raw,
                      size_t len, email_ingest_done_fn *cb, void *arg)
{
    struct email_limits lim = email_limits_of(cfg);
    struct email_msg m;
    char *err = NULL;
    if (len > lim.max_message) {
        char msg[128];
        snprintf(msg, sizeof(msg), "message larger than %zu bytes", lim.max_message);
        finish(cb, arg, EMAIL_REJECTED, 413, msg);
        return;
    }
    if (email_parse(raw, len, &lim, &m, &err) < 0) {
        finish(cb, arg, EMAIL_REJECTED, 400, err);
        free(err);
        return;
    }
    struct pending *p = xcalloc(1, sizeof(*p));
    p->cfg = cfg;
    p->mb = mb;
    p->cb = cb;
    p->arg = arg;
    /* never acknowledge our own mail coming back (a copy, a forward to ourselves) */
    p->may_ack = email_may_auto_reply(&m) &&
                 !(mb && mb->address && strcasecmp(m.from.addr, mb->address) == 0) &&
                 !(cfg->email_from_address && strcasecmp(m.from.addr, cfg->email_from_address) == 0);
    if (is_bounce(&m)) {
        submit_dsn(p, &m);
        email_msg_free(&m);
        return;
    }
    if (mb && strcmp(mb->channel, "fax") == 0) {
        /* a fax-to-email mailbox: the message is a fax (fax_mail.c), never an email */
        free(p);
        fax_mail_ingest(cfg, mb, &m, cb, arg);
        email_msg_free(&m);
        return;
    }
    p->m = m;
    p->raw = raw;
    p->len = len;
    store_next(p);
}
