/* fax_out.c - sending faxes: POST /v1/interactions/{id}/fax puts a job on the Redis outbox
 * stream (outbox:fax, consumer group 'senders': any daemon may send it, and a daemon that
 * dies with a fax in hand leaves it for another); a timer on the loop claims jobs and hands
 * each to the provider's REST API with curl_loop (Phaxio: POST /v2.1/faxes, multipart with
 * the document; Telnyx: POST /v2/faxes, JSON with a media_url: a signed link, valid for
 * [fax] media_link_ttl seconds, to GET /v1/fax/media/{sha256} on this daemon's public_url,
 * from which Telnyx fetches the document; the file is read off the loop for it). A provider error leaves the entry pending, to be claimed again after
 * [fax] claim_idle seconds, up to send_attempts; the provider's status callback (Phaxio's
 * "sent" callbacks on POST /v1/fax/phaxio) lands on the case history (fax script). With
 * HylaFAX (fax_hylafax.c) sendfax submits the stored document and faxstat, every
 * hylafax_poll seconds, reports the jobs HylaFAX has finished. */
#include "fax.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/curl_loop.h"
#include "omnicc/filestore.h"
#include "omnicc/http.h"
#include "omnicc/identity.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

static struct {
    const struct config *cfg;
    struct event *timer, *stuck_timer;
    char *api_secret;   /* Phaxio */
    char *telnyx_key;   /* Telnyx API key */
    char *media_secret; /* signs the document links */
    char consumer[96];
    int inflight;
    bool claiming, sweeping;
    /* HylaFAX: the faxstat poll, and the jobs whose final status Redis has */
    struct event *hf_timer;
    bool hf_polling;
    long *hf_final;
    size_t hf_n_final;
} out;

/* ---- POST /v1/interactions/{id}/fax ---- */

static void queued(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        if (strncmp(err, "ERR_NOT_FOUND ", 14) == 0)
            http_reply_error(r, 404, "not_found", "%s", err + 14);
        else if (strncmp(err, "ERR_FORBIDDEN ", 14) == 0)
            http_reply_error(r, 401, "unauthorized", "%s", err + 14);
        else
            http_reply_unavailable(r, "storage unavailable");
        return;
    }
    json_t *res = reply->type == REDIS_REPLY_STRING ? json_loadb(reply->str, reply->len, 0, NULL)
                                                    : NULL;
    if (!res) {
        http_reply_unavailable(r, "unexpected storage reply");
        return;
    }
    http_reply_json(r, 202, res);
}

void fax_out_post(struct http_req *r)
{
    const struct config *cfg = out.cfg;
    if (!cfg || strcmp(cfg->fax_outbound, "none") == 0) {
        http_reply_error(r, 404, "not_found", "no fax provider to send with ([fax] outbound)");
        return;
    }
    json_t *obj = http_body_json_object(r);
    if (!obj)
        return;
    const char *to = json_string_value(json_object_get(obj, "to"));
    const char *doc = json_string_value(json_object_get(obj, "document"));
    json_t *cv = json_object_get(obj, "cover");
    const char *cover = json_string_value(cv);
    char norm[IDENT_MAX];
    const char *why = NULL;
    const char *bad = NULL;
    if (!to || strlen(to) >= IDENT_MAX || identity_phone(to, norm, sizeof(norm), &why) < 0)
        bad = "to: a fax number";
    else if (!attachment_sha_valid(doc))
        bad = "document: the sha256 of a stored document (GET /v1/attachments/{sha256})";
    else if (cv && (!cover || strlen(cover) > 1000 || !text_is_clean_utf8(cover, strlen(cover))))
        bad = "cover: text of at most 1000 bytes";
    if (!bad) {
        char *path = xasprintf("%s/attachments/%.2s/%s", cfg->state_dir, doc, doc);
        struct stat st;
        if (stat(path, &st) < 0)
            bad = "document: no stored document with that sha256";
        else if (st.st_size > cfg->fax_max_document)
            bad = "document: larger than [fax] max_document";
        free(path);
    }
    if (bad) {
        json_decref(obj);
        http_reply_error(r, 400, "invalid_field", "%s", bad);
        return;
    }
    json_t *a = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "ix", r->params[0], "to", norm, "document",
                          doc, "cover", cover ? cover : "", "provider", cfg->fax_outbound,
                          "auth_sha", r->is_admin ? "" : r->auth_sha);
    json_decref(obj);
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[2] = {"send", text};
    int rc = store_script(SCRIPT_FAX, 2, argv, NULL, queued, r);
    free(text);
    if (rc < 0)
        http_reply_unavailable(r, store_status());
}

