/* email_mime.c - the email parser (see email_mime.h). GMime builds the MIME tree and decodes
 * headers and transfer encodings; this file chooses the body (text/plain over HTML inside
 * multipart/alternative, every inline text part of a multipart/mixed in order), converts
 * each charset to UTF-8 itself (invalid bytes become U+FFFD instead of failing the whole
 * part), turns HTML into text (libxml2's HTML parser, then a walk of its tree), trims
 * quoted replies, collects attachments and reads delivery status notifications. Every string it returns is clean UTF-8 (no NUL, no C0 controls but
 * tab and newline), so it can go into JSON and into Redis as it is.
 *
 * Hostile input is expected: nesting is bounded before GMime recurses into it, every size
 * is checked against struct email_limits, and the fuzzer (tests/fuzz/fuzz_email.c) runs
 * this whole path. */
#include "email_mime.h"

#include <ctype.h>
#include <errno.h>
#include <gmime/gmime.h>
#include <iconv.h>
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "omnicc/attachments.h"
#include "omnicc/util.h"

#define MAX_DEPTH 24       /* MIME nesting we walk */
#define MAX_MULTIPART 500  /* multipart/message headers in a raw message, checked before GMime */
#define MAX_PARTS 1000     /* leaves looked at */

static bool inited;

void email_mime_init(void)
{
    if (inited)
        return;
    g_mime_init();
    xmlInitParser(); /* once, before any thread parses HTML */
    inited = true;
}

void email_mime_shutdown(void)
{
    if (!inited)
        return;
    g_mime_shutdown();
    inited = false;
}

/* ---- growable buffer ---- */

struct buf {
    char *s;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void buf_addc(struct buf *b, char c)
{
    buf_add(b, &c, 1);
}

static void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static char *buf_take(struct buf *b)
{
    if (!b->s)
        return xstrdup("");
    char *s = b->s;
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

static void buf_utf8(struct buf *b, uint32_t cp)
{
    char o[4];
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        cp = 0xfffd;
    if (cp < 0x80) {
        o[0] = (char)cp;
        buf_add(b, o, 1);
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        buf_add(b, o, 2);
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        buf_add(b, o, 3);
    } else {
        o[0] = (char)(0xf0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        buf_add(b, o, 4);
    }
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t need;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        need = 1;
        v = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        need = 2;
        v = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        need = 3;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (need >= n)
        return 0;
    for (size_t k = 1; k <= need; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[k] & 0x3f);
    }
    if ((need == 1 && v < 0x80) || (need == 2 && v < 0x800) || (need == 3 && v < 0x10000) ||
        v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return need + 1;
}

static bool utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* Clean text: invalid bytes -> U+FFFD, CRLF/CR -> LF, NUL and other controls dropped
 * (single_line: every control, newlines included, becomes a space). */
static char *clean_text(const char *s, size_t n, bool single_line)
{
    struct buf b = {0};
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (!k) {
            buf_utf8(&b, 0xfffd);
            i++;
            continue;
        }
        if (cp == '\r') {
            if (!(i + 1 < n && s[i + 1] == '\n'))
                buf_addc(&b, single_line ? ' ' : '\n');
        } else if (cp == '\n' || cp == '\t') {
            buf_addc(&b, single_line ? ' ' : (char)cp);
        } else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
            if (single_line)
                buf_addc(&b, ' ');
        } else {
            buf_add(&b, s + i, k);
        }
        i += k;
    }
    return buf_take(&b);
}

static char *clean_line(const char *s)
{
    if (!s)
        return xstrdup("");
    char *c = clean_text(s, strlen(s), true);
    /* trim */
    char *p = c;
    while (*p == ' ')
        p++;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == ' ')
        n--;
    char *out = xstrndup(p, n);
    free(c);
    return out;
}

/* Bytes in a declared charset -> UTF-8. An unknown charset is read as windows-1252 (what
 * mislabelled mail nearly always is); bytes iconv rejects become U+FFFD one at a time. */
static char *to_utf8(const char *data, size_t len, const char *charset)
{
    if (charset && (!strcasecmp(charset, "utf-8") || !strcasecmp(charset, "utf8") ||
                    !strcasecmp(charset, "us-ascii") || !strcasecmp(charset, "ascii")))
        charset = NULL;
    if (!charset || !*charset) {
        if (utf8_valid(data, len))
            return clean_text(data, len, false);
        charset = "windows-1252";
    }
    iconv_t cd = g_mime_iconv_open("UTF-8", charset);
    if (cd == (iconv_t)-1)
        cd = g_mime_iconv_open("UTF-8", "windows-1252");
    if (cd == (iconv_t)-1)
        return clean_text(data, len, false);
    struct buf out = {0};
    char chunk[4096];
    char *in = (char *)data;
    size_t inleft = len;
    while (inleft > 0) {
        char *o = chunk;
        size_t oleft = sizeof(chunk);
        size_t rc = iconv(cd, &in, &inleft, &o, &oleft);
        buf_add(&out, chunk, sizeof(chunk) - oleft);
        if (rc == (size_t)-1) {
            if (errno == E2BIG)
                continue;
            /* EILSEQ / EINVAL: one bad byte, replaced; carry on after it */
            buf_utf8(&out, 0xfffd);
            in++;
            inleft--;
            iconv(cd, NULL, NULL, NULL, NULL);
        }
    }
    char *o = chunk;
    size_t oleft = sizeof(chunk);
    iconv(cd, NULL, NULL, &o, &oleft);
    buf_add(&out, chunk, sizeof(chunk) - oleft);
    g_mime_iconv_close(cd);
    char *res = clean_text(out.s ? out.s : "", out.len, false);
    free(out.s);
    return res;
}

/* ---- HTML to readable text ----
 *
 * libxml2's HTML parser builds the tree (it recovers from broken markup the way browsers do,
 * decodes every entity, and treats Outlook's conditional comments as the comments they
 * are); this walks the tree and lays it out as text. The walk is iterative (parent/next
 * pointers), so hostile nesting costs no stack. The HTML arrives here already converted to
 * UTF-8 by the MIME walk, so the parser is told so and any <meta charset> is ignored. */

struct html_out {
    struct buf b;
    int quote;        /* blockquote depth: lines inside get "> " per level */
    int list;         /* list nesting: bullets are indented by it */
    int pre;          /* inside <pre>: whitespace kept */
    bool at_line;     /* at the start of a line */
    bool space;       /* a pending collapsed space */
    bool cell_sep;    /* a pending " | " between table cells */
    bool row_text;    /* the current table row has written text */
    int newlines;     /* newlines just written */
    xmlNode *link;    /* the <a> being written, its text starting at link_at */
    size_t link_at;
};

