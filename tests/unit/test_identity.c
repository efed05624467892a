/* Identifier normalisation: the same person written differently must map to one key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "omnicc/identity.h"

static int setup(void **state)
{
    char *err = NULL;
    return identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err);
}

static void expect_phone(const char *in, const char *want)
{
    char out[IDENT_MAX];
    const char *why = NULL;
    int rc = identity_phone(in, out, sizeof(out), &why);
    if (rc != 0)
        fail_msg("%s rejected: %s", in, why);
    assert_string_equal(out, want);
}

static void reject_phone(const char *in)
{
    char out[IDENT_MAX];
    const char *why = NULL;
    assert_int_equal(identity_phone(in, out, sizeof(out), &why), -1);
    assert_non_null(why);
}

static void test_phone_forms(void **state)
{
    expect_phone("+34 600 111 222", "+34600111222");
    expect_phone("0034-600-111-222", "+34600111222");
    expect_phone("600.111.222", "+34600111222");
    expect_phone("(600) 111 222", "+34600111222");
    expect_phone("34600111222", "+34600111222"); /* PBX style, no + */
    expect_phone("tel:+34600111222", "+34600111222");
    expect_phone("sip:+34600111222@pbx.example;user=phone", "+34600111222");
    expect_phone("+1 (415) 555-0100", "+14155550100");
    expect_phone("+44 7700 900123", "+447700900123");
}

static void test_phone_rejects(void **state)
{
    reject_phone("");
    reject_phone("abc");
    reject_phone("+12");
    reject_phone("+1234567890123456"); /* 16 digits */
    reject_phone("600 111 222 ext 5");
    reject_phone("+0 600 111 222");
}

static void test_trunk_zero(void **state)
{
    char *err = NULL;
    assert_int_equal(identity_init("44", "[A-Z]{2}[0-9]+", &err), 0);
    expect_phone("07700 900123", "+447700900123");
    assert_int_equal(identity_init("39", "[A-Z]{2}[0-9]+", &err), 0);
    expect_phone("06 1234 5678", "+390612345678"); /* Italy keeps its 0 */
    assert_int_equal(setup(NULL), 0);
}

static void test_email(void **state)
{
    char out[IDENT_MAX];
    const char *why;
    assert_int_equal(identity_email("  Ana.Garcia@Example.COM ", out, sizeof(out), &why), 0);
    assert_string_equal(out, "ana.garcia@example.com");
    assert_int_equal(identity_email("mailto:x@y.es", out, sizeof(out), &why), 0);
    assert_string_equal(out, "x@y.es");
    assert_int_equal(identity_email("no-at-sign", out, sizeof(out), &why), -1);
    assert_int_equal(identity_email("a@b@c.com", out, sizeof(out), &why), -1);
    assert_int_equal(identity_email("a@localhost", out, sizeof(out), &why), -1);
    assert_int_equal(identity_email("Ana <a@b.com>", out, sizeof(out), &why), -1);
    assert_int_equal(identity_email("a b@c.com", out, sizeof(out), &why), -1);
}

static void test_policy(void **state)
{
    char out[IDENT_MAX];
    const char *why;
    assert_int_equal(identity_policy("pl-2024-001234", out, sizeof(out), &why), 0);
    assert_string_equal(out, "PL-2024-001234");
    /* as OCR reads a cover sheet: a space inside, O for 0 */
    assert_int_equal(identity_policy("PL-2024-001 234", out, sizeof(out), &why), 0);
    assert_string_equal(out, "PL-2024-001234");
    assert_int_equal(identity_policy("PL-2O24-OO1234", out, sizeof(out), &why), 0);
    assert_string_equal(out, "PL-2024-001234");
    assert_int_equal(identity_policy("hello", out, sizeof(out), &why), -1);
    assert_int_equal(identity_policy("PL-2024-001234; DROP", out, sizeof(out), &why), -1);
}

static void test_plain_ids(void **state)
{
    char out[IDENT_MAX];
    const char *why;
    assert_int_equal(identity_plain_id("12345678-z", out, sizeof(out), &why), 0);
    assert_string_equal(out, "12345678Z");
    assert_int_equal(identity_plain_id("bad*id", out, sizeof(out), &why), -1);
    assert_int_equal(identity_plain_id("", out, sizeof(out), &why), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phone_forms), cmocka_unit_test(test_phone_rejects),
        cmocka_unit_test(test_trunk_zero),  cmocka_unit_test(test_email),
        cmocka_unit_test(test_policy),      cmocka_unit_test(test_plain_ids),
    };
    int rc = cmocka_run_group_tests(tests, setup, NULL);
    identity_shutdown();
    return rc;
}
