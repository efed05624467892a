/* email_compose.c - the RFC 5322 text of an outbound message (replies and acknowledgements):
 * headers with RFC 2047 encoding where they are not ASCII, the body as UTF-8
 * quoted-printable, attachments as base64 parts of a multipart/mixed. Pure and reentrant:
 * the SMTP worker threads call it. Nothing a customer wrote can add a header: every header
 * value loses its line breaks, and addresses holding anything but an address are refused
 * before this point (email_api.c). */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "email.h"
#include "omnicc/util.h"

struct out {
    char *s;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n + 1)
            cap *= 2;
        o->s = xrealloc(o->s, cap);
        o->cap = cap;
    }
    memcpy(o->s + o->len, s, n);
    o->len += n;
    o->s[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static bool is_ascii_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x7f || (unsigned char)*s < 0x20)
            return false;
    return true;
}

/* A header value on one line: CR, LF and other controls become spaces. */
static char *one_line(const char *s)
{
    char *c = xstrdup(s ? s : "");
    for (char *p = c; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return c;
}

/* RFC 2047 B-encoded words of at most 45 input bytes each, never splitting a UTF-8
 * sequence, folded onto continuation lines. */
static void put_encoded(struct out *o, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text), i = 0;
    bool first = true;
    while (i < n) {
        size_t take = n - i > 45 ? 45 : n - i;
        while (take > 0 && i + take < n && (s[i + take] & 0xc0) == 0x80)
            take--;
        if (take == 0)
            take = n - i > 45 ? 45 : n - i;
        char b64[80];
        EVP_EncodeBlock((unsigned char *)b64, s + i, (int)take);
        if (!first)
            puts_(o, "\r\n ");
        puts_(o, "=?UTF-8?B?");
        puts_(o, b64);
        puts_(o, "?=");
        first = false;
        i += take;
    }
}

static void header_text(struct out *o, const char *name, const char *value)
{
    char *v = one_line(value);
    puts_(o, name);
    puts_(o, ": ");
    if (is_ascii_printable(v) && strlen(v) < 900)
        puts_(o, v);
    else
        put_encoded(o, v);
    puts_(o, "\r\n");
    free(v);
}

static void header_addr(struct out *o, const char *name, const char *display, const char *addr)
{
    char *a = one_line(addr);
    puts_(o, name);
    puts_(o, ": ");
    if (display && *display) {
        char *d = one_line(display);
        if (is_ascii_printable(d)) {
            puts_(o, "\"");
            for (const char *p = d; *p; p++) {
                if (*p == '"' || *p == '\\')
                    put(o, "\\", 1);
                put(o, p, 1);
            }
            puts_(o, "\"");
        } else {
            put_encoded(o, d);
        }
        puts_(o, " ");
        free(d);
    }
    puts_(o, "<");
    puts_(o, a);
    puts_(o, ">\r\n");
    free(a);
}

/* UTF-8 text as quoted-printable with CRLF line ends; a line never starts with '.' nor
 * ends in a space, so no relay rewrites it. */
static void put_qp(struct out *o, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        unsigned char c = *p;
        if (c == '\r')
            continue;
        if (c == '\n') {
            puts_(o, "\r\n");
            col = 0;
            continue;
        }
        char enc[4];
        size_t w;
        bool last_on_line = p[1] == '\n' || p[1] == '\r' || p[1] == '\0';
        if ((c >= 33 && c <= 126 && c != '=' && !(c == '.' && col == 0)) ||
            ((c == ' ' || c == '\t') && !last_on_line)) {
            enc[0] = (char)c;
            w = 1;
        } else {
            enc[0] = '=';
            enc[1] = hex[c >> 4];
            enc[2] = hex[c & 15];
            w = 3;
        }
        if (col + w > 75) {
            puts_(o, "=\r\n");
            col = 0;
            if (enc[0] == '.' && w == 1) {
                enc[0] = '=';
                enc[1] = '2';
                enc[2] = 'E';
                w = 3;
            }
        }
        put(o, enc, w);
        col += w;
    }
    if (col)
        puts_(o, "\r\n");
}

static void put_base64(struct out *o, const unsigned char *data, size_t len)
{
    char line[80];
    for (size_t i = 0; i < len; i += 57) {
        size_t n = len - i > 57 ? 57 : len - i;
        EVP_EncodeBlock((unsigned char *)line, data + i, (int)n);
        puts_(o, line);
        puts_(o, "\r\n");
    }
}