static void ho_newline(struct html_out *h, int want)
{
    h->space = false;
    h->cell_sep = false;
    if (h->b.len == 0)
        return;
    while (h->newlines < want) {
        buf_addc(&h->b, '\n');
        h->newlines++;
        h->at_line = true;
    }
}

static void ho_text(struct html_out *h, const char *s, size_t n)
{
    if (!n)
        return;
    if (h->at_line) {
        for (int q = 0; q < h->quote; q++)
            buf_adds(&h->b, "> ");
        h->at_line = false;
    } else if (h->cell_sep) {
        buf_adds(&h->b, " | ");
    } else if (h->space) {
        buf_addc(&h->b, ' ');
    }
    h->space = false;
    h->cell_sep = false;
    h->row_text = true;
    buf_add(&h->b, s, n);
    h->newlines = 0;
}

/* Text content: runs of whitespace (and no-break spaces) become one space, except in <pre>. */
static void ho_chars(struct html_out *h, const char *s)
{
    while (*s) {
        if (h->pre && (*s == '\n' || *s == '\r')) {
            if (*s == '\r' && s[1] == '\n')
                s++;
            s++;
            h->newlines = 0;
            ho_newline(h, 1);
            h->at_line = true;
            continue;
        }
        size_t ws = 0;
        for (;;) {
            if (s[ws] == ' ' || s[ws] == '\t' || s[ws] == '\n' || s[ws] == '\r' || s[ws] == '\f')
                ws++;
            else if ((unsigned char)s[ws] == 0xc2 && (unsigned char)s[ws + 1] == 0xa0)
                ws += 2;
            else
                break;
        }
        if (ws) {
            if (h->pre && !h->at_line)
                ho_text(h, " ", 1);
            else
                h->space = !h->at_line;
            s += ws;
            continue;
        }
        size_t n = 0;
        while (s[n] && s[n] != ' ' && s[n] != '\t' && s[n] != '\n' && s[n] != '\r' &&
               s[n] != '\f' && !((unsigned char)s[n] == 0xc2 && (unsigned char)s[n + 1] == 0xa0))
            n++;
        ho_text(h, s, n);
        s += n;
    }
}

static bool html_is(const xmlNode *n, const char *const *list)
{
    for (; *list; list++)
        if (xmlStrcasecmp(n->name, (const xmlChar *)*list) == 0)
            return true;
    return false;
}

static bool html_named(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && xmlStrcasecmp(n->name, (const xmlChar *)name) == 0;
}

static const char *const html_block[] = {
    "div", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre", "section",
    "article", "header", "footer", "center", "dl", "dt", "dd", "address", "figure", "main",
    "nav", "aside", "form", "fieldset", "caption", "tbody", "thead", "tfoot", NULL};
static const char *const html_skip[] = {"script", "style", "head", "title", "template",
                                        "object", "iframe", "svg", NULL};

/* A link's target is worth showing when it goes somewhere a reader can follow and the text
 * does not already say it. */
static const char *html_link_target(const xmlChar *href)
{
    static const char *const schemes[] = {"http://", "https://", "mailto:", "tel:", NULL};
    if (!href)
        return NULL;
    for (int i = 0; schemes[i]; i++)
        if (strncasecmp((const char *)href, schemes[i], strlen(schemes[i])) == 0)
            return (const char *)href;
    return NULL;
}

static void html_enter(struct html_out *h, xmlNode *n)
{
    if (html_named(n, "br")) {
        h->newlines = 0;
        ho_newline(h, 1);
        h->at_line = true;
        if (h->b.len == 0)
            return;
    } else if (html_named(n, "p")) {
        ho_newline(h, 2);
    } else if (html_named(n, "blockquote")) {
        ho_newline(h, 1);
        h->quote++;
    } else if (html_named(n, "li")) {
        ho_newline(h, 1);
        for (int i = 1; i < h->list; i++)
            ho_text(h, "  ", 2);
        if (html_named(n->parent, "ol")) {
            uintptr_t k = (uintptr_t)n->parent->_private + 1;
            n->parent->_private = (void *)k;
            char num[24];
            snprintf(num, sizeof(num), "%lu. ", (unsigned long)k);
            ho_text(h, num, strlen(num));
        } else {
            ho_text(h, "- ", 2);
        }
        h->space = false;
    } else if (html_named(n, "tr")) {
        ho_newline(h, 1);
        h->row_text = false;
    } else if (html_named(n, "td") || html_named(n, "th")) {
        if (h->row_text && !h->at_line)
            h->cell_sep = true;
    } else if (html_named(n, "img")) {
        xmlChar *alt = xmlGetProp(n, (const xmlChar *)"alt");
        if (alt && *alt) {
            h->space = h->space || !h->at_line;
            ho_text(h, "[", 1);
            h->space = false;
            ho_chars(h, (const char *)alt);
            h->space = false;
            ho_text(h, "]", 1);
        }
        xmlFree(alt);
    } else if (html_named(n, "a") && !h->link) {
        h->link = n;
        h->link_at = h->b.len;
    } else if (html_named(n, "ul") || html_named(n, "ol")) {
        ho_newline(h, 1);
        h->list++;
        n->_private = NULL;
    } else if (html_named(n, "pre")) {
        ho_newline(h, 1);
        h->pre++;
    } else if (n->type == XML_ELEMENT_NODE && html_is(n, html_block)) {
        ho_newline(h, 1);
    }
}

static void html_leave(struct html_out *h, xmlNode *n)
{
    if (html_named(n, "p")) {
        ho_newline(h, 2);
    } else if (html_named(n, "blockquote")) {
        ho_newline(h, 1);
        if (h->quote > 0)
            h->quote--;
    } else if (html_named(n, "ul") || html_named(n, "ol")) {
        ho_newline(h, 1);
        if (h->list > 0)
            h->list--;
        n->_private = NULL;
    } else if (html_named(n, "pre")) {
        ho_newline(h, 1);
        if (h->pre > 0)
            h->pre--;
    } else if (n == h->link) {
        h->link = NULL;
        xmlChar *href = xmlGetProp(n, (const xmlChar *)"href");
        const char *t = html_link_target(href);
        if (t) {
            const char *shown = h->b.s ? h->b.s + h->link_at : "";
            size_t shown_len = h->b.len - h->link_at;
            while (shown_len > 0 && *shown == ' ') { /* the space written before the text */
                shown++;
                shown_len--;
            }
            const char *bare = strncasecmp(t, "mailto:", 7) == 0 ? t + 7 : t;
            bool same = (strlen(t) == shown_len && strncmp(t, shown, shown_len) == 0) ||
                        (strlen(bare) == shown_len && strncmp(bare, shown, shown_len) == 0);
            if (!same) {
                h->space = h->space || shown_len > 0;
                ho_text(h, "<", 1);
                h->space = false;
                ho_chars(h, t);
                h->space = false;
                ho_text(h, ">", 1);
            }
        }
        xmlFree(href);
    } else if (n->type == XML_ELEMENT_NODE && html_is(n, html_block)) {
        ho_newline(h, 1);
    }
}

