/* fax.c - the fax channel (docs/FAX.md): four ways in, one way to store a fax.
 *
 *   POST /v1/fax/phaxio   Phaxio/Sinch callback, multipart/form-data (fax JSON + file),
 *                         X-Phaxio-Signature (HMAC-SHA1 over the callback URL, the fields
 *                         and the files' SHA-1)
 *   POST /v1/fax/telnyx   Telnyx webhook, JSON, Ed25519 signature; fax.received carries a
 *                         media_url the document is downloaded from (curl_loop, bounded,
 *                         retried) before anything is acknowledged
 *   POST /v1/fax/inbound  on-premises gateways (HylaFAX, FreeSWITCH, Asterisk), multipart,
 *                         HMAC-SHA256 over "timestamp.body" like the CTI webhook
 *   fax-to-email          a [mailbox] with channel = fax: fax_mail.c reads each message
 *                         and hands its document to fax_receive_mail
 *
 * Every fax is checked (TIFF or PDF, size, pages counted from the document itself), stored
 * content-addressed (attachments.h), ingested as channel "fax" with external_id
 * "<provider>:<fax id>" (a provider's retry is a duplicate, never a second interaction),
 * its reception recorded by the fax script (a partial or failed reception is recorded as
 * such), and only then answered. OCR of the first page runs afterwards in fax_ocr.c; its
 * result links the fax to the customer and case named on the cover sheet (fax script). */
#include "fax.h"

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/api.h"
#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/curl_loop.h"
#include "omnicc/filestore.h"
#include "omnicc/http.h"
#include "omnicc/identity.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"
#include "voice.h"

static struct {
    const struct config *cfg;
    struct event_base *base;
    char *phaxio_token;
    char *gateway_secret;
    bool ocr, pool;
    unsigned long long received, duplicates, failed, ocr_done, ocr_linked, ocr_skipped;
} fx;

/* ---- one received fax ---- */

struct fax_in {
    struct http_req *r;   /* a webhook's request, or NULL for fax-to-email (done instead) */
    fax_mail_done_fn *done;
    void *done_arg;
    const char *provider; /* phaxio | telnyx | gateway */
    char *fax_id;
    char *ext_id;         /* provider:fax_id */
    char *from, *to, *tsi;
    const char *status;   /* received | partial | failed */
    char *failure;
    int sender_pages;     /* -1: not given */
    unsigned char *doc;   /* owned */
    size_t doc_len;
    char *doc_name, *doc_ct;
    struct fax_doc_info info;
    bool have_doc;
    char sha[65];
    char *ix_id, *case_id;
    bool duplicate;
    /* Telnyx download */
    CURL *easy;
    size_t cap;
    bool too_large;
    int attempt;
    long http_status;
    struct event *retry;
    char *media_url;
};

static void fax_in_free(struct fax_in *f)
{
    free(f->fax_id);
    free(f->ext_id);
    free(f->from);
    free(f->to);
    free(f->tsi);
    free(f->failure);
    free(f->doc);
    free(f->doc_name);
    free(f->doc_ct);
    free(f->ix_id);
    free(f->case_id);
    free(f->media_url);
    if (f->retry)
        event_free(f->retry);
    free(f);
}

static char *clean(const char *s, size_t max)
{
    if (!s || !*s || strlen(s) > max || !text_is_clean_utf8(s, strlen(s)) || strpbrk(s, "\r\n"))
        return NULL;
    return xstrdup(s);
}

static bool id_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              strchr("-_.:@", *p)))
            return false;
    return true;
}

static struct fax_in *fax_in_new(struct http_req *r, const char *provider, const char *fax_id)
{
    struct fax_in *f = xcalloc(1, sizeof(*f));
    f->r = r;
    f->provider = provider;
    f->fax_id = xstrdup(fax_id);
    f->ext_id = xasprintf("%s:%s", provider, fax_id);
    f->status = "received";
    f->sender_pages = -1;
    return f;
}

/* The answer to the webhook, or to the mailbox that brought the fax; then f is freed. */
static void reply_json_free(struct fax_in *f, int status, json_t *body)
{
    if (f->done) {
        f->done(f->done_arg, status, f->ix_id, f->case_id,
                json_is_true(json_object_get(body, "duplicate")), NULL);
        json_decref(body);
    } else {
        http_reply_json(f->r, status, body);
    }
    fax_in_free(f);
}

static void reply_error_free(struct fax_in *f, int status, const char *code, const char *msg)
{
    if (f->done)
        f->done(f->done_arg, status, NULL, NULL, false, msg);
    else if (status == 503)
        http_reply_unavailable(f->r, msg);
    else
        http_reply_error(f->r, status, code, "%s", msg);
    fax_in_free(f);
}

/* The PDF of a TIFF fax, made after the acknowledgement (the route makes it when asked for
 * first, so a full queue or a stop costs nothing but time). */
static void pdf_made(void *arg, const char *ix_id, int rc, const struct fax_pdf *pdf)
{
    if (rc < 0)
        log_warn("fax: %s: no PDF of the document: %s", ix_id, pdf->err);
    else if (pdf->made)
        log_debug("fax: %s: PDF %s made (%d pages)", ix_id, pdf->sha, pdf->pages);
}

