/* test_fax.c - the fax channel's wire formats (channels/fax_wire.c): the Phaxio signature
 * against the vector of Phaxio's own SDK tests and one over a real multipart body with a
 * file part, the Telnyx Ed25519 check (RFC 8032 test key 1) and its replay window, the
 * Telnyx event, document inspection (PDFs made by cairo), a G3 fax written by libtiff made
 * into a PDF (page sizes and pixels read back through poppler), identifiers in OCR text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cairo-pdf.h>
#include <cairo.h>
#include <poppler.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include "fax.h"
#include "omnicc/identity.h"

static void set_part(struct fax_part *p, const char *name, const char *value, bool is_file)
{
    p->name = strdup(name);
    p->data = (unsigned char *)strdup(value);
    p->len = strlen(value);
    p->is_file = is_file;
}

static void test_phaxio_sdk_vector(void **state)
{
    struct fax_form f = {0};
    set_part(&f.parts[f.n++], "test", "true", false);
    char sig[41];
    fax_phaxio_signature("test-webhook-token", "example.com", &f, sig);
    assert_string_equal(sig, "64a735ef0c47a0ae671e381c046648f0966deb29");
    assert_true(fax_phaxio_valid("test-webhook-token", "example.com", &f,
                                 "64A735EF0C47A0AE671E381C046648F0966DEB29"));
    assert_false(fax_phaxio_valid("test-webhook-token", "example.org", &f,
                                  "64a735ef0c47a0ae671e381c046648f0966deb29"));
    assert_false(fax_phaxio_valid("test-webhook-token", "example.com", &f, NULL));
    fax_form_free(&f);
}

static void test_phaxio_multipart_with_file(void **state)
{
    static const char body[] =
        "--b0undary\r\nContent-Disposition: form-data; name=\"fax\"\r\n\r\n{\"id\":1}\r\n"
        "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.pdf\"\r\n"
        "Content-Type: application/pdf\r\n\r\n%PDF-1.4 hello\r\n"
        "--b0undary\r\nContent-Disposition: form-data; name=\"direction\"\r\n\r\nreceived\r\n"
        "--b0undary--\r\n";
    struct fax_form f;
    const char *why = NULL;
    assert_int_equal(fax_form_parse("multipart/form-data; boundary=b0undary", body,
                                     sizeof(body) - 1, &f, &why),
                     0);
    assert_int_equal(f.n, 3);
    assert_string_equal(fax_form_field(&f, "fax"), "{\"id\":1}");
    const struct fax_part *file = fax_form_file(&f, "file");
    assert_non_null(file);
    assert_int_equal(file->len, 14);
    assert_memory_equal(file->data, "%PDF-1.4 hello", 14);
    assert_string_equal(file->filename, "f.pdf");
    assert_string_equal(file->content_type, "application/pdf");
    char sig[41];
    fax_phaxio_signature("test-webhook-token", "example.com", &f, sig);
    /* computed independently (Python hmac/hashlib) */
    assert_string_equal(sig, "d9439fc7e4d35457b40f58290fa7b4870480ff12");
    fax_form_free(&f);
    assert_int_equal(fax_form_parse("application/json", body, sizeof(body) - 1, &f, &why), -1);
    assert_int_equal(fax_form_parse("multipart/form-data; boundary=other", body, sizeof(body) - 1,
                                    &f, &why),
                     -1);
}

#define RFC8032_PUB "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

static void test_telnyx_signature(void **state)
{
    const char *body = "{\"data\":{}}";
    const char *sig =
        "NwqQ2k4IDqRtOi7bH1h+sj/JKnnjN0DyJk1BO02d/ubvBak3nIcpcAHpYdoZK1b0ES1ZKfH4N+wRAYDz31NyCA==";
    const char *why = NULL;
    assert_true(fax_telnyx_key_ok(RFC8032_PUB));
    assert_false(fax_telnyx_key_ok("AAAA"));
    assert_int_equal(fax_telnyx_verify(RFC8032_PUB, "1700000000", sig, body, strlen(body),
                                       1700000100, 300, &why),
                     0);
    assert_int_equal(fax_telnyx_verify(RFC8032_PUB, "1700000000", sig, "{\"data\":{ }}", 12,
                                       1700000100, 300, &why),
                     -1);
    assert_int_equal(fax_telnyx_verify(RFC8032_PUB, "1700000000", sig, body, strlen(body),
                                       1700000400, 300, &why),
                     -1);
    assert_non_null(strstr(why, "window"));
    assert_int_equal(fax_telnyx_verify(RFC8032_PUB, "1700000001", sig, body, strlen(body),
                                       1700000100, 300, &why),
                     -1);
    assert_int_equal(fax_telnyx_verify(RFC8032_PUB, "1700000000", NULL, body, strlen(body),
                                       1700000100, 300, &why),
                     -1);
}

