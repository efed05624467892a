/* fax_wire.c - the fax channel's wire formats, with no I/O (see fax.h): multipart/form-data
 * through GMime, the Phaxio and Telnyx signatures, the Telnyx event, the document check
 * (libtiff for TIFF, poppler for PDF) and identifiers in OCR text. */
#include "fax.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <poppler.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <tiffio.h>

#include "omnicc/identity.h"
#include "omnicc/util.h"

/* ---- multipart/form-data ---- */

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_start(void)
{
    g_mime_init(); /* reference-counted: the email channel may init/shut down its own */
}

static char *bytes_of(GMimeDataWrapper *w, size_t *len)
{
    GMimeStream *ms = g_mime_stream_mem_new();
    char *out = NULL;
    if (g_mime_data_wrapper_write_to_stream(w, ms) >= 0) {
        GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(ms));
        out = xmalloc(ba->len + 1);
        if (ba->len)
            memcpy(out, ba->data, ba->len);
        out[ba->len] = '\0';
        *len = ba->len;
    }
    g_object_unref(ms);
    return out;
}

void fax_form_free(struct fax_form *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->parts[i].name);
        free(f->parts[i].filename);
        free(f->parts[i].content_type);
        free(f->parts[i].data);
    }
    memset(f, 0, sizeof(*f));
}

int fax_form_parse(const char *content_type, const void *body, size_t len, struct fax_form *out,
                   const char **why)
{
    memset(out, 0, sizeof(*out));
    if (!content_type || strncasecmp(content_type, "multipart/form-data", 19) != 0 ||
        strpbrk(content_type, "\r\n") || !strcasestr(content_type, "boundary=")) {
        *why = "Content-Type: multipart/form-data with a boundary expected";
        return -1;
    }
    pthread_once(&gmime_once, gmime_start);
    GMimeStream *s = g_mime_stream_mem_new();
    g_mime_stream_write_string(s, "Content-Type: ");
    g_mime_stream_write_string(s, content_type);
    g_mime_stream_write_string(s, "\r\n\r\n");
    if (len)
        g_mime_stream_write(s, body, len);
    g_mime_stream_reset(s);
    GMimeParser *p = g_mime_parser_new_with_stream(s);
    GMimeObject *obj = g_mime_parser_construct_part(p, NULL);
    g_object_unref(p);
    g_object_unref(s);
    int rc = -1;
    *why = "malformed multipart body";
    if (!obj || !GMIME_IS_MULTIPART(obj))
        goto out;
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int count = g_mime_multipart_get_count(mp);
    if (count <= 0) {
        *why = "multipart body without parts";
        goto out;
    }
    if (count > FAX_FORM_MAX_PARTS) {
        *why = "too many parts";
        goto out;
    }
    for (int i = 0; i < count; i++) {
        GMimeObject *o = g_mime_multipart_get_part(mp, i);
        if (!GMIME_IS_PART(o))
            continue; /* a nested multipart (RFC 2388 multiple files): not used by faxes */
        GMimeContentDisposition *d = g_mime_object_get_content_disposition(o);
        const char *name = d ? g_mime_content_disposition_get_parameter(d, "name") : NULL;
        if (!name || !*name)
            continue;
        const char *fname = g_mime_content_disposition_get_parameter(d, "filename");
        GMimeDataWrapper *w = g_mime_part_get_content(GMIME_PART(o));
        size_t n = 0;
        char *data = w ? bytes_of(w, &n) : xstrdup("");
        if (!data) {
            *why = "unreadable part";
            goto out;
        }
        struct fax_part *fp = &out->parts[out->n++];
        fp->name = xstrdup(name);
        fp->is_file = fname != NULL;
        fp->filename = fname ? xstrdup(fname) : NULL;
        if (fname) {
            GMimeContentType *ct = g_mime_object_get_content_type(o);
            char *mime = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
            fp->content_type = mime ? xstrdup(mime) : NULL;
            g_free(mime);
        }
        fp->data = (unsigned char *)data;
        fp->len = n;
    }
    if (out->n == 0) {
        *why = "no form fields";
        goto out;
    }
    rc = 0;
out:
    if (obj)
        g_object_unref(obj);
    if (rc < 0)
        fax_form_free(out);
    return rc;
}