static void recorded(const redisReply *reply, const char *err, void *arg)
{
    struct fax_in *f = arg;
    if (err) {
        log_error("fax: %s: recording the reception failed: %s", f->ix_id, err);
        /* the interaction exists: a retry of the webhook is a duplicate and answers 200 */
        reply_error_free(f, 503, NULL, "storage unavailable");
        return;
    }
    if (fx.ocr && f->have_doc &&
        (strcmp(f->info.type, "tiff") == 0 || strcmp(f->info.type, "pdf") == 0)) {
        char *path = xasprintf("%s/attachments/%.2s/%s", fx.cfg->state_dir, f->sha, f->sha);
        if (!fax_ocr_submit(f->ix_id, path)) {
            fx.ocr_skipped++;
            log_warn("fax: %s routed without OCR (OCR queue full)", f->ix_id);
        }
        free(path);
    }
    if (f->have_doc && strcmp(f->info.type, "tiff") == 0 &&
        !fax_pdf_submit(fx.cfg->state_dir, f->sha, fx.cfg->fax_max_pages, f->ix_id, false, pdf_made,
                        NULL))
        log_warn("fax: %s: its PDF is made when first asked for (workers busy)", f->ix_id);
    json_t *out = json_pack("{s:b,s:s,s:s,s:b,s:s}", "ok", 1, "interaction", f->ix_id, "case",
                            f->case_id, "duplicate", 0, "status", f->status);
    if (f->have_doc) {
        json_object_set_new(out, "pages", json_integer(f->info.pages));
        json_object_set_new(out, "document", json_string(f->sha));
    }
    reply_json_free(f, 200, out);
}

static void ingested(const struct ingest_result *res, void *arg)
{
    struct fax_in *f = arg;
    if (res->status >= 400) {
        reply_error_free(f, res->status, res->error_code, res->error);
        return;
    }
    f->ix_id = xstrdup(res->id);
    f->case_id = xstrdup(res->case_id);
    if (res->duplicate) {
        fx.duplicates++;
        log_info("fax: %s again (%s): duplicate of %s", f->ext_id, f->provider, res->id);
        reply_json_free(f, 200, json_pack("{s:b,s:s,s:s,s:b}", "ok", 1, "interaction", res->id,
                                          "case", res->case_id, "duplicate", 1));
        return;
    }
    fx.received++;
    if (strcmp(f->status, "received") != 0)
        fx.failed++;
    json_t *a = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s}", "ix", res->id, "status", f->status,
                          "failure", f->failure ? f->failure : "", "pages",
                          f->have_doc ? f->info.pages : 0, "document", f->have_doc ? f->sha : "",
                          "doc_type", f->have_doc ? f->info.type : "", "provider", f->provider);
    if (f->have_doc)
        json_object_set_new(a, "resolution", json_string(f->info.resolution));
    if (f->sender_pages >= 0)
        json_object_set_new(a, "sender_pages", json_integer(f->sender_pages));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[2] = {"received", text};
    int rc = store_script(SCRIPT_FAX, 2, argv, NULL, recorded, f);
    free(text);
    if (rc < 0)
        recorded(NULL, "unavailable", f);
}

static void fax_ingest(struct fax_in *f);

/* One document checked and stored on a file store worker (filestore_run): the inspection
 * (libtiff, poppler) and the durable write both stay off the loop thread. While the job
 * runs the worker reads f->doc, f->doc_name and writes f->info and f->sha; the loop does
 * not touch f until doc_checked. */
struct doc_check {
    struct fax_in *f;
    char *state_dir;
    int max_pages;
    const char *why; /* the document was refused (static text) */
    char *err;       /* it could not be stored */
};

static void doc_check_work(void *arg)
{
    struct doc_check *c = arg;
    struct fax_in *f = c->f;
    if (fax_doc_inspect(f->doc, f->doc_len, c->max_pages, &f->info, &c->why) < 0)
        return;
    const char *name = f->doc_name                        ? f->doc_name
                       : strcmp(f->info.type, "pdf") == 0 ? "fax.pdf"
                                                          : "fax.tif";
    (void)attachment_put(c->state_dir, f->doc, f->doc_len, NULL, f->info.mime, name, f->sha,
                         &c->err);
}

/* Back on the loop: the document is checked and on disk (fsynced), refused, or could not be
 * stored. Only a stored document is ingested with it; a refused one is recorded as a failed
 * fax. */
static void doc_checked(void *arg, bool ran)
{
    struct doc_check *c = arg;
    struct fax_in *f = c->f;
    free(f->doc);
    f->doc = NULL;
    if (!ran || c->err) {
        log_error("fax: %s: cannot store the document: %s", f->ext_id,
                  ran ? c->err : "shutting down");
        reply_error_free(f, 503, NULL, "cannot store the document");
    } else if (c->why) {
        /* recorded on the case (someone calls the sender back), not routed as a document */
        log_warn("fax: %s: document refused: %s", f->ext_id, c->why);
        f->status = "failed";
        free(f->failure);
        f->failure = xasprintf("document refused: %s", c->why);
        fax_ingest(f);
    } else {
        f->have_doc = true;
        fax_ingest(f);
    }
    free(c->err);
    free(c->state_dir);
    free(c);
}

/* Check and store the document, build the interaction, ingest. Takes f. The document is
 * inspected, written and fsynced off the loop thread; the fax is ingested (and so
 * answered) only once it is checked and durably stored. */
static void fax_receive(struct fax_in *f)
{
    const struct config *cfg = fx.cfg;
    if (f->doc && (long long)f->doc_len <= cfg->fax_max_document) {
        struct doc_check *c = xcalloc(1, sizeof(*c));
        c->f = f;
        c->state_dir = xstrdup(cfg->state_dir);
        c->max_pages = cfg->fax_max_pages;
        if (filestore_run(doc_check_work, doc_checked, c) < 0) {
            free(c->state_dir);
            free(c);
            log_error("fax: %s: cannot store the document: file store busy", f->ext_id);
            reply_error_free(f, 503, NULL, "cannot store the document");
        }
        return;
    }
    if (f->doc) {
        log_warn("fax: %s: document refused: larger than [fax] max_document", f->ext_id);
        f->status = "failed";
        free(f->failure);
        f->failure = xstrdup("document refused: document larger than [fax] max_document");
        free(f->doc);
        f->doc = NULL;
    } else if (strcmp(f->status, "failed") != 0) {
        f->status = "failed";
        if (!f->failure)
            f->failure = xstrdup("no document received");
    }
    fax_ingest(f);
}

