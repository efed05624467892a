/* voice_twilio.c - Twilio Programmable Voice. Every webhook is checked against
 * X-Twilio-Signature (the configured public URL + the request target, the POST parameters
 * sorted) before anything else, and answered with TwiML:
 *
 *   incoming (no step)   the welcome and IVR menu (<Gather> digits or speech)
 *   ?step=menu           the choice -> the policy number <Gather> (ask_policy), or queue
 *   ?step=policy         the policy number -> queue: ingest, then hold
 *   ?step=wait&ix=I-n    the <Redirect> loop while holding: position, estimated wait, the
 *                        callback offer at the queue's max_wait, <Dial> once an agent accepted
 *   ?step=callback       "press 1": the interaction becomes a callback; the caller hangs up
 *   ?step=dialed         <Dial action>: the agent leg ended (talk time), or never answered
 *                        (back in line)
 *   ?step=connect        the outbound callback call was answered: <Dial> the agent
 *   status               call status callbacks (and recording callbacks): history; a caller
 *                        hanging up while waiting abandons the interaction
 *
 * The IVR runs before anything is stored (its state travels in the signed action URLs); the
 * call is ingested when the IVR is done. Callbacks accepted by an agent are claimed from
 * Redis by a timer (any instance, each exactly once) and placed through the provider's REST
 * API (POST /2010-04-01/Accounts/{AccountSid}/Calls.json) on the curl loop. */
#include "voice.h"

#include <ctype.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/curl_loop.h"
#include "omnicc/identity.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define CLAIM_EVERY_MS 250
#define CLAIM_BATCH 50
#define REST_MAX_REPLY (64 * 1024)

static struct {
    struct event *claim_timer;
    bool claiming;
    bool running;
} tw;

/* One webhook request being answered. */
struct tw {
    struct http_req *r;
    struct evkeyvalq form;
    char call_sid[72];
    char ix[32];
    char leg[16];
    long long pos; /* position announced last (-1: none yet) */
    bool cbo;      /* the callback was offered already */
    bool entering; /* first answer after queueing: say the wait message */
};

static void tw_free(struct tw *t)
{
    evhttp_clear_headers(&t->form);
    free(t);
}

static const char *param(struct tw *t, const char *name)
{
    const char *v = evhttp_find_header(&t->form, name);
    return v ? v : "";
}

static bool token_ok(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
            return false;
    return true;
}

/* A number the provider can call back: E.164 or national digits (not "anonymous", a SIP URI
 * or a Client identity). */
static bool dialable(const char *s)
{
    const char *p = *s == '+' ? s + 1 : s;
    size_t n = strlen(p);
    if (n < 3 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)p[i]))
            return false;
    return true;
}

static long long query_int(struct http_req *r, const char *key, long long def, long long max)
{
    const char *v = http_query(r, key);
    if (!v || !token_ok(v, 6, "-"))
        return def;
    char *end;
    long long n = strtoll(v, &end, 10);
    return *end || n < -1 || n > max ? def : n;
}