static void test_telnyx_event(void **state)
{
    const char *b = "{\"data\":{\"event_type\":\"fax.received\",\"id\":\"e-1\",\"payload\":"
                    "{\"fax_id\":\"f-1\",\"from\":\"+34911\",\"media_url\":\"https://m/x\","
                    "\"page_count\":3,\"partial_content\":true,\"status\":\"received\"}}}";
    struct fax_telnyx_event ev;
    const char *why = NULL;
    assert_int_equal(fax_telnyx_parse(b, strlen(b), &ev, &why), 0);
    assert_string_equal(ev.event_type, "fax.received");
    assert_string_equal(ev.fax_id, "f-1");
    assert_int_equal(ev.page_count, 3);
    assert_true(ev.partial);
    fax_telnyx_event_free(&ev);
    const char *bad = "{\"data\":{\"event_type\":\"fax.received\",\"payload\":{\"fax_id\":\"a b\"}}}";
    assert_int_equal(fax_telnyx_parse(bad, strlen(bad), &ev, &why), -1);
    const char *file_url = "{\"data\":{\"event_type\":\"fax.received\",\"payload\":{\"fax_id\":"
                           "\"a\",\"media_url\":\"file:///etc/passwd\"}}}";
    assert_int_equal(fax_telnyx_parse(file_url, strlen(file_url), &ev, &why), -1);
}

/* A PDF of n pages made by cairo in memory. */
static cairo_status_t grow(void *arg, const unsigned char *d, unsigned int n)
{
    struct {
        unsigned char *d;
        size_t len;
    } *b = arg;
    b->d = realloc(b->d, b->len + n);
    memcpy(b->d + b->len, d, n);
    b->len += n;
    return CAIRO_STATUS_SUCCESS;
}

static unsigned char *cairo_pdf(int pages, size_t *len)
{
    struct {
        unsigned char *d;
        size_t len;
    } b = {0};
    cairo_surface_t *s = cairo_pdf_surface_create_for_stream(grow, &b, 595, 842);
    cairo_t *cr = cairo_create(s);
    for (int i = 0; i < pages; i++) {
        cairo_rectangle(cr, 72, 72, 100, 20 + i);
        cairo_fill(cr);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_finish(s);
    cairo_surface_destroy(s);
    *len = b.len;
    return b.d;
}

static void test_documents(void **state)
{
    struct fax_doc_info info;
    const char *why = NULL;
    size_t len = 0;
    unsigned char *pdf = cairo_pdf(3, &len);
    assert_int_equal(fax_doc_inspect(pdf, len, 350, &info, &why), 0);
    assert_string_equal(info.type, "pdf");
    assert_int_equal(info.pages, 3);
    assert_int_equal(fax_doc_inspect(pdf, len, 2, &info, &why), -1);
    assert_string_equal(why, "too many pages");
    free(pdf);
    /* page objects without a catalog or cross-reference table: not a PDF poppler can open */
    const char *bare = "%PDF-1.4\n1 0 obj <</Type /Pages /Kids [2 0 R 3 0 R] /Count 2>>\n"
                       "2 0 obj <</Type /Page>>\n3 0 obj <</Type/Page /Parent 1 0 R>>\n";
    assert_int_equal(fax_doc_inspect(bare, strlen(bare), 350, &info, &why), -1);
    assert_string_equal(why, "damaged PDF");
    assert_int_equal(fax_doc_inspect("hello", 5, 350, &info, &why), -1);
    assert_int_equal(fax_doc_inspect("II*\0\x08\0\0\0", 8, 350, &info, &why), -1);
}

/* A two-page G3 fax written by libtiff: page 1 fine (204x196 dpi, 392 lines), page 2
 * standard (204x98, 196 lines), both 2 inches tall, black in the first rows of each page and
 * the first 8 pixels of every row, white elsewhere. */
static unsigned char *g3_fax(size_t *len)
{
    char path[] = "/tmp/test_fax_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    const uint32_t w = 1728;
    unsigned char row[1728 / 8];
    for (int page = 0; page < 2; page++) {
        uint32_t h = page == 0 ? 392 : 196;
        TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
        TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
        TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 1);
        TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
        TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_CCITTFAX3);
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISWHITE);
        TIFFSetField(t, TIFFTAG_FILLORDER, FILLORDER_LSB2MSB);
        TIFFSetField(t, TIFFTAG_XRESOLUTION, 204.0f);
        TIFFSetField(t, TIFFTAG_YRESOLUTION, page == 0 ? 196.0f : 98.0f);
        TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, RESUNIT_INCH);
        TIFFSetField(t, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
        TIFFSetField(t, TIFFTAG_PAGENUMBER, page, 2);
        for (uint32_t y = 0; y < h; y++) {
            memset(row, y < h / 8 ? 0xFF : 0x00, sizeof(row));
            row[0] = 0xFF; /* MINISWHITE: 1 is black */
            assert_int_equal(TIFFWriteScanline(t, row, y, 0), 1);
        }
        TIFFWriteDirectory(t);
    }
    TIFFClose(t);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *d = malloc(*len);
    assert_int_equal(fread(d, 1, *len, f), *len);
    fclose(f);
    unlink(path);
    return d;
}