char *email_html_to_text(const char *html, size_t len)
{
    struct html_out h = {.at_line = true};
    if (len > INT_MAX)
        len = INT_MAX;
    htmlDocPtr doc = htmlReadMemory(html, (int)len, NULL, "UTF-8",
                                    HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                        HTML_PARSE_NONET | HTML_PARSE_IGNORE_ENC);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *n = root;
    while (n) {
        bool skip = n->type == XML_ELEMENT_NODE && html_is(n, html_skip);
        if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE)
            ho_chars(&h, (const char *)n->content);
        else if (n->type == XML_ELEMENT_NODE && !skip)
            html_enter(&h, n);
        if (n->type == XML_ELEMENT_NODE && !skip && n->children) {
            n = n->children;
            continue;
        }
        /* no children: leave this node, then every ancestor whose last child this was */
        for (;;) {
            if (n->type == XML_ELEMENT_NODE && !html_is(n, html_skip))
                html_leave(&h, n);
            if (n == root) {
                n = NULL;
                break;
            }
            if (n->next) {
                n = n->next;
                break;
            }
            n = n->parent;
        }
    }
    xmlFreeDoc(doc);
    /* drop trailing newlines */
    while (h.b.len > 0 && h.b.s[h.b.len - 1] == '\n')
        h.b.s[--h.b.len] = '\0';
    char *raw = buf_take(&h.b);
    char *out = clean_text(raw, strlen(raw), false);
    free(raw);
    return out;
}

/* ---- quoted reply trimming ---- */

static bool starts_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool contains_ci(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0)
            return true;
    return false;
}

struct line {
    const char *s;
    size_t n;
};

static bool line_blank(struct line l)
{
    for (size_t i = 0; i < l.n; i++)
        if (!isspace((unsigned char)l.s[i]))
            return false;
    return true;
}

static bool line_quoted(struct line l)
{
    size_t i = 0;
    while (i < l.n && l.s[i] == ' ')
        i++;
    return i < l.n && l.s[i] == '>';
}

static bool ends_with_wrote(struct line l)
{
    static const char *const tails[] = {"wrote:", "escribió:", "a écrit :", "a écrit:",
                                        "schrieb:", "escreveu:", "ha scritto:", "skrev:",
                                        "schreef:", "napisał:", NULL};
    size_t n = l.n;
    while (n > 0 && isspace((unsigned char)l.s[n - 1]))
        n--;
    for (const char *const *t = tails; *t; t++) {
        size_t k = strlen(*t);
        if (n >= k && strncasecmp(l.s + n - k, *t, k) == 0)
            return true;
    }
    return false;
}

static bool is_original_separator(struct line l)
{
    static const char *const words[] = {"original message", "mensaje original",
                                        "message d'origine", "original-nachricht",
                                        "messaggio originale", "mensagem original",
                                        "forwarded message", NULL};
    if (l.n < 10 || !(memchr(l.s, '-', l.n)))
        return false;
    for (const char *const *w = words; *w; w++)
        if (contains_ci(l.s, l.n, *w))
            return true;
    return false;
}

static bool is_header_line(struct line l, const char *const *names)
{
    for (; *names; names++)
        if (l.n >= strlen(*names) && strncasecmp(l.s, *names, strlen(*names)) == 0)
            return true;
    return false;
}

char *email_trim_quoted(const char *text)
{
    static const char *const from_names[] = {"From:", "De:", "Von:", "Da:", "*From:*", NULL};
    static const char *const sent_names[] = {"Sent:", "Date:", "Enviado:", "Envoyé :", "Gesendet:",
                                             "Fecha:", "Inviato:", "To:", "Para:", NULL};
    size_t nlines = 0, cap = 64;
    struct line *lines = xmalloc(cap * sizeof(*lines));
    for (const char *p = text; *p || nlines == 0;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (nlines == cap)
            lines = xrealloc(lines, (cap *= 2) * sizeof(*lines));
        lines[nlines++] = (struct line){p, n};
        if (!e)
            break;
        p = e + 1;
    }
    size_t cut = nlines;
    for (size_t i = 0; i < nlines && cut == nlines; i++) {
        struct line l = lines[i];
        if (is_original_separator(l)) {
            cut = i;
            break;
        }
        if (l.n >= 20 && strspn(l.s, "_") >= 20) {
            for (size_t k = i + 1; k < nlines && k <= i + 2; k++)
                if (is_header_line(lines[k], from_names))
                    cut = i;
            if (cut != nlines)
                break;
        }
        if (is_header_line(l, from_names) && (i == 0 || line_blank(lines[i - 1]))) {
            for (size_t k = i + 1; k < nlines && k <= i + 3; k++)
                if (is_header_line(lines[k], sent_names) && !is_header_line(lines[k], from_names)) {
                    bool has_date = false;
                    for (size_t m = i + 1; m < nlines && m <= i + 4; m++)
                        has_date = has_date || starts_ci(lines[m].s, "Sent:") ||
                                   starts_ci(lines[m].s, "Date:") || starts_ci(lines[m].s, "Enviado:") ||
                                   starts_ci(lines[m].s, "Fecha:") || starts_ci(lines[m].s, "Gesendet:");
                    if (has_date)
                        cut = i;
                    break;
                }
            if (cut != nlines)
                break;
        }
        /* an attribution line (maybe wrapped over two) followed only by quoted lines, or a
         * trailing block of quoted lines */
        size_t start = i;
        bool attribution = ends_with_wrote(l);
        if (!attribution && i + 1 < nlines && !line_blank(l) && !line_quoted(l) &&
            ends_with_wrote(lines[i + 1]) && (starts_ci(l.s, "On ") || starts_ci(l.s, "El ") ||
                                              starts_ci(l.s, "Le ") || starts_ci(l.s, "Am ")))
            attribution = true, i++;
        if (attribution || line_quoted(l)) {
            bool rest_quoted = true, any_quoted = false;
            for (size_t k = i + (attribution ? 1 : 0); k < nlines; k++) {
                if (line_blank(lines[k]))
                    continue;
                if (!line_quoted(lines[k])) {
                    rest_quoted = false;
                    break;
                }
                any_quoted = true;
            }
            if (rest_quoted && (any_quoted || line_quoted(l)))
                cut = start;
        }
    }
    while (cut > 0 && line_blank(lines[cut - 1]))
        cut--;
    char *out;
    if (cut == 0 || cut == nlines) {
        out = xstrdup(text);
    } else {
        out = xstrndup(text, (size_t)(lines[cut - 1].s + lines[cut - 1].n - text));
    }
    free(lines);
    return out;
}

