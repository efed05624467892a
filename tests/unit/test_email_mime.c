/* The email parser against the corpus of real-world message shapes (tests/email-corpus/:
 * every NAME.eml must parse to what NAME.json says), plus its pieces on their own: HTML to
 * text, quote trimming, case references, limits and input that is not a message at all. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "email.h"
#include "email_mime.h"
#include "omnicc/util.h"

static const struct email_limits limits = {25 << 20, 10 << 20, 25 << 20, 20};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* every key of want is in got with an equal value (objects compared the same way) */
static bool subset(json_t *want, json_t *got, char *where, size_t wsize)
{
    if (json_is_object(want)) {
        if (!json_is_object(got))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach(want, k, v)
        {
            size_t n = strlen(where);
            snprintf(where + n, wsize - n, ".%s", k);
            if (!subset(v, json_object_get(got, k), where, wsize))
                return false;
            where[n] = '\0';
        }
        return true;
    }
    if (json_is_array(want)) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(want))
            return false;
        for (size_t i = 0; i < json_array_size(want); i++) {
            size_t n = strlen(where);
            snprintf(where + n, wsize - n, "[%zu]", i);
            if (!subset(json_array_get(want, i), json_array_get(got, i), where, wsize))
                return false;
            where[n] = '\0';
        }
        return true;
    }
    return got && json_equal(want, got);
}

static void test_corpus(void **state)
{
    DIR *d = opendir(EMAIL_CORPUS);
    assert_non_null(d);
    int checked = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".eml") != 0)
            continue;
        char path[1024], jpath[1024];
        snprintf(path, sizeof(path), "%s/%s", EMAIL_CORPUS, e->d_name);
        snprintf(jpath, sizeof(jpath), "%s/%.*s.json", EMAIL_CORPUS, (int)(n - 4), e->d_name);
        size_t len;
        char *raw = slurp(path, &len);
        assert_non_null(raw);
        json_error_t jerr;
        json_t *want = json_load_file(jpath, 0, &jerr);
        if (!want)
            fail_msg("%s: %s", jpath, jerr.text);
        struct email_msg m;
        char *err = NULL;
        if (email_parse(raw, len, &limits, &m, &err) < 0)
            fail_msg("%s: %s", e->d_name, err);
        json_t *got = email_msg_json(&m);
        char where[256] = "";
        if (!subset(want, got, where, sizeof(where))) {
            char *g = json_dumps(got, JSON_INDENT(1));
            fail_msg("%s: mismatch at %s; parsed as:\n%s", e->d_name, where, g);
        }
        /* every string in the result is clean UTF-8 */
        char *dump = json_dumps(got, JSON_COMPACT);
        assert_non_null(dump);
        assert_true(text_is_clean_utf8(m.text, strlen(m.text)));
        free(dump);
        json_decref(got);
        json_decref(want);
        email_msg_free(&m);
        free(raw);
        checked++;
    }
    closedir(d);
    assert_true(checked >= 14);
}

static void test_attachment_limits(void **state)
{
    size_t len;
    char *raw = slurp(EMAIL_CORPUS "/attachments.eml", &len);
    assert_non_null(raw);
    struct email_limits small = {1 << 20, 100, 1000, 20}; /* the 330-byte PDF is too big */
    struct email_msg m;
    char *err = NULL;
    assert_int_equal(email_parse(raw, len, &small, &m, &err), 0);
    assert_int_equal(m.n_att, 2);
    assert_int_equal(m.att_skipped, 1);
    email_msg_free(&m);
    struct email_limits few = {1 << 20, 1 << 20, 1 << 20, 1};
    assert_int_equal(email_parse(raw, len, &few, &m, &err), 0);
    assert_int_equal(m.n_att, 1);
    assert_int_equal(m.att_skipped, 2);
    email_msg_free(&m);
    struct email_limits tiny = {100, 1 << 20, 1 << 20, 20};
    assert_int_equal(email_parse(raw, len, &tiny, &m, &err), -1);
    assert_non_null(strstr(err, "larger than"));
    free(err);
    free(raw);
}

static void test_not_a_message(void **state)
{
    struct email_msg m;
    char *err = NULL;
    assert_int_equal(email_parse("", 0, &limits, &m, &err), -1);
    free(err);
    /* garbage still parses to something harmless: no crash, clean strings */
    const char junk[] = "\x01\x02\xff\xfe garbage\r\n\r\n\x00\x80\x62ody";
    assert_int_equal(email_parse(junk, sizeof(junk) - 1, &limits, &m, &err), 0);
    assert_true(text_is_clean_utf8(m.text, strlen(m.text)));
    assert_true(text_is_clean_utf8(m.subject, strlen(m.subject)));
    assert_non_null(m.external_id);
    email_msg_free(&m);
}