/* ---- the sender ---- */

struct sending {
    char *entry, *id, *job_text;
    unsigned char *doc;
    char *resp;
    size_t resp_len;
    curl_mime *mime;
    struct curl_slist *headers;
    char *body;
    bool telnyx;
    /* Phaxio: the document, read by a file store worker before the request is built */
    char *state_dir, *doc_sha, *to, *cover, *ct;
    size_t doc_len;
    long long max;
};

static void sending_free(struct sending *s)
{
    free(s->entry);
    free(s->id);
    free(s->job_text);
    free(s->doc);
    free(s->resp);
    if (s->mime)
        curl_mime_free(s->mime);
    curl_slist_free_all(s->headers);
    free(s->body);
    free(s->state_dir);
    free(s->doc_sha);
    free(s->to);
    free(s->cover);
    free(s->ct);
    free(s);
}

static void result_done(const redisReply *reply, const char *err, void *arg)
{
    struct sending *s = arg;
    if (err)
        log_error("fax: %s: recording the send result failed: %s", s->id, err);
    out.inflight--;
    sending_free(s);
}

static void report(struct sending *s, const char *outcome, const char *provider_id,
                   const char *error)
{
    json_t *a = json_pack("{s:s,s:s,s:s,s:s,s:s}", "entry", s->entry, "id", s->id, "outcome",
                          outcome, "provider_id", provider_id ? provider_id : "", "error",
                          error ? error : "");
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[2] = {"result", text};
    int rc = store_script(SCRIPT_FAX, 2, argv, NULL, result_done, s);
    free(text);
    if (rc < 0) { /* the entry stays pending: claimed again later */
        out.inflight--;
        sending_free(s);
    }
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct sending *s = arg;
    size_t n = size * nmemb;
    if (n == 0 || s->resp_len + n > 65536) /* an answer that large is not Phaxio's: abort */
        return 0;
    s->resp = xrealloc(s->resp, s->resp_len + n + 1);
    memcpy(s->resp + s->resp_len, ptr, n);
    s->resp_len += n;
    s->resp[s->resp_len] = '\0';
    return n;
}

static void sent(CURL *easy, CURLcode result, void *arg)
{
    struct sending *s = arg;
    if (!out.cfg) { /* shutting down: the entry stays pending for the next daemon */
        sending_free(s);
        return;
    }
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    json_t *res = s->resp ? json_loads(s->resp, 0, NULL) : NULL;
    json_t *idv = json_object_get(json_object_get(res, "data"), "id");
    char pid[64] = "";
    if (json_is_integer(idv))
        snprintf(pid, sizeof(pid), "%lld", (long long)json_integer_value(idv));
    else if (json_is_string(idv) && strlen(json_string_value(idv)) < sizeof(pid))
        snprintf(pid, sizeof(pid), "%s", json_string_value(idv));
    const char *msg = json_string_value(json_object_get(res, "message"));
    if (!msg) /* Telnyx: {"errors": [{"title", "detail"}]} */
        msg = json_string_value(
            json_object_get(json_array_get(json_object_get(res, "errors"), 0), "detail"));
    char err[300];
    if (result != CURLE_OK)
        snprintf(err, sizeof(err), "%s", curl_easy_strerror(result));
    else
        snprintf(err, sizeof(err), "HTTP %ld%s%.250s", code, msg ? ": " : "", msg ? msg : "");
    if (result == CURLE_OK && code >= 200 && code < 300 &&
        (s->telnyx || json_is_true(json_object_get(res, "success"))) && *pid) {
        log_info("fax: %s handed to the provider (id %s)", s->id, pid);
        report(s, "sent", pid, NULL);
    } else if (result == CURLE_OK && code >= 400 && code < 500 && code != 429 && code != 408) {
        log_warn("fax: %s refused by the provider: %s", s->id, err);
        report(s, "failed", NULL, err);
    } else {
        log_warn("fax: %s: provider unavailable (%s); tried again in %d s", s->id, err,
                 out.cfg->fax_claim_idle);
        report(s, "retry", NULL, err);
    }
    json_decref(res);
}

