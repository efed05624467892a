/* voice.h - the phone/IVR channel. Three files share this header:
 *   voice_wire.c   what arrives on the wire, with no I/O: form decoding (libevent), the
 *                  Twilio signature (HMAC-SHA1) and the CTI signature (HMAC-SHA256), the CTI
 *                  JSON event, the IVR menu and policy-number entry. Unit-tested and fuzzed.
 *   voice.c        the [voice] configuration, the channel (routes, start/stop), and the
 *                  steps both front ends share: queue a call (ingest + the voice script),
 *                  poll it, end it (abandon while waiting), callbacks.
 *   voice_twilio.c Twilio webhooks answered with TwiML, outbound callback calls (REST).
 *   voice_cti.c    the generic CTI webhook for PBXs (docs/CTI.md).
 * Call state that is not the interaction's lives next to it in Redis, written by the voice
 * script (daemon/scripts/voice.lua): every webhook is answered after that write. */
#ifndef OMNICC_CHANNEL_VOICE_H
#define OMNICC_CHANNEL_VOICE_H

#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnicc/channel.h"
#include "omnicc/http.h"

struct config;
struct event_base;
struct interaction;

extern const struct channel voice_channel;

/* ---- wire formats (voice_wire.c) ---- */

#define VOICE_SIG_B64 29 /* base64 of a SHA-1 digest, NUL included */

/* Decode an application/x-www-form-urlencoded body with evhttp_parse_query_str (names
 * through evhttp_uridecode too). out is initialised here; 0, or -1 (out empty) when the
 * body is malformed or would decode to a NUL byte. Free with evhttp_clear_headers(). */
int voice_form_decode(const char *body, size_t len, struct evkeyvalq *out);

/* Twilio's X-Twilio-Signature: base64(HMAC-SHA1(auth token, url + name1value1 + ...)) with
 * the parameters sorted by name (then value, for repeated names). */
void voice_twilio_signature(const char *token, const char *url, const struct evkeyvalq *params,
                            char out[VOICE_SIG_B64]);
/* Constant-time check of header against url as configured, and, like Twilio's own SDKs,
 * against url with its port removed and with the scheme's default port added. */
bool voice_twilio_valid(const char *token, const char *url, const struct evkeyvalq *params,
                        const char *header);

/* The CTI webhook's signature: X-Omnicc-Signature "sha256=" + hex(HMAC-SHA256(secret,
 * timestamp "." body)) with X-Omnicc-Timestamp (Unix seconds) within window seconds of
 * now_s. 0, or -1 with *why. */
int voice_cti_verify(const char *secret, const char *timestamp, const char *signature,
                     const char *body, size_t len, int64_t now_s, int window, const char **why);
/* hex HMAC-SHA256 (65 bytes with NUL), for tests and the docs' examples */
void voice_cti_sign(const char *secret, const char *timestamp, const char *body, size_t len,
                    char out[65]);

enum voice_cti_type { CTI_NEW_CALL, CTI_ANSWER, CTI_HANGUP };

struct voice_cti_event {
    enum voice_cti_type type;
    char *call_id;   /* required: the PBX's call id, the interaction's external_id */
    char *from, *to; /* caller and called numbers */
    char *direction; /* inbound (default) | outbound */
    char *agent;     /* answer: the agent (omnicc agent id) who took the call */
    char *cause;     /* hangup: the PBX's cause (NORMAL_CLEARING, 16, ...) */
    char *queue;     /* newCall: explicit queue (else the menu's, else the default) */
    char *digits;    /* newCall: the choice made in the PBX's own IVR, run through the menu */
    char *intent;    /* newCall: or the intent directly */
    char *policy;    /* newCall: policy number entered in the PBX's IVR */
    char *name;      /* newCall: caller name (CNAM) */
};

/* Parse and validate one CTI event (JSON object). 0, or -1 with *err (caller frees) naming
 * the field; the event is freed on failure. Unknown fields are ignored. */
int voice_cti_parse(const char *body, size_t len, struct voice_cti_event *ev, char **err);
void voice_cti_event_free(struct voice_cti_event *ev);

#define VOICE_MENU_MAX 12
#define VOICE_WORDS_MAX 8