static void test_deep_nesting_refused(void **state)
{
    size_t cap = 5000 * 64, len = 0;
    char *raw = xmalloc(cap);
    len += (size_t)sprintf(raw, "From: a@b.c\r\n");
    for (int i = 0; i < 5000; i++)
        len += (size_t)sprintf(raw + len, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n",
                               i, i);
    struct email_msg m;
    char *err = NULL;
    assert_int_equal(email_parse(raw, len, &limits, &m, &err), -1);
    assert_non_null(strstr(err, "nested"));
    free(err);
    free(raw);
}

static void test_html_to_text(void **state)
{
    const char *html = "<p>One&nbsp;&amp; two</p><p>Three<br/>four</p><script>x()</script>"
                       "<blockquote>quoted</blockquote><!-- c --><b>bold</b> &#x41;&#66;";
    char *t = email_html_to_text(html, strlen(html));
    assert_string_equal(t, "One & two\n\nThree\nfour\n\n> quoted\nbold AB");
    free(t);
    /* an unknown entity stays text; a numeric reference with no digits is dropped by the parser */
    t = email_html_to_text("fish & chips &nosuch; &#;", 25);
    assert_string_equal(t, "fish & chips &nosuch;");
    free(t);
    t = email_html_to_text("<p>unterminated <b", 17); /* a '<' starting no tag is text */
    assert_string_equal(t, "unterminated <");
    free(t);
}

static void expect_html(const char *html, const char *want)
{
    char *t = email_html_to_text(html, strlen(html));
    assert_string_equal(t, want);
    free(t);
}

/* Outlook wraps its VML and its own styles in conditional comments; the parser sees them as
 * comments. Content shown to non-Outlook clients between downlevel-revealed markers stays. */
static void test_html_outlook(void **state)
{
    expect_html("<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head>"
                "<meta http-equiv=Content-Type content=\"text/html; charset=windows-1252\">"
                "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings><o:AllowPNG/>"
                "</o:OfficeDocumentSettings></xml><![endif]-->"
                "<style><!-- p.MsoNormal {margin:0cm; font-family:\"Calibri\"} --></style></head>"
                "<body lang=ES><div class=WordSection1>"
                "<p class=MsoNormal>Buenos d\xc3\xad" "as,<o:p></o:p></p>"
                "<p class=MsoNormal><o:p>&nbsp;</o:p></p>"
                "<!--[if mso]><table><tr><td>only Outlook</td></tr></table><![endif]-->"
                "<!--[if !mso]><!--><p class=MsoNormal>for everyone else</p><!--<![endif]-->"
                "<p class=MsoNormal>P\xc3\xb3liza&nbsp;PL-2024-000123<o:p></o:p></p></div>"
                "</body></html>",
                "Buenos d\xc3\xad" "as,\n\nfor everyone else\n\nP\xc3\xb3liza PL-2024-000123");
}

static void test_html_style_and_script(void **state)
{
    /* <style> in the body too (newsletters put it there), CSS with '<' and '>' in it */
    expect_html("<body><style>a > b { x: 1 } p<q {}</style>Hello<script>if (a < b) "
                "document.write('<p>no</p>')</script> world<noscript></noscript></body>",
                "Hello world");
}

static void test_html_lists(void **state)
{
    expect_html("<p>Documents:</p><ul><li>Claim form<ul><li>page 1</li><li>page 2</li></ul></li>"
                "<li>Photos</li></ul><ol><li>first</li><li>second<ol><li>inner</li></ol></li>"
                "<li>third</li></ol>after",
                "Documents:\n\n- Claim form\n  - page 1\n  - page 2\n- Photos\n1. first\n2. second\n"
                "  1. inner\n3. third\nafter");
}

static void test_html_links_images_tables(void **state)
{
    expect_html("<p>Read <a href=\"https://insurer.example/t?a=1&amp;b=2\">the terms</a>, "
                "write to <a href=\"mailto:claims@insurer.example\">claims@insurer.example</a> or "
                "see <a href=\"https://x.example/\">https://x.example/</a>. "
                "<a href=\"javascript:alert(1)\">no</a> <a href=\"#top\">top</a></p>"
                "<img src=\"cid:logo\" alt=\"Insurer logo\"><img src=\"t.gif\" alt=\"\">"
                "<table><tr><th>Item</th><th>Amount</th></tr><tr><td>Repair</td><td>1.200 \xe2\x82\xac"
                "</td></tr><tr><td></td><td>spacer-free</td></tr></table>",
                "Read the terms <https://insurer.example/t?a=1&b=2>, write to "
                "claims@insurer.example or see https://x.example/. no top\n\n[Insurer logo]\n"
                "Item | Amount\nRepair | 1.200 \xe2\x82\xac\nspacer-free");
}