/* Build the interaction and ingest. Takes f. */
static void fax_ingest(struct fax_in *f)
{
    const struct config *cfg = fx.cfg;
    struct interaction ix;
    memset(&ix, 0, sizeof(ix));
    ix.channel = CH_FAX;
    ix.direction = xstrdup("inbound");
    ix.external_id = xstrdup(f->ext_id);
    ix.from = f->from ? xstrdup(f->from) : NULL;
    ix.to = f->to ? xstrdup(f->to) : NULL;
    char norm[IDENT_MAX];
    const char *why = NULL;
    if (f->from && identity_phone(f->from, norm, sizeof(norm), &why) == 0)
        ix.ident[IDENT_PHONE] = xstrdup(norm);
    const char *who = f->from ? f->from : f->tsi ? f->tsi : "unknown sender";
    if (strcmp(f->status, "received") == 0)
        ix.subject = xasprintf("Fax from %s (%d page%s)", who, f->info.pages,
                               f->info.pages == 1 ? "" : "s");
    else if (strcmp(f->status, "partial") == 0)
        ix.subject = xasprintf("Incomplete fax from %s (%d page%s received%s%s)", who,
                               f->have_doc ? f->info.pages : 0,
                               f->have_doc && f->info.pages == 1 ? "" : "s",
                               f->failure ? ": " : "", f->failure ? f->failure : "");
    else
        ix.subject = xasprintf("Failed fax from %s: %s", who,
                               f->failure ? f->failure : "reception failed");
    if (strlen(ix.subject) > IX_MAX_SUBJECT)
        ix.subject[IX_MAX_SUBJECT] = '\0';
    json_t *md = json_pack("{s:s,s:s,s:s}", "provider", f->provider, "fax_id", f->fax_id,
                           "fax_status", f->status);
    if (f->tsi)
        json_object_set_new(md, "tsi", json_string(f->tsi));
    if (f->failure)
        json_object_set_new(md, "failure", json_string(f->failure));
    if (f->sender_pages >= 0)
        json_object_set_new(md, "sender_pages", json_integer(f->sender_pages));
    json_t *att = json_array();
    if (f->have_doc) {
        json_t *doc = json_pack("{s:s,s:s,s:i,s:I}", "sha256", f->sha, "type", f->info.type,
                                "pages", f->info.pages, "size", (json_int_t)f->doc_len);
        if (strcmp(f->info.type, "tiff") == 0) {
            json_object_set_new(doc, "resolution", json_string(f->info.resolution));
            json_object_set_new(doc, "compression", json_string(f->info.compression));
            json_object_set_new(doc, "width", json_integer(f->info.width));
            json_object_set_new(doc, "height", json_integer(f->info.height));
            json_object_set_new(doc, "dpi", json_pack("[ii]", (int)(f->info.xres + 0.5f),
                                                      (int)(f->info.yres + 0.5f)));
        }
        json_object_set_new(md, "document", doc);
        json_array_append_new(att, json_pack("{s:s,s:s,s:s,s:I}", "sha256", f->sha, "filename",
                                             strcmp(f->info.type, "pdf") == 0 ? "fax.pdf" : "fax.tif",
                                             "content_type", f->info.mime, "size",
                                             (json_int_t)f->doc_len));
    }
    json_object_set_new(md, "attachments", att);
    char *mdtext = json_dumps(md, JSON_COMPACT);
    json_decref(md);
    if (mdtext && strlen(mdtext) <= IX_MAX_METADATA)
        ix.metadata = mdtext;
    else
        free(mdtext);
    ingest_submit(cfg, &ix, ingested, f); /* f may be gone after this */
    ix_free(&ix);
}

static void event_recorded(const redisReply *reply, const char *err, void *arg);

/* ---- fax-to-email (fax_mail.c hands each message's document here) ---- */

void fax_receive_mail(const struct fax_mail *m, fax_mail_done_fn *done, void *arg)
{
    if (!fx.cfg) {
        done(arg, 503, NULL, NULL, false, "the fax channel is not running");
        free(m->doc);
        return;
    }
    struct fax_in *f = fax_in_new(NULL, "email", m->fax_id);
    f->done = done;
    f->done_arg = arg;
    f->from = clean(m->from, 64);
    f->to = clean(m->to, 320);
    f->tsi = clean(m->tsi, 200);
    f->doc = m->doc; /* taken */
    f->doc_len = m->doc_len;
    f->doc_name = clean(m->doc_name, 200);
    if (!f->doc && m->failure)
        f->failure = xstrdup(m->failure);
    fax_receive(f);
}

/* ---- Phaxio / Sinch ---- */