const char *fax_form_field(const struct fax_form *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!f->parts[i].is_file && strcmp(f->parts[i].name, name) == 0)
            return (const char *)f->parts[i].data;
    return NULL;
}

const struct fax_part *fax_form_file(const struct fax_form *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (f->parts[i].is_file && strcmp(f->parts[i].name, name) == 0)
            return &f->parts[i];
    return NULL;
}

/* ---- Phaxio ---- */

static int part_cmp(const void *a, const void *b)
{
    const struct fax_part *x = *(const struct fax_part *const *)a;
    const struct fax_part *y = *(const struct fax_part *const *)b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    size_t n = x->len < y->len ? x->len : y->len;
    c = memcmp(x->data, y->data, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void fax_phaxio_signature(const char *token, const char *url, const struct fax_form *f,
                          char out[41])
{
    const struct fax_part *fields[FAX_FORM_MAX_PARTS], *files[FAX_FORM_MAX_PARTS];
    int nf = 0, nfi = 0;
    for (int i = 0; i < f->n; i++) {
        if (f->parts[i].is_file)
            files[nfi++] = &f->parts[i];
        else
            fields[nf++] = &f->parts[i];
    }
    qsort(fields, (size_t)nf, sizeof(fields[0]), part_cmp);
    qsort(files, (size_t)nfi, sizeof(files[0]), part_cmp);
    EVP_MAC *mac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac_alg);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA1", 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_init(h, (const unsigned char *)token, strlen(token), params);
    EVP_MAC_update(h, (const unsigned char *)url, strlen(url));
    for (int i = 0; i < nf; i++) {
        EVP_MAC_update(h, (const unsigned char *)fields[i]->name, strlen(fields[i]->name));
        EVP_MAC_update(h, fields[i]->data, fields[i]->len);
    }
    for (int i = 0; i < nfi; i++) {
        unsigned char d[SHA_DIGEST_LENGTH];
        char dh[41];
        SHA1(files[i]->data, files[i]->len, d);
        hex(d, sizeof(d), dh);
        EVP_MAC_update(h, (const unsigned char *)files[i]->name, strlen(files[i]->name));
        EVP_MAC_update(h, (const unsigned char *)dh, 40);
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC_final(h, mac, &maclen, sizeof(mac));
    EVP_MAC_CTX_free(h);
    EVP_MAC_free(mac_alg);
    hex(mac, maclen, out);
}

bool fax_phaxio_valid(const char *token, const char *url, const struct fax_form *f,
                      const char *header)
{
    if (!token || !url || !header)
        return false;
    char want[41];
    fax_phaxio_signature(token, url, f, want);
    char got[41];
    size_t n = strlen(header);
    if (n != 40)
        return false;
    for (size_t i = 0; i < n; i++)
        got[i] = (char)tolower((unsigned char)header[i]);
    got[40] = '\0';
    return secure_equals(want, 40, got, 40);
}

/* ---- signed document links (outbound faxes: the provider fetches the document) ---- */

void fax_media_signature(const char *secret, const char *sha, long long expires, char out[65])
{
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "%.64s.%lld", sha, expires);
    EVP_MAC *mac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac_alg);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_init(h, (const unsigned char *)secret, strlen(secret), params);
    EVP_MAC_update(h, (const unsigned char *)msg, (size_t)n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC_final(h, mac, &maclen, sizeof(mac));
    EVP_MAC_CTX_free(h);
    EVP_MAC_free(mac_alg);
    hex(mac, maclen, out);
}

int fax_media_verify(const char *secret, const char *sha, const char *expires, const char *sig,
                     long long now, const char **why)
{
    char *end = NULL;
    long long e = expires && *expires ? strtoll(expires, &end, 10) : 0;
    if (!secret || !sig || !end || *end || e <= 0) {
        *why = "missing or malformed expires/sig";
        return -1;
    }
    if (e < now) {
        *why = "link expired";
        return -1;
    }
    char want[65];
    fax_media_signature(secret, sha, e, want);
    if (strlen(sig) != 64 || !secure_equals(want, 64, sig, 64)) {
        *why = "bad signature";
        return -1;
    }
    return 0;
}

/* ---- Telnyx ---- */

/* Strict base64 (padding optional); -1 when malformed or larger than max. */
static int b64_decode(const char *in, unsigned char *out, size_t max)
{
    size_t n = strlen(in);
    while (n > 0 && (in[n - 1] == '=' || isspace((unsigned char)in[n - 1])))
        n--;
    if (n == 0 || n > 4096)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)in[i]) && in[i] != '+' && in[i] != '/')
            return -1;
    char buf[4100];
    memcpy(buf, in, n);
    size_t padded = n;
    while (padded % 4)
        buf[padded++] = '=';
    buf[padded] = '\0';
    unsigned char tmp[3100];
    int len = EVP_DecodeBlock(tmp, (const unsigned char *)buf, (int)padded);
    if (len < 0)
        return -1;
    len -= (int)(padded - n); /* EVP_DecodeBlock counts padding as zero bytes */
    if (len < 0 || (size_t)len > max)
        return -1;
    memcpy(out, tmp, (size_t)len);
    return len;
}

