/* fax.h - the fax channel (docs/FAX.md). Files sharing this header:
 *   fax_wire.c  what arrives on the wire, with no I/O: multipart/form-data (GMime), the
 *               Phaxio signature (HMAC-SHA1), the Telnyx signature (Ed25519), the Telnyx
 *               JSON event, the document check (TIFF through libtiff, PDF through
 *               poppler), identifiers on a cover sheet's OCR text. Fuzzed
 *               (tests/fuzz/fuzz_fax.c).
 *   fax.c       the [fax] configuration, the routes (Phaxio, Telnyx, on-premises gateways),
 *               the ingest of one received fax, the media download, the fax script.
 *   fax_ocr.c   the OCR worker pool (libtesseract, off the loop thread), which also renders
 *               page images and makes the PDFs of TIFF faxes.
 *   fax_pdf.c   a TIFF fax as a PDF (libtiff + cairo's PDF surface), stored beside it.
 * A fax is an interaction of channel "fax" whose external_id is "<provider>:<fax id>", so
 * provider retries never create a second one; the document is in the content-addressed
 * attachment store (include/omnicc/attachments.h), its sha256 in the interaction's metadata. */
#ifndef OMNICC_CHANNEL_FAX_H
#define OMNICC_CHANNEL_FAX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnicc/channel.h"

struct config;
struct event_base;
struct http_req;

extern const struct channel fax_channel;

/* ---- multipart/form-data (fax_wire.c) ---- */

#define FAX_FORM_MAX_PARTS 64

struct fax_part {
    char *name;         /* the form field's name (Content-Disposition name=) */
    char *filename;     /* a file part's filename, or NULL for a plain field */
    char *content_type; /* a file part's Content-Type, or NULL */
    unsigned char *data; /* the bytes (NUL-terminated copy, len excludes it) */
    size_t len;
    bool is_file;       /* a file upload (filename= present) */
};

struct fax_form {
    struct fax_part parts[FAX_FORM_MAX_PARTS];
    int n;
};

/* Parse a multipart/form-data body (content_type is the request's Content-Type, with its
 * boundary) with GMime. 0, or -1 with *why (static text); out is empty on failure. */
int fax_form_parse(const char *content_type, const void *body, size_t len, struct fax_form *out,
                   const char **why);
void fax_form_free(struct fax_form *f);
/* The first field (not file) named name, NUL-terminated; NULL when absent. */
const char *fax_form_field(const struct fax_form *f, const char *name);
/* The first file part named name; NULL when absent. */
const struct fax_part *fax_form_file(const struct fax_form *f, const char *name);

/* ---- signatures (fax_wire.c) ---- */

/* Phaxio's X-Phaxio-Signature: hex HMAC-SHA1(callback token, url + each field sorted by
 * name as name+value + each file part sorted by name as name + hex SHA-1 of its bytes). */
void fax_phaxio_signature(const char *token, const char *url, const struct fax_form *f,
                          char out[41]);
bool fax_phaxio_valid(const char *token, const char *url, const struct fax_form *f,
                      const char *header);

/* Telnyx: telnyx-signature-ed25519 (base64 of the 64-byte signature) over timestamp "|"
 * body, with the account's public key (base64 of the raw 32 bytes, as the portal shows it,
 * or a PEM SubjectPublicKeyInfo), the timestamp within window seconds of now_s.
 * 0, or -1 with *why. */
int fax_telnyx_verify(const char *public_key, const char *timestamp, const char *signature,
                      const void *body, size_t len, int64_t now_s, int window, const char **why);

bool fax_telnyx_key_ok(const char *public_key);

struct fax_telnyx_event {
    char *event_type; /* data.event_type: fax.received, fax.failed, ... */
    char *event_id;   /* data.id */
    char *fax_id;     /* data.payload.fax_id */
    char *from, *to;
    char *media_url;
    char *status;     /* data.payload.status */
    char *failure_reason;
    int page_count;   /* as the provider says (-1 absent): recorded, never trusted */
    bool partial;     /* data.payload.partial_content */
};

/* Parse a Telnyx webhook envelope. 0, or -1 with *why; ev is freed on failure. */
int fax_telnyx_parse(const char *body, size_t len, struct fax_telnyx_event *ev, const char **why);
void fax_telnyx_event_free(struct fax_telnyx_event *ev);

/* ---- documents (fax_wire.c) ---- */

#define FAX_MAX_PAGES_HARD 10000

struct fax_doc_info {
    const char *type;       /* "tiff" | "pdf" */
    const char *mime;       /* image/tiff | application/pdf */
    int pages;              /* counted from the document */
    int width, height;      /* first page, pixels (TIFF) */
    float xres, yres;       /* first page, dpi (TIFF) */
    const char *compression; /* first page: g3 | g4 | none | other (TIFF) */
    const char *resolution; /* fine | standard | superfine | other (TIFF fax resolutions) */
};