static void phaxio_webhook(struct http_req *r)
{
    const struct config *cfg = fx.cfg;
    if (!fx.phaxio_token || !cfg->fax_phaxio_callback_url) {
        http_reply_error(r, 404, "not_found",
                         "the Phaxio webhook is not configured ([fax] phaxio_token_file, "
                         "phaxio_callback_url)");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    struct fax_form form;
    const char *why = NULL;
    if (fax_form_parse(evhttp_find_header(h, "Content-Type"), r->body, r->body_len, &form,
                       &why) < 0) {
        http_reply_error(r, 400, "invalid_body", "%s", why);
        return;
    }
    if (!fax_phaxio_valid(fx.phaxio_token, cfg->fax_phaxio_callback_url, &form,
                          evhttp_find_header(h, "X-Phaxio-Signature"))) {
        log_warn("fax: refused a Phaxio callback: X-Phaxio-Signature does not match");
        fax_form_free(&form);
        http_reply_error(r, 403, "forbidden", "X-Phaxio-Signature does not match");
        return;
    }
    const char *ftext = fax_form_field(&form, "fax");
    json_t *fax = ftext ? json_loads(ftext, 0, NULL) : NULL;
    json_t *idv = json_object_get(fax, "id");
    char idbuf[64];
    const char *fid = NULL;
    if (json_is_integer(idv)) {
        snprintf(idbuf, sizeof(idbuf), "%lld", (long long)json_integer_value(idv));
        fid = idbuf;
    } else if (json_is_string(idv) && id_ok(json_string_value(idv)))
        fid = json_string_value(idv);
    if (!json_is_object(fax) || !fid) {
        json_decref(fax);
        fax_form_free(&form);
        http_reply_error(r, 400, "invalid_field", "fax: a JSON object with an id expected");
        return;
    }
    const char *direction = fax_form_field(&form, "direction");
    if (!direction)
        direction = json_string_value(json_object_get(fax, "direction"));
    if (direction && strcmp(direction, "received") != 0) {
        /* the status of a fax we sent: onto its case history (fax_out.c, fax script) */
        const char *st = json_string_value(json_object_get(fax, "status"));
        const char *emsg = json_string_value(json_object_get(fax, "error_message"));
        json_t *np = json_object_get(fax, "num_pages");
        json_t *a = json_pack("{s:s,s:s,s:s,s:s,s:I}", "provider", "phaxio", "provider_id", fid,
                              "status", st && strcmp(st, "success") == 0 ? "delivered" : "failed",
                              "error", emsg ? emsg : st ? st : "", "pages",
                              (json_int_t)(json_is_integer(np) ? json_integer_value(np) : 0));
        json_decref(fax);
        fax_form_free(&form);
        char *text = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        const char *argv[2] = {"out_status", text};
        int rc = store_script(SCRIPT_FAX, 2, argv, NULL, event_recorded, r);
        free(text);
        if (rc < 0)
            http_reply_unavailable(r, store_status());
        return;
    }
    struct fax_in *f = fax_in_new(r, "phaxio", fid);
    f->from = clean(json_string_value(json_object_get(fax, "from_number")), IX_MAX_ADDRESS);
    if (!f->from)
        f->from = clean(json_string_value(json_object_get(fax, "caller_id")), IX_MAX_ADDRESS);
    f->to = clean(json_string_value(json_object_get(fax, "to_number")), IX_MAX_ADDRESS);
    json_t *np = json_object_get(fax, "num_pages");
    if (json_is_integer(np))
        f->sender_pages = (int)json_integer_value(np);
    const char *st = json_string_value(json_object_get(fax, "status"));
    const char *success = fax_form_field(&form, "success");
    bool ok = success ? strcmp(success, "true") == 0 : (st && strcmp(st, "success") == 0);
    if (st && (strcmp(st, "partialsuccess") == 0 || strcmp(st, "partial") == 0))
        f->status = "partial";
    else if (!ok || (st && strcmp(st, "success") != 0))
        f->status = "failed";
    const char *emsg = json_string_value(json_object_get(fax, "error_message"));
    if (strcmp(f->status, "received") != 0)
        f->failure = clean(emsg ? emsg : st ? st : "reception failed", 256);
    const struct fax_part *file = fax_form_file(&form, "file");
    if (file && file->len > 0) {
        f->doc = xmalloc(file->len);
        memcpy(f->doc, file->data, file->len);
        f->doc_len = file->len;
        f->doc_name = clean(file->filename, 200);
        if (strcmp(f->status, "failed") == 0)
            f->status = "partial"; /* a failed reception with pages: what came is kept */
    }
    json_decref(fax);
    fax_form_free(&form);
    fax_receive(f);
}

/* ---- on-premises gateways ---- */

static void gateway_webhook(struct http_req *r)
{
    const struct config *cfg = fx.cfg;
    if (!fx.gateway_secret) {
        http_reply_error(r, 404, "not_found",
                         "the gateway webhook is not configured ([fax] gateway_secret_file)");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    const char *why = NULL;
    if (voice_cti_verify(fx.gateway_secret, evhttp_find_header(h, "X-Omnicc-Timestamp"),
                         evhttp_find_header(h, "X-Omnicc-Signature"), r->body, r->body_len,
                         now_ms() / 1000, cfg->fax_gateway_window, &why) < 0) {
        log_warn("fax: refused a gateway upload: %s", why);
        http_reply_error(r, 403, "forbidden", "%s", why);
        return;
    }
    struct fax_form form;
    if (fax_form_parse(evhttp_find_header(h, "Content-Type"), r->body, r->body_len, &form,
                       &why) < 0) {
        http_reply_error(r, 400, "invalid_body", "%s", why);
        return;
    }
    const char *gid = fax_form_field(&form, "gateway_id");
    const char *st = fax_form_field(&form, "status");
    if (!id_ok(gid) || (st && *st && strcmp(st, "received") != 0 && strcmp(st, "partial") != 0 &&
                        strcmp(st, "failed") != 0)) {
        fax_form_free(&form);
        http_reply_error(r, 400, "invalid_field",
                         !id_ok(gid) ? "gateway_id: 1-128 of [A-Za-z0-9-_.:@] required"
                                     : "status: received, partial or failed");
        return;
    }
    struct fax_in *f = fax_in_new(r, "gateway", gid);
    f->from = clean(fax_form_field(&form, "from"), IX_MAX_ADDRESS);
    f->to = clean(fax_form_field(&form, "to"), IX_MAX_ADDRESS);
    f->tsi = clean(fax_form_field(&form, "tsi"), 64);
    const char *pages = fax_form_field(&form, "pages");
    if (pages && *pages) {
        char *end = NULL;
        long n = strtol(pages, &end, 10);
        if (!*end && n >= 0 && n < 100000)
            f->sender_pages = (int)n;
    }
    if (st && strcmp(st, "partial") == 0)
        f->status = "partial";
    else if (st && strcmp(st, "failed") == 0)
        f->status = "failed";
    const char *reason = fax_form_field(&form, "reason");
    if (strcmp(f->status, "received") != 0)
        f->failure = clean(reason && *reason ? reason : f->status, 256);
    const struct fax_part *file = fax_form_file(&form, "file");
    if (file && file->len > 0) {
        f->doc = xmalloc(file->len);
        memcpy(f->doc, file->data, file->len);
        f->doc_len = file->len;
        f->doc_name = clean(file->filename, 200);
        if (strcmp(f->status, "failed") == 0)
            f->status = "partial";
    }
    fax_form_free(&form);
    fax_receive(f);
}

/* ---- Telnyx ---- */

static size_t collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct fax_in *f = arg;
    size_t n = size * nmemb;
    if (n == 0)
        return 0;
    if ((long long)(f->doc_len + n) > fx.cfg->fax_max_document) {
        f->too_large = true;
        return 0;
    }
    if (f->doc_len + n > f->cap) {
        size_t cap = f->cap ? f->cap : 65536;
        while (cap < f->doc_len + n)
            cap *= 2;
        f->doc = xrealloc(f->doc, cap);
        f->cap = cap;
    }
    memcpy(f->doc + f->doc_len, ptr, n);
    f->doc_len += n;
    return n;
}

static void download_start(struct fax_in *f);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    download_start(arg);
}