static EVP_PKEY *telnyx_key(const char *text)
{
    if (strncmp(text, "-----BEGIN", 10) == 0) {
        BIO *b = BIO_new_mem_buf(text, -1);
        EVP_PKEY *k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
        BIO_free(b);
        return k;
    }
    unsigned char raw[64];
    if (b64_decode(text, raw, sizeof(raw)) != 32)
        return NULL;
    return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, 32);
}

bool fax_telnyx_key_ok(const char *public_key)
{
    EVP_PKEY *k = telnyx_key(public_key);
    EVP_PKEY_free(k);
    return k != NULL;
}

int fax_telnyx_verify(const char *public_key, const char *timestamp, const char *signature,
                      const void *body, size_t len, int64_t now_s, int window, const char **why)
{
    if (!timestamp || !signature) {
        *why = "missing telnyx-timestamp or telnyx-signature-ed25519";
        return -1;
    }
    char *end = NULL;
    long long ts = strtoll(timestamp, &end, 10);
    if (!*timestamp || *end || end - timestamp > 12) {
        *why = "telnyx-timestamp: not a Unix time";
        return -1;
    }
    if (ts < now_s - window || ts > now_s + window) {
        *why = "telnyx-timestamp: outside the replay window";
        return -1;
    }
    unsigned char sig[96];
    if (b64_decode(signature, sig, sizeof(sig)) != 64) {
        *why = "telnyx-signature-ed25519: not a base64 Ed25519 signature";
        return -1;
    }
    EVP_PKEY *k = public_key ? telnyx_key(public_key) : NULL;
    if (!k) {
        *why = "the configured Telnyx public key is unusable";
        return -1;
    }
    size_t tl = strlen(timestamp);
    unsigned char *msg = xmalloc(tl + 1 + len + 1);
    memcpy(msg, timestamp, tl);
    msg[tl] = '|';
    if (len)
        memcpy(msg + tl + 1, body, len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) == 1 &&
             EVP_DigestVerify(ctx, sig, 64, msg, tl + 1 + len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    free(msg);
    if (!ok) {
        *why = "telnyx-signature-ed25519 does not match";
        return -1;
    }
    return 0;
}

void fax_telnyx_event_free(struct fax_telnyx_event *ev)
{
    free(ev->event_type);
    free(ev->event_id);
    free(ev->fax_id);
    free(ev->from);
    free(ev->to);
    free(ev->media_url);
    free(ev->status);
    free(ev->failure_reason);
    memset(ev, 0, sizeof(*ev));
}

static char *jstr(json_t *o, const char *key, size_t max)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s || !*s || strlen(s) > max || !text_is_clean_utf8(s, strlen(s)) || strpbrk(s, "\r\n"))
        return NULL;
    return xstrdup(s);
}