/* ---- case references ---- */

static char *case_id_at(const char *p)
{
    /* p points at "C-<digits>" */
    if ((p[0] != 'C' && p[0] != 'c') || p[1] != '-' || !isdigit((unsigned char)p[2]))
        return NULL;
    size_t n = 2;
    while (isdigit((unsigned char)p[n]) && n < 22)
        n++;
    if (isdigit((unsigned char)p[n]))
        return NULL;
    char *id = xstrndup(p, n);
    id[0] = 'C';
    return id;
}

char *email_find_case_token(const char *s)
{
    for (const char *p = s ? strstr(s, "[#") : NULL; p; p = strstr(p + 2, "[#")) {
        char *id = case_id_at(p + 2);
        if (id) {
            size_t n = strlen(id);
            if (p[2 + n] == ']')
                return id;
            free(id);
        }
    }
    return NULL;
}

char *email_plus_case(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    if (!at)
        return NULL;
    const char *plus = NULL;
    for (const char *p = addr; p < at; p++)
        if (*p == '+')
            plus = p;
    if (!plus)
        return NULL;
    char *id = case_id_at(plus + 1);
    if (id && plus + 1 + strlen(id) != at) {
        free(id);
        return NULL;
    }
    return id;
}

/* ---- RFC 2047: adjacent encoded words ----
 * GMime 3.2 joins adjacent encoded words of one charset before base64-decoding them, and
 * stops at the padding of the first ("=?UTF-8?B?...IA==?= =?UTF-8?B?...?=" loses every
 * word after the first), which is how Outlook and most MUAs fold a long subject or name.
 * So before GMime sees the top-level header block, each run of adjacent encoded words in
 * one charset is rewritten as a single word holding the same bytes: decoded together, a
 * multibyte character split across two words still comes out whole. */

/* An encoded word's text decoded: B by GLib's base64 decoder, Q by GMime's quoted-printable
 * decoder once each '_' is the space it stands for (RFC 2047 4.2; "=5F" stays '_'). */
static void word_decode(struct buf *out, char enc, const char *t, size_t n)
{
    unsigned char *bytes = xmalloc(n + 3);
    size_t len;
    if (enc == 'B' || enc == 'b') {
        gint state = 0;
        guint save = 0;
        len = g_base64_decode_step(t, n, bytes, &state, &save);
    } else {
        unsigned char *q = xmalloc(n + 1);
        for (size_t i = 0; i < n; i++)
            q[i] = t[i] == '_' ? ' ' : (unsigned char)t[i];
        int state = 0;
        guint32 save = 0;
        len = g_mime_encoding_quoted_decode_step(q, n, bytes, &state, &save);
        free(q);
    }
    buf_add(out, (const char *)bytes, len);
    free(bytes);
}

/* One encoded word at p: its charset, encoding and text spans; returns its length or 0. */
static size_t encoded_word(const char *p, const char *end, const char **cs, size_t *csl,
                           char *enc, const char **txt, size_t *txtl)
{
    if (end - p < 8 || p[0] != '=' || p[1] != '?')
        return 0;
    const char *q = p + 2;
    *cs = q;
    while (q < end && *q != '?' && !isspace((unsigned char)*q))
        q++;
    if (q >= end || *q != '?' || q == *cs || q - *cs > 40)
        return 0;
    *csl = (size_t)(q - *cs);
    if (q + 3 >= end || q[2] != '?' || !strchr("BbQq", q[1]))
        return 0;
    *enc = q[1];
    q += 3;
    *txt = q;
    while (q + 1 < end && !(q[0] == '?' && q[1] == '=') && !isspace((unsigned char)*q))
        q++;
    if (q + 1 >= end || q[0] != '?' || q[1] != '=')
        return 0;
    *txtl = (size_t)(q - *txt);
    return (size_t)(q + 2 - p);
}

/* ---- Mixed line ends ----
 * A message whose header lines end in CRLF but whose body (or one part) uses bare LF (a
 * gateway or client that rewrote only some lines) makes GMime 3.2 strip two bytes before
 * each boundary where there is only one: the last character of a base64 body goes, and
 * with it the last 2-3 bytes of the attachment when it has no '=' padding. So a message
 * holding both CRLF and bare LF is read with every bare LF made CRLF; a message with one
 * kind of line end throughout (the common case) is read as it is. Returns NULL when
 * nothing needs changing. */
static char *uniform_line_ends(const char *raw, size_t len, size_t *newlen)
{
    size_t crlf = 0, bare = 0;
    for (size_t i = 0; i < len; i++)
        if (raw[i] == '\n') {
            if (i > 0 && raw[i - 1] == '\r')
                crlf++;
            else
                bare++;
        }
    if (crlf == 0 || bare == 0)
        return NULL;
    char *out = xmalloc(len + bare + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r'))
            *o++ = '\r';
        *o++ = raw[i];
    }
    *o = '\0';
    *newlen = (size_t)(o - out);
    return out;
}

static char *merge_encoded_words(const char *raw, size_t len, size_t *newlen)
{
    const char *hend = raw + len;
    for (size_t i = 0; i + 1 < len; i++)
        if (raw[i] == '\n' && (raw[i + 1] == '\n' || (raw[i + 1] == '\r' && i + 2 < len &&
                                                      raw[i + 2] == '\n'))) {
            hend = raw + i + 1;
            break;
        }
    struct buf out = {0};
    bool changed = false;
    const char *p = raw, *copied = raw;
    while (p < hend) {
        const char *cs, *txt;
        size_t csl, txtl;
        char enc;
        size_t wl = encoded_word(p, hend, &cs, &csl, &enc, &txt, &txtl);
        if (!wl) {
            p++;
            continue;
        }
        /* the run of words in the same charset that follows */
        struct buf bytes = {0};
        word_decode(&bytes, enc, txt, txtl);
        const char *run_end = p + wl;
        int words = 1;
        for (;;) {
            const char *q = run_end;
            while (q < hend && (*q == ' ' || *q == '\t' || *q == '\r' ||
                                (*q == '\n' && q + 1 < hend && (q[1] == ' ' || q[1] == '\t'))))
                q++;
            const char *cs2, *txt2;
            size_t csl2, txtl2;
            char enc2;
            size_t wl2 = q > run_end ? encoded_word(q, hend, &cs2, &csl2, &enc2, &txt2, &txtl2) : 0;
            if (!wl2 || csl2 != csl || strncasecmp(cs2, cs, csl) != 0)
                break;
            word_decode(&bytes, enc2, txt2, txtl2);
            run_end = q + wl2;
            words++;
        }
        if (words > 1) {
            buf_add(&out, copied, (size_t)(p - copied));
            buf_adds(&out, "=?");
            buf_add(&out, cs, csl);
            buf_adds(&out, "?B?");
            size_t n = bytes.len;
            char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);
            EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)(bytes.s ? bytes.s : ""),
                            (int)n);
            buf_adds(&out, b64);
            free(b64);
            buf_adds(&out, "?=");
            copied = run_end;
            changed = true;
        }
        free(bytes.s);
        p = run_end;
    }
    if (!changed) {
        free(out.s);
        return NULL;
    }
    buf_add(&out, copied, (size_t)(raw + len - copied));
    *newlen = out.len;
    return out.s;
}