/* Checks common to every Twilio webhook: configured, well-formed, signed, our account. */
static struct tw *tw_begin(struct http_req *r)
{
    const struct config *cfg = voice_conf.cfg;
    if (!voice_conf.auth_token) {
        http_reply_error(r, 404, "not_found",
                         "the Twilio webhooks are not configured ([voice] auth_token_file)");
        return NULL;
    }
    struct tw *t = xcalloc(1, sizeof(*t));
    t->r = r;
    t->pos = -1;
    if (voice_form_decode(r->body, r->body_len, &t->form) < 0) {
        tw_free(t);
        http_reply_error(r, 400, "bad_request", "malformed form body");
        return NULL;
    }
    char *url = xasprintf("%s%s", cfg->voice_public_url, evhttp_request_get_uri(r->req));
    const char *sig =
        evhttp_find_header(evhttp_request_get_input_headers(r->req), "X-Twilio-Signature");
    bool valid = voice_twilio_valid(voice_conf.auth_token, url, &t->form, sig);
    if (!valid) {
        char esc[300];
        log_warn("voice: refused a webhook with %s X-Twilio-Signature for %s",
                 sig ? "a wrong" : "no", log_escape(url, esc, sizeof(esc)));
        free(url);
        tw_free(t);
        http_reply_error(r, 403, "forbidden", "X-Twilio-Signature does not match");
        return NULL;
    }
    free(url);
    if (cfg->voice_account_sid && strcmp(param(t, "AccountSid"), cfg->voice_account_sid) != 0) {
        tw_free(t);
        http_reply_error(r, 403, "forbidden", "AccountSid is not the configured account");
        return NULL;
    }
    const char *sid = param(t, "CallSid");
    if (!token_ok(sid, 64, "")) {
        tw_free(t);
        http_reply_error(r, 400, "invalid_field", "CallSid: missing or malformed");
        return NULL;
    }
    snprintf(t->call_sid, sizeof(t->call_sid), "%s", sid);
    const char *ix = http_query(r, "ix");
    if (ix) {
        if (!id_is_valid(ix, 'I')) {
            tw_free(t);
            http_reply_error(r, 400, "invalid_field", "ix: not an interaction id");
            return NULL;
        }
        snprintf(t->ix, sizeof(t->ix), "%s", ix);
    }
    const char *leg = http_query(r, "leg");
    snprintf(t->leg, sizeof(t->leg), "%s", leg && strcmp(leg, "callback") == 0 ? leg : "main");
    return t;
}

/* ---- TwiML ---- */

static void xml_add(struct evbuffer *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            evbuffer_add(b, "&amp;", 5);
            break;
        case '<':
            evbuffer_add(b, "&lt;", 4);
            break;
        case '>':
            evbuffer_add(b, "&gt;", 4);
            break;
        case '"':
            evbuffer_add(b, "&quot;", 6);
            break;
        case '\'':
            evbuffer_add(b, "&apos;", 6);
            break;
        default:
            evbuffer_add(b, s, 1);
        }
    }
}

/* An absolute URL under the public base, written XML-escaped. */
static void url_add(struct evbuffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void url_add(struct evbuffer *b, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    xml_add(b, voice_conf.cfg->voice_public_url);
    xml_add(b, path);
}

static struct evbuffer *twiml_begin(void)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>");
    return b;
}

static void say(struct evbuffer *b, const char *text)
{
    const struct config *cfg = voice_conf.cfg;
    if (!text || !*text)
        return;
    evbuffer_add_printf(b, "<Say language=\"");
    xml_add(b, cfg->voice_language);
    if (cfg->voice_say_voice) {
        evbuffer_add_printf(b, "\" voice=\"");
        xml_add(b, cfg->voice_say_voice);
    }
    evbuffer_add_printf(b, "\">");
    xml_add(b, text);
    evbuffer_add_printf(b, "</Say>");
}

/* "You are number {position}..." with the number in place of the placeholder. */
static void say_filled(struct evbuffer *b, const char *tmpl, const char *key, long long value)
{
    const char *at = tmpl ? strstr(tmpl, key) : NULL;
    if (!tmpl || !*tmpl)
        return;
    if (!at) {
        say(b, tmpl);
        return;
    }
    char *text = xasprintf("%.*s%lld%s", (int)(at - tmpl), tmpl, value, at + strlen(key));
    say(b, text);
    free(text);
}

static void twiml_send(struct tw *t, struct evbuffer *b)
{
    evbuffer_add_printf(b, "</Response>\n");
    size_t len = evbuffer_get_length(b);
    http_reply_raw(t->r, 200, "application/xml", (const char *)evbuffer_pullup(b, -1), len);
    evbuffer_free(b);
    tw_free(t);
}

static void say_and_hang_up(struct tw *t, const char *text)
{
    struct evbuffer *b = twiml_begin();
    say(b, text);
    evbuffer_add_printf(b, "<Hangup/>");
    twiml_send(t, b);
}

static void gather_open(struct evbuffer *b, const char *input, const char *extra)
{
    evbuffer_add_printf(b, "<Gather input=\"%s\" method=\"POST\" language=\"", input);
    xml_add(b, voice_conf.cfg->voice_language);
    evbuffer_add_printf(b, "\" %s action=\"", extra);
}