/* Identify the document and count its pages from its own structure (libtiff directories;
 * poppler's page tree of a PDF, object streams included). 0, or -1 with *why (static text:
 * not a TIFF or PDF, damaged, more than max_pages pages). CPU-bound on large documents: for
 * worker threads (fax.c runs it on the file store's), never the loop thread. */
int fax_doc_inspect(const void *data, size_t len, int max_pages, struct fax_doc_info *info,
                    const char **why);

/* A TIFF held in memory, opened read-only through libtiff (data must outlive it; TIFFClose
 * frees the handle). NULL when it is not a readable TIFF. */
struct tiff;
struct tiff *fax_tiff_open(const void *data, size_t len);

/* ---- a TIFF fax as a PDF (fax_pdf.c; blocking: worker threads only) ---- */

/* Every page of a TIFF drawn onto a PDF page of its physical size (pixels / dpi, each way),
 * bi-level pages as 1-bit image masks. malloc'd, or NULL with *err (static text). */
unsigned char *fax_tiff_to_pdf(const unsigned char *data, size_t len, int max_pages,
                               size_t *out_len, int *pages, const char **err);

enum { FAX_PDF_NOT_FOUND = -1, FAX_PDF_UNREADABLE = -2, FAX_PDF_STORE = -3 };

struct fax_pdf {
    char sha[65];        /* the PDF's name in the attachment store */
    unsigned char *data; /* its bytes when asked for (malloc'd) */
    size_t len;
    int pages;           /* when made now */
    bool made;           /* made now, not found made before or received as a PDF */
    const char *err;     /* static text on failure */
};

/* The PDF of the stored document sha: the document itself when it is a PDF; for a TIFF the
 * PDF made before (the link file attachments/xx/<sha>.pdf names it), else made now, stored
 * content-addressed and linked. 0, or FAX_PDF_* with out->err. */
int fax_pdf_of(const char *state_dir, const char *sha, int max_pages, bool want_bytes,
               struct fax_pdf *out);

/* ---- identifiers on a cover sheet (fax_wire.c) ---- */

#define FAX_FOUND_MAX 8

struct fax_found {
    char policy[FAX_FOUND_MAX][256];
    int n_policy;
    char phone[FAX_FOUND_MAX][256];
    int n_phone;
    char case_id[FAX_FOUND_MAX][32];
    int n_case;
};

/* Policy numbers (identity_policy, with its OCR repairs, over runs of up to four adjacent
 * words, so "PL-2024-001 234" is found; with need_label, i.e. no [identity] policy_pattern
 * to tell a policy number from any word, only after "policy", "póliza" or "poliza" on the
 * same line), case tokens ("C-123", "C- 12", OCR's "C-I23") and phone numbers
 * (identity_phone) in OCR text. Each list keeps order, without repeats. */
void fax_find_identifiers(const char *text, bool need_label, struct fax_found *out);

/* ---- outbound (fax_out.c) ---- */

/* Document links for outbound faxes (Telnyx fetches the document from media_url):
 * HMAC-SHA256 with secret over "<sha256>.<expires>", hex. verify: 0, or -1 with *why
 * (malformed, expired at now, or a signature that does not match). */
void fax_media_signature(const char *secret, const char *sha, long long expires, char out[65]);
int fax_media_verify(const char *secret, const char *sha, const char *expires, const char *sig,
                     long long now, const char **why);
/* GET /v1/fax/media/{sha256}?expires=&sig= (fax_out.c) */
void fax_out_media(struct http_req *r);

/* ---- HylaFAX's clients as child processes (fax_hylafax.c) ---- */

/* exit_code: the client's exit status, -1 when it was killed (timeout) or died by a signal;
 * out: what it printed (stdout and stderr, at most 64 KiB). Runs on the loop thread. */
typedef void fax_proc_done_fn(void *arg, int exit_code, const char *out);
/* Start argv[0] (found on PATH) with argv, no shell, stdin /dev/null, HOME at omniccd's
 * HylaFAX settings; done runs exactly once. 0, or -1 (errno; done never runs). */
int fax_proc_run(const char *const argv[], int timeout_s, fax_proc_done_fn *done, void *arg);
/* Write state_dir/hylafax/.hylarc (passive mode, the job format) and remember base. */
int fax_hylafax_init(struct event_base *base, const char *state_dir, char **err);
void fax_hylafax_stop(void);
/* A dial string HylaFAX gets: "+" then 3 to 20 digits, or digits only. */
bool fax_hylafax_number_ok(const char *to);
/* The job id in sendfax's "request id is N (group id N) ...", or -1. */
long fax_hylafax_job_id(const char *out);
/* faxstat's job lines in omniccd's JobFmt "%j|%a|%s" (id, state letter, status text): fn for
 * each; the count. */
