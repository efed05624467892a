/* fuzz_fax.c - libFuzzer target for what the fax channel reads off the wire
 * (channels/fax_wire.c). The first byte picks the path, the rest is the input:
 *   0  a webhook upload "CONTENT-TYPE\nBODY": multipart/form-data through GMime, then the
 *      Phaxio signature computed and checked over the parts, each file part's document
 *      inspected (TIFF through libtiff, PDF through poppler)
 *   1  a Telnyx webhook "TIMESTAMP\nSIGNATURE\nBODY": the Ed25519 check, then the event
 *   2  a document on its own (TIFF/PDF inspection; an accepted TIFF is then made into a
 *      PDF, at most 3 pages)
 *   3  OCR text: policy numbers, case tokens, phone numbers (with and without labels); the
 *      same bytes as sendfax's and faxstat's output (HylaFAX job id, job lines)
 * Built with clang as a libFuzzer binary (tests/fuzz/meson.build); with any compiler the
 * seed corpus (corpus/fax/) is replayed by driver.c in the 'fuzz-smoke' suite. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fax.h"
#include "omnicc/identity.h"
#include "omnicc/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the public half of a fixed test key (RFC 8032, test 1) */
static const char *TELNYX_KEY = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

static char *nextline(char **s)
{
    char *line = *s;
    char *nl = line ? strchr(line, '\n') : NULL;
    if (nl) {
        *nl = '\0';
        *s = nl + 1;
    } else {
        *s = NULL;
    }
    return line ? line : "";
}

static void count_job(void *arg, long id, char state, const char *status)
{
    (void)arg;
    (void)id;
    (void)state;
    (void)status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool inited;
    if (!inited) {
        char *err = NULL;
        identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err);
        free(err);
        inited = true;
    }
    if (size < 1 || size > (4u << 20))
        return 0;
    int mode = data[0] % 4;
    size_t n = size - 1;
    char *buf = xmalloc(n + 1);
    memcpy(buf, data + 1, n);
    buf[n] = '\0';
    const char *why = NULL;
    if (mode == 0) {
        char *nl = memchr(buf, '\n', n);
        if (nl) {
            *nl = '\0';
            const char *body = nl + 1;
            size_t blen = n - (size_t)(body - buf);
            struct fax_form f;
            if (fax_form_parse(buf, body, blen, &f, &why) == 0) {
                char sig[41];
                fax_phaxio_signature("test-webhook-token", "example.com", &f, sig);
                (void)fax_phaxio_valid("test-webhook-token", "example.com", &f, sig);
                (void)fax_phaxio_valid("test-webhook-token", "example.com", &f,
                                       fax_form_field(&f, "signature"));
                for (int i = 0; i < f.n; i++) {
                    struct fax_doc_info info;
                    if (f.parts[i].is_file)
                        (void)fax_doc_inspect(f.parts[i].data, f.parts[i].len, 350, &info, &why);
                }
                (void)fax_form_file(&f, "file");
                fax_form_free(&f);
            }
        }
    } else if (mode == 1) {
        char *s = buf;
        char *ts = nextline(&s);
        char *sig = nextline(&s);
        const char *body = s ? s : "";
        (void)fax_telnyx_verify(TELNYX_KEY, ts, sig, body, strlen(body), 1700000000, 300, &why);
        struct fax_telnyx_event ev;
        if (fax_telnyx_parse(body, strlen(body), &ev, &why) == 0)
            fax_telnyx_event_free(&ev);
    } else if (mode == 2) {
        struct fax_doc_info info;
        if (fax_doc_inspect(buf, n, 350, &info, &why) == 0 && strcmp(info.type, "tiff") == 0) {
            /* what the workers then make of an accepted TIFF: its PDF (fax_pdf.c) */
            size_t plen = 0;
            unsigned char *pdf =
                fax_tiff_to_pdf((const unsigned char *)buf, n, 3, &plen, NULL, &why);
            free(pdf);
        }
    } else {
        struct fax_found found;
        fax_find_identifiers(buf, false, &found);
        fax_find_identifiers(buf, true, &found);
        /* what HylaFAX's clients print is read the same way (fax_hylafax.c) */
        (void)fax_hylafax_job_id(buf);
        (void)fax_hylafax_number_ok(buf);
        (void)fax_hylafax_parse_status(buf, count_job, NULL);
    }
    free(buf);
    return 0;
}