static void test_html_malformed(void **state)
{
    /* unclosed tags, stray end tags, a table cell outside a table, attributes without quotes,
     * an unterminated comment: the parser recovers the way browsers do */
    expect_html("<div><p>one<p>two</b></i><td>cell<p>three <b>bold <i>both</b> italic</i>"
                "\n<a href=https://a.example/x>link</a></div></span>tail<!-- never closed",
                "one\n\ntwo\n\ncell\n\nthree bold both italic link <https://a.example/x>tail");
    expect_html("", "");
    expect_html("if a < b && c > d", "if a < b && c > d"); /* bare < & > in text */
    /* deep nesting costs no stack: the walk is iterative */
    size_t n = 100000;
    char *deep = xmalloc(n * 5 + 8);
    for (size_t i = 0; i < n; i++)
        memcpy(deep + i * 5, "<div>", 5);
    strcpy(deep + n * 5, "x");
    char *t = email_html_to_text(deep, strlen(deep));
    assert_non_null(t);
    free(t);
    free(deep);
}

/* An ISO-8859-1 HTML body whose <meta> says so too: GMime's conversion makes it UTF-8 first,
 * and the HTML parser must not decode it a second time because of the <meta>. */
static void test_html_charset(void **state)
{
    const char *raw = "From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n"
                      "Message-ID: <latin-html@example.com>\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: text/html; charset=iso-8859-1\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n\r\n"
                      "<html><head><meta charset=\"iso-8859-1\"></head><body>"
                      "<p>Se\xf1or Mu\xf1oz, p\xf3liza &euro; 5</p></body></html>\r\n";
    struct email_msg m;
    char *err = NULL;
    assert_int_equal(email_parse(raw, strlen(raw), &limits, &m, &err), 0);
    assert_string_equal(m.text_source, "text/html");
    assert_string_equal(m.text, "Se\xc3\xb1or Mu\xc3\xb1oz, p\xc3\xb3liza \xe2\x82\xac 5");
    email_msg_free(&m);
    /* windows-1252 declared only in the <meta>, the MIME header says utf-8 and wins */
    const char *raw2 = "From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n"
                       "Message-ID: <meta-html@example.com>\r\nMIME-Version: 1.0\r\n"
                       "Content-Type: text/html; charset=utf-8\r\n\r\n"
                       "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1252\">"
                       "<p>\xe2\x80\x9cquoted\xe2\x80\x9d</p>\r\n";
    assert_int_equal(email_parse(raw2, strlen(raw2), &limits, &m, &err), 0);
    assert_string_equal(m.text, "\xe2\x80\x9cquoted\xe2\x80\x9d");
    email_msg_free(&m);
}

static void test_trim_quoted(void **state)
{
    char *t = email_trim_quoted("New text\n\nOn Mon, Ana wrote:\n> old\n> older\n");
    assert_string_equal(t, "New text");
    free(t);
    /* answers between quotes are kept whole */
    const char *inter = "On Mon, Ana wrote:\n> question 1\nanswer 1\n> question 2\nanswer 2";
    t = email_trim_quoted(inter);
    assert_string_equal(t, inter);
    free(t);
    t = email_trim_quoted("Top\n\n-----Original Message-----\nFrom: x\nold");
    assert_string_equal(t, "Top");
    free(t);
    /* a message that is all quote keeps its text */
    t = email_trim_quoted("> only a quote");
    assert_string_equal(t, "> only a quote");
    free(t);
}

static void test_case_references(void **state)
{
    char *c = email_find_case_token("Re: claim [#C-1234] photos");
    assert_string_equal(c, "C-1234");
    free(c);
    assert_null(email_find_case_token("Re: [#C-12x] [#D-1] [C-5] [#C-]"));
    c = email_find_case_token("[#C-1 [#c-77]");
    assert_string_equal(c, "C-77");
    free(c);
    c = email_plus_case("claims+C-42@insurer.example");
    assert_string_equal(c, "C-42");
    free(c);
    assert_null(email_plus_case("claims+C-42x@insurer.example"));
    assert_null(email_plus_case("claims@insurer.example"));
    assert_null(email_plus_case("claims+C-42"));
}

