/* email_compose.c - the RFC 5322 text of an outbound message (replies and acknowledgements),
 * built with GMime: headers RFC 2047-encoded where they are not ASCII, the body as UTF-8
 * quoted-printable, attachments as base64 parts of a multipart/mixed with RFC 2231 file
 * names. Reentrant: the SMTP worker threads call it (GMime objects are per call; GMime is
 * initialised on the loop thread before the workers start). Nothing a customer wrote can
 * add a header: every header value loses its line breaks, and addresses holding anything
 * but an address are refused before this point (email_api.c). */
#include <gmime/gmime.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "email.h"
#include "omnicc/util.h"

/* A header value on one line: CR, LF and other controls become spaces. */
static char *one_line(const char *s)
{
    char *c = xstrdup(s ? s : "");
    for (char *p = c; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return c;
}

static void add_mailbox(InternetAddressList *list, const char *name, const char *addr)
{
    char *n = one_line(name), *a = one_line(addr);
    InternetAddress *ia = internet_address_mailbox_new(n, a);
    internet_address_set_charset(ia, "utf-8"); /* a non-ASCII name is encoded as UTF-8 */
    internet_address_list_add(list, ia);
    g_object_unref(ia);
    free(n);
    free(a);
}

/* "type/subtype" made of token characters, else application/octet-stream: a content type
 * a client sent never carries parameters or quoting into the message. */
static GMimePart *attachment_part(const struct email_out_attachment *a)
{
    const char *ct = a->content_type ? a->content_type : "";
    const char *slash = strchr(ct, '/');
    bool ok = slash && slash > ct && slash[1] && strlen(ct) < 128;
    for (const char *p = ct; ok && *p; p++)
        ok = p == slash || strchr("!#$&^_.+-", *p) || (*p >= '0' && *p <= '9') ||
             (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z');
    char *type = ok ? xstrndup(ct, (size_t)(slash - ct)) : xstrdup("application");
    GMimePart *part = g_mime_part_new_with_type(type, ok ? slash + 1 : "octet-stream");
    free(type);
    GMimeStream *data = g_mime_stream_mem_new_with_buffer((const char *)a->data, a->len);
    GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(data, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(part, w);
    g_object_unref(w);
    g_object_unref(data);
    g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_BASE64);
    g_mime_object_set_disposition(GMIME_OBJECT(part), GMIME_DISPOSITION_ATTACHMENT);
    char *name = one_line(a->filename && *a->filename ? a->filename : "attachment");
    g_mime_part_set_filename(part, name); /* Content-Disposition filename and Content-Type name */
    free(name);
    /* a non-ASCII name is written (RFC 2231) as UTF-8, not the smallest charset that fits */
    GMimeParam *p = g_mime_param_list_get_parameter(
        g_mime_content_type_get_parameters(g_mime_object_get_content_type(GMIME_OBJECT(part))), "name");
    if (p)
        g_mime_param_set_charset(p, "utf-8");
    p = g_mime_param_list_get_parameter(
        g_mime_content_disposition_get_parameters(g_mime_object_get_content_disposition(GMIME_OBJECT(part))),
        "filename");
    if (p)
        g_mime_param_set_charset(p, "utf-8");
    return part;
}

/* A header of our own (threading, automatic replies): one line, set as it is. */
static void set_header(GMimeMessage *msg, const char *name, const char *value)
{
    char *v = one_line(value);
    g_mime_object_set_header(GMIME_OBJECT(msg), name, v, NULL);
    free(v);
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
    GMimeMessage *msg = g_mime_message_new(TRUE);
    add_mailbox(g_mime_message_get_from(msg), m->from_name, m->from);
    add_mailbox(g_mime_message_get_addresses(msg, GMIME_ADDRESS_TYPE_TO), NULL, m->to);
    for (const char *const *c = m->cc; c && *c; c++) /* plain addr-specs (checked by the reply API) */
        add_mailbox(g_mime_message_get_addresses(msg, GMIME_ADDRESS_TYPE_CC), NULL, *c);
    char *subject = one_line(m->subject);
    g_mime_message_set_subject(msg, subject, "utf-8");
    free(subject);
    GDateTime *date = g_date_time_new_from_unix_utc(m->date);
    g_mime_message_set_date(msg, date);
    g_date_time_unref(date);
    set_header(msg, "Message-ID", m->message_id);
    if (m->in_reply_to && *m->in_reply_to)
        set_header(msg, "In-Reply-To", m->in_reply_to);
    if (m->references && m->references[0]) {
        GString *refs = g_string_new(NULL);
        for (const char *const *r = m->references; *r; r++)
            g_string_append_printf(refs, "%s%s", refs->len ? " " : "", *r);
        set_header(msg, "References", refs->str); /* GMime folds it when it is long */
        g_string_free(refs, TRUE);
    }
    if (m->auto_reply) {
        /* RFC 3834: automatic, so no well-behaved responder answers it */
        set_header(msg, "Auto-Submitted", "auto-replied");
        set_header(msg, "X-Auto-Response-Suppress", "All");
        set_header(msg, "Precedence", "auto_reply");
    }

    /* the body's UTF-8 bytes as they are (g_mime_text_part_set_text would convert them to
     * the smallest charset that fits) */
    GMimeTextPart *text = g_mime_text_part_new_with_subtype("plain");
    const char *body = m->body ? m->body : "";
    GMimeStream *body_stream = g_mime_stream_mem_new_with_buffer(body, strlen(body));
    GMimeDataWrapper *body_data =
        g_mime_data_wrapper_new_with_stream(body_stream, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(GMIME_PART(text), body_data);
    g_object_unref(body_data);
    g_object_unref(body_stream);
    g_mime_text_part_set_charset(text, "utf-8");
    g_mime_part_set_content_encoding(GMIME_PART(text), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
    if (m->n_att == 0) {
        g_mime_message_set_mime_part(msg, GMIME_OBJECT(text));
    } else {
        GMimeMultipart *mixed = g_mime_multipart_new_with_subtype("mixed");
        g_mime_multipart_add(mixed, GMIME_OBJECT(text));
        for (size_t i = 0; i < m->n_att; i++) {
            GMimePart *part = attachment_part(&m->att[i]);
            g_mime_multipart_add(mixed, GMIME_OBJECT(part));
            g_object_unref(part);
        }
        g_mime_message_set_mime_part(msg, GMIME_OBJECT(mixed));
        g_object_unref(mixed);
    }
    g_object_unref(text);

    GMimeFormatOptions *fmt = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fmt, GMIME_NEWLINE_FORMAT_DOS); /* CRLF for DATA */
    GMimeStream *out = g_mime_stream_mem_new();
    g_mime_object_write_to_stream(GMIME_OBJECT(msg), fmt, out);
    GByteArray *bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out));
    char *raw = xmalloc(bytes->len + 1);
    memcpy(raw, bytes->data, bytes->len);
    raw[bytes->len] = '\0';
    *len = bytes->len;
    g_object_unref(out);
    g_mime_format_options_free(fmt);
    g_object_unref(msg);
    return raw;
}