/* ---- the walk over the MIME tree ---- */

struct walk {
    const struct email_limits *lim;
    struct email_msg *m;
    struct buf plain, html;
    int parts;
    size_t att_total;
    bool in_report;
};

/* Decoded content of a leaf part (transfer encoding undone). */
static unsigned char *part_bytes(GMimePart *part, size_t *len)
{
    GMimeDataWrapper *w = g_mime_part_get_content(part);
    *len = 0;
    if (!w)
        return (unsigned char *)xstrdup("");
    GMimeStream *s = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(w, s);
    GByteArray *a = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
    unsigned char *out = xmalloc(a->len + 1);
    if (a->len)
        memcpy(out, a->data, a->len);
    out[a->len] = '\0';
    *len = a->len;
    g_object_unref(s);
    return out;
}

static char *object_bytes(GMimeObject *obj, size_t *len)
{
    GMimeStream *s = g_mime_stream_mem_new();
    g_mime_object_write_to_stream(obj, NULL, s);
    GByteArray *a = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
    char *out = xmalloc(a->len + 1);
    if (a->len)
        memcpy(out, a->data, a->len);
    out[a->len] = '\0';
    *len = a->len;
    g_object_unref(s);
    return out;
}

static char *sanitize_filename(const char *name, const char *fallback)
{
    char *c = clean_line(name && *name ? name : fallback);
    const char *base = c;
    for (const char *p = c; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    char *out = xstrndup(base, strlen(base) > 200 ? 200 : strlen(base));
    free(c);
    /* never cut a UTF-8 sequence in two */
    size_t n = strlen(out);
    while (n > 0 && !utf8_valid(out, n))
        out[--n] = '\0';
    if (!*out || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
        free(out);
        out = xstrdup(fallback);
    }
    return out;
}

static void add_attachment(struct walk *w, const char *filename, const char *ctype,
                           const char *cid, unsigned char *data, size_t len)
{
    struct email_msg *m = w->m;
    if ((int)m->n_att >= w->lim->max_attachments || len > w->lim->max_attachment ||
        w->att_total + len > w->lim->max_total) {
        m->att_skipped++;
        free(data);
        return;
    }
    w->att_total += len;
    m->att = xrealloc(m->att, (m->n_att + 1) * sizeof(*m->att));
    struct email_attachment *a = &m->att[m->n_att++];
    memset(a, 0, sizeof(*a));
    a->filename = sanitize_filename(filename, "attachment");
    a->content_type = clean_line(ctype);
    a->content_id = cid && *cid ? clean_line(cid) : NULL;
    a->data = data;
    a->len = len;
    attachment_sha256(data, len, a->sha256);
}

/* "Field: value" from a block of header-like lines (DSN fields, rfc822-headers), unfolded. */
static char *field_value(const char *text, size_t len, const char *field)
{
    size_t fl = strlen(field);
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - text) : len;
        if (e - i > fl && strncasecmp(text + i, field, fl) == 0 && text[i + fl] == ':') {
            struct buf b = {0};
            buf_add(&b, text + i + fl + 1, e - i - fl - 1);
            /* folded continuation lines */
            size_t j = e + 1;
            while (j < len && (text[j] == ' ' || text[j] == '\t')) {
                const char *n2 = memchr(text + j, '\n', len - j);
                size_t e2 = n2 ? (size_t)(n2 - text) : len;
                buf_add(&b, text + j, e2 - j);
                j = e2 + 1;
            }
            char *v = clean_line(b.s ? b.s : "");
            free(b.s);
            /* folding leaves runs of blanks: one space each */
            char *o = v;
            for (const char *q = v; *q; q++)
                if (!(*q == ' ' && o > v && o[-1] == ' '))
                    *o++ = *q;
            *o = '\0';
            return v;
        }
        i = e + 1;
    }
    return NULL;
}

/* "<id>" from whatever surrounds it, or NULL. */
static char *bracket_id(const char *s)
{
    if (!s)
        return NULL;
    while (*s == ' ' || *s == '\t')
        s++;
    const char *lt = strchr(s, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt && gt - lt > 1) {
        char *t = xstrndup(lt, (size_t)(gt - lt + 1));
        char *c = clean_line(t);
        free(t);
        return c;
    }
    if (*s && !strchr(s, ' ') && strlen(s) < 250) {
        char *t = xasprintf("<%s>", s);
        char *c = clean_line(t);
        free(t);
        return c;
    }
    return NULL;
}

