/* email.h - the email channel's own interfaces, shared by its files:
 *
 *   email_mime.c     raw message -> struct email_msg (GMime)
 *   email_ingest.c   struct email_msg -> attachments on disk + one ingest script call
 *                    (or, for a delivery status notification, one email_dsn call)
 *   email_imap.c     [mailbox NAME] pollers: libcurl IMAP on the loop
 *   email_compose.c  outbound RFC 5322 text (pure; the SMTP workers call it)
 *   email_smtp.c     the outbox: claim from Redis on the loop, send with libesmtp in a
 *                    bounded pool of threads, acknowledge from the loop
 *   email_api.c      POST /v1/email/inbound, POST /v1/interactions/{id}/reply, the
 *                    struct channel
 *
 * Everything but the SMTP send itself runs on the event loop thread; hiredis is only ever
 * used from there. */
#ifndef OMNICC_EMAIL_H
#define OMNICC_EMAIL_H

#include <stdbool.h>
#include <stddef.h>

#include "email_mime.h"

struct config;
struct event_base;
struct mailbox_conf;
struct ingest_result;

extern const struct channel email_channel;

/* ---- email_ingest.c ---- */

enum email_outcome {
    EMAIL_STORED,    /* a new interaction (status 202) */
    EMAIL_DUPLICATE, /* seen before (200): a re-read after a crash, an MTA retry */
    EMAIL_DSN,       /* a delivery status notification, recorded on its case (or unknown) */
    EMAIL_REJECTED,  /* cannot be stored, ever (too large, unreadable): 400/413 */
    EMAIL_FAILED,    /* not stored now (Redis, disk): try again later (503) */
};

struct email_ingest_result {
    enum email_outcome outcome;
    int status;                     /* HTTP status for the inbound API */
    const char *error;              /* REJECTED / FAILED */
    const struct ingest_result *ix; /* STORED / DUPLICATE */
    const char *dsn_match;          /* DSN: matched | unknown | duplicate */
    const char *dsn_case;           /* DSN: the case it was recorded on, or "" */
};

typedef void email_ingest_done_fn(const struct email_ingest_result *res, void *arg);

struct email_limits email_limits_of(const struct config *cfg);

/* Parse, store attachments (durably, off the loop thread: filestore.h), then one script
 * call. mb: the mailbox the message came from (From of replies, queue, acknowledgement), or
 * NULL for the inbound API. raw is borrowed: it must stay valid until cb runs. cb fires
 * exactly once, possibly before this returns. */
void email_ingest_raw(const struct config *cfg, const struct mailbox_conf *mb, const char *raw,
                      size_t len, email_ingest_done_fn *cb, void *arg);

/* ---- email_imap.c ---- */

int email_imap_start(struct event_base *base, const struct config *cfg, char **err);
void email_imap_stop(void);

/* ---- email_compose.c ---- */

struct email_out_attachment {
    char *filename, *content_type;
    unsigned char *data;
    size_t len;
};

struct email_out {
    const char *from, *from_name, *to, *subject, *body;
    const char *message_id, *in_reply_to;
    const char *const *references; /* NULL-terminated */
    const char *const *cc;         /* NULL-terminated addresses, or NULL */
    bool auto_reply;               /* Auto-Submitted: auto-replied */
    const struct email_out_attachment *att;
    size_t n_att;
    long long date;                /* seconds since the epoch */
};

/* The message as CRLF text, ready for DATA (malloc'd, *len bytes). */
char *email_compose(const struct email_out *m, size_t *len);
/* "<omnicc.<random>@domain>" */
char *email_new_message_id(const char *domain);

/* ---- email_smtp.c ---- */

int email_outbox_start(struct event_base *base, const struct config *cfg, char **err);
void email_outbox_stop(void);
/* Look at the outbox now (work was just queued by this daemon). */
void email_outbox_kick(void);

/* ---- email_api.c ---- */

/* Largest body of an agent's reply (POST /v1/interactions/{id}/reply), in bytes. */
#define EMAIL_REPLY_BODY_MAX (256 * 1024)

/* Queue an acknowledgement of a new case (mailbox ack_reply = yes): fire and forget; the
 * script refuses automatic mail and rate-limits per sender. */
void email_queue_ack(const struct config *cfg, const struct mailbox_conf *mb, const char *ix_id,
                     const char *case_id);
/* Queue the transcript of web chat session (interaction ix_id) to the visitor's email; the
 * script sends it once per session and never to automatic addresses. done (may be NULL) is
 * called once with what became of it: "requested" (on the outbox, now or by an earlier
 * request), "no_email" (no address known for the visitor), "automatic" (an automatic
 * address: never written to) or "unavailable" (storage error). -1 without calling done
 * (nothing queued) when [email] smtp_url or a From address is not configured. */
typedef void email_transcript_cb(const char *outcome, void *arg);
int email_queue_transcript(const struct config *cfg, const char *ix_id, const char *session,
                           email_transcript_cb *done, void *arg);

#endif
