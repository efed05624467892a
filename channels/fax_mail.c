/* fax_mail.c - fax-to-email: a [mailbox NAME] with channel = fax receives mail from a
 * fax-to-email service (or the insurer's own fax server mailing what it received). The
 * email channel fetches and parses each message as usual (email_imap.c, email_mime.c) and
 * hands it here instead of ingesting it as an email: its first TIFF or PDF attachment is the
 * document, the sending number is read from the subject or the From the providers write
 * ("Fax from +49 30 1234567", "12125551234@fax.example"), and the message id is the
 * idempotency key. From then on it is the webhooks' path (fax.c fax_receive_mail): the
 * document checked and stored durably, a fax interaction ingested, OCR of the cover page. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "email.h"
#include "email_mime.h"
#include "fax.h"
#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/ingest.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

/* A number as providers write them: "+49 30 1234567", "(212) 555-1234", "030/1234567":
 * digit groups with one separator between them, brackets only around the first (so
 * "... 555-1234 - 3 pages" and "+49 30 1234567 (3 pages)" end where the number does). */
#define NUMBER "(\\+?(\\([0-9]+\\)|[0-9]+)([ ./-]?[0-9]+){0,8})"

/* What the common services and HylaFAX put in the subject ("Fax from ...", "New fax received
 * from ...", "Facsimile received from ...", "Fax von ...", "Télécopie de ..."); the
 * number is the second group. */
static const char *const subject_patterns[] = {
    "(fax|facsimile|telefax|t[^ ]{1,2}l[^ ]{1,2}copie)[^0-9+(]{0,40}" NUMBER,
    NULL,
};

/* Group `group` of pattern in text, normalised as a phone number; malloc'd or NULL. intl: 11 to 15 digits with no leading 0 and no '+' are taken as international (the
 * "12125551234@fax.example" of the services), not as a national number. */
static char *match_number_in(const char *pattern, const char *text, size_t group, bool intl)
{
    regex_t re;
    if (!text || regcomp(&re, pattern, REG_EXTENDED | REG_ICASE) != 0)
        return NULL;
    regmatch_t g[8];
    char *out = NULL;
    if (regexec(&re, text, 8, g, 0) == 0) {
        size_t k = group;
        if (k <= re.re_nsub && k < 8 && g[k].rm_so >= 0) {
            char *raw = xstrndup(text + g[k].rm_so, (size_t)(g[k].rm_eo - g[k].rm_so));
            size_t nd = strspn(raw, "0123456789");
            if (intl && raw[0] != '0' && raw[nd] == '\0' && nd >= 11 && nd <= 15) {
                char *p = xasprintf("+%s", raw);
                free(raw);
                raw = p;
            }
            char norm[IDENT_MAX];
            const char *why;
            if (identity_phone(raw, norm, sizeof(norm), &why) == 0)
                out = xstrdup(norm);
            free(raw);
        }
    }
    regfree(&re);
    return out;
}

static char *match_number(const char *pattern, const char *text, size_t group)
{
    return match_number_in(pattern, text, group, false);
}

char *fax_mail_number(const char *subject, const char *from_addr, const char *from_name,
                      const char *pattern)
{
    char *text = xasprintf("%s\n%s <%s>", subject ? subject : "", from_name ? from_name : "",
                           from_addr ? from_addr : "");
    char *n = pattern ? match_number(pattern, text, 1) : NULL;
    for (int i = 0; !n && subject_patterns[i]; i++)
        n = match_number(subject_patterns[i], subject, 2);
    if (!n) /* "12125551234@fax.example", "+4930123456@efax.example" */
        n = match_number_in("^(\\+?[0-9]{7,15})@", from_addr, 1, true);
    if (!n) /* a display name that is only a number: "+49 30 1234567" <noreply@...> */
        n = match_number("^" NUMBER "$", from_name, 1);
    free(text);
    return n;
}

static bool is_fax_document(const struct email_attachment *a)
{
    static const char *const types[] = {"image/tiff", "image/tif", "application/pdf",
                                        "application/x-pdf", NULL};
    for (int i = 0; a->content_type && types[i]; i++)
        if (strcasecmp(a->content_type, types[i]) == 0)
            return true;
    /* application/octet-stream and friends: what the bytes say */
    return a->len >= 4 && (memcmp(a->data, "II*\0", 4) == 0 || memcmp(a->data, "MM\0*", 4) == 0 ||
                           memcmp(a->data, "%PDF", 4) == 0);
}

struct fax_mail_pending {
    void (*cb)(const struct email_ingest_result *res, void *arg);
    void *arg;
};

static void received(void *arg, int status, const char *ix_id, const char *case_id,
                     bool duplicate, const char *err)
{
    struct fax_mail_pending *p = arg;
    struct ingest_result ix = {.status = status, .id = ix_id, .case_id = case_id,
                               .customer_id = "", .reservation = "", .conflicts = "[]",
                               .duplicate = duplicate};
    struct email_ingest_result res = {.status = status, .error = err, .ix = &ix};
    if (status < 300) {
        res.outcome = duplicate ? EMAIL_DUPLICATE : EMAIL_STORED;
        res.status = duplicate ? 200 : 202;
    } else {
        res.outcome = status >= 500 ? EMAIL_FAILED : EMAIL_REJECTED;
        res.ix = NULL;
    }
    p->cb(&res, p->arg);
    free(p);
}

void fax_mail_ingest(const struct config *cfg, const struct mailbox_conf *mb,
                     const struct email_msg *m,
                     void (*cb)(const struct email_ingest_result *res, void *arg), void *arg)
{
    (void)cfg;
    /* the message id as the fax id: "<abc@x>" -> "abc@x"; anything else by its hash */
    const char *ext = m->external_id;
    size_t el = strlen(ext);
    char *fax_id = NULL;
    if (el > 2 && ext[0] == '<' && ext[el - 1] == '>')
        fax_id = xstrndup(ext + 1, el - 2);
    bool ok = fax_id && strlen(fax_id) <= 128;
    for (const char *c = fax_id; ok && *c; c++)
        ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
             strchr("-_.:@", *c);
    if (!ok) {
        char sha[65];
        attachment_sha256(ext, el, sha);
        free(fax_id);
        fax_id = xasprintf("sha256:%.40s", sha);
    }
    const struct email_attachment *doc = NULL;
    for (size_t i = 0; i < m->n_att && !doc; i++)
        if (is_fax_document(&m->att[i]))
            doc = &m->att[i];
    char *number = fax_mail_number(m->subject, m->from.addr, m->from.name,
                                   mb ? mb->fax_number_regex : NULL);
    struct fax_mail fm = {
        .fax_id = fax_id,
        .from = number,
        .to = mb ? mb->address : NULL,
        /* no number: the provider's words about the sender, for the agent */
        .tsi = number ? NULL : (m->subject && *m->subject ? m->subject : m->from.addr),
        .failure = doc ? NULL
                   : m->n_att ? "no TIFF or PDF attachment in the mail"
                              : "no attachment in the mail",
    };
    if (doc) {
        fm.doc = xmalloc(doc->len ? doc->len : 1);
        memcpy(fm.doc, doc->data, doc->len);
        fm.doc_len = doc->len;
        fm.doc_name = doc->filename;
    }
    log_info("fax: mail %s from %s: %s", fax_id, number ? number : "an unknown number",
             doc ? "document attached" : fm.failure);
    struct fax_mail_pending *p = xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    fax_receive_mail(&fm, received, p);
    free(number);
    free(fax_id);
}