int fax_telnyx_parse(const char *body, size_t len, struct fax_telnyx_event *ev, const char **why)
{
    memset(ev, 0, sizeof(*ev));
    ev->page_count = -1;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *data = json_object_get(root, "data");
    json_t *pl = json_object_get(data, "payload");
    if (!json_is_object(data) || !json_is_object(pl)) {
        *why = "a JSON object with data.payload expected";
        json_decref(root);
        return -1;
    }
    ev->event_type = jstr(data, "event_type", 64);
    ev->event_id = jstr(data, "id", 128);
    ev->fax_id = jstr(pl, "fax_id", 128);
    ev->from = jstr(pl, "from", 64);
    ev->to = jstr(pl, "to", 64);
    ev->media_url = jstr(pl, "media_url", 4096);
    ev->status = jstr(pl, "status", 64);
    ev->failure_reason = jstr(pl, "failure_reason", 256);
    json_t *pc = json_object_get(pl, "page_count");
    if (json_is_integer(pc) && json_integer_value(pc) >= 0 && json_integer_value(pc) < 100000)
        ev->page_count = (int)json_integer_value(pc);
    ev->partial = json_is_true(json_object_get(pl, "partial_content"));
    json_decref(root);
    if (!ev->event_type || !ev->fax_id) {
        *why = !ev->event_type ? "data.event_type: missing" : "data.payload.fax_id: missing";
        fax_telnyx_event_free(ev);
        return -1;
    }
    for (const char *p = ev->fax_id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') {
            *why = "data.payload.fax_id: letters, digits, - _ . only";
            fax_telnyx_event_free(ev);
            return -1;
        }
    if (ev->media_url && strncmp(ev->media_url, "https://", 8) != 0 &&
        strncmp(ev->media_url, "http://", 7) != 0) {
        *why = "data.payload.media_url: http(s) URL expected";
        fax_telnyx_event_free(ev);
        return -1;
    }
    return 0;
}

/* ---- documents ---- */

struct memtiff {
    const unsigned char *d;
    toff_t len, pos;
};

static tmsize_t mt_read(thandle_t h, void *buf, tmsize_t n)
{
    struct memtiff *m = (struct memtiff *)h;
    if (n < 0 || m->pos >= m->len)
        return 0;
    toff_t left = m->len - m->pos;
    if ((toff_t)n > left)
        n = (tmsize_t)left;
    memcpy(buf, m->d + m->pos, (size_t)n);
    m->pos += (toff_t)n;
    return n;
}

static tmsize_t mt_write(thandle_t h, void *buf, tmsize_t n)
{
    return 0;
}

static toff_t mt_seek(thandle_t h, toff_t off, int whence)
{
    struct memtiff *m = (struct memtiff *)h;
    toff_t base = whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->len : 0;
    if (off > UINT64_MAX - base)
        return (toff_t)-1;
    m->pos = base + off;
    return m->pos;
}

static int mt_close(thandle_t h)
{
    free(h);
    return 0;
}

static toff_t mt_size(thandle_t h)
{
    return ((struct memtiff *)h)->len;
}

static int mt_map(thandle_t h, void **base, toff_t *size)
{
    return 0;
}

static void mt_unmap(thandle_t h, void *base, toff_t size)
{
}

static void tiff_quiet(void)
{
    TIFFSetErrorHandler(NULL);
    TIFFSetWarningHandler(NULL);
}