static void downloaded(CURL *easy, CURLcode result, void *arg)
{
    struct fax_in *f = arg;
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    f->http_status = code;
    if (result == CURLE_OK && code == 200 && f->doc_len > 0) {
        log_info("fax: %s: downloaded %zu bytes (attempt %d)", f->ext_id, f->doc_len, f->attempt);
        fax_receive(f);
        return;
    }
    /* an expired or refused link (4xx) will not get better by asking again now: the
     * provider's own retry of the webhook (after our 502) brings a fresh one */
    bool again = !f->too_large && (result != CURLE_OK || code >= 500 || code == 429) &&
                 f->attempt < fx.cfg->fax_media_attempts && f->r->req;
    log_warn("fax: %s: media download attempt %d failed: %s (HTTP %ld)%s", f->ext_id, f->attempt,
             f->too_large ? "larger than [fax] max_document" : curl_easy_strerror(result), code,
             again ? ", retrying" : "");
    free(f->doc);
    f->doc = NULL;
    f->doc_len = f->cap = 0;
    if (again) {
        struct timeval tv = {0, 300000 * f->attempt};
        if (!f->retry)
            f->retry = evtimer_new(fx.base, retry_cb, f);
        evtimer_add(f->retry, &tv);
        return;
    }
    if (f->too_large) {
        /* recorded as a failed fax: retrying would bring the same oversized document */
        f->status = "failed";
        f->failure = xstrdup("document larger than [fax] max_document");
        fax_receive(f);
        return;
    }
    http_reply_error(f->r, 502, "media_unavailable",
                     "the fax document could not be downloaded (HTTP %ld); retry later", code);
    fax_in_free(f);
}

static void download_start(struct fax_in *f)
{
    f->attempt++;
    f->too_large = false;
    CURL *easy = curl_easy_init();
    if (!easy) {
        http_reply_unavailable(f->r, "cannot start a download");
        fax_in_free(f);
        return;
    }
    curl_easy_setopt(easy, CURLOPT_URL, f->media_url);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "omniccd/0.1");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)fx.cfg->fax_media_timeout * 1000L);
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)fx.cfg->fax_max_document);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, f);
    if (curl_loop_add(easy, downloaded, f) < 0) {
        curl_easy_cleanup(easy);
        http_reply_unavailable(f->r, "cannot start a download");
        fax_in_free(f);
    }
}

static void known_checked(const redisReply *reply, const char *err, void *arg)
{
    struct fax_in *f = arg;
    if (err) {
        http_reply_unavailable(f->r, err);
        fax_in_free(f);
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) { /* a retry of a fax already stored */
        fx.duplicates++;
        reply_json_free(f, 200, json_pack("{s:b,s:s,s:b}", "ok", 1, "interaction", reply->str,
                                          "duplicate", 1));
        return;
    }
    download_start(f);
}

static void event_recorded(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        http_reply_unavailable(r, "storage unavailable");
        return;
    }
    json_t *res = reply->type == REDIS_REPLY_STRING ? json_loadb(reply->str, reply->len, 0, NULL)
                                                    : NULL;
    json_t *out = json_pack("{s:b,s:b}", "ok", 1, "known",
                            json_is_true(json_object_get(res, "known")));
    if (json_object_get(res, "interaction"))
        json_object_set(out, "interaction", json_object_get(res, "interaction"));
    json_decref(res);
    http_reply_json(r, 200, out);
}