/* grey level of pixel (x, y) of page n rendered by poppler at 72 dpi on white */
static int rendered_grey(PopplerDocument *doc, int n, double x, double y)
{
    PopplerPage *page = poppler_document_get_page(doc, n);
    double w, h;
    poppler_page_get_size(page, &w, &h);
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)w, (int)h);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    poppler_page_render(page, cr);
    cairo_destroy(cr);
    cairo_surface_flush(s);
    const unsigned char *px = cairo_image_surface_get_data(s) +
                              (size_t)y * (size_t)cairo_image_surface_get_stride(s) + (size_t)x * 4;
    int grey = px[1];
    cairo_surface_destroy(s);
    g_object_unref(page);
    return grey;
}

static void test_tiff_to_pdf(void **state)
{
    size_t len = 0, plen = 0;
    unsigned char *tif = g3_fax(&len);
    struct fax_doc_info info;
    const char *why = NULL;
    assert_int_equal(fax_doc_inspect(tif, len, 350, &info, &why), 0);
    assert_int_equal(info.pages, 2);
    int pages = 0;
    unsigned char *pdf = fax_tiff_to_pdf(tif, len, 350, &plen, &pages, &why);
    assert_non_null(pdf);
    assert_int_equal(pages, 2);
    assert_null(fax_tiff_to_pdf(tif, len, 1, &plen, &pages, &why));
    assert_string_equal(why, "too many pages");
    /* our own inspection of the PDF made, and poppler's view of its pages */
    assert_int_equal(fax_doc_inspect(pdf, plen, 350, &info, &why), 0);
    assert_int_equal(info.pages, 2);
    GBytes *b = g_bytes_new_static(pdf, plen);
    PopplerDocument *doc = poppler_document_new_from_bytes(b, NULL, NULL);
    g_bytes_unref(b);
    assert_non_null(doc);
    for (int i = 0; i < 2; i++) {
        /* 1728 pixels at 204 dpi wide, 2 inches tall at either resolution */
        double w, h;
        PopplerPage *page = poppler_document_get_page(doc, i);
        poppler_page_get_size(page, &w, &h);
        g_object_unref(page);
        assert_true(w > 609.8 && w < 610.0);
        assert_true(h > 143.9 && h < 144.1);
        /* black where the fax is black (the top eighth, the left edge), white elsewhere:
         * bit order and photometric kept */
        assert_true(rendered_grey(doc, i, 300, 5) < 64);
        assert_true(rendered_grey(doc, i, 1, 100) < 128);
        assert_true(rendered_grey(doc, i, 300, 100) > 192);
        assert_true(rendered_grey(doc, i, 605, 140) > 192);
    }
    g_object_unref(doc);
    free(pdf);
    /* a damaged TIFF: refused, nothing made */
    assert_null(fax_tiff_to_pdf(tif, len / 3, 350, &plen, &pages, &why));
    free(tif);
}

struct seen {
    long id[4];
    char state[4];
    char status[4][64];
    int n;
};

static void seen_job(void *arg, long id, char state, const char *status)
{
    struct seen *s = arg;
    s->id[s->n] = id;
    s->state[s->n] = state;
    snprintf(s->status[s->n], sizeof(s->status[0]), "%s", status);
    s->n++;
}