static pthread_once_t tiff_once = PTHREAD_ONCE_INIT;

static const char *fax_resolution(float yres)
{
    if (yres >= 90 && yres <= 105)
        return "standard";
    if (yres >= 185 && yres <= 205)
        return "fine";
    if (yres >= 380 && yres <= 410)
        return "superfine";
    return "other";
}

TIFF *fax_tiff_open(const void *data, size_t len)
{
    pthread_once(&tiff_once, tiff_quiet);
    struct memtiff *m = xmalloc(sizeof(*m));
    *m = (struct memtiff){data, len, 0};
    TIFF *t = TIFFClientOpen("fax", "rm", (thandle_t)m, mt_read, mt_write, mt_seek, mt_close,
                             mt_size, mt_map, mt_unmap);
    if (!t)
        free(m); /* libtiff closes nothing it could not open */
    return t;
}

static int inspect_tiff(const unsigned char *d, size_t len, int max_pages,
                        struct fax_doc_info *info, const char **why)
{
    TIFF *t = fax_tiff_open(d, len);
    if (!t) {
        *why = "damaged TIFF";
        return -1;
    }
    uint32_t w = 0, h = 0;
    uint16_t comp = 0, unit = RESUNIT_INCH;
    float xr = 0, yr = 0;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetField(t, TIFFTAG_COMPRESSION, &comp);
    TIFFGetField(t, TIFFTAG_XRESOLUTION, &xr);
    TIFFGetField(t, TIFFTAG_YRESOLUTION, &yr);
    TIFFGetFieldDefaulted(t, TIFFTAG_RESOLUTIONUNIT, &unit);
    if (unit == RESUNIT_CENTIMETER) {
        xr *= 2.54f;
        yr *= 2.54f;
    }
    int pages = 1;
    while (TIFFReadDirectory(t)) {
        if (++pages > max_pages)
            break;
    }
    TIFFClose(t);
    if (w == 0 || h == 0 || w > 20000 || h > 60000) {
        *why = "TIFF: first page has no usable size";
        return -1;
    }
    if (pages > max_pages) {
        *why = "too many pages";
        return -1;
    }
    info->type = "tiff";
    info->mime = "image/tiff";
    info->pages = pages;
    info->width = (int)w;
    info->height = (int)h;
    info->xres = xr;
    info->yres = yr;
    info->compression = comp == COMPRESSION_CCITTFAX3   ? "g3"
                        : comp == COMPRESSION_CCITTFAX4 ? "g4"
                        : comp == COMPRESSION_NONE      ? "none"
                                                        : "other";
    info->resolution = fax_resolution(yr);
    return 0;
}

static const unsigned char *memfind(const unsigned char *h, size_t hl, const char *n, size_t nl)
{
    return nl <= hl ? memmem(h, hl, n, nl) : NULL;
}

/* Pages counted by poppler, which reads the cross-reference table or stream, object streams
 * (PDF 1.5 compression) and the page tree as a renderer does (and rebuilds a damaged
 * cross-reference table the same way), so the count is that of the pages an agent sees.
 * Parsing a large PDF takes time: this runs on worker threads, never the loop. */
static int inspect_pdf(const unsigned char *d, size_t len, int max_pages, struct fax_doc_info *info,
                       const char **why)
{
    GBytes *bytes = g_bytes_new_static(d, len);
    GError *ge = NULL;
    PopplerDocument *doc = poppler_document_new_from_bytes(bytes, NULL, &ge);
    g_bytes_unref(bytes);
    if (!doc) {
        bool locked = ge && ge->domain == POPPLER_ERROR && ge->code == POPPLER_ERROR_ENCRYPTED;
        if (ge)
            g_error_free(ge);
        *why = locked ? "PDF protected by a password" : "damaged PDF";
        return -1;
    }
    int pages = poppler_document_get_n_pages(doc);
    g_object_unref(doc);
    info->type = "pdf";
    info->mime = "application/pdf";
    info->pages = pages;
    info->compression = "";
    info->resolution = "";
    if (pages > max_pages) {
        *why = "too many pages";
        return -1;
    }
    if (pages <= 0) {
        *why = "PDF without pages";
        return -1;
    }
    return 0;
}