static void menu_twiml(struct tw *t, int tries)
{
    const struct voice_menu *m = &voice_conf.menu;
    struct evbuffer *b = twiml_begin();
    gather_open(b, "dtmf speech", "numDigits=\"1\" timeout=\"6\"");
    url_add(b, "/v1/voice/twilio/incoming?step=menu&try=%d", tries);
    evbuffer_add_printf(b, "\" hints=\"");
    for (int i = 0; i < m->n; i++) {
        evbuffer_add_printf(b, "%s", i ? ", " : "");
        xml_add(b, m->opt[i].intent);
        for (int w = 0; w < m->opt[i].n_words; w++) {
            evbuffer_add_printf(b, ", ");
            xml_add(b, m->opt[i].words[w]);
        }
    }
    evbuffer_add_printf(b, "\">");
    if (tries == 0)
        say(b, voice_conf.cfg->voice_welcome);
    say(b, voice_conf.menu_prompt);
    evbuffer_add_printf(b, "</Gather><Redirect method=\"POST\">");
    /* no input: Twilio carries on here, and the menu step sees no choice */
    url_add(b, "/v1/voice/twilio/incoming?step=menu&try=%d", tries);
    evbuffer_add_printf(b, "</Redirect>");
    twiml_send(t, b);
}

static void policy_twiml(struct tw *t, int opt, const char *menu_via, int tries)
{
    struct evbuffer *b = twiml_begin();
    gather_open(b, "dtmf speech", "finishOnKey=\"#\" timeout=\"8\"");
    url_add(b, "/v1/voice/twilio/incoming?step=policy&opt=%d&mv=%s&try=%d", opt, menu_via, tries);
    evbuffer_add_printf(b, "\">");
    if (tries == 0 && voice_conf.menu.n == 0)
        say(b, voice_conf.cfg->voice_welcome);
    say(b, voice_conf.cfg->voice_policy_prompt);
    evbuffer_add_printf(b, "</Gather><Redirect method=\"POST\">");
    url_add(b, "/v1/voice/twilio/incoming?step=policy&opt=%d&mv=%s&try=%d", opt, menu_via, tries);
    evbuffer_add_printf(b, "</Redirect>");
    twiml_send(t, b);
}

static void hold_twiml(struct tw *t, json_t *res)
{
    const struct config *cfg = voice_conf.cfg;
    struct evbuffer *b = twiml_begin();
    if (t->entering)
        say(b, cfg->voice_wait_message);
    long long pos = voice_json_int(res, "position");
    long long ewt = voice_json_int(res, "estimated_wait_s");
    if (pos > 0 && pos != t->pos && cfg->voice_position_message &&
        *cfg->voice_position_message) {
        say_filled(b, cfg->voice_position_message, "{position}", pos);
        if (ewt >= 0)
            say_filled(b, cfg->voice_estimate_message, "{minutes}", ewt < 60 ? 1 : (ewt + 59) / 60);
    }
    if (pos <= 0)
        pos = t->pos;
    if (cfg->voice_hold_music_url) {
        evbuffer_add_printf(b, "<Play>");
        xml_add(b, cfg->voice_hold_music_url);
        evbuffer_add_printf(b, "</Play>");
    } else {
        evbuffer_add_printf(b, "<Pause length=\"%d\"/>", cfg->voice_hold_seconds);
    }
    evbuffer_add_printf(b, "<Redirect method=\"POST\">");
    url_add(b, "/v1/voice/twilio/incoming?step=wait&ix=%s&pos=%lld%s", voice_json_str(res, "id"),
            pos, t->cbo ? "&cbo=1" : "");
    evbuffer_add_printf(b, "</Redirect>");
    twiml_send(t, b);
}

static void callback_offer_twiml(struct tw *t, json_t *res)
{
    struct evbuffer *b = twiml_begin();
    const char *id = voice_json_str(res, "id");
    gather_open(b, "dtmf", "numDigits=\"1\" timeout=\"6\"");
    url_add(b, "/v1/voice/twilio/incoming?step=callback&ix=%s&pos=%lld", id, t->pos);
    evbuffer_add_printf(b, "\">");
    say(b, voice_conf.cfg->voice_callback_prompt);
    evbuffer_add_printf(b, "</Gather><Redirect method=\"POST\">");
    url_add(b, "/v1/voice/twilio/incoming?step=wait&ix=%s&pos=%lld&cbo=1", id, t->pos);
    evbuffer_add_printf(b, "</Redirect>");
    twiml_send(t, b);
}

