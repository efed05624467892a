/* email_mime.h - one raw RFC 5322 message in, one normalised struct email_msg out (GMime 3):
 * addresses and RFC 2047 headers decoded, every charset converted to UTF-8, the body text
 * (text/plain preferred, HTML turned into readable text otherwise), the quoted part of a
 * reply trimmed (the full text kept beside it), attachments with their sha256, the headers
 * that make a message automatic (never answered automatically), delivery status
 * notifications (RFC 3464) and the case references a message carries (token in the subject,
 * plus-address). Pure: no I/O, no Redis; the IMAP poller, POST /v1/email/inbound, the unit
 * test and the fuzzer all run exactly this. */
#ifndef OMNICC_EMAIL_MIME_H
#define OMNICC_EMAIL_MIME_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define EMAIL_MAX_REFS 20      /* References kept (the most recent ones) */
#define EMAIL_TEXT_MAX (1 << 20) /* body text kept, bytes */

struct email_limits {
    size_t max_message;    /* raw message bytes */
    size_t max_attachment; /* one attachment, decoded bytes */
    size_t max_total;      /* all attachments together */
    int max_attachments;
};

struct email_addr {
    char *name; /* display name, UTF-8 ("" when none) */
    char *addr; /* local@domain as written */
};

struct email_attachment {
    char *filename;     /* sanitised, never a path */
    char *content_type; /* "application/pdf" */
    char *content_id;   /* for inline images, or NULL */
    unsigned char *data;
    size_t len;
    char sha256[65];
};

/* What a delivery status notification (multipart/report; report-type=delivery-status)
 * says about the message it reports on. */
struct email_dsn {
    char *original_message_id; /* "<id>" of the message that failed, or NULL */
    char *action;              /* failed | delayed | delivered | relayed | expanded */
    char *status;              /* "5.1.1" */
    char *recipient;           /* Final-Recipient address */
    char *diagnostic;          /* Diagnostic-Code text */
};

struct email_msg {
    char *message_id;  /* "<id@host>", or NULL when the message has none */
    char *external_id; /* message_id, or "sha256:<hex of the raw message>" */
    struct email_addr from;
    struct email_addr *to, *cc, *reply_to;
    size_t n_to, n_cc, n_reply_to;
    char *subject;     /* decoded, "" when absent */
    char *date;        /* as written, or NULL */
    char *in_reply_to; /* "<id>" or NULL */
    char **references; /* "<id>", oldest first, at most EMAIL_MAX_REFS */
    size_t n_references;
    char *text;         /* the whole body as UTF-8 text */
    char *text_trimmed; /* the new part of a reply: text without the quoted history */
    const char *text_source; /* "text/plain", "text/html" or "" */
    struct email_attachment *att;
    size_t n_att;
    int att_skipped; /* over the size or count limits: named in the text, not stored */
    /* Automatic mail: never answered automatically. */
    bool auto_submitted; /* Auto-Submitted other than "no", X-Autoreply, ... */
    bool bulk;           /* Precedence bulk/list/junk, List-Id */
    bool from_daemon;    /* mailer-daemon, postmaster, empty Return-Path */
    bool is_dsn;         /* a delivery status notification: never a new case */
    struct email_dsn dsn;
    char *case_token;   /* "C-1234" from "[#C-1234]" in the subject */
    char *plus_case;    /* "C-1234" from claims+C-1234@ in a recipient address */
};

/* Call once per process before email_parse (from the loop thread). */
void email_mime_init(void);
void email_mime_shutdown(void);

/* 0, or -1 with *err (caller frees) for a message that cannot be read at all. Everything
 * in out is owned by it: free with email_msg_free. */
int email_parse(const char *raw, size_t len, const struct email_limits *lim,
                struct email_msg *out, char **err);
void email_msg_free(struct email_msg *m);

/* Whether an automatic reply may ever be sent to this message's sender. */
bool email_may_auto_reply(const struct email_msg *m);

/* The parse result as JSON (attachments by metadata, not content): the unit test compares
 * it with the corpus' expectations; the adapter builds the interaction metadata from it. */
json_t *email_msg_json(const struct email_msg *m);

/* Helpers, exposed for tests. Each returns a malloc'd UTF-8 string. */
char *email_html_to_text(const char *html, size_t len);
char *email_trim_quoted(const char *text);
/* "C-1234" when s contains "[#C-1234]", else NULL. */
char *email_find_case_token(const char *s);
/* "C-1234" when addr is local+C-1234@domain, else NULL. */
char *email_plus_case(const char *addr);

#endif