static void read_dsn_fields(struct walk *w, const char *text, size_t len)
{
    struct email_dsn *d = &w->m->dsn;
    w->m->is_dsn = true;
    if (!d->action)
        d->action = field_value(text, len, "Action");
    if (!d->status)
        d->status = field_value(text, len, "Status");
    if (!d->diagnostic)
        d->diagnostic = field_value(text, len, "Diagnostic-Code");
    if (!d->recipient) {
        char *r = field_value(text, len, "Final-Recipient");
        if (!r)
            r = field_value(text, len, "Original-Recipient");
        if (r) {
            char *semi = strchr(r, ';'); /* "rfc822; user@example.com" */
            d->recipient = clean_line(semi ? semi + 1 : r);
            free(r);
        }
    }
    if (d->action) { /* "failed" */
        for (char *p = d->action; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
}

static void walk(struct walk *w, GMimeObject *obj, int depth);

static void walk_message_part(struct walk *w, GMimeMessagePart *mp, int depth)
{
    GMimeMessage *inner = g_mime_message_part_get_message(mp);
    if (!inner)
        return;
    if (w->in_report) {
        /* the original message (or its headers) a DSN reports on */
        if (!w->m->dsn.original_message_id) {
            const char *id = g_mime_message_get_message_id(inner);
            if (id && *id) {
                char *t = xasprintf("<%s>", id);
                w->m->dsn.original_message_id = clean_line(t);
                free(t);
            }
        }
        return;
    }
    size_t len;
    char *data = object_bytes(GMIME_OBJECT(inner), &len);
    const char *subj = g_mime_message_get_subject(inner);
    char *fname = xasprintf("%s.eml", subj && *subj ? subj : "message");
    add_attachment(w, fname, "message/rfc822", NULL, (unsigned char *)data, len);
    free(fname);
    (void)depth;
}

static void walk_leaf(struct walk *w, GMimePart *part)
{
    GMimeObject *obj = GMIME_OBJECT(part);
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    bool attach = g_mime_part_is_attachment(part);
    const char *fname = g_mime_part_get_filename(part);
    size_t len;
    if (g_mime_content_type_is_type(ct, "message", "delivery-status") ||
        g_mime_content_type_is_type(ct, "message", "global-delivery-status")) {
        unsigned char *data = part_bytes(part, &len);
        read_dsn_fields(w, (const char *)data, len);
        free(data);
        return;
    }
    if (w->in_report && g_mime_content_type_is_type(ct, "text", "rfc822-headers")) {
        unsigned char *data = part_bytes(part, &len);
        if (!w->m->dsn.original_message_id) {
            char *v = field_value((const char *)data, len, "Message-ID");
            w->m->dsn.original_message_id = bracket_id(v);
            free(v);
        }
        free(data);
        return;
    }
    bool is_plain = g_mime_content_type_is_type(ct, "text", "plain");
    bool is_html = g_mime_content_type_is_type(ct, "text", "html");
    if ((is_plain || is_html) && !attach && !(fname && *fname && !is_plain)) {
        unsigned char *data = part_bytes(part, &len);
        char *text = to_utf8((const char *)data, len,
                             g_mime_content_type_get_parameter(ct, "charset"));
        free(data);
        struct buf *b = is_plain ? &w->plain : &w->html;
        if (b->len + strlen(text) < EMAIL_TEXT_MAX) {
            if (b->len && is_plain)
                buf_adds(b, "\n\n");
            buf_adds(b, text);
        }
        free(text);
        return;
    }
    unsigned char *data = part_bytes(part, &len);
    char *mime = g_mime_content_type_get_mime_type(ct);
    add_attachment(w, fname, mime ? mime : "application/octet-stream",
                   g_mime_part_get_content_id(part), data, len);
    g_free(mime);
}

/* The child of a multipart/alternative to read: plain text first, then anything that is
 * not HTML (a multipart/related holding the HTML, say), then HTML. */
static GMimeObject *pick_alternative(GMimeMultipart *mp)
{
    int n = g_mime_multipart_get_count(mp);
    GMimeObject *html = NULL, *other = NULL;
    for (int i = 0; i < n; i++) {
        GMimeObject *c = g_mime_multipart_get_part(mp, i);
        GMimeContentType *ct = g_mime_object_get_content_type(c);
        if (g_mime_content_type_is_type(ct, "text", "plain"))
            return c;
        if (g_mime_content_type_is_type(ct, "text", "html"))
            html = html ? html : c;
        else if (GMIME_IS_MULTIPART(c))
            other = other ? other : c;
    }
    return other ? other : html;
}

static void walk(struct walk *w, GMimeObject *obj, int depth)
{
    if (!obj || depth > MAX_DEPTH || ++w->parts > MAX_PARTS)
        return;
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        GMimeContentType *ct = g_mime_object_get_content_type(obj);
        if (g_mime_content_type_is_type(ct, "multipart", "alternative")) {
            walk(w, pick_alternative(mp), depth + 1);
            return;
        }
        bool report = g_mime_content_type_is_type(ct, "multipart", "report");
        const char *rt = report ? g_mime_content_type_get_parameter(ct, "report-type") : NULL;
        bool was = w->in_report;
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; i++) {
            /* in a report, the first part is the human-readable explanation */
            w->in_report = report && i > 0 && rt && (!strcasecmp(rt, "delivery-status") ||
                                                     !strcasecmp(rt, "global-delivery-status"));
            walk(w, g_mime_multipart_get_part(mp, i), depth + 1);
        }
        w->in_report = was;
        if (report && rt && !strcasecmp(rt, "delivery-status"))
            w->m->is_dsn = true;
    } else if (GMIME_IS_MESSAGE_PART(obj)) {
        walk_message_part(w, GMIME_MESSAGE_PART(obj), depth);
    } else if (GMIME_IS_PART(obj)) {
        walk_leaf(w, GMIME_PART(obj));
    }
}

/* ---- headers ---- */

static void addr_list(InternetAddressList *list, struct email_addr **out, size_t *n, int depth)
{
    int len = list ? internet_address_list_length(list) : 0;
    for (int i = 0; i < len && *n < 100; i++) {
        InternetAddress *ia = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            if (depth < 2)
                addr_list(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, n,
                          depth + 1);
            continue;
        }
        if (!INTERNET_ADDRESS_IS_MAILBOX(ia))
            continue;
        const char *addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
        if (!addr || !*addr)
            continue;
        *out = xrealloc(*out, (*n + 1) * sizeof(**out));
        (*out)[*n].addr = clean_line(addr);
        (*out)[*n].name = clean_line(internet_address_get_name(ia));
        (*n)++;
    }
}

static const char *header(GMimeMessage *msg, const char *name)
{
    return g_mime_object_get_header(GMIME_OBJECT(msg), name);
}

static bool header_has_word(const char *v, const char *const *words)
{
    if (!v)
        return false;
    for (; *words; words++)
        if (contains_ci(v, strlen(v), *words))
            return true;
    return false;
}

static void read_flags(GMimeMessage *msg, struct email_msg *m)
{
    const char *as = header(msg, "Auto-Submitted");
    if (as) {
        while (*as == ' ')
            as++;
        if (*as && strncasecmp(as, "no", 2) != 0)
            m->auto_submitted = true;
    }
    static const char *const suppress[] = {"all", "oof", "autoreply", NULL};
    if (header(msg, "X-Autoreply") || header(msg, "X-Autorespond") ||
        header(msg, "X-Autogenerated") ||
        header_has_word(header(msg, "X-Auto-Response-Suppress"), suppress))
        m->auto_submitted = true;
    const char *prec = header(msg, "Precedence");
    static const char *const bulk[] = {"bulk", "list", "junk", NULL};
    static const char *const autorep[] = {"auto_reply", "auto-reply", NULL};
    if (header_has_word(prec, bulk))
        m->bulk = true;
    if (header_has_word(prec, autorep))
        m->auto_submitted = true;
    if (header(msg, "List-Id") || header(msg, "List-Unsubscribe"))
        m->bulk = true;
    const char *rp = header(msg, "Return-Path");
    if (rp) {
        const char *p = rp;
        while (*p == ' ')
            p++;
        if (strncmp(p, "<>", 2) == 0)
            m->from_daemon = true;
    }
    const char *a = m->from.addr;
    if (!a || !*a) {
        m->from_daemon = true;
    } else {
        static const char *const daemons[] = {"mailer-daemon@", "postmaster@", "mail-daemon@",
                                              "mailer_daemon@", "maildaemon@", NULL};
        for (const char *const *d = daemons; *d; d++)
            if (starts_ci(a, *d))
                m->from_daemon = true;
        if (strcasecmp(a, "mailer-daemon") == 0)
            m->from_daemon = true;
    }
}