static void dial_twiml(struct tw *t, json_t *res)
{
    const struct config *cfg = voice_conf.cfg;
    const char *softphone = voice_json_str(res, "softphone");
    const char *noun = voice_dial_noun(softphone);
    const char *target = *softphone ? softphone : voice_json_str(res, "agent");
    if (strncmp(target, "client:", 7) == 0)
        target += 7;
    const char *id = voice_json_str(res, "id");
    struct evbuffer *b = twiml_begin();
    say(b, cfg->voice_connect_message);
    evbuffer_add_printf(b, "<Dial method=\"POST\" answerOnBridge=\"true\" timeout=\"%d\" action=\"",
                        cfg->voice_dial_timeout);
    url_add(b, "/v1/voice/twilio/incoming?step=dialed&ix=%s&leg=%s", id, t->leg);
    evbuffer_add_printf(b, "\"");
    if (strcmp(cfg->voice_record, "yes") == 0) {
        evbuffer_add_printf(b, " record=\"record-from-answer-dual\" "
                               "recordingStatusCallbackMethod=\"POST\" recordingStatusCallback=\"");
        url_add(b, "/v1/voice/twilio/status?ix=%s", id);
        evbuffer_add_printf(b, "\"");
    }
    evbuffer_add_printf(b, "><%s>", noun);
    xml_add(b, target);
    evbuffer_add_printf(b, "</%s></Dial>", noun);
    twiml_send(t, b);
}

/* ---- answering from the call's state ---- */

static void polled(json_t *res, int status, const char *err, void *arg);

static void reply_error(struct tw *t, int status, const char *err)
{
    if (status == 503) {
        http_reply_unavailable(t->r, err);
        tw_free(t);
        return;
    }
    /* the call cannot be queued (no queue serves voice) or is unknown: tell the caller */
    log_warn("voice: call %s: %s", t->call_sid, err ? err : "failed");
    say_and_hang_up(t, voice_conf.cfg->voice_goodbye_message);
}

static void hung_up_meanwhile(json_t *res, int status, const char *err, void *arg)
{
    struct tw *t = arg;
    if (!res) {
        reply_error(t, status, err);
        return;
    }
    say_and_hang_up(t, NULL);
}

static void polled(json_t *res, int status, const char *err, void *arg)
{
    struct tw *t = arg;
    if (!res) {
        reply_error(t, status, err);
        return;
    }
    const char *state = voice_json_str(res, "state");
    bool waiting = strcmp(state, "queued") == 0 || strcmp(state, "offered") == 0;
    const char *ended = voice_json_str(res, "call_ended");
    if (*ended && waiting && strcmp(t->leg, "main") == 0) {
        /* the caller hung up while the call was being queued: end it now */
        json_t *a = json_pack("{s:s}", "status", ended);
        snprintf(t->ix, sizeof(t->ix), "%s", voice_json_str(res, "id"));
        voice_call_status(t->call_sid, t->ix, a, hung_up_meanwhile, t);
        json_decref(a);
        return;
    }
    if (waiting) {
        if (*voice_json_str(res, "callback")) {
            say_and_hang_up(t, voice_conf.cfg->voice_callback_confirm);
        } else if (json_is_true(json_object_get(res, "max_wait")) &&
                   strcmp(voice_json_str(res, "on_max_wait"), "callback") == 0 && !t->cbo &&
                   dialable(param(t, "From"))) {
            callback_offer_twiml(t, res);
        } else {
            hold_twiml(t, res);
        }
    } else if (strcmp(state, "assigned") == 0) {
        dial_twiml(t, res);
    } else if (strcmp(state, "canceled") == 0) {
        say_and_hang_up(t, voice_conf.cfg->voice_goodbye_message);
    } else {
        say_and_hang_up(t, NULL);
    }
}

/* ---- the IVR, then the queue ---- */