static void telnyx_webhook(struct http_req *r)
{
    const struct config *cfg = fx.cfg;
    if (!cfg->fax_telnyx_public_key) {
        http_reply_error(r, 404, "not_found",
                         "the Telnyx webhook is not configured ([fax] telnyx_public_key)");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    const char *why = NULL;
    if (fax_telnyx_verify(cfg->fax_telnyx_public_key, evhttp_find_header(h, "telnyx-timestamp"),
                          evhttp_find_header(h, "telnyx-signature-ed25519"), r->body, r->body_len,
                          now_ms() / 1000, cfg->fax_telnyx_window, &why) < 0) {
        log_warn("fax: refused a Telnyx webhook: %s", why);
        http_reply_error(r, 403, "forbidden", "%s", why);
        return;
    }
    struct fax_telnyx_event ev;
    if (fax_telnyx_parse(r->body, r->body_len, &ev, &why) < 0) {
        http_reply_error(r, 400, "invalid_body", "%s", why);
        return;
    }
    bool received = strcmp(ev.event_type, "fax.received") == 0;
    bool failed = strcmp(ev.event_type, "fax.failed") == 0;
    json_t *dir = NULL;
    {
        json_t *root = json_loadb(r->body, r->body_len, 0, NULL);
        const char *d = json_string_value(
            json_object_get(json_object_get(json_object_get(root, "data"), "payload"), "direction"));
        dir = d ? json_string(d) : NULL;
        json_decref(root);
    }
    bool outbound = dir && strcmp(json_string_value(dir), "outbound") == 0;
    json_decref(dir);
    if ((received || failed) && !outbound) {
        struct fax_in *f = fax_in_new(r, "telnyx", ev.fax_id);
        f->from = ev.from ? xstrdup(ev.from) : NULL;
        f->to = ev.to ? xstrdup(ev.to) : NULL;
        f->sender_pages = ev.page_count;
        if (failed || (ev.status && strcmp(ev.status, "failed") == 0)) {
            f->status = ev.media_url ? "partial" : "failed";
            f->failure = xstrdup(ev.failure_reason ? ev.failure_reason : "reception failed");
        } else if (ev.partial) {
            f->status = "partial";
            f->failure = xstrdup(ev.failure_reason ? ev.failure_reason : "partial content");
        }
        if (!ev.media_url) {
            fax_telnyx_event_free(&ev);
            fax_receive(f);
            return;
        }
        f->media_url = xstrdup(ev.media_url);
        fax_telnyx_event_free(&ev);
        /* a retry of a fax already stored is answered without downloading it again */
        char *key = xasprintf("%sidem:fax:%s", store_key_base(), f->ext_id);
        const char *argv[2] = {"GET", key};
        int rc = store_command(2, argv, NULL, known_checked, f);
        free(key);
        if (rc < 0) {
            http_reply_unavailable(r, store_status());
            fax_in_free(f);
        }
        return;
    }
    /* the status of a fax we sent: onto its case, like Phaxio's sent callbacks (sending
     * started, then delivered or failed) */
    bool delivered = strcmp(ev.event_type, "fax.delivered") == 0;
    bool sending = strcmp(ev.event_type, "fax.sending.started") == 0;
    if (outbound && (delivered || failed || sending)) {
        json_t *a = json_pack("{s:s,s:s,s:s,s:s}", "provider", "telnyx", "provider_id", ev.fax_id,
                              "status", delivered ? "delivered" : sending ? "sending" : "failed",
                              "error", ev.failure_reason ? ev.failure_reason : "not delivered");
        if (ev.page_count >= 0)
            json_object_set_new(a, "pages", json_integer(ev.page_count));
        char *text = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        fax_telnyx_event_free(&ev);
        const char *argv[2] = {"out_status", text};
        int rc = store_script(SCRIPT_FAX, 2, argv, NULL, event_recorded, r);
        free(text);
        if (rc < 0)
            http_reply_unavailable(r, store_status());
        return;
    }
    /* any other event (receiving started, media processed, sending started): onto the case
     * history of the fax, if it is known yet */
    char *ext = xasprintf("telnyx:%s", ev.fax_id);
    json_t *a = json_pack("{s:s,s:s,s:s}", "external_id", ext, "event_type", ev.event_type,
                          "status", ev.status ? ev.status : "");
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    free(ext);
    fax_telnyx_event_free(&ev);
    const char *argv[2] = {"event", text};
    int rc = store_script(SCRIPT_FAX, 2, argv, NULL, event_recorded, r);
    free(text);
    if (rc < 0)
        http_reply_unavailable(r, store_status());
}

/* ---- OCR results ---- */

struct ocr_link {
    char *ix_id;
};

static void ocr_linked(const redisReply *reply, const char *err, void *arg)
{
    struct ocr_link *l = arg;
    if (err)
        log_error("fax: %s: recording the OCR result failed: %s", l->ix_id, err);
    else if (reply->type == REDIS_REPLY_STRING) {
        json_t *res = json_loadb(reply->str, reply->len, 0, NULL);
        if (json_is_true(json_object_get(res, "linked")))
            fx.ocr_linked++;
        log_info("fax: %s: OCR %s%s (case %s, customer %s)", l->ix_id,
                 json_is_true(json_object_get(res, "linked")) ? "matched " : "found nothing known",
                 json_string_value(json_object_get(res, "matched"))
                     ? json_string_value(json_object_get(res, "matched"))
                     : "",
                 json_string_value(json_object_get(res, "case")) ? json_string_value(json_object_get(res, "case")) : "",
                 json_string_value(json_object_get(res, "customer")) ? json_string_value(json_object_get(res, "customer")) : "");
        json_decref(res);
    }
    free(l->ix_id);
    free(l);
}

static void ocr_done(const char *ix_id, const char *text, const char *err, double cpu_s)
{
    if (!text) {
        log_warn("fax: %s: no OCR: %s", ix_id, err ? err : "?");
        return;
    }
    fx.ocr_done++;
    struct fax_found found;
    bool need_label = !fx.cfg->policy_pattern || !*fx.cfg->policy_pattern;
    fax_find_identifiers(text, need_label, &found);
    json_t *fj = json_pack("{s:[],s:[],s:[]}", "policy", "phone", "case");
    for (int i = 0; i < found.n_policy; i++)
        json_array_append_new(json_object_get(fj, "policy"), json_string(found.policy[i]));
    for (int i = 0; i < found.n_phone; i++)
        json_array_append_new(json_object_get(fj, "phone"), json_string(found.phone[i]));
    for (int i = 0; i < found.n_case; i++)
        json_array_append_new(json_object_get(fj, "case"), json_string(found.case_id[i]));
    /* OCR output is not guaranteed UTF-8 clean: keep what is */
    size_t tl = strlen(text);
    char *t = xstrndup(text, tl > 16384 ? 16384 : tl);
    if (!text_is_clean_utf8(t, strlen(t)))
        for (char *p = t; *p; p++)
            if ((unsigned char)*p >= 0x80 || ((unsigned char)*p < 0x20 && !strchr("\t\r\n", *p)))
                *p = '?';
    json_t *a = json_pack("{s:s,s:s,s:o,s:i}", "ix", ix_id, "text", t, "found", fj, "cpu_ms",
                          (int)(cpu_s * 1000));
    free(t);
    log_info("fax: %s: OCR read %zu characters in %.2f s of CPU: %d policy, %d case, %d phone",
             ix_id, tl, cpu_s, found.n_policy, found.n_case, found.n_phone);
    char *js = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    struct ocr_link *l = xcalloc(1, sizeof(*l));
    l->ix_id = xstrdup(ix_id);
    const char *argv[2] = {"ocr", js};
    int rc = store_script(SCRIPT_FAX, 2, argv, NULL, ocr_linked, l);
    free(js);
    if (rc < 0) {
        log_error("fax: %s: OCR result lost: Redis unavailable", ix_id);
        free(l->ix_id);
        free(l);
    }
}

/* ---- GET /v1/attachments/{sha256}/pages/{n}.png: a page image, for the agent desktop ---- */

struct page_req {
    struct http_req *r;
    int page; /* from 1; 0: the whole document as a PDF (GET .../pdf) */
};

static void pdf_render(struct http_req *r);

static void page_rendered(void *arg, const unsigned char *png, size_t len, const char *err)
{
    struct page_req *p = arg;
    if (!png) {
        http_reply_error(p->r, 404, "not_found", "%s", err ? err : "no such page");
    } else {
        if (p->r->req) {
            struct evkeyvalq *h = evhttp_request_get_output_headers(p->r->req);
            evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; sandbox");
            evhttp_add_header(h, "Cache-Control", "private, max-age=86400");
        }
        http_reply_raw(p->r, 200, "image/png", (const char *)png, len);
    }
    free(p);
}

static void page_render(struct http_req *r)
{
    struct page_req *p = r->data;
    r->data = NULL;
    if (p->page == 0) {
        free(p);
        pdf_render(r);
        return;
    }
    if (!fax_page_submit(fx.cfg->state_dir, r->params[0], p->page, page_rendered, p)) {
        free(p);
        http_reply_unavailable(r, "page rendering is busy");
    }
}

static void page_token_checked(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        free(r->data);
        r->data = NULL;
        http_reply_unavailable(r, err);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_STRING) {
        free(r->data);
        r->data = NULL;
        http_reply_error(r, 401, "unauthorized", "missing or wrong bearer token");
        return;
    }
    page_render(r);
}

