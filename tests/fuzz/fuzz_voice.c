/* fuzz_voice.c - libFuzzer target for what the phone channel reads off the wire
 * (channels/voice_wire.c). The first byte picks the path, the rest is the input:
 *   0  a Twilio webhook body: form decoding, then the signature computed and checked over
 *      it (against the configured URL and its port variants)
 *   1  a CTI request "TIMESTAMP\nSIGNATURE\nBODY": the HMAC check, then the JSON event
 *      (parsed whether or not the signature holds, and once more properly signed)
 *   2  an IVR menu "MENU\nDIGITS\nSPEECH": parse, match, prompt
 *   3  policy entry "FORMAT\nDIGITS\nSPEECH"
 * Built with clang as a libFuzzer binary (tests/fuzz/meson.build); with any compiler the
 * seed corpus (corpus/voice/) is replayed by driver.c in the 'fuzz-smoke' suite. */
#include <event2/http.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/identity.h"
#include "omnicc/util.h"
#include "voice.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *TOKEN = "12345";
static const char *SECRET = "cti-fuzz-secret";

/* Split "a\nb\nc" into at most n NUL-terminated parts (missing ones are ""). */
static void split(char *s, char **parts, int n)
{
    for (int i = 0; i < n; i++) {
        parts[i] = s;
        char *nl = s ? strchr(s, '\n') : NULL;
        if (nl) {
            *nl = '\0';
            s = nl + 1;
        } else {
            s = NULL;
        }
        if (!parts[i])
            parts[i] = "";
    }
}

static void fuzz_form(const char *body, size_t len)
{
    struct evkeyvalq q;
    if (voice_form_decode(body, len, &q) < 0)
        return;
    char sig[VOICE_SIG_B64];
    voice_twilio_signature(TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=2", &q, sig);
    if (!voice_twilio_valid(TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=2", &q, sig))
        abort(); /* a signature we computed must verify */
    const char *header = evhttp_find_header(&q, "X-Twilio-Signature");
    (void)voice_twilio_valid(TOKEN, "http://[::1]:8080/v1/voice/twilio/incoming?step=menu", &q,
                             header ? header : "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    evhttp_clear_headers(&q);
}

static void fuzz_cti(char *text, size_t len)
{
    char *parts[2];
    char *body = NULL;
    /* TIMESTAMP \n SIGNATURE \n BODY (the body may hold newlines and NULs) */
    char *nl1 = memchr(text, '\n', len);
    char *nl2 = nl1 ? memchr(nl1 + 1, '\n', len - (size_t)(nl1 + 1 - text)) : NULL;
    size_t body_len = 0;
    if (nl2) {
        *nl1 = *nl2 = '\0';
        body = nl2 + 1;
        body_len = len - (size_t)(body - text);
    }
    parts[0] = nl2 ? text : "";
    parts[1] = nl2 ? nl1 + 1 : "";
    if (!body) {
        body = text;
        body_len = len;
    }
    const char *why = NULL;
    (void)voice_cti_verify(SECRET, parts[0], parts[1], body, body_len, 1712345678, 300, &why);
    char hex[65], header[80];
    voice_cti_sign(SECRET, "1712345678", body, body_len, hex);
    memcpy(header, "sha256=", 7);
    memcpy(header + 7, hex, 65);
    if (voice_cti_verify(SECRET, "1712345678", header, body, body_len, 1712345678, 300, &why) < 0)
        abort(); /* properly signed and in the window: must pass */
    struct voice_cti_event ev;
    char *err = NULL;
    if (voice_cti_parse(body, body_len, &ev, &err) == 0)
        voice_cti_event_free(&ev);
    else
        free(err);
}

static void fuzz_menu(char *text)
{
    char *p[3];
    split(text, p, 3);
    struct voice_menu m;
    char *err = NULL;
    if (voice_menu_parse(p[0], &m, &err) < 0) {
        free(err);
        return;
    }
    (void)voice_menu_match(&m, p[1], p[2]);
    (void)voice_menu_match(&m, NULL, p[2]);
    free(voice_menu_prompt(&m));
    voice_menu_free(&m);
}

static void fuzz_policy(char *text)
{
    char *p[3], out[IDENT_MAX];
    split(text, p, 3);
    (void)voice_policy_input(p[0], p[1], p[2], out, sizeof(out));
    (void)voice_dial_noun(p[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        char *err = NULL;
        if (identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err) < 0)
            abort();
        ready = true;
    }
    if (size < 1 || size > 65536)
        return 0;
    uint8_t mode = data[0] % 4;
    size_t len = size - 1;
    char *text = malloc(len + 1); /* a NUL-terminated copy for the text paths */
    memcpy(text, data + 1, len);
    text[len] = '\0';
    switch (mode) {
    case 0:
        fuzz_form((const char *)data + 1, len);
        break;
    case 1:
        fuzz_cti(text, len);
        break;
    case 2:
        fuzz_menu(text);
        break;
    default:
        fuzz_policy(text);
        break;
    }
    free(text);
    return 0;
}