int fax_doc_inspect(const void *data, size_t len, int max_pages, struct fax_doc_info *info,
                    const char **why)
{
    const unsigned char *d = data;
    memset(info, 0, sizeof(*info));
    if (len >= 4 && ((d[0] == 'I' && d[1] == 'I' && d[2] == 42 && d[3] == 0) ||
                     (d[0] == 'M' && d[1] == 'M' && d[2] == 0 && d[3] == 42) ||
                     (d[0] == 'I' && d[1] == 'I' && d[2] == 43 && d[3] == 0) ||
                     (d[0] == 'M' && d[1] == 'M' && d[2] == 0 && d[3] == 43)))
        return inspect_tiff(d, len, max_pages, info, why);
    /* poppler looks for the header in the first 1024 bytes too */
    if (memfind(d, len < 1024 ? len : 1024, "%PDF-", 5))
        return inspect_pdf(d, len, max_pages, info, why);
    *why = "not a TIFF or PDF document";
    return -1;
}

/* ---- identifiers in OCR text ---- */

#define MAX_WORDS 64

static void add_unique(char (*list)[256], int *n, const char *v)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(list[i], v) == 0)
            return;
    if (*n < FAX_FOUND_MAX)
        snprintf(list[(*n)++], 256, "%s", v);
}

static bool has_digit(const char *s)
{
    return strpbrk(s, "0123456789") != NULL;
}

static bool is_label(const char *w)
{
    /* "policy", "policy:", "póliza", "poliza", "pol.", "nº" after one of them */
    return strncasecmp(w, "polic", 5) == 0 || strncasecmp(w, "poliz", 5) == 0 ||
           strncasecmp(w, "p\xc3\xb3liz", 7) == 0 || strncasecmp(w, "p\xc3\x93liz", 7) == 0 ||
           strcasecmp(w, "pol.") == 0;
}

/* OCR's letters for digits, in a case number */
static int ocr_digit(char c)
{
    if (isdigit((unsigned char)c))
        return c;
    switch (c) {
    case 'O':
    case 'o':
    case 'Q':
    case 'D':
        return '0';
    case 'I':
    case 'l':
    case '|':
        return '1';
    case 'S':
        return '5';
    case 'B':
        return '8';
    case 'Z':
        return '2';
    default:
        return -1;
    }
}

static void find_cases(const char *line, struct fax_found *out)
{
    for (const char *p = line; *p; p++) {
        if (*p != 'C' || (p > line && isalnum((unsigned char)p[-1])))
            continue;
        const char *q = p + 1;
        while (*q == ' ')
            q++;
        if (*q != '-')
            continue;
        q++;
        while (*q == ' ')
            q++;
        char num[16];
        int n = 0;
        while (*q && n < 12 && ocr_digit(*q) > 0) {
            num[n++] = (char)ocr_digit(*q);
            q++;
        }
        num[n] = '\0';
        if (n == 0 || n > 12 || isalnum((unsigned char)*q) || num[0] == '0')
            continue;
        char id[32];
        snprintf(id, sizeof(id), "C-%s", num);
        bool dup = false;
        for (int i = 0; i < out->n_case; i++)
            dup = dup || strcmp(out->case_id[i], id) == 0;
        if (!dup && out->n_case < FAX_FOUND_MAX)
            snprintf(out->case_id[out->n_case++], sizeof(out->case_id[0]), "%s", id);
    }
}