/* Page n (0: the PDF) for the admin, or for a token that belongs to some agent (as for the
 * document itself). */
static void page_or_pdf(struct http_req *r, int n)
{
    struct page_req *p = xcalloc(1, sizeof(*p));
    p->r = r;
    p->page = n;
    r->data = p;
    if (r->is_admin) {
        page_render(r);
        return;
    }
    char key[256];
    snprintf(key, sizeof(key), "%stoken:%s", store_key_base(), r->auth_sha);
    const char *argv[2] = {"GET", key};
    if (store_command(2, argv, NULL, page_token_checked, r) < 0) {
        free(p);
        r->data = NULL;
        http_reply_unavailable(r, store_status());
    }
}

static void page_png(struct http_req *r)
{
    const char *sha = r->params[0], *name = r->params[1];
    char *end = NULL;
    long n = strtol(name, &end, 10);
    if (!attachment_sha_valid(sha) || !name[0] || name[0] == '0' || strcmp(end, ".png") != 0 ||
        n < 1 || n > fx.cfg->fax_max_pages) {
        http_reply_error(r, 404, "not_found", "no such page: /v1/attachments/{sha256}/pages/{n}.png");
        return;
    }
    page_or_pdf(r, (int)n);
}

/* ---- GET /v1/attachments/{sha256}/pdf: the fax as a PDF, for the agent desktop ---- */

static void pdf_ready(void *arg, const char *ix_id, int rc, const struct fax_pdf *pdf)
{
    struct http_req *r = arg;
    if (rc == FAX_PDF_NOT_FOUND) {
        http_reply_error(r, 404, "not_found", "%s", pdf->err);
    } else if (rc == FAX_PDF_UNREADABLE) {
        http_reply_error(r, 422, "unreadable_document", "%s", pdf->err);
    } else if (rc < 0) {
        log_error("fax: PDF of %s: %s", r->params[0], pdf->err);
        http_reply_unavailable(r, pdf->err);
    } else {
        if (r->req) {
            struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
            evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; sandbox");
            evhttp_add_header(h, "Cache-Control", "private, max-age=86400");
            evhttp_add_header(h, "Content-Disposition", "inline; filename=\"fax.pdf\"");
            /* the PDF's own name in the store (the document's itself for a PDF fax) */
            evhttp_add_header(h, "X-Omnicc-Document", pdf->sha);
        }
        http_reply_raw(r, 200, "application/pdf", (const char *)pdf->data, pdf->len);
    }
}

static void pdf_render(struct http_req *r)
{
    if (!fax_pdf_submit(fx.cfg->state_dir, r->params[0], fx.cfg->fax_max_pages, NULL, true,
                        pdf_ready, r))
        http_reply_unavailable(r, "PDF rendering is busy");
}

static void pdf_get(struct http_req *r)
{
    if (!attachment_sha_valid(r->params[0])) {
        http_reply_error(r, 404, "not_found", "no such document: /v1/attachments/{sha256}/pdf");
        return;
    }
    page_or_pdf(r, 0);
}

/* ---- GET /v1/fax/stats (admin): counters for operators and tests ---- */

static void fax_stats(struct http_req *r)
{
    http_reply_json(r, 200,
                    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "received",
                              (json_int_t)fx.received, "duplicates", (json_int_t)fx.duplicates,
                              "failed", (json_int_t)fx.failed, "ocr_done",
                              (json_int_t)fx.ocr_done, "ocr_linked", (json_int_t)fx.ocr_linked,
                              "ocr_skipped", (json_int_t)fx.ocr_skipped, "ocr", fx.ocr));
}

/* ---- the channel ---- */

static void fax_stop(void)
{
    fax_out_stop();
    if (fx.pool)
        fax_ocr_stop();
    free(fx.phaxio_token);
    free(fx.gateway_secret);
    memset(&fx, 0, sizeof(fx));
}

static int read_secret(char **out, const char *path, const char *key, char **err)
{
    if (!path)
        return 0;
    char *e = NULL;
    *out = read_secret_file(path, &e);
    if (!*out) {
        *err = xasprintf("[fax] %s: %s", key, e);
        free(e);
        return -1;
    }
    return 0;
}