static void common_options(CURL *easy, struct sending *s)
{
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "omniccd/0.1");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, s);
}

/* Telnyx fetches the document itself, from a link to this daemon signed for a while. */
static void send_telnyx(struct sending *s, const char *to, const char *doc)
{
    const struct config *cfg = out.cfg;
    long long expires = now_ms() / 1000 + cfg->fax_media_link_ttl;
    char sig[65];
    fax_media_signature(out.media_secret, doc, expires, sig);
    const char *base = cfg->fax_public_url;
    size_t bl = strlen(base);
    char *media = xasprintf("%.*s/v1/fax/media/%s?expires=%lld&sig=%s",
                            (int)(bl > 0 && base[bl - 1] == '/' ? bl - 1 : bl), base, doc, expires,
                            sig);
    json_t *body = json_pack("{s:s,s:s,s:s,s:s}", "connection_id", cfg->fax_telnyx_connection_id,
                             "to", to, "from", cfg->fax_telnyx_from, "media_url", media);
    free(media);
    s->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *auth = xasprintf("Authorization: Bearer %s", out.telnyx_key);
    s->headers = curl_slist_append(NULL, auth);
    s->headers = curl_slist_append(s->headers, "Content-Type: application/json");
    free(auth);
    CURL *easy = curl_easy_init();
    char *url = xasprintf("%s/v2/faxes", cfg->fax_telnyx_api_base);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, s->body);
    common_options(easy, s);
    if (curl_loop_add(easy, sent, s) < 0) {
        curl_easy_cleanup(easy);
        report(s, "retry", NULL, "cannot start the request");
    }
}

static void phaxio_read(void *arg);
static void phaxio_read_done(void *arg, bool ran);
static void send_phaxio(struct sending *s);

/* ---- HylaFAX: sendfax submits, faxstat follows (fax_hylafax.c runs them) ---- */