/* What the SMTP workers send reads back, through the same parser, as what was meant:
 * encoded subject and name, quoted-printable body (long lines, leading dots, trailing
 * spaces), threading headers, an attachment with a non-ASCII name. */
static void test_compose_reads_back(void **state)
{
    unsigned char pdf[700];
    for (size_t i = 0; i < sizeof(pdf); i++)
        pdf[i] = (unsigned char)(i * 7);
    struct email_out_attachment att = {"informe daños.pdf", "application/pdf", pdf, sizeof(pdf)};
    const char *refs[] = {"<a@x>", "<b@y>", NULL};
    const char *cc[] = {"broker@agency.example", "team@insurer.example", NULL};
    char body[400];
    snprintf(body, sizeof(body), "Estimada Ana,\n.leading dot\ntrailing space \n%s\nÁngel",
             "a very long line that goes on and on well past seventy-six characters so that "
             "quoted-printable has to break it softly");
    struct email_out o = {.from = "claims@insurer.example", .from_name = "Siniestros Ñ",
                          .to = "ana@example.com", .subject = "Re: Póliza [#C-7]",
                          .body = body, .message_id = "<omnicc.1@insurer.example>",
                          .in_reply_to = "<b@y>", .references = refs, .cc = cc,
                          .auto_reply = true, .att = &att, .n_att = 1, .date = 1717400000};
    size_t len;
    char *raw = email_compose(&o, &len);
    assert_non_null(strstr(raw, "\r\nAuto-Submitted: auto-replied\r\n"));
    /* RFC 5322: lines end in CRLF and hold at most 998 characters (a leading dot is left
     * to libesmtp, which dot-stuffs the DATA it sends) */
    for (const char *line = raw, *eol; line < raw + len; line = eol + 2) {
        eol = strstr(line, "\r\n");
        assert_non_null(eol);
        assert_true(eol - line <= 998);
        assert_null(memchr(line, '\n', (size_t)(eol - line)));
    }
    struct email_msg m;
    char *err = NULL;
    assert_int_equal(email_parse(raw, len, &limits, &m, &err), 0);
    assert_string_equal(m.subject, "Re: Póliza [#C-7]");
    assert_string_equal(m.case_token, "C-7");
    assert_string_equal(m.from.name, "Siniestros Ñ");
    assert_string_equal(m.from.addr, "claims@insurer.example");
    assert_string_equal(m.message_id, "<omnicc.1@insurer.example>");
    assert_string_equal(m.in_reply_to, "<b@y>");
    assert_int_equal(m.n_references, 2);
    assert_int_equal(m.n_cc, 2);
    assert_string_equal(m.cc[0].addr, "broker@agency.example");
    assert_string_equal(m.cc[1].addr, "team@insurer.example");
    assert_string_equal(m.text, body);
    assert_true(m.auto_submitted);
    assert_int_equal(m.n_att, 1);
    assert_string_equal(m.att[0].filename, "informe daños.pdf");
    assert_int_equal(m.att[0].len, sizeof(pdf));
    assert_memory_equal(m.att[0].data, pdf, sizeof(pdf));
    email_msg_free(&m);
    free(raw);
    /* a header value cannot smuggle another header in */
    struct email_out evil = {.from = "a@b.c", .to = "x@y.z", .subject = "hi\r\nBcc: all@x",
                             .body = "", .message_id = "<m@x>"};
    raw = email_compose(&evil, &len);
    assert_null(strstr(raw, "\r\nBcc:"));
    assert_null(strstr(raw, "\r\nCc:")); /* no copies, no Cc header */
    free(raw);
    char *mid = email_new_message_id("insurer.example");
    assert_true(strncmp(mid, "<omnicc.", 8) == 0);
    assert_non_null(strstr(mid, "@insurer.example>"));
    free(mid);
}

static int teardown(void **state)
{
    email_mime_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_attachment_limits),
        cmocka_unit_test(test_not_a_message),
        cmocka_unit_test(test_deep_nesting_refused),
        cmocka_unit_test(test_html_to_text),
        cmocka_unit_test(test_html_outlook),
        cmocka_unit_test(test_html_style_and_script),
        cmocka_unit_test(test_html_lists),
        cmocka_unit_test(test_html_links_images_tables),
        cmocka_unit_test(test_html_malformed),
        cmocka_unit_test(test_html_charset),
        cmocka_unit_test(test_trim_quoted),
        cmocka_unit_test(test_case_references),
        cmocka_unit_test(test_compose_reads_back),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