static void find_phones(char *line, struct fax_found *out)
{
    for (char *p = line; *p; p++) {
        if (!(isdigit((unsigned char)*p) || (*p == '+' && isdigit((unsigned char)p[1]))))
            continue;
        if (p > line && isalnum((unsigned char)p[-1]))
            continue;
        char *q = p;
        int nd = 0;
        while (*q && (isdigit((unsigned char)*q) || strchr(" +-().", *q)) &&
               (q == p || *q != '+')) {
            nd += isdigit((unsigned char)*q) != 0;
            q++;
        }
        if (nd >= 9 && nd <= 15 && !isalpha((unsigned char)*q)) {
            char cand[64];
            size_t n = (size_t)(q - p) < sizeof(cand) - 1 ? (size_t)(q - p) : sizeof(cand) - 1;
            memcpy(cand, p, n);
            cand[n] = '\0';
            char norm[IDENT_MAX];
            const char *why = NULL;
            if (identity_phone(cand, norm, sizeof(norm), &why) == 0)
                add_unique(out->phone, &out->n_phone, norm);
        }
        p = q - 1;
        if (!*q)
            break;
    }
}

void fax_find_identifiers(const char *text, bool need_label, struct fax_found *out)
{
    memset(out, 0, sizeof(*out));
    if (!text)
        return;
    const char *s = text;
    while (*s) {
        const char *eol = strchr(s, '\n');
        size_t ll = eol ? (size_t)(eol - s) : strlen(s);
        if (ll > 1000)
            ll = 1000;
        char line[1001];
        memcpy(line, s, ll);
        line[ll] = '\0';
        s = eol ? eol + 1 : s + strlen(s);

        /* words, with punctuation around them removed */
        char work[1001];
        memcpy(work, line, ll + 1);
        char *words[MAX_WORDS];
        char *wstart[MAX_WORDS], *wend[MAX_WORDS];
        int nw = 0;
        for (char *tok = work; *tok && nw < MAX_WORDS;) {
            while (*tok && isspace((unsigned char)*tok))
                tok++;
            if (!*tok)
                break;
            char *e = tok;
            while (*e && !isspace((unsigned char)*e))
                e++;
            size_t off = (size_t)(tok - work), n = (size_t)(e - tok);
            bool last = *e == '\0';
            *e = '\0';
            char *w = tok;
            while (*w && strchr(":;,()[]\"'", *w))
                w++;
            size_t wl = strlen(w);
            while (wl > 0 && strchr(":;,()[]\"'.", w[wl - 1]))
                w[--wl] = '\0';
            words[nw] = w;
            wstart[nw] = line + off;
            wend[nw] = line + off + n;
            nw++;
            tok = last ? e : e + 1;
        }
        bool labelled = !need_label;
        for (int i = 0; i < nw; i++) {
            if (is_label(words[i])) {
                labelled = true;
                continue;
            }
            if (!labelled || !*words[i])
                continue;
            for (int k = 4; k >= 1; k--) {
                if (i + k > nw)
                    continue;
                char joined[256] = "";
                size_t jl = 0;
                bool ok = true;
                for (int j = i; j < i + k && ok; j++) {
                    size_t wl = strlen(words[j]);
                    if (wl == 0 || jl + wl >= sizeof(joined) || is_label(words[j]))
                        ok = false;
                    else {
                        memcpy(joined + jl, words[j], wl + 1);
                        jl += wl;
                    }
                }
                if (!ok || jl < 4 || !has_digit(joined) || !isalpha((unsigned char)joined[0]))
                    continue;
                char norm[IDENT_MAX];
                const char *why = NULL;
                if (identity_policy(joined, norm, sizeof(norm), &why) == 0) {
                    add_unique(out->policy, &out->n_policy, norm);
                    for (int j = i; j < i + k; j++) /* not read again as a phone number */
                        memset(wstart[j], ' ', (size_t)(wend[j] - wstart[j]));
                    i += k - 1;
                    break;
                }
            }
        }
        find_cases(line, out);
        find_phones(line, out);
    }
}
