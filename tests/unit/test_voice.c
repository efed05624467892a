/* test_voice.c - the phone channel's wire formats (channels/voice_wire.c): form decoding
 * through libevent, Twilio's request signature against the vectors Twilio publishes (the
 * "Webhooks security" page and the twilio-python SDK's test suite), the CTI signature and
 * replay window, CTI events, the IVR menu and policy-number entry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "omnicc/identity.h"
#include "voice.h"

static void add(struct evkeyvalq *q, const char *k, const char *v)
{
    struct evkeyval *kv = calloc(1, sizeof(*kv));
    kv->key = strdup(k);
    kv->value = strdup(v);
    TAILQ_INSERT_TAIL(q, kv, next);
}

static char *signature(const char *token, const char *url, struct evkeyvalq *q)
{
    static char out[VOICE_SIG_B64];
    voice_twilio_signature(token, url, q, out);
    return out;
}

/* Twilio's "Webhooks security" page: auth token 12345, this URL and these parameters. The
 * body is the form Twilio would POST (parameters in any order: the signature sorts them). */
static void test_twilio_documented_example(void **state)
{
    struct evkeyvalq q;
    const char *body = "To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1234"
                       "&From=%2B12349013030&Caller=%2B12349013030";
    assert_int_equal(voice_form_decode(body, strlen(body), &q), 0);
    const char *url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_string_equal(signature("12345", url, &q), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    assert_true(voice_twilio_valid("12345", url, &q, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    /* wrong URL, missing or shortened header, another token */
    assert_false(voice_twilio_valid("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", &q,
                                    "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    assert_false(voice_twilio_valid("12345", url, &q, NULL));
    assert_false(voice_twilio_valid("12345", url, &q, ""));
    assert_false(voice_twilio_valid("12345", url, &q, "0/KCTR6DLpKmkAf8muzZqo1nDgQ"));
    assert_false(voice_twilio_valid("12346", url, &q, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    evhttp_clear_headers(&q);
    /* a tampered parameter */
    const char *tampered = "To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1235"
                           "&From=%2B12349013030&Caller=%2B12349013030";
    assert_int_equal(voice_form_decode(tampered, strlen(tampered), &q), 0);
    assert_false(voice_twilio_valid("12345", url, &q, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    evhttp_clear_headers(&q);
}

/* twilio-python tests/unit/test_request_validator.py (token 12345, the same URL). */
static void python_sdk_params(struct evkeyvalq *q)
{
    TAILQ_INIT(q);
    add(q, "CallSid", "CA1234567890ABCDE");
    add(q, "Digits", "1234");
    add(q, "From", "+14158675309");
    add(q, "To", "+18005551212");
    add(q, "Caller", "+14158675309");
}

static void test_twilio_python_sdk_vectors(void **state)
{
    struct evkeyvalq q;
    const char *uri = "https://mycompany.com/myapp.php?foo=1&bar=2";
    python_sdk_params(&q);
    /* test_compute_signature, test_validation */
    assert_string_equal(signature("12345", uri, &q), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    assert_true(voice_twilio_valid("12345", uri, &q, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    /* test_validation_removes_port_on_https */
    assert_true(voice_twilio_valid("12345", "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
                                   &q, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    /* test_validation_removes_port_on_http: signed over the http URL with port 1234 */
    assert_true(voice_twilio_valid("12345", "http://mycompany.com:1234/myapp.php?foo=1&bar=2", &q,
                                   "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="));
    /* test_validation_adds_port_on_https / _on_http: signed with :443 / :80 */
    assert_true(voice_twilio_valid("12345", uri, &q, "kvajT1Ptam85bY51eRf/AJRuM3w="));
    assert_true(voice_twilio_valid("12345", "http://mycompany.com/myapp.php?foo=1&bar=2", &q,
                                   "0ZXoZLH/DfblKGATFgpif+LLRf4="));
    evhttp_clear_headers(&q);
    /* test_compute_signature_duplicate_query_dict: repeated names sort by value */
    const char *dup = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
    assert_int_equal(voice_form_decode(dup, strlen(dup), &q), 0);
    assert_string_equal(signature("12345", uri, &q), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    evhttp_clear_headers(&q);
    /* test_validation_of_body_succeeds: a JSON body is bound by its hash in the URL, with no
     * parameters to sign */
    TAILQ_INIT(&q);
    assert_true(voice_twilio_valid("12345",
                                   "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256="
                                   "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
                                   &q, "a9nBmqA0ju/hNViExpshrM61xv4="));
}

static void test_form_decoding(void **state)
{
    struct evkeyvalq q;
    const char *body = "SpeechResult=I+had+an+accident%21&From=%2B34600111222&Sp%61ce=a%20b"
                       "&Empty=&Digits=1%23";
    assert_int_equal(voice_form_decode(body, strlen(body), &q), 0);
    assert_string_equal(evhttp_find_header(&q, "SpeechResult"), "I had an accident!");
    assert_string_equal(evhttp_find_header(&q, "From"), "+34600111222");
    assert_string_equal(evhttp_find_header(&q, "Space"), "a b"); /* names are decoded too */
    assert_string_equal(evhttp_find_header(&q, "Empty"), "");
    assert_string_equal(evhttp_find_header(&q, "Digits"), "1#");
    evhttp_clear_headers(&q);
    assert_int_equal(voice_form_decode("", 0, &q), 0);
    assert_true(TAILQ_EMPTY(&q));
    /* malformed: a name without '=', an empty name, a NUL encoded or raw */
    assert_int_equal(voice_form_decode("CallSid", 7, &q), -1);
    assert_true(TAILQ_EMPTY(&q));
    assert_int_equal(voice_form_decode("=x&a=1", 6, &q), -1);
    assert_int_equal(voice_form_decode("a=1%00b", 7, &q), -1);
    assert_int_equal(voice_form_decode("a=1\0b", 5, &q), -1);
    assert_int_equal(voice_form_decode("%00=1", 5, &q), -1);
    /* not NUL-terminated: only len bytes count */
    const char buf[] = {'a', '=', '1', '&', 'b', '=', '2'};
    assert_int_equal(voice_form_decode(buf, 3, &q), 0);
    assert_string_equal(evhttp_find_header(&q, "a"), "1");
    assert_null(evhttp_find_header(&q, "b"));
    evhttp_clear_headers(&q);
}

static void test_cti_signature_and_window(void **state)
{
    const char *body = "{\"event\":\"hangup\",\"call_id\":\"1712345678.1\"}";
    size_t len = strlen(body);
    char hex[65], header[80];
    voice_cti_sign("s3cr3t", "1712345678", body, len, hex);
    assert_int_equal(strlen(hex), 64);
    snprintf(header, sizeof(header), "sha256=%s", hex);
    const char *why = NULL;
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", header, body, len, 1712345678, 300, &why), 0);
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", header, body, len, 1712345978, 300, &why), 0);
    /* outside the window, either side */
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", header, body, len, 1712345979, 300, &why), -1);
    assert_non_null(strstr(why, "window"));
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", header, body, len, 1712345377, 300, &why), -1);
    /* upper-case hex is the same signature */
    char upper[80];
    snprintf(upper, sizeof(upper), "sha256=");
    for (int i = 0; i < 64; i++)
        upper[7 + i] = (char)(hex[i] >= 'a' ? hex[i] - 32 : hex[i]);
    upper[71] = '\0';
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", upper, body, len, 1712345678, 300, &why), 0);
    /* a changed body, timestamp or secret; malformed headers */
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", header, body, len - 1, 1712345678, 300, &why), -1);
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345679", header, body, len, 1712345678, 300, &why), -1);
    assert_int_equal(voice_cti_verify("s3cr3u", "1712345678", header, body, len, 1712345678, 300, &why), -1);
    assert_int_equal(voice_cti_verify("s3cr3t", NULL, header, body, len, 1712345678, 300, &why), -1);
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", NULL, body, len, 1712345678, 300, &why), -1);
    assert_int_equal(voice_cti_verify("s3cr3t", "17123x5678", header, body, len, 1712345678, 300, &why), -1);
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", hex, body, len, 1712345678, 300, &why), -1);
    header[20] = '\0';
    assert_int_equal(voice_cti_verify("s3cr3t", "1712345678", header, body, len, 1712345678, 300, &why), -1);
    /* known answer, computed independently (Python's hmac), also shown in docs/CTI.md */
    voice_cti_sign("s3cr3t", "1712345678", body, len, hex);
    assert_string_equal(hex, "c6f115b3a8e00b9b4716b523355753549e5fc03fca0fcf48e93f6e1a8e7e85a6");
}

static void test_cti_events(void **state)
{
    struct voice_cti_event ev;
    char *err = NULL;
    const char *nc = "{\"event\":\"newCall\",\"call_id\":\"1712345678.42\",\"from\":\"+34600111222\","
                     "\"to\":\"+34910000000\",\"direction\":\"inbound\",\"digits\":\"1\","
                     "\"extra\":{\"ignored\":true}}";
    assert_int_equal(voice_cti_parse(nc, strlen(nc), &ev, &err), 0);
    assert_int_equal(ev.type, CTI_NEW_CALL);
    assert_string_equal(ev.call_id, "1712345678.42");
    assert_string_equal(ev.from, "+34600111222");
    assert_string_equal(ev.digits, "1");
    assert_null(ev.agent);
    voice_cti_event_free(&ev);
    const char *hu = "{\"event\":\"hangup\",\"call_id\":\"abc-1\",\"cause\":16}";
    assert_int_equal(voice_cti_parse(hu, strlen(hu), &ev, &err), 0);
    assert_string_equal(ev.cause, "16"); /* numeric causes (Q.850) as text */
    voice_cti_event_free(&ev);
    static const char *const bad[] = {
        "", "[]", "{\"event\":\"newCall\"}", "{\"event\":\"ring\",\"call_id\":\"a\"}",
        "{\"event\":\"newCall\",\"call_id\":\"a b\"}",
        "{\"event\":\"answer\",\"call_id\":\"a\"}", /* answer needs the agent */
        "{\"event\":\"newCall\",\"call_id\":\"a\",\"direction\":\"sideways\"}",
        "{\"event\":\"newCall\",\"call_id\":\"a\",\"digits\":\"1x\"}",
        "{\"event\":\"newCall\",\"call_id\":\"a\",\"from\":\"line\\nbreak\"}",
        "{\"event\":\"newCall\",\"call_id\":\"a\",\"call_id\":\"b\"}",
        "{\"event\":\"newCall\",\"call_id\":\"a\",\"agent\":\"x y\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(voice_cti_parse(bad[i], strlen(bad[i]), &ev, &err), -1);
        assert_non_null(err);
        free(err);
    }
}

static void test_menu(void **state)
{
    struct voice_menu m;
    char *err = NULL;
    assert_int_equal(voice_menu_parse("1=claims@claims(accident,damage) 2=policies@sales "
                                      "*=car_glass 0=operator",
                                      &m, &err),
                     0);
    assert_int_equal(m.n, 4);
    assert_string_equal(m.opt[0].queue, "claims");
    assert_int_equal(m.opt[0].n_words, 2);
    assert_null(m.opt[3].queue);
    assert_ptr_equal(voice_menu_match(&m, "2", NULL), &m.opt[1]);
    assert_ptr_equal(voice_menu_match(&m, "*", NULL), &m.opt[2]);
    assert_null(voice_menu_match(&m, "9", NULL));
    assert_null(voice_menu_match(&m, "12", NULL));
    assert_ptr_equal(voice_menu_match(&m, "", "There was some DAMAGE to my car"), &m.opt[0]);
    assert_ptr_equal(voice_menu_match(&m, NULL, "my policies please"), &m.opt[1]);
    assert_null(voice_menu_match(&m, NULL, "hello"));
    char *prompt = voice_menu_prompt(&m);
    assert_string_equal(prompt, "For claims, press 1. For policies, press 2. For car glass, "
                                "press star. For operator, press 0.");
    free(prompt);
    voice_menu_free(&m);
    assert_int_equal(voice_menu_parse("", &m, &err), 0);
    assert_int_equal(m.n, 0);
    static const char *const bad[] = {"1", "a=claims", "1=", "1=cl aims", "1=claims@",
                                      "1=claims(", "1=claims()x", "1=a 1=b", "1=claims@q@r"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(voice_menu_parse(bad[i], &m, &err), -1);
        assert_non_null(err);
        free(err);
    }
}

static void test_policy_entry(void **state)
{
    char out[IDENT_MAX];
    assert_int_equal(voice_policy_input("PL-####-######", "2024001234#", NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "PL-2024-001234");
    assert_int_equal(voice_policy_input("PL-####-######", "202400123#", NULL, out, sizeof(out)), -1);
    assert_int_equal(voice_policy_input("PL-####-######", "20240012345", NULL, out, sizeof(out)), -1);
    assert_int_equal(voice_policy_input("PL-####-######", "2024*01234", NULL, out, sizeof(out)), -1);
    assert_int_equal(voice_policy_input(NULL, "2024001234", NULL, out, sizeof(out)), -1);
    assert_int_equal(voice_policy_input("", NULL, "pl 2024 001234.", out, sizeof(out)), 0);
    assert_string_equal(out, "PL2024001234");
    assert_int_equal(voice_policy_input("", "", "", out, sizeof(out)), -1);
}

static void test_dial_noun(void **state)
{
    assert_string_equal(voice_dial_noun("sip:alice@pbx.example.com"), "Sip");
    assert_string_equal(voice_dial_noun("SIPS:alice@pbx.example.com"), "Sip");
    assert_string_equal(voice_dial_noun("+34910000111"), "Number");
    assert_string_equal(voice_dial_noun("client:alice"), "Client");
    assert_string_equal(voice_dial_noun(""), "Client");
}

int main(void)
{
    char *err = NULL;
    if (identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twilio_documented_example),
        cmocka_unit_test(test_twilio_python_sdk_vectors),
        cmocka_unit_test(test_form_decoding),
        cmocka_unit_test(test_cti_signature_and_window),
        cmocka_unit_test(test_cti_events),
        cmocka_unit_test(test_menu),
        cmocka_unit_test(test_policy_entry),
        cmocka_unit_test(test_dial_noun),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    identity_shutdown();
    return rc;
}