static void enter(struct tw *t, int opt, const char *menu_via, const char *policy,
                  const char *policy_result, const char *policy_via)
{
    const struct voice_menu *m = &voice_conf.menu;
    const struct voice_option *o = opt >= 0 && opt < m->n ? &m->opt[opt] : NULL;
    json_t *path = json_array();
    if (m->n > 0) {
        char key[2] = {o ? o->key : '\0', '\0'};
        json_array_append_new(path, o ? json_pack("{s:s,s:s,s:s,s:s}", "step", "menu", "key", key,
                                                  "intent", o->intent, "via", menu_via)
                                      : json_pack("{s:s,s:s,s:s}", "step", "menu", "result",
                                                  "no_match", "via", menu_via));
    }
    if (strcmp(voice_conf.cfg->voice_ask_policy, "yes") == 0)
        json_array_append_new(path, json_pack("{s:s,s:s,s:s}", "step", "policy", "result",
                                              policy ? policy : policy_result, "via", policy_via));
    /* no IVR at all (no menu, no policy question): nothing to record */
    json_t *ivr = json_array_size(path) == 0
                      ? (json_decref(path), NULL)
                      : json_pack("{s:o,s:s*,s:s*,s:s*}", "path", path, "intent",
                                  o ? o->intent : NULL, "queue", o ? o->queue : NULL, "policy",
                                  policy);
    const char *country = param(t, "FromCountry");
    json_t *meta = json_pack("{s:s,s:s,s:s,s:s}", "provider", "twilio", "call_sid", t->call_sid,
                             "account_sid", param(t, "AccountSid"), "direction",
                             param(t, "Direction"));
    if (!meta) /* a parameter was not UTF-8: keep what is ours */
        meta = json_pack("{s:s,s:s}", "provider", "twilio", "call_sid", t->call_sid);
    if (ivr)
        json_object_set(meta, "ivr", ivr);
    if (*country && token_ok(country, 8, ""))
        json_object_set_new(meta, "from_country", json_string(country));
    struct interaction ix;
    voice_fill_interaction(&ix, t->call_sid, param(t, "From"), param(t, "To"),
                           param(t, "CallerName"), o, NULL, policy, meta);
    json_t *poll_args = json_pack("{s:b,s:s}", "connect", 1, "leg", "main");
    if (ivr)
        json_object_set_new(poll_args, "ivr", ivr);
    json_decref(meta);
    t->entering = true;
    voice_enter_queue(&ix, poll_args, polled, t); /* t may be gone when this returns */
    json_decref(poll_args);
    ix_free(&ix);
}

static const char *input_via(struct tw *t)
{
    return *param(t, "Digits") ? "dtmf" : *param(t, "SpeechResult") ? "speech" : "none";
}

static void step_menu(struct tw *t)
{
    long long tries = query_int(t->r, "try", 0, 10);
    const struct voice_option *o =
        voice_menu_match(&voice_conf.menu, param(t, "Digits"), param(t, "SpeechResult"));
    if (!o && tries < 2 && voice_conf.menu.n > 0) {
        menu_twiml(t, (int)tries + 1);
        return;
    }
    int opt = o ? (int)(o - voice_conf.menu.opt) : -1;
    if (strcmp(voice_conf.cfg->voice_ask_policy, "yes") == 0) {
        policy_twiml(t, opt, input_via(t), 0);
        return;
    }
    enter(t, opt, input_via(t), NULL, NULL, NULL);
}

static void step_policy(struct tw *t)
{
    long long tries = query_int(t->r, "try", 0, 10);
    int opt = (int)query_int(t->r, "opt", -1, VOICE_MENU_MAX);
    const char *mv = http_query(t->r, "mv");
    if (!mv || (strcmp(mv, "dtmf") != 0 && strcmp(mv, "speech") != 0))
        mv = "none";
    char policy[IDENT_MAX];
    bool got = voice_policy_input(voice_conf.cfg->voice_policy_format, param(t, "Digits"),
                                  param(t, "SpeechResult"), policy, sizeof(policy)) == 0;
    const char *via = input_via(t);
    if (!got && tries < 1) {
        policy_twiml(t, opt, mv, (int)tries + 1);
        return;
    }
    enter(t, opt, mv, got ? policy : NULL, strcmp(via, "none") == 0 ? "none" : "invalid", via);
}