typedef void fax_hylafax_job_fn(void *arg, long id, char state, const char *status);
int fax_hylafax_parse_status(const char *out, fax_hylafax_job_fn *fn, void *arg);

/* ---- fax-to-email: fax.c receives, fax_mail.c reads the message ---- */

/* One fax that arrived by mail: the message's id (the idempotency key), the sending number
 * when the provider's subject or From names it, the document (TIFF or PDF). */
struct fax_mail {
    const char *fax_id;   /* [A-Za-z0-9-_.:@], at most 128 */
    const char *from;     /* the sender's fax number, or NULL */
    const char *to;       /* the mailbox's address, or NULL */
    const char *tsi;      /* what the provider says of the sender when no number is found */
    unsigned char *doc;   /* malloc'd, taken by fax_receive_mail; NULL: no document */
    size_t doc_len;
    const char *doc_name;
    const char *failure;  /* why there is no document */
};
/* status 200 (ix_id, case_id, duplicate) or an error status with err; exactly once. */
typedef void fax_mail_done_fn(void *arg, int status, const char *ix_id, const char *case_id,
                              bool duplicate, const char *err);
/* The same path as the webhooks: checked, stored durably, ingested as a fax (external id
 * "email:<fax_id>"), OCR after. */
void fax_receive_mail(const struct fax_mail *m, fax_mail_done_fn *done, void *arg);

struct config;
struct mailbox_conf;
struct email_msg;
struct email_ingest_result;
/* A message from a mailbox with channel = fax, parsed (email_mime.h): its first TIFF or PDF
 * attachment becomes a fax interaction; cb as email_ingest_raw's. Takes nothing from m. */
void fax_mail_ingest(const struct config *cfg, const struct mailbox_conf *mb,
                     const struct email_msg *m,
                     void (*cb)(const struct email_ingest_result *res, void *arg), void *arg);
/* The sending number named in a fax-to-email subject or From ("Fax from +49 30 1234567",
 * "12125551234@fax.example"), E.164-normalised; pattern (POSIX ERE, first group the number)
 * is tried first when not NULL. malloc'd, or NULL. */
char *fax_mail_number(const char *subject, const char *from_addr, const char *from_name,
                      const char *pattern);

int fax_out_start(struct event_base *base, const struct config *cfg, char **err);
void fax_out_stop(void);
void fax_out_reload(const struct config *cfg);
void fax_out_post(struct http_req *r); /* POST /v1/interactions/{id}/fax */

/* ---- OCR (fax_ocr.c) ---- */

/* Result handed back on the loop thread: text NULL with err on failure. Borrowed. */
typedef void fax_ocr_done_fn(const char *ix_id, const char *text, const char *err, double cpu_s);

int fax_ocr_start(struct event_base *base, int workers, int queue_max, const char *langs,
                  fax_ocr_done_fn *done, char **err);
void fax_ocr_stop(void);
/* Queue OCR of the first page of the stored document (path); false when the queue is full
 * or OCR is off. */
bool fax_ocr_submit(const char *ix_id, const char *path);
/* A page image (PNG) of a stored TIFF document, rendered by the same workers; cb runs on the
 * loop thread with the PNG (borrowed) or err. false when the pool is busy or stopped. */
typedef void fax_page_done_fn(void *arg, const unsigned char *png, size_t len, const char *err);
bool fax_page_submit(const char *state_dir, const char *sha, int page, fax_page_done_fn *cb,
                     void *arg);
/* Page n (0-based) of a TIFF as PNG, standard resolution stretched to the page's real
 * aspect ratio (malloc'd), or NULL with *err. */
unsigned char *fax_render_page(const unsigned char *data, size_t len, int page, size_t *out_len,
                               char **err);
/* The PDF of a stored document (fax_pdf_of) made or found by the same workers; cb runs on the
 * loop thread with ix_id (copied, may be NULL), rc and pdf (borrowed). want_bytes: someone is
 * waiting (ahead of the OCR backlog), else only made and stored. false when the pool is busy
 * or stopped (then cb never runs). */
typedef void fax_pdf_done_fn(void *arg, const char *ix_id, int rc, const struct fax_pdf *pdf);
bool fax_pdf_submit(const char *state_dir, const char *sha, int max_pages, const char *ix_id,
                    bool want_bytes, fax_pdf_done_fn *cb, void *arg);
/* OCR of a TIFF held in memory, page 0 (for tests and the worker). */
char *fax_ocr_tiff_page(void *api, const unsigned char *data, size_t len, char **err);

#endif