static char *refs_first(GMimeParserOptions *opts, const char *text)
{
    if (!text)
        return NULL;
    GMimeReferences *r = g_mime_references_parse(opts, text);
    char *out = NULL;
    if (r && g_mime_references_length(r) > 0) {
        char *t = xasprintf("<%s>", g_mime_references_get_message_id(r, 0));
        out = clean_line(t);
        free(t);
    }
    if (r)
        g_mime_references_free(r);
    return out;
}

static void read_references(GMimeParserOptions *opts, const char *text, struct email_msg *m)
{
    if (!text)
        return;
    GMimeReferences *r = g_mime_references_parse(opts, text);
    if (!r)
        return;
    int n = g_mime_references_length(r);
    int first = n > EMAIL_MAX_REFS ? n - EMAIL_MAX_REFS : 0;
    m->references = xcalloc((size_t)(n - first) + 1, sizeof(char *));
    for (int i = first; i < n; i++) {
        char *t = xasprintf("<%s>", g_mime_references_get_message_id(r, i));
        m->references[m->n_references++] = clean_line(t);
        free(t);
    }
    g_mime_references_free(r);
}

/* A hash of what a message says, not of its bytes in transit, so the same message without
 * a Message-ID gets the same id when it is delivered or fetched again. */
static char *content_id(const struct email_msg *m)
{
    struct buf b = {0};
    buf_adds(&b, m->from.addr ? m->from.addr : "");
    buf_addc(&b, '\n');
    buf_adds(&b, m->date ? m->date : "");
    buf_addc(&b, '\n');
    buf_adds(&b, m->subject);
    buf_addc(&b, '\n');
    for (size_t i = 0; i < m->n_to; i++) {
        buf_adds(&b, m->to[i].addr);
        buf_addc(&b, ',');
    }
    buf_addc(&b, '\n');
    buf_adds(&b, m->text);
    for (size_t i = 0; i < m->n_att; i++)
        buf_adds(&b, m->att[i].sha256);
    char hex[65];
    attachment_sha256(b.s, b.len, hex);
    free(b.s);
    return xasprintf("sha256:%s", hex);
}

/* Counting multipart and message headers before GMime recurses into them: a message built
 * to nest ten thousand levels deep must not reach the parser's stack. */
static int count_nesting(const char *raw, size_t len)
{
    int n = 0;
    for (size_t i = 0; i + 10 < len; i++) {
        char c = raw[i] | 0x20;
        if ((c == 'm') && (i == 0 || raw[i - 1] == '/' || raw[i - 1] == ' ' || raw[i - 1] == ':' ||
                           raw[i - 1] == '\t' || raw[i - 1] == '\n' || raw[i - 1] == '"')) {
            if (strncasecmp(raw + i, "multipart/", 10) == 0 || strncasecmp(raw + i, "message/", 8) == 0)
                n++;
        }
    }
    return n;
}

int email_parse(const char *raw, size_t len, const struct email_limits *lim,
                struct email_msg *out, char **err)
{
    memset(out, 0, sizeof(*out));
    *err = NULL;
    email_mime_init();
    if (len == 0) {
        *err = xstrdup("empty message");
        return -1;
    }
    if (len > lim->max_message) {
        *err = xasprintf("message larger than %zu bytes", lim->max_message);
        return -1;
    }
    if (count_nesting(raw, len) > MAX_MULTIPART) {
        *err = xasprintf("more than %d nested MIME parts", MAX_MULTIPART);
        return -1;
    }
    GMimeParserOptions *opts = g_mime_parser_options_new();
    g_mime_parser_options_set_rfc2047_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_address_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_parameter_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_allow_addresses_without_domain(opts, TRUE);
    const char *fallback[] = {"UTF-8", "windows-1252", NULL};
    g_mime_parser_options_set_fallback_charsets(opts, fallback);