static void callback_done(json_t *res, int status, const char *err, void *arg)
{
    struct tw *t = arg;
    if (!res) {
        reply_error(t, status, err);
        return;
    }
    if (json_is_true(json_object_get(res, "ok"))) {
        say_and_hang_up(t, voice_conf.cfg->voice_callback_confirm);
        return;
    }
    t->cbo = true; /* its state moved on (an agent accepted): answer from it */
    voice_script("poll", t->call_sid, t->ix, NULL, polled, t);
}

static void step_callback(struct tw *t)
{
    t->pos = query_int(t->r, "pos", -1, 1000000);
    t->cbo = true;
    const char *number = param(t, "From"), *caller_id = param(t, "To");
    if (strcmp(param(t, "Digits"), "1") != 0 || !dialable(number)) {
        voice_script("poll", t->call_sid, t->ix, NULL, polled, t);
        return;
    }
    json_t *a = json_pack("{s:s,s:s,s:s}", "number", number, "caller_id",
                          dialable(caller_id) ? caller_id : "", "account",
                          token_ok(param(t, "AccountSid"), 64, "") ? param(t, "AccountSid") : "");
    voice_script("callback", t->call_sid, t->ix, a, callback_done, t);
    json_decref(a);
}

static void dialed_done(json_t *res, int status, const char *err, void *arg)
{
    struct tw *t = arg;
    if (!res) {
        reply_error(t, status, err);
        return;
    }
    if (json_is_true(json_object_get(res, "requeue")) && strcmp(t->leg, "main") == 0) {
        t->entering = true;
        voice_requeue(t->call_sid, t->ix, voice_json_str(res, "queue"), polled, t);
        return;
    }
    say_and_hang_up(t, NULL);
}

static void put_clean(json_t *a, const char *key, const char *value, size_t max, const char *extra)
{
    if (*value && strlen(value) <= max && (extra ? token_ok(value, max, extra)
                                                 : text_is_clean_utf8(value, strlen(value)) &&
                                                       !strpbrk(value, "\r\n\t\"<>")))
        json_object_set_new(a, key, json_string(value));
}

static void step_dialed(struct tw *t)
{
    json_t *a = json_object();
    put_clean(a, "dial_status", param(t, "DialCallStatus"), 32, "-");
    put_clean(a, "dial_duration", param(t, "DialCallDuration"), 10, "");
    put_clean(a, "dial_call_id", param(t, "DialCallSid"), 64, "");
    put_clean(a, "recording_url", param(t, "RecordingUrl"), 1024, NULL);
    put_clean(a, "recording_sid", param(t, "RecordingSid"), 64, "");
    voice_script("dialed", t->call_sid, t->ix, a, dialed_done, t);
    json_decref(a);
}

void voice_twilio_incoming(struct http_req *r)
{
    struct tw *t = tw_begin(r);
    if (!t)
        return;
    const char *step = http_query(r, "step");
    bool ask_policy = strcmp(voice_conf.cfg->voice_ask_policy, "yes") == 0;
    if (!step || strcmp(step, "start") == 0) {
        if (voice_conf.menu.n > 0)
            menu_twiml(t, 0);
        else if (ask_policy)
            policy_twiml(t, -1, "none", 0);
        else
            enter(t, -1, "none", NULL, NULL, NULL);
        return;
    }
    if (strcmp(step, "menu") == 0) {
        step_menu(t);
        return;
    }
    if (strcmp(step, "policy") == 0) {
        step_policy(t);
        return;
    }
    if (!t->ix[0]) {
        tw_free(t);
        http_reply_error(r, 400, "invalid_field", "ix: required for step %s",
                         token_ok(step, 16, "_") ? step : "?");
        return;
    }
    if (strcmp(step, "wait") == 0) {
        t->pos = query_int(r, "pos", -1, 1000000);
        const char *cbo = http_query(r, "cbo");
        t->cbo = cbo && strcmp(cbo, "1") == 0;
        json_t *a = json_pack("{s:b,s:s}", "connect", 1, "leg", "main");
        voice_script("poll", t->call_sid, t->ix, a, polled, t);
        json_decref(a);
    } else if (strcmp(step, "callback") == 0) {
        step_callback(t);
    } else if (strcmp(step, "dialed") == 0) {
        step_dialed(t);
    } else if (strcmp(step, "connect") == 0) {
        /* the customer answered our callback call: put them through to the agent */
        snprintf(t->leg, sizeof(t->leg), "callback");
        t->cbo = true;
        json_t *a = json_pack("{s:b,s:s}", "connect", 1, "leg", "callback");
        voice_script("poll", t->call_sid, t->ix, a, polled, t);
        json_decref(a);
    } else {
        tw_free(t);
        http_reply_error(r, 400, "invalid_field", "step: unknown");
    }
}