static void hylafax_sent(void *arg, int code, const char *output)
{
    struct sending *s = arg;
    if (!out.cfg) { /* shutting down: the entry stays pending for the next daemon */
        sending_free(s);
        return;
    }
    long job = code == 0 ? fax_hylafax_job_id(output) : -1;
    if (job > 0) {
        char pid[32];
        snprintf(pid, sizeof(pid), "%ld", job);
        log_info("fax: %s handed to HylaFAX (job %s)", s->id, pid);
        report(s, "sent", pid, NULL);
        return;
    }
    /* hfaxd unreachable, refusing, or slow: tried again after claim_idle (up to
     * send_attempts); its first line says why, escaped for the log */
    char why[200];
    size_t n = strcspn(output, "\r\n");
    snprintf(why, sizeof(why), "sendfax %s%s%.*s", code < 0 ? "killed or crashed" : "failed",
             n ? ": " : "", (int)(n > 150 ? 150 : n), output);
    for (char *c = why; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    log_warn("fax: %s: %s; tried again in %d s", s->id, why, out.cfg->fax_claim_idle);
    report(s, "retry", NULL, why);
}

static void send_hylafax(struct sending *s, const char *to, const char *doc)
{
    const struct config *cfg = out.cfg;
    if (!fax_hylafax_number_ok(to)) {
        report(s, "failed", NULL, "not a number HylaFAX can dial");
        return;
    }
    /* sendfax reads the stored file itself: the loop never opens it */
    char *path = xasprintf("%s/attachments/%.2s/%s", cfg->state_dir, doc, doc);
    const char *argv[] = {"sendfax", "-n", "-h", cfg->fax_hylafax_host, "-d", to, path, NULL};
    if (fax_proc_run(argv, cfg->fax_hylafax_timeout, hylafax_sent, s) < 0) {
        char why[160];
        snprintf(why, sizeof(why), "cannot run sendfax (hylafax-client installed?): %s",
                 strerror(errno));
        log_error("fax: %s: %s", s->id, why);
        report(s, "retry", NULL, why);
    }
    free(path);
}

static bool hf_is_final(long id)
{
    for (size_t i = 0; i < out.hf_n_final; i++)
        if (out.hf_final[i] == id)
            return true;
    return false;
}

struct hf_status {
    long id;
};

static void hf_recorded(const redisReply *reply, const char *err, void *arg)
{
    struct hf_status *st = arg;
    /* recorded, already final, or not a fax of ours: never told again; an error: next poll */
    if (!err && out.cfg) {
        if (out.hf_n_final == 4096) /* forget the oldest half: the script is idempotent */
            memmove(out.hf_final, out.hf_final + 2048,
                    (out.hf_n_final -= 2048) * sizeof(long));
        out.hf_final = xrealloc(out.hf_final, (out.hf_n_final + 1) * sizeof(long));
        out.hf_final[out.hf_n_final++] = st->id;
    }
    free(st);
}

/* One job line of faxstat: D (done) and F (failed) are final; the others still move. */
static void hf_job(void *arg, long id, char state, const char *status)
{
    if ((state != 'D' && state != 'F') || hf_is_final(id))
        return;
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", id);
    json_t *a = json_pack("{s:s,s:s,s:s,s:s}", "provider", "hylafax", "provider_id", pid,
                          "status", state == 'D' ? "delivered" : "failed", "error",
                          *status ? status : "failed");
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    struct hf_status *st = xcalloc(1, sizeof(*st));
    st->id = id;
    const char *argv[2] = {"out_status", text};
    if (store_script(SCRIPT_FAX, 2, argv, NULL, hf_recorded, st) < 0)
        free(st);
    free(text);
}

static void hf_polled(void *arg, int code, const char *output)
{
    out.hf_polling = false;
    if (!out.cfg)
        return;
    if (code != 0) {
        log_warn("fax: faxstat on %s failed (exit %d); tried again in %d s",
                 out.cfg->fax_hylafax_host, code, out.cfg->fax_hylafax_poll);
        return;
    }
    fax_hylafax_parse_status(output, hf_job, NULL);
}

static void hf_poll(evutil_socket_t fd, short what, void *arg)
{
    if (out.hf_polling || !store_ready())
        return;
    const char *argv[] = {"faxstat", "-s", "-d", "-h", out.cfg->fax_hylafax_host, NULL};
    out.hf_polling = fax_proc_run(argv, out.cfg->fax_hylafax_timeout, hf_polled, NULL) == 0;
    if (!out.hf_polling)
        log_warn("fax: cannot run faxstat: %s", strerror(errno));
}

static void send_one(const char *entry, const char *job_text)
{
    const struct config *cfg = out.cfg;
    struct sending *s = xcalloc(1, sizeof(*s));
    s->entry = xstrdup(entry);
    s->job_text = xstrdup(job_text);
    json_t *job = json_loads(job_text, 0, NULL);
    const char *id = json_string_value(json_object_get(job, "id"));
    const char *to = json_string_value(json_object_get(job, "to"));
    const char *doc = json_string_value(json_object_get(job, "document"));
    const char *cover = json_string_value(json_object_get(job, "cover"));
    s->id = xstrdup(id ? id : "?");
    out.inflight++;
    const char *provider = json_string_value(json_object_get(job, "provider"));
    if (provider && strcmp(provider, cfg->fax_outbound) != 0) {
        /* queued for a provider this daemon does not send with: left pending */
        json_decref(job);
        out.inflight--;
        sending_free(s);
        return;
    }
    if (strcmp(cfg->fax_outbound, "telnyx") == 0) {
        s->telnyx = true;
        if (!id || !to || !attachment_sha_valid(doc))
            report(s, "failed", NULL, "the job names no document");
        else
            send_telnyx(s, to, doc);
        json_decref(job);
        return;
    }
    if (!id || !to || !attachment_sha_valid(doc)) {
        json_decref(job);
        report(s, "failed", NULL, "the job names no document");
        return;
    }
    if (strcmp(cfg->fax_outbound, "hylafax") == 0) {
        send_hylafax(s, to, doc);
        json_decref(job);
        return;
    }
    s->state_dir = xstrdup(cfg->state_dir);
    s->doc_sha = xstrdup(doc);
    s->to = xstrdup(to);
    s->cover = cover ? xstrdup(cover) : NULL;
    s->max = cfg->fax_max_document;
    json_decref(job);
    if (filestore_run(phaxio_read, phaxio_read_done, s) < 0)
        report(s, "retry", NULL, "the file store is busy");
}

/* Worker thread: the document Phaxio gets in the request. */
static void phaxio_read(void *arg)
{
    struct sending *s = arg;
    s->doc = attachment_get(s->state_dir, s->doc_sha, (size_t)s->max, &s->doc_len, &s->ct, NULL);
}

static void phaxio_read_done(void *arg, bool ran)
{
    struct sending *s = arg;
    if (!ran || !out.cfg) { /* shutting down: the entry stays pending for the next daemon */
        sending_free(s);
        return;
    }
    if (!s->doc) {
        report(s, "failed", NULL, "the document is no longer stored");
        return;
    }
    send_phaxio(s);
}

static void send_phaxio(struct sending *s)
{
    const struct config *cfg = out.cfg;
    const char *ct = s->ct, *cover = s->cover;
    CURL *easy = curl_easy_init();
    s->mime = curl_mime_init(easy);
    curl_mimepart *p = curl_mime_addpart(s->mime);
    curl_mime_name(p, "to");
    curl_mime_data(p, s->to, CURL_ZERO_TERMINATED);
    p = curl_mime_addpart(s->mime);
    curl_mime_name(p, "file");
    curl_mime_filename(p, ct && strcmp(ct, "application/pdf") == 0 ? "fax.pdf" : "fax.tif");
    curl_mime_type(p, ct ? ct : "application/octet-stream");
    curl_mime_data(p, (const char *)s->doc, s->doc_len);
    if (cover && *cover) { /* Phaxio prints header_text (50 characters) on every page */
        char head[51];
        snprintf(head, sizeof(head), "%s", cover);
        for (char *c = head; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        p = curl_mime_addpart(s->mime);
        curl_mime_name(p, "header_text");
        curl_mime_data(p, head, CURL_ZERO_TERMINATED);
    }
    if (cfg->fax_phaxio_callback_url) {
        p = curl_mime_addpart(s->mime);
        curl_mime_name(p, "callback_url");
        curl_mime_data(p, cfg->fax_phaxio_callback_url, CURL_ZERO_TERMINATED);
    }
    p = curl_mime_addpart(s->mime);
    curl_mime_name(p, "tag[omnicc]");
    curl_mime_data(p, s->id, CURL_ZERO_TERMINATED);
    char *url = xasprintf("%s/v2.1/faxes", cfg->fax_phaxio_api_base);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(easy, CURLOPT_MIMEPOST, s->mime);
    curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(easy, CURLOPT_USERNAME, cfg->fax_phaxio_api_key ? cfg->fax_phaxio_api_key : "");
    curl_easy_setopt(easy, CURLOPT_PASSWORD, out.api_secret ? out.api_secret : "");
    common_options(easy, s);
    if (curl_loop_add(easy, sent, s) < 0) {
        curl_easy_cleanup(easy);
        report(s, "retry", NULL, "cannot start the request");
    }
}

static void claimed(const redisReply *reply, const char *err, void *arg)
{
    out.claiming = false;
    if (err) {
        if (strcmp(err, "unavailable") != 0)
            log_warn("fax: outbox claim failed: %s", err);
        return;
    }
    json_t *list = reply->type == REDIS_REPLY_STRING ? json_loadb(reply->str, reply->len, 0, NULL)
                                                     : NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *entry = json_string_value(json_object_get(e, "entry"));
        const char *job = json_string_value(json_object_get(e, "job"));
        if (entry && job)
            send_one(entry, job);
    }
    json_decref(list);
}

static void poll_outbox(evutil_socket_t fd, short what, void *arg)
{
    const struct config *cfg = out.cfg;
    int room = cfg->fax_send_concurrency - out.inflight;
    if (out.claiming || room <= 0 || !store_ready())
        return;
    json_t *a = json_pack("{s:s,s:i,s:I,s:i}", "consumer", out.consumer, "count", room, "idle_ms",
                          (json_int_t)cfg->fax_claim_idle * 1000, "max_attempts",
                          cfg->fax_send_attempts);
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[2] = {"claim", text};
    out.claiming = true;
    if (store_script(SCRIPT_FAX, 2, argv, NULL, claimed, NULL) < 0)
        out.claiming = false;
    free(text);
}

/* Faxes with no final status stuck_after seconds after they were queued: flagged, at most
 * STUCK_BATCH a sweep, each once (the script takes them off faxout:open), whichever daemon
 * sweeps first. */
#define STUCK_BATCH 100

static void stuck_done(const redisReply *reply, const char *err, void *arg)
{
    out.sweeping = false;
    if (err) {
        log_warn("fax: stuck sweep: %s", err);
        return;
    }
    json_t *list = reply->type == REDIS_REPLY_STRING ? json_loadb(reply->str, reply->len, 0, NULL)
                                                     : NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
        log_warn("fax: %s has no final status after %d s: flagged as stuck", json_string_value(e),
                 out.cfg->fax_stuck_after);
    json_decref(list);
}

static void sweep_stuck(evutil_socket_t fd, short what, void *arg)
{
    if (out.sweeping || !store_ready())
        return;
    json_t *a = json_pack("{s:I,s:i}", "stuck_ms", (json_int_t)out.cfg->fax_stuck_after * 1000,
                          "limit", STUCK_BATCH);
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[2] = {"stuck", text};
    out.sweeping = true;
    if (store_script(SCRIPT_FAX, 2, argv, NULL, stuck_done, NULL) < 0)
        out.sweeping = false;
    free(text);
}

static int read_one(char **out_secret, const char *path, const char *key, char **err)
{
    char *e = NULL;
    *out_secret = read_secret_file(path, &e);
    if (!*out_secret) {
        *err = xasprintf("[fax] %s: %s", key, e);
        free(e);
        return -1;
    }
    return 0;
}

int fax_out_start(struct event_base *base, const struct config *cfg, char **err)
{
    out.cfg = cfg;
    if (strcmp(cfg->fax_outbound, "phaxio") == 0) {
        if (!cfg->fax_phaxio_api_key || !cfg->fax_phaxio_api_secret_file) {
            *err = xstrdup("[fax] outbound = phaxio needs phaxio_api_key and "
                           "phaxio_api_secret_file");
            return -1;
        }
        if (read_one(&out.api_secret, cfg->fax_phaxio_api_secret_file, "phaxio_api_secret_file",
                     err) < 0)
            return -1;
    } else if (strcmp(cfg->fax_outbound, "telnyx") == 0) {
        if (!cfg->fax_telnyx_api_key_file || !cfg->fax_telnyx_connection_id ||
            !cfg->fax_telnyx_from || !cfg->fax_public_url || !cfg->fax_media_secret_file) {
            *err = xstrdup("[fax] outbound = telnyx needs telnyx_api_key_file, "
                           "telnyx_connection_id, telnyx_from, public_url and media_secret_file");
            return -1;
        }
        if (read_one(&out.telnyx_key, cfg->fax_telnyx_api_key_file, "telnyx_api_key_file",
                     err) < 0 ||
            read_one(&out.media_secret, cfg->fax_media_secret_file, "media_secret_file", err) < 0)
            return -1;
    } else if (strcmp(cfg->fax_outbound, "hylafax") == 0) {
        if (fax_hylafax_init(base, cfg->state_dir, err) < 0)
            return -1;
        out.hf_timer = event_new(base, -1, EV_PERSIST, hf_poll, NULL);
        struct timeval hv = {cfg->fax_hylafax_poll, 0};
        event_add(out.hf_timer, &hv);
    } else {
        return 0;
    }
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(out.consumer, sizeof(out.consumer), "%s-%d", host, (int)getpid());
    out.timer = event_new(base, -1, EV_PERSIST, poll_outbox, NULL);
    struct timeval tv = {cfg->fax_outbox_poll_ms / 1000, (cfg->fax_outbox_poll_ms % 1000) * 1000};
    event_add(out.timer, &tv);
    if (cfg->fax_stuck_after > 0) {
        /* a tenth of the limit, between 1 s and a minute: flagged at most 10% late */
        int every = cfg->fax_stuck_after / 10;
        every = every < 1 ? 1 : every > 60 ? 60 : every;
        out.stuck_timer = event_new(base, -1, EV_PERSIST, sweep_stuck, NULL);
        struct timeval st = {every, 0};
        event_add(out.stuck_timer, &st);
    }
    return 0;
}

void fax_out_stop(void)
{
    if (out.timer)
        event_free(out.timer);
    if (out.stuck_timer)
        event_free(out.stuck_timer);
    if (out.hf_timer)
        event_free(out.hf_timer);
    free(out.hf_final);
    fax_hylafax_stop();
    free(out.api_secret);
    free(out.telnyx_key);
    free(out.media_secret);
    memset(&out, 0, sizeof(out));
}

void fax_out_reload(const struct config *cfg)
{
    secret_reload(&out.api_secret, cfg->fax_phaxio_api_secret_file, "[fax] phaxio_api_secret_file");
    secret_reload(&out.telnyx_key, cfg->fax_telnyx_api_key_file, "[fax] telnyx_api_key_file");
    secret_reload(&out.media_secret, cfg->fax_media_secret_file, "[fax] media_secret_file");
}

/* ---- GET /v1/fax/media/{sha256}?expires=&sig=: the document of an outbound fax, for the
 * provider holding a link this daemon signed; read by a file store worker ---- */

struct media_read {
    struct http_req *r;
    char *state_dir;
    char sha[65];
    long long max;
    unsigned char *data;
    size_t len;
    char *ct;
};

static void media_read_work(void *arg)
{
    struct media_read *m = arg;
    m->data = attachment_get(m->state_dir, m->sha, (size_t)m->max, &m->len, &m->ct, NULL);
}

static void media_read_after(void *arg, bool ran)
{
    struct media_read *m = arg;
    if (!ran)
        http_reply_unavailable(m->r, "shutting down");
    else if (!m->data)
        http_reply_error(m->r, 404, "not_found", "no document with that sha256");
    else
        http_reply_raw(m->r, 200, m->ct ? m->ct : "application/octet-stream",
                       (const char *)m->data, m->len);
    free(m->data);
    free(m->ct);
    free(m->state_dir);
    free(m);
}

void fax_out_media(struct http_req *r)
{
    const char *why = NULL;
    if (!out.media_secret) {
        http_reply_error(r, 404, "not_found", "no document links ([fax] outbound = telnyx)");
        return;
    }
    if (!attachment_sha_valid(r->params[0]) ||
        fax_media_verify(out.media_secret, r->params[0], http_query(r, "expires"),
                         http_query(r, "sig"), now_ms() / 1000, &why) < 0) {
        http_reply_error(r, 403, "forbidden", "%s", why ? why : "not a document link");
        return;
    }
    struct media_read *m = xcalloc(1, sizeof(*m));
    m->r = r;
    m->state_dir = xstrdup(out.cfg->state_dir);
    memcpy(m->sha, r->params[0], 65);
    m->max = out.cfg->fax_max_document;
    if (filestore_run(media_read_work, media_read_after, m) < 0) {
        http_reply_unavailable(r, "busy");
        free(m->state_dir);
        free(m);
    }
}
