/* attachments.c - the content-addressed attachment store (see attachments.h) and its route,
 * GET /v1/attachments/{sha256}: the admin token, or any agent's token (checked against
 * Redis with one GET on the loop's connection); the file is read by a file store worker.
 * Files are served as downloads unless they are images or PDF, always with nosniff and a
 * sandboxing CSP: a customer's HTML attachment must never run as the desktop's origin. */
#include "omnicc/attachments.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/filestore.h"
#include "omnicc/http.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define SERVE_MAX (64LL << 20)

bool attachment_sha_valid(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !(*p >= 'a' && *p <= 'f'))
            return false;
    return true;
}

void attachment_sha256(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static char *att_dir(const char *state_dir, const char *sha)
{
    return xasprintf("%s/attachments/%.2s", state_dir, sha);
}

/* The sidecar naming an attachment: its content type and file name (NULL when neither). */
static char *meta_text(const char *content_type, const char *filename)
{
    if (!content_type && !filename)
        return NULL;
    json_t *meta = json_pack("{s:s,s:s}", "content_type",
                             content_type ? content_type : "application/octet-stream",
                             "filename", filename ? filename : "attachment");
    char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    return text;
}

/* Durable, and so blocking on the disk: for code already on a worker thread (the reply
 * attachments' filestore_run job). */
int attachment_put(const char *state_dir, const void *data, size_t len, const char *sha_hex,
                   const char *content_type, const char *filename, char sha_out[65], char **err)
{
    char *text = meta_text(content_type, filename);
    char *root = xasprintf("%s/attachments", state_dir);
    int rc = filestore_write(root, data, len, sha_hex, text, true, sha_out, err);
    free(root);
    free(text);
    return rc;
}

int attachment_put_async(const char *state_dir, const void *data, size_t len,
                         const char *sha_hex, const char *content_type, const char *filename,
                         void (*done)(void *arg, const char *sha_hex, const char *err),
                         void *arg)
{
    char *text = meta_text(content_type, filename);
    char *root = xasprintf("%s/attachments", state_dir);
    int rc = filestore_put(root, data, len, sha_hex, text, done, arg);
    free(root);
    free(text);
    return rc;
}

static char *read_all(const char *path, long long max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size > max) {
        close(fd);
        return NULL;
    }
    char *buf = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

unsigned char *attachment_get(const char *state_dir, const char *sha_hex, size_t max_len,
                              size_t *len, char **content_type, char **filename)
{
    if (content_type)
        *content_type = NULL;
    if (filename)
        *filename = NULL;
    if (!attachment_sha_valid(sha_hex))
        return NULL;
    char *dir = att_dir(state_dir, sha_hex);
    char *path = xasprintf("%s/%s", dir, sha_hex);
    char *meta_path = xasprintf("%s/%s.meta", dir, sha_hex);
    unsigned char *data = (unsigned char *)read_all(path, (long long)max_len, len);
    if (data && (content_type || filename)) {
        size_t ml;
        char *mt = read_all(meta_path, 65536, &ml);
        json_t *meta = mt ? json_loadb(mt, ml, 0, NULL) : NULL;
        const char *ct = json_string_value(json_object_get(meta, "content_type"));
        const char *fn = json_string_value(json_object_get(meta, "filename"));
        if (content_type && ct)
            *content_type = xstrdup(ct);
        if (filename && fn)
            *filename = xstrdup(fn);
        json_decref(meta);
        free(mt);
    }
    free(meta_path);
    free(path);
    free(dir);
    return data;
}

/* ---- GET /v1/attachments/{sha256} ---- */

static bool shown_inline(const char *ct)
{
    static const char *const ok[] = {"image/png", "image/jpeg", "image/gif", "image/webp",
                                     "application/pdf", NULL};
    for (const char *const *p = ok; ct && *p; p++)
        if (strcasecmp(ct, *p) == 0)
            return true;
    return false;
}

/* The file is read by a file store worker (filestore_run), never the loop thread. */
struct serving {
    struct http_req *r;
    char *state_dir;
    char sha[65];
    unsigned char *data;
    size_t len;
    char *ct, *fname;
};

static void serve_read(void *arg)
{
    struct serving *s = arg;
    s->data = attachment_get(s->state_dir, s->sha, SERVE_MAX, &s->len, &s->ct, &s->fname);
}

static void serve_reply(void *arg, bool ran)
{
    struct serving *s = arg;
    struct http_req *r = s->r;
    if (!ran) {
        http_reply_unavailable(r, "shutting down");
    } else if (!s->data) {
        http_reply_error(r, 404, "not_found", "no attachment with that sha256");
    } else {
        bool inl = shown_inline(s->ct);
        if (r->req) {
            struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
            /* RFC 5987: the name percent-encoded, so no byte of it can break the header */
            char *enc = evhttp_uriencode(s->fname ? s->fname : s->sha, -1, 0);
            char *disp = xasprintf("%s; filename*=UTF-8''%s", inl ? "inline" : "attachment",
                                   enc ? enc : s->sha);
            evhttp_add_header(h, "Content-Disposition", disp);
            evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; sandbox");
            evhttp_add_header(h, "ETag", s->sha);
            free(disp);
            free(enc);
        }
        http_reply_raw(r, 200, inl ? s->ct : "application/octet-stream", (const char *)s->data,
                       s->len);
    }
    free(s->data);
    free(s->ct);
    free(s->fname);
    free(s->state_dir);
    free(s);
}

static void serve(struct http_req *r)
{
    struct serving *s = xcalloc(1, sizeof(*s));
    s->r = r;
    s->state_dir = xstrdup(api_config()->state_dir);
    memcpy(s->sha, r->params[0], 65);
    if (filestore_run(serve_read, serve_reply, s) < 0) {
        http_reply_unavailable(r, "the file store is busy");
        free(s->state_dir);
        free(s);
    }
}

static void token_checked(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        http_reply_unavailable(r, err);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_STRING) {
        http_reply_error(r, 401, "unauthorized", "missing or wrong bearer token");
        return;
    }
    serve(r);
}

static void get_attachment(struct http_req *r)
{
    if (!attachment_sha_valid(r->params[0])) {
        http_reply_error(r, 404, "not_found", "no attachment with that sha256");
        return;
    }
    if (r->is_admin) {
        serve(r);
        return;
    }
    /* an agent token: it must belong to some agent */
    char key[256];
    snprintf(key, sizeof(key), "%stoken:%s", store_key_base(), r->auth_sha);
    const char *argv[2] = {"GET", key};
    if (store_command(2, argv, NULL, token_checked, r) < 0)
        http_reply_unavailable(r, store_status());
}

const struct http_route attachments_routes[] = {
    {EVHTTP_REQ_GET, "/v1/attachments/{sha256}", HTTP_AUTH_AGENT, get_attachment, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