/* ---- status callbacks ---- */

static void status_acked(json_t *res, int status, const char *err, void *arg)
{
    struct tw *t = arg;
    if (!res) {
        if (status == 503)
            http_reply_unavailable(t->r, err);
        else
            http_reply_error(t->r, status, "not_found", "%s", err ? err : "unknown call");
    } else {
        http_reply_raw(t->r, 204, "text/plain", "", 0);
    }
    tw_free(t);
}

void voice_twilio_status(struct http_req *r)
{
    struct tw *t = tw_begin(r);
    if (!t)
        return;
    json_t *a = json_pack("{s:s}", "leg", t->leg);
    put_clean(a, "status", param(t, "CallStatus"), 32, "-");
    put_clean(a, "duration", param(t, "CallDuration"), 10, "");
    put_clean(a, "cause", param(t, "ErrorCode"), 10, "");
    put_clean(a, "recording_url", param(t, "RecordingUrl"), 1024, NULL);
    put_clean(a, "recording_sid", param(t, "RecordingSid"), 64, "");
    put_clean(a, "recording_duration", param(t, "RecordingDuration"), 10, "");
    if (!json_object_get(a, "status") && !json_object_get(a, "recording_url")) {
        json_decref(a);
        http_reply_raw(r, 204, "text/plain", "", 0); /* nothing we keep */
        tw_free(t);
        return;
    }
    voice_call_status(t->call_sid, t->ix, a, status_acked, t);
    json_decref(a);
}

/* ---- callbacks: placing the outbound call once an agent accepted ---- */

struct placing {
    char ix[32];
    char *reply;
    size_t len;
    struct curl_slist *headers;
};

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    struct placing *p = arg;
    size_t add = size * n;
    if (p->len + add > REST_MAX_REPLY)
        return 0;
    p->reply = xrealloc(p->reply, p->len + add + 1);
    memcpy(p->reply + p->len, data, add);
    p->len += add;
    p->reply[p->len] = '\0';
    return add;
}

static void result_recorded(json_t *res, int status, const char *err, void *arg)
{
    if (!res)
        log_error("voice: callback %s: the outcome could not be recorded: %s", (char *)arg,
                  err ? err : "?");
    free(arg);
}

/* retry: the failure may pass (rate limit, provider or network trouble), so voice.lua dials
 * again later; otherwise it is final. */
static void record_result(const char *ix, bool ok, bool retry, const char *call_sid,
                          const char *error)
{
    json_t *a = json_pack("{s:b,s:b,s:s,s:s}", "ok", ok, "retry", retry, "call_sid", call_sid,
                          "error", error);
    if (!a) /* a provider's message that is not UTF-8 */
        a = json_pack("{s:b,s:b,s:s,s:s}", "ok", ok, "retry", retry, "call_sid", "", "error",
                      "provider error");
    voice_script("cb_result", "", ix, a, result_recorded, xstrdup(ix));
    json_decref(a);
}

static void placed(CURL *easy, CURLcode rc, void *arg)
{
    struct placing *p = arg;
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    if (tw.running) {
        json_t *body = p->reply ? json_loads(p->reply, 0, NULL) : NULL;
        const char *sid = json_string_value(json_object_get(body, "sid"));
        if (rc == CURLE_OK && code >= 200 && code < 300 && sid && token_ok(sid, 64, "")) {
            log_info("voice: callback %s placed as call %s", p->ix, sid);
            record_result(p->ix, true, false, sid, "");
        } else {
            const char *msg = json_string_value(json_object_get(body, "message"));
            char *error = rc != CURLE_OK ? xasprintf("%s", curl_easy_strerror(rc))
                                         : xasprintf("HTTP %ld%s%.200s", code, msg ? ": " : "",
                                                     msg ? msg : "");
            /* 429 and 5xx (Twilio limits calls per second per account) and no answer at
             * all pass; a 4xx is about this request and would fail again */
            bool transient = rc != CURLE_OK || code == 429 || code >= 500;
            log_warn("voice: callback %s could not be placed%s: %s", p->ix,
                     transient ? " (will retry)" : "", error);
            record_result(p->ix, false, transient, "", error);
            free(error);
        }
        json_decref(body);
    }
    curl_slist_free_all(p->headers);
    free(p->reply);
    free(p);
}