static void put_filename(struct out *o, const char *param, const char *name)
{
    char *n = one_line(name && *name ? name : "attachment");
    if (is_ascii_printable(n) && !strpbrk(n, "\"\\")) {
        puts_(o, param);
        puts_(o, "=\"");
        puts_(o, n);
        puts_(o, "\"");
    } else { /* RFC 2231 */
        static const char hex[] = "0123456789ABCDEF";
        puts_(o, param);
        puts_(o, "*=UTF-8''");
        for (const unsigned char *p = (const unsigned char *)n; *p; p++) {
            if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                strchr("-._~", *p)) {
                put(o, (const char *)p, 1);
            } else {
                char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
                put(o, e, 3);
            }
        }
    }
    free(n);
}

char *email_new_message_id(const char *domain)
{
    unsigned char r[12];
    if (RAND_bytes(r, sizeof(r)) != 1)
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (unsigned char)random();
    char hex[25];
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    return xasprintf("<omnicc.%lld.%s@%s>", (long long)now_ms(), hex,
                     domain && *domain ? domain : "omnicc.invalid");
}

char *email_compose(const struct email_out *m, size_t *len)
{
    struct out o = {0};
    char date[64];
    time_t t = (time_t)m->date;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    header_addr(&o, "From", m->from_name, m->from);
    header_addr(&o, "To", NULL, m->to);
    if (m->cc && m->cc[0]) {
        /* plain addr-specs (checked by the reply API), one per line */
        puts_(&o, "Cc:");
        for (const char *const *c = m->cc; *c; c++) {
            char *v = one_line(*c);
            puts_(&o, c == m->cc ? " <" : ",\r\n <");
            puts_(&o, v);
            puts_(&o, ">");
            free(v);
        }
        puts_(&o, "\r\n");
    }
    header_text(&o, "Subject", m->subject);
    header_text(&o, "Date", date);
    header_text(&o, "Message-ID", m->message_id);
    if (m->in_reply_to && *m->in_reply_to)
        header_text(&o, "In-Reply-To", m->in_reply_to);
    if (m->references && m->references[0]) {
        puts_(&o, "References:");
        for (const char *const *r = m->references; *r; r++) {
            char *v = one_line(*r);
            puts_(&o, r == m->references ? " " : "\r\n ");
            puts_(&o, v);
            free(v);
        }
        puts_(&o, "\r\n");
    }
    if (m->auto_reply) {
        /* RFC 3834: automatic, so no well-behaved responder answers it */
        puts_(&o, "Auto-Submitted: auto-replied\r\n");
        puts_(&o, "X-Auto-Response-Suppress: All\r\n");
        puts_(&o, "Precedence: auto_reply\r\n");
    }
    puts_(&o, "MIME-Version: 1.0\r\n");
    char boundary[64] = "";
    if (m->n_att) {
        unsigned char r[9];
        if (RAND_bytes(r, sizeof(r)) != 1)
            memset(r, 0x5a, sizeof(r));
        char b64[16];
        EVP_EncodeBlock((unsigned char *)b64, r, sizeof(r));
        for (char *p = b64; *p; p++)
            if (*p == '+' || *p == '/')
                *p = '_';
        snprintf(boundary, sizeof(boundary), "=_omnicc_%s", b64);
        puts_(&o, "Content-Type: multipart/mixed; boundary=\"");
        puts_(&o, boundary);
        puts_(&o, "\"\r\n\r\nThis is a MIME message.\r\n--");
        puts_(&o, boundary);
        puts_(&o, "\r\n");
    }
    puts_(&o, "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    put_qp(&o, m->body ? m->body : "");
    for (size_t i = 0; i < m->n_att; i++) {
        const struct email_out_attachment *a = &m->att[i];
        puts_(&o, "--");
        puts_(&o, boundary);
        puts_(&o, "\r\nContent-Type: ");
        char *ct = one_line(a->content_type && strchr(a->content_type, '/') ? a->content_type
                                                                          : "application/octet-stream");
        puts_(&o, strpbrk(ct, ";\"") ? "application/octet-stream" : ct);
        free(ct);
        puts_(&o, "; ");
        put_filename(&o, "name", a->filename);
        puts_(&o, "\r\nContent-Disposition: attachment; ");
        put_filename(&o, "filename", a->filename);
        puts_(&o, "\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        put_base64(&o, a->data, a->len);
    }
    if (m->n_att) {
        puts_(&o, "--");
        puts_(&o, boundary);
        puts_(&o, "--\r\n");
    }
    *len = o.len;
    return o.s;
}
