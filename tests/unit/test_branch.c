/* test_branch.c - the teller bridge's wire helpers (channels/branch_proto.c): documents
 * arrive as base64 in a frame, and only canonical, padded base64 is accepted, so one
 * document has one encoding (what the terminal signed is what is stored). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "branch.h"

static long decode(const char *text, unsigned char *out)
{
    return branch_base64_decode(text, strlen(text), out);
}

static void test_base64_canonical_only(void **state)
{
    (void)state;
    unsigned char out[64];
    assert_int_equal(decode("QUJD", out), 3);
    assert_memory_equal(out, "ABC", 3);
    assert_int_equal(decode("QUI=", out), 2);
    assert_memory_equal(out, "AB", 2);
    assert_int_equal(decode("QQ==", out), 1);
    assert_int_equal(decode("QUJDRA==", out), 4);
    assert_memory_equal(out, "ABCD", 4);
    const char *refused[] = {
        "",         /* empty */
        "QUJ",      /* not a multiple of 4 */
        "QR==",     /* bits set in the padding */
        "QUJ=",     /* the same, one pad */
        "QQ=A",     /* data after padding */
        "Q===",     /* three pads */
        "====",     /* nothing but padding */
        "QU JD",    /* whitespace */
        "QUJD\n",   /* a line break */
        "QU*D",     /* not the alphabet */
        "QUJD====", /* a padding quantum */
        "QQ==QUJD", /* padding in the middle */
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++)
        if (decode(refused[i], out) != -1)
            fail_msg("accepted \"%s\"", refused[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_canonical_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
