/* test_fax.c - the fax channel's wire formats (channels/fax_wire.c): the Phaxio signature
 * against the vector of Phaxio's own SDK tests and one over a real multipart body with a
 * file part, the Telnyx Ed25519 check (RFC 8032 test key 1) and its replay window, the
 * Telnyx event, document inspection, identifiers in OCR text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

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

static void test_documents(void **state)
{
    struct fax_doc_info info;
    const char *why = NULL;
    const char *pdf = "%PDF-1.4\n1 0 obj <</Type /Pages /Kids [2 0 R 3 0 R] /Count 2>>\n"
                      "2 0 obj <</Type /Page>>\n3 0 obj <</Type/Page /Parent 1 0 R>>\n";
    assert_int_equal(fax_doc_inspect(pdf, strlen(pdf), 350, &info, &why), 0);
    assert_string_equal(info.type, "pdf");
    assert_int_equal(info.pages, 2);
    assert_int_equal(fax_doc_inspect(pdf, strlen(pdf), 1, &info, &why), -1);
    assert_int_equal(fax_doc_inspect("hello", 5, 350, &info, &why), -1);
    assert_int_equal(fax_doc_inspect("II*\0\x08\0\0\0", 8, 350, &info, &why), -1);
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
        cmocka_unit_test(test_fax_mail_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