/* what sendfax and faxstat print (HylaFAX 6.0.7, omniccd's JobFmt "%j|%a|%s") */
static void test_hylafax_output(void **state)
{
    assert_int_equal(fax_hylafax_job_id("request id is 17 (group id 17) for host 127.0.0.1 "
                                        "(1 file)\n"),
                     17);
    assert_int_equal(fax_hylafax_job_id("460 Failed to submit job 3: Unspecified reason\n"), -1);
    assert_int_equal(fax_hylafax_job_id("request id is x"), -1);
    assert_true(fax_hylafax_number_ok("+34911000901"));
    assert_true(fax_hylafax_number_ok("5551234"));
    assert_false(fax_hylafax_number_ok("+34 911"));
    assert_false(fax_hylafax_number_ok("-h"));
    assert_false(fax_hylafax_number_ok("12"));
    assert_false(fax_hylafax_number_ok("+34911;id"));
    const char *out = "HylaFAX scheduler on vm: Running\n\nJID |State|Status\n"
                      "1   |W|\n\nJID |State|Status\n2   |F|Job aborted by request\n"
                      "3   |D|\r\nnot|a|line\n";
    struct seen s = {0};
    assert_int_equal(fax_hylafax_parse_status(out, seen_job, &s), 3);
    assert_int_equal(s.id[0], 1);
    assert_int_equal(s.state[0], 'W');
    assert_int_equal(s.id[1], 2);
    assert_int_equal(s.state[1], 'F');
    assert_string_equal(s.status[1], "Job aborted by request");
    assert_int_equal(s.id[2], 3);
    assert_int_equal(s.state[2], 'D');
    assert_string_equal(s.status[2], "");
}

static void test_identifiers(void **state)
{
    char *err = NULL;
    assert_int_equal(identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err), 0);
    struct fax_found f;
    fax_find_identifiers("FAX COVER SHEET\nPolicy number: PL-2024-001 234\nRe: case C-I23\n"
                         "Tel. +34 600 111 222\nDate 25/11/2026\n",
                         false, &f);
    assert_int_equal(f.n_policy, 1);
    assert_string_equal(f.policy[0], "PL-2024-001234");
    assert_int_equal(f.n_case, 1);
    assert_string_equal(f.case_id[0], "C-123");
    assert_int_equal(f.n_phone, 1);
    assert_string_equal(f.phone[0], "+34600111222");
    /* OCR's letters for digits in the policy number */
    fax_find_identifiers("Poliza: PL-2O24-OO5678", false, &f);
    assert_int_equal(f.n_policy, 1);
    assert_string_equal(f.policy[0], "PL-2024-005678");
    identity_shutdown();
}

/* fax-to-email: the sending number as the services and HylaFAX write it */
static void expect_number(const char *subject, const char *addr, const char *name,
                          const char *pattern, const char *want)
{
    char *n = fax_mail_number(subject, addr, name, pattern);
    if (want)
        assert_string_equal(n ? n : "(none)", want);
    else
        assert_null(n);
    free(n);
}

static void test_fax_mail_number(void **state)
{
    char *err = NULL;
    assert_int_equal(identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err), 0);
    expect_number("Fax from +49 30 1234567", "noreply@fax.example", "", NULL, "+49301234567");
    expect_number("New fax received from (212) 555-1234 - 3 pages", "n@x.example", "", NULL,
                  "+342125551234"); /* no country code: the configured default */
    expect_number("Facsimile received from +34 911 000 222", "fax@hylafax.example", "", NULL,
                  "+34911000222");
    expect_number("Fax von 030/1234567", "x@y.example", "", NULL, "+34301234567");
    expect_number("Your document", "12125551234@fax.provider.example", "", NULL, "+12125551234");
    expect_number("Your document", "+4930123456@efax.example", "", NULL, "+4930123456");
    expect_number("Message", "noreply@fax.example", "+44 20 7946 0018", NULL, "+442079460018");
    /* a configured pattern first */
    expect_number("Eingang: Absender 0049 89 12345 Seiten 2", "a@b.example", "",
                  "Absender (\\+?[0-9 ]+[0-9])", "+498912345");
    expect_number("T\xc3\xa9l\xc3\xa9" "copie de +33 1 23 45 67 89", "a@b.example", "", NULL,
                  "+33123456789");
    /* nothing that names a number */
    expect_number("Your invoice 2024", "billing@shop.example", "Shop", NULL, NULL);
    expect_number("", "fax@provider.example", "Fax Service", NULL, NULL);
    identity_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phaxio_sdk_vector), cmocka_unit_test(test_phaxio_multipart_with_file),
        cmocka_unit_test(test_telnyx_signature),  cmocka_unit_test(test_telnyx_event),
        cmocka_unit_test(test_documents),         cmocka_unit_test(test_identifiers),
        cmocka_unit_test(test_fax_mail_number),   cmocka_unit_test(test_tiff_to_pdf),
        cmocka_unit_test(test_hylafax_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
