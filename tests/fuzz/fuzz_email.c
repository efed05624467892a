/* fuzz_email.c - libFuzzer target over the whole email parse path (channels/email_mime.c):
 * the raw message through GMime and our own layer (RFC 2047 word merging, charset
 * conversion, the MIME walk, HTML to text, quote trimming, DSN fields, case references),
 * the JSON view the adapter and the unit test use, and the input itself as HTML and as a
 * reply to trim. Every string that comes out must be clean UTF-8: checked here, so the
 * fuzzer reports a violation as a crash.
 * Built with clang as a libFuzzer binary (tests/fuzz/meson.build; seeds: tests/email-corpus);
 * with any compiler the 'fuzz-smoke' suite replays the seeds through driver.c. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "email_mime.h"
#include "omnicc/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_clean(const char *s)
{
    if (s && !text_is_clean_utf8(s, strlen(s)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct email_limits lim = {1 << 20, 64 << 10, 256 << 10, 8};
    email_mime_init();
    struct email_msg m;
    char *err = NULL;
    if (email_parse((const char *)data, size, &lim, &m, &err) == 0) {
        check_clean(m.subject);
        check_clean(m.text);
        check_clean(m.text_trimmed);
        check_clean(m.from.name);
        for (size_t i = 0; i < m.n_att; i++)
            check_clean(m.att[i].filename);
        json_t *j = email_msg_json(&m);
        char *text = json_dumps(j, JSON_COMPACT);
        if (!text)
            abort(); /* jansson refuses invalid UTF-8: a string we did not clean */
        free(text);
        json_decref(j);
        (void)email_may_auto_reply(&m);
        email_msg_free(&m);
    } else {
        free(err);
    }
    char *html = email_html_to_text((const char *)data, size);
    check_clean(html);
    free(html);
    char *nul = xstrndup((const char *)data, size);
    char *trimmed = email_trim_quoted(nul);
    free(trimmed);
    free(email_find_case_token(nul));
    free(email_plus_case(nul));
    free(nul);
    return 0;
}

__attribute__((destructor)) static void fuzz_email_done(void)
{
    email_mime_shutdown();
}