    size_t uniform_len = 0, fixed_len = 0;
    char *uniform = uniform_line_ends(raw, len, &uniform_len);
    const char *src = uniform ? uniform : raw;
    size_t src_len = uniform ? uniform_len : len;
    char *fixed = merge_encoded_words(src, src_len, &fixed_len);
    GMimeStream *stream = fixed ? g_mime_stream_mem_new_with_buffer(fixed, fixed_len)
                                : g_mime_stream_mem_new_with_buffer(src, src_len);
    free(fixed); /* the memory stream holds its own copy */
    free(uniform);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    g_object_unref(stream);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, opts);
    g_object_unref(parser);
    if (!msg) {
        /* Not a message GMime can read: keep what was sent as text rather than lose it.
         * No sender, so it is never answered automatically. */
        g_mime_parser_options_free(opts);
        out->from.addr = xstrdup("");
        out->from.name = xstrdup("");
        out->subject = xstrdup("");
        out->text = clean_text(raw, len > EMAIL_TEXT_MAX ? EMAIL_TEXT_MAX : len, false);
        out->text_trimmed = xstrdup(out->text);
        out->text_source = "";
        out->from_daemon = true;
        char hex[65];
        attachment_sha256(raw, len, hex);
        out->external_id = xasprintf("sha256:%s", hex);
        return 0;
    }

    struct email_msg *m = out;
    const char *mid = g_mime_message_get_message_id(msg);
    if (mid && *mid) {
        char *t = xasprintf("<%s>", mid);
        m->message_id = clean_line(t);
        free(t);
        if (strlen(m->message_id) > 250 || strcmp(m->message_id, "<>") == 0)
            xfree(m->message_id);
    }
    struct email_addr *from = NULL;
    size_t n_from = 0;
    addr_list(g_mime_message_get_from(msg), &from, &n_from, 0);
    if (n_from == 0)
        addr_list(g_mime_message_get_sender(msg), &from, &n_from, 0);
    if (n_from > 0) {
        m->from = from[0];
        for (size_t i = 1; i < n_from; i++) {
            free(from[i].addr);
            free(from[i].name);
        }
    } else {
        m->from.addr = xstrdup("");
        m->from.name = xstrdup("");
    }
    free(from);
    addr_list(g_mime_message_get_to(msg), &m->to, &m->n_to, 0);
    addr_list(g_mime_message_get_cc(msg), &m->cc, &m->n_cc, 0);
    addr_list(g_mime_message_get_reply_to(msg), &m->reply_to, &m->n_reply_to, 0);
    m->subject = clean_line(g_mime_message_get_subject(msg));
    if (strlen(m->subject) > 998) {
        size_t n = 998;
        while (n > 0 && !utf8_valid(m->subject, n))
            n--;
        m->subject[n] = '\0';
    }
    const char *date = header(msg, "Date");
    m->date = date ? clean_line(date) : NULL;
    m->in_reply_to = refs_first(opts, header(msg, "In-Reply-To"));
    read_references(opts, header(msg, "References"), m);
    read_flags(msg, m);

    struct walk w = {.lim = lim, .m = m};
    walk(&w, g_mime_message_get_mime_part(msg), 0);
    if (w.plain.len) {
        m->text = buf_take(&w.plain);
        m->text_source = "text/plain";
    } else if (w.html.len) {
        m->text = email_html_to_text(w.html.s, w.html.len);
        m->text_source = "text/html";
    } else {
        m->text = xstrdup("");
        m->text_source = "";
    }
    free(w.plain.s);
    free(w.html.s);
    size_t tl = strlen(m->text);
    while (tl > 0 && isspace((unsigned char)m->text[tl - 1]))
        m->text[--tl] = '\0';
    /* a single-part HTML message arrives as text; plain text never needs the converter */
    m->text_trimmed = email_trim_quoted(m->text);

    if (m->from_daemon && !m->is_dsn && m->dsn.original_message_id)
        m->is_dsn = true;
    m->case_token = email_find_case_token(m->subject);
    struct email_addr *lists[] = {m->to, m->cc};
    size_t counts[] = {m->n_to, m->n_cc};
    for (int l = 0; l < 2 && !m->plus_case; l++)
        for (size_t i = 0; i < counts[l] && !m->plus_case; i++)
            m->plus_case = email_plus_case(lists[l][i].addr);
    for (const char *h = header(msg, "Delivered-To"); h && !m->plus_case; h = NULL)
        m->plus_case = email_plus_case(h);
    m->external_id = m->message_id ? xstrdup(m->message_id) : content_id(m);

    g_object_unref(msg);
    g_mime_parser_options_free(opts);
    return 0;
}

static void addrs_free(struct email_addr *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(a[i].name);
        free(a[i].addr);
    }
    free(a);
}

void email_msg_free(struct email_msg *m)
{
    if (!m)
        return;
    free(m->message_id);
    free(m->external_id);
    free(m->from.name);
    free(m->from.addr);
    addrs_free(m->to, m->n_to);
    addrs_free(m->cc, m->n_cc);
    addrs_free(m->reply_to, m->n_reply_to);
    free(m->subject);
    free(m->date);
    free(m->in_reply_to);
    for (size_t i = 0; i < m->n_references; i++)
        free(m->references[i]);
    free(m->references);
    free(m->text);
    free(m->text_trimmed);
    for (size_t i = 0; i < m->n_att; i++) {
        free(m->att[i].filename);
        free(m->att[i].content_type);
        free(m->att[i].content_id);
        free(m->att[i].data);
    }
    free(m->att);
    free(m->dsn.original_message_id);
    free(m->dsn.action);
    free(m->dsn.status);
    free(m->dsn.recipient);
    free(m->dsn.diagnostic);
    free(m->case_token);
    free(m->plus_case);
    memset(m, 0, sizeof(*m));
}

bool email_may_auto_reply(const struct email_msg *m)
{
    return !m->auto_submitted && !m->bulk && !m->from_daemon && !m->is_dsn && m->from.addr &&
           strchr(m->from.addr, '@');
}

static json_t *addrs_json(const struct email_addr *a, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:s}", "name", a[i].name, "addr", a[i].addr));
    return arr;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *email_msg_json(const struct email_msg *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "message_id", str_or_null(m->message_id));
    json_object_set_new(o, "external_id", str_or_null(m->external_id));
    json_object_set_new(o, "from", json_pack("{s:s,s:s}", "name", m->from.name, "addr", m->from.addr));
    json_object_set_new(o, "to", addrs_json(m->to, m->n_to));
    json_object_set_new(o, "cc", addrs_json(m->cc, m->n_cc));
    json_object_set_new(o, "reply_to", addrs_json(m->reply_to, m->n_reply_to));
    json_object_set_new(o, "subject", json_string(m->subject));
    json_object_set_new(o, "date", str_or_null(m->date));
    json_object_set_new(o, "in_reply_to", str_or_null(m->in_reply_to));
    json_t *refs = json_array();
    for (size_t i = 0; i < m->n_references; i++)
        json_array_append_new(refs, json_string(m->references[i]));
    json_object_set_new(o, "references", refs);
    json_object_set_new(o, "text", json_string(m->text));
    json_object_set_new(o, "text_trimmed", json_string(m->text_trimmed));
    json_object_set_new(o, "text_source", json_string(m->text_source));
    json_t *att = json_array();
    for (size_t i = 0; i < m->n_att; i++) {
        json_t *a = json_pack("{s:s,s:s,s:I,s:s}", "filename", m->att[i].filename,
                              "content_type", m->att[i].content_type, "size",
                              (json_int_t)m->att[i].len, "sha256", m->att[i].sha256);
        if (m->att[i].content_id)
            json_object_set_new(a, "content_id", json_string(m->att[i].content_id));
        json_array_append_new(att, a);
    }
    json_object_set_new(o, "attachments", att);
    json_object_set_new(o, "attachments_skipped", json_integer(m->att_skipped));
    json_object_set_new(o, "auto_submitted", json_boolean(m->auto_submitted));
    json_object_set_new(o, "bulk", json_boolean(m->bulk));
    json_object_set_new(o, "from_daemon", json_boolean(m->from_daemon));
    json_object_set_new(o, "is_dsn", json_boolean(m->is_dsn));
    if (m->is_dsn)
        json_object_set_new(o, "dsn",
                            json_pack("{s:o,s:o,s:o,s:o,s:o}", "original_message_id",
                                      str_or_null(m->dsn.original_message_id), "action",
                                      str_or_null(m->dsn.action), "status",
                                      str_or_null(m->dsn.status), "recipient",
                                      str_or_null(m->dsn.recipient), "diagnostic",
                                      str_or_null(m->dsn.diagnostic)));
    json_object_set_new(o, "case_token", str_or_null(m->case_token));
    json_object_set_new(o, "plus_case", str_or_null(m->plus_case));
    json_object_set_new(o, "may_auto_reply", json_boolean(email_may_auto_reply(m)));
    return o;
}