static char *form_value(const char *s)
{
    return evhttp_uriencode(s, -1, 1);
}

static void place_callback(json_t *claim)
{
    const struct config *cfg = voice_conf.cfg;
    const char *ix = voice_json_str(claim, "id");
    const char *account = *voice_json_str(claim, "account") ? voice_json_str(claim, "account")
                                                             : cfg->voice_account_sid;
    const char *to = voice_json_str(claim, "number");
    const char *from = cfg->voice_caller_id ? cfg->voice_caller_id
                                            : voice_json_str(claim, "caller_id");
    if (!id_is_valid(ix, 'I'))
        return;
    if (!account || !token_ok(account, 64, "") || !*to || !*from) {
        record_result(ix, false, false, "",
                      !account ? "no account sid" : "no number to call or call from");
        return;
    }
    char *url = xasprintf("%s/2010-04-01/Accounts/%s/Calls.json", cfg->voice_api_base, account);
    char *connect = xasprintf("%s/v1/voice/twilio/incoming?step=connect&ix=%s",
                              cfg->voice_public_url, ix);
    char *status = xasprintf("%s/v1/voice/twilio/status?ix=%s&leg=callback", cfg->voice_public_url,
                             ix);
    char *e_to = form_value(to), *e_from = form_value(from), *e_connect = form_value(connect),
         *e_status = form_value(status);
    char *body = xasprintf("To=%s&From=%s&Url=%s&Method=POST&StatusCallback=%s"
                           "&StatusCallbackMethod=POST&StatusCallbackEvent=initiated"
                           "&StatusCallbackEvent=ringing&StatusCallbackEvent=answered"
                           "&StatusCallbackEvent=completed&Timeout=%d",
                           e_to, e_from, e_connect, e_status, 30);
    free(e_to);
    free(e_from);
    free(e_connect);
    free(e_status);
    free(connect);
    free(status);

    struct placing *p = xcalloc(1, sizeof(*p));
    snprintf(p->ix, sizeof(p->ix), "%s", ix);
    p->headers = curl_slist_append(NULL, "Accept: application/json");
    CURL *easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(easy, CURLOPT_USERNAME, account);
    curl_easy_setopt(easy, CURLOPT_PASSWORD, voice_conf.auth_token);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, p->headers);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "omniccd/0.1");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, p);
    free(url);
    free(body);
    if (curl_loop_add(easy, placed, p) < 0) {
        curl_easy_cleanup(easy);
        curl_slist_free_all(p->headers);
        free(p);
        record_result(ix, false, true, "", "could not start the request");
    }
}

static void claimed(json_t *res, int status, const char *err, void *arg)
{
    tw.claiming = false;
    if (!res || !tw.running)
        return;
    json_t *claims = json_object_get(res, "claims"), *c;
    size_t i;
    if (json_is_array(claims))
        json_array_foreach(claims, i, c) place_callback(c);
}

static void on_claim_timer(evutil_socket_t fd, short what, void *arg)
{
    if (tw.claiming || !store_ready())
        return;
    tw.claiming = true;
    json_t *a = json_pack("{s:i}", "limit", CLAIM_BATCH);
    voice_script("cb_claim", "", "", a, claimed, NULL);
    json_decref(a);
}

int voice_twilio_start(struct event_base *base, char **err)
{
    tw.claim_timer = event_new(base, -1, EV_PERSIST, on_claim_timer, NULL);
    struct timeval tv = {0, CLAIM_EVERY_MS * 1000};
    event_add(tw.claim_timer, &tv);
    tw.running = true;
    return 0;
}

void voice_twilio_stop(void)
{
    tw.running = false;
    if (tw.claim_timer)
        event_free(tw.claim_timer);
    tw.claim_timer = NULL;
}