struct voice_option {
    char key;          /* DTMF key: 0-9 * # */
    char *intent;
    char *queue;       /* NULL: the default routing */
    char *words[VOICE_WORDS_MAX]; /* speech keywords besides the intent itself */
    int n_words;
};

struct voice_menu {
    struct voice_option opt[VOICE_MENU_MAX];
    int n;
};

/* "1=claims@claims(accident,damage) 2=policy@sales 0=agent": key=intent[@queue][(words)].
 * 0 or -1 with *err (caller frees). An empty text is an empty menu (no IVR). */
int voice_menu_parse(const char *text, struct voice_menu *m, char **err);
void voice_menu_free(struct voice_menu *m);
/* The option chosen by DTMF digits (exactly one key) or, failing that, by speech (the
 * intent name or one of its words, case-insensitive). NULL when nothing matches. */
const struct voice_option *voice_menu_match(const struct voice_menu *m, const char *digits,
                                            const char *speech);
/* "For claims, press 1. For policy, press 2." (caller frees) */
char *voice_menu_prompt(const struct voice_menu *m);

/* A policy number from the keypad (digits poured into format's '#' placeholders, e.g.
 * "PL-####-######"; format NULL or "" takes the digits as typed; a trailing '#' is the
 * end key) or from speech. Normalised by the identity rules. 0, or -1 when invalid. */
int voice_policy_input(const char *format, const char *digits, const char *speech, char *out,
                       size_t outsize);

/* Agent softphone URI -> TwiML noun: "sip:..." / "sips:..." -> Sip, a phone number -> Number,
 * "client:NAME" or anything else -> Client (the agent id when the field is empty). */
const char *voice_dial_noun(const char *softphone);

/* ---- the channel's shared state and steps (voice.c) ---- */

struct voice_conf {
    const struct config *cfg;
    struct voice_menu menu;
    char *menu_prompt;  /* configured, or generated from the menu */
    char *auth_token;   /* Twilio (NULL: the Twilio webhooks answer 404) */
    char *cti_secret;   /* CTI (NULL: the CTI webhook answers 404) */
};

extern struct voice_conf voice_conf;

/* Borrowed res (the voice script's JSON reply, or NULL): valid inside the callback only.
 * status is 200, or 400/404/409 (err names the problem), or 503 (storage). */
typedef void voice_done_fn(json_t *res, int status, const char *err, void *arg);

/* Run the voice script: op, the provider's call id, the interaction id ("" to find it by
 * call id) and the JSON arguments (borrowed). Calls cb exactly once (503 synchronously when
 * Redis is not ready). */
void voice_script(const char *op, const char *call_id, const char *ix_id, json_t *args,
                  voice_done_fn *cb, void *arg);

/* Queue a call: ingest (idempotent on the call id), then 'poll' with args (the IVR path,
 * connect flag). res carries the poll fields plus "duplicate". ix is borrowed. */
void voice_enter_queue(const struct interaction *ix, json_t *poll_args, voice_done_fn *cb,
                       void *arg);

/* The call (leg) ended or changed status: the 'status' op, then, if the caller hung up while
 * queued or offered, the work script's abandon (which withdraws any offer). */
void voice_call_status(const char *call_id, const char *ix_id, json_t *args, voice_done_fn *cb,
                       void *arg);

/* Requeue an assigned call whose agent never answered the transferred call (work script
 * transfer back to its queue), then poll. */
void voice_requeue(const char *call_id, const char *ix_id, const char *queue, voice_done_fn *cb,
                   void *arg);

/* Fill the interaction every front end builds for a call (caller frees with ix_free). */
void voice_fill_interaction(struct interaction *ix, const char *call_id, const char *from,
                            const char *to, const char *name, const struct voice_option *opt,
                            const char *queue, const char *policy, json_t *metadata);

const char *voice_json_str(json_t *obj, const char *key); /* "" when absent */
long long voice_json_int(json_t *obj, const char *key);   /* -1 when absent */

/* front ends: route handlers (listed in voice.c), background work */
void voice_twilio_incoming(struct http_req *r); /* POST /v1/voice/twilio/incoming */
void voice_twilio_status(struct http_req *r);   /* POST /v1/voice/twilio/status */
void voice_cti_webhook(struct http_req *r);     /* POST /v1/voice/cti */
int voice_twilio_start(struct event_base *base, char **err);
void voice_twilio_stop(void);

#endif