static int fax_start(struct event_base *base, const struct config *cfg, char **err)
{
    fx.cfg = cfg;
    fx.base = base;
    if (read_secret(&fx.phaxio_token, cfg->fax_phaxio_token_file, "phaxio_token_file", err) < 0 ||
        read_secret(&fx.gateway_secret, cfg->fax_gateway_secret_file, "gateway_secret_file",
                    err) < 0)
        return -1;
    if (fx.phaxio_token && !cfg->fax_phaxio_callback_url) {
        *err = xstrdup("[fax] phaxio_callback_url: required with phaxio_token_file (the URL "
                       "Phaxio signs)");
        return -1;
    }
    if (cfg->fax_telnyx_public_key) {
        if (!fax_telnyx_key_ok(cfg->fax_telnyx_public_key)) {
            *err = xstrdup("[fax] telnyx_public_key: not an Ed25519 public key (base64 of 32 "
                           "bytes, or PEM)");
            return -1;
        }
    }
    fx.ocr = strcmp(cfg->fax_ocr, "yes") == 0;
    /* the workers also render page images, so they run with OCR off too */
    if (fax_ocr_start(base, cfg->fax_ocr_workers, cfg->fax_ocr_queue, cfg->fax_ocr_languages,
                      ocr_done, err) < 0) {
        fx.ocr = false;
        return -1;
    }
    fx.pool = true;
    /* libgomp reads OMP_THREAD_LIMIT once, when it is loaded (before main): tesseract's
     * parallel loops name their own thread count, so only the environment holds them to one
     * thread (tests/bench/fax measured 3x the CPU per page without it) */
    const char *omp = getenv("OMP_THREAD_LIMIT");
    if (fx.ocr && (!omp || strcmp(omp, "1") != 0))
        log_warn("fax: OMP_THREAD_LIMIT is not 1 in omniccd's environment: each OCR page "
                 "costs several times its CPU (the systemd unit sets it)");
    if (fax_out_start(base, cfg, err) < 0)
        return -1;
    log_info("fax: Phaxio %s, Telnyx %s, gateways %s, OCR %s", fx.phaxio_token ? "on" : "off",
             cfg->fax_telnyx_public_key ? "on" : "off", fx.gateway_secret ? "on" : "off",
             fx.ocr ? cfg->fax_ocr_languages : "off");
    return 0;
}

static void fax_reload(const struct config *cfg)
{
    secret_reload(&fx.phaxio_token, cfg->fax_phaxio_token_file, "[fax] phaxio_token_file");
    secret_reload(&fx.gateway_secret, cfg->fax_gateway_secret_file, "[fax] gateway_secret_file");
    fax_out_reload(cfg);
}

/* ---- POST /v1/interactions/{id}/link {"case": "C-n"} | {"customer": "P-n"}: an agent
 * holding the interaction (or the admin) corrects where it belongs, e.g. a fax that OCR
 * linked to the wrong customer or could not link; the same steps as an OCR link, atomic in
 * the fax script (history on both cases) ---- */

static void link_done(const redisReply *reply, const char *err, void *arg)
{
    api_reply_script_json(arg, reply, err, NULL);
}

static void link_post(struct http_req *r)
{
    if (!id_is_valid(r->params[0], 'I')) {
        http_reply_error(r, 404, "not_found", "no interaction with that id");
        return;
    }
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    const char *k, *field = NULL;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        const char *why = NULL;
        bool is_case = strcmp(k, "case") == 0;
        if (!is_case && strcmp(k, "customer") != 0)
            why = "unknown field";
        else if (field)
            why = "give exactly one of case and customer";
        else if (!json_is_string(v) || !id_is_valid(json_string_value(v), is_case ? 'C' : 'P'))
            why = is_case ? "a case id (C-123)" : "a customer id (P-123)";
        if (why) {
            http_reply_error(r, 400, "invalid_field", "%.40s: %s", k, why);
            json_decref(body);
            return;
        }
        field = is_case ? "case" : "customer";
    }
    if (!field) {
        http_reply_error(r, 400, "invalid_field", "case or customer: give exactly one");
        json_decref(body);
        return;
    }
    json_t *a = json_pack("{s:s,s:s,s:O}", "ix", r->params[0], "sha", r->auth_sha, field,
                          json_object_get(body, field));
    json_decref(body);
    char *js = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[2] = {"link", js};
    if (store_script(SCRIPT_FAX, 2, argv, NULL, link_done, r) < 0)
        http_reply_unavailable(r, store_status());
    free(js);
}

static const struct http_route fax_routes[] = {
    {EVHTTP_REQ_POST, "/v1/fax/phaxio", HTTP_AUTH_NONE, phaxio_webhook, "multipart/form-data",
     NULL, true},
    {EVHTTP_REQ_POST, "/v1/fax/telnyx", HTTP_AUTH_NONE, telnyx_webhook, "application/json", NULL,
     false},
    {EVHTTP_REQ_POST, "/v1/fax/inbound", HTTP_AUTH_NONE, gateway_webhook, "multipart/form-data",
     NULL, true},
    {EVHTTP_REQ_GET, "/v1/fax/stats", HTTP_AUTH_ADMIN, fax_stats, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/fax/media/{sha256}", HTTP_AUTH_NONE, fax_out_media, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/fax", HTTP_AUTH_AGENT, fax_out_post,
     "application/json", NULL, false},
    {EVHTTP_REQ_POST, "/v1/interactions/{id}/link", HTTP_AUTH_AGENT, link_post,
     "application/json", NULL, false},
    {EVHTTP_REQ_GET, "/v1/attachments/{sha256}/pages/{n}", HTTP_AUTH_AGENT, page_png, NULL,
     "/v1/attachments/{sha256}/pages/{n}.png", false},
    {EVHTTP_REQ_GET, "/v1/attachments/{sha256}/pdf", HTTP_AUTH_AGENT, pdf_get, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};

const struct channel fax_channel = {
    .name = "fax",
    .routes = fax_routes,
    .start = fax_start,
    .stop = fax_stop,
    .reload = fax_reload,
};
