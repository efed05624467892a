/* voice.c - the phone channel: its [voice] configuration, its routes, and the steps its two
 * front ends (Twilio, generic CTI) share. A call becomes an interaction (channel voice,
 * external_id = the provider's call id) through ingest_submit(), once its IVR is done; the
 * voice script keeps the rest of the call (IVR path, connection, talk time, recording,
 * callback) next to the interaction and writes it into the case history. Every step
 * answers its webhook only after Redis has confirmed its write. */
#include "voice.h"

#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

struct voice_conf voice_conf;

const char *voice_json_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

long long voice_json_int(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v)
           : json_is_real(v)  ? (long long)json_real_value(v)
                              : -1;
}

/* ---- the voice script ---- */

struct script_call {
    voice_done_fn *cb;
    void *arg;
};

static void script_done(const redisReply *reply, const char *err, void *arg)
{
    struct script_call c = *(struct script_call *)arg;
    free(arg);
    if (err) {
        static const struct {
            const char *prefix;
            int status;
        } map[] = {{"ERR_NOT_FOUND ", 404}, {"ERR_CONFLICT ", 409}, {"ERR_INVALID ", 400}};
        for (size_t i = 0; i < ARRAY_SIZE(map); i++)
            if (strncmp(err, map[i].prefix, strlen(map[i].prefix)) == 0) {
                c.cb(NULL, map[i].status, err + strlen(map[i].prefix), c.arg);
                return;
            }
        if (strcmp(err, "unavailable") != 0 && strcmp(err, "timeout") != 0)
            log_error("voice: script failed: %s", err);
        c.cb(NULL, 503, "storage unavailable", c.arg);
        return;
    }
    json_t *res = reply->type == REDIS_REPLY_STRING ? json_loadb(reply->str, reply->len, 0, NULL)
                                                    : NULL;
    if (!json_is_object(res)) {
        json_decref(res);
        log_error("voice: unexpected script reply");
        c.cb(NULL, 503, "unexpected storage reply", c.arg);
        return;
    }
    c.cb(res, 200, NULL, c.arg);
    json_decref(res);
}

void voice_script(const char *op, const char *call_id, const char *ix_id, json_t *args,
                  voice_done_fn *cb, void *arg)
{
    json_t *empty = args ? NULL : json_object();
    char *text = json_dumps(args ? args : empty, JSON_COMPACT);
    json_decref(empty);
    struct script_call *c = xmalloc(sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    const char *argv[4] = {op, call_id, ix_id ? ix_id : "", text};
    int rc = store_script(SCRIPT_VOICE, 4, argv, NULL, script_done, c);
    free(text);
    if (rc < 0) {
        free(c);
        cb(NULL, 503, store_status(), arg);
    }
}

/* ---- queueing a call ---- */

struct entering {
    voice_done_fn *cb;
    void *arg;
    char *call_id;
    json_t *poll_args;
    bool duplicate;
};

static void entering_free(struct entering *e)
{
    free(e->call_id);
    json_decref(e->poll_args);
    free(e);
}

static void entered_polled(json_t *res, int status, const char *err, void *arg)
{
    struct entering *e = arg;
    if (res)
        json_object_set_new(res, "duplicate", json_boolean(e->duplicate));
    e->cb(res, status, err, e->arg);
    entering_free(e);
}

static void entered(const struct ingest_result *res, void *arg)
{
    struct entering *e = arg;
    if (res->status >= 400) {
        e->cb(NULL, res->status, res->error, e->arg);
        entering_free(e);
        return;
    }
    e->duplicate = res->duplicate;
    voice_script("poll", e->call_id, res->id, e->poll_args, entered_polled, e);
}

void voice_enter_queue(const struct interaction *ix, json_t *poll_args, voice_done_fn *cb,
                       void *arg)
{
    struct entering *e = xcalloc(1, sizeof(*e));
    e->cb = cb;
    e->arg = arg;
    e->call_id = xstrdup(ix->external_id);
    e->poll_args = poll_args ? json_incref(poll_args) : json_object();
    ingest_submit(voice_conf.cfg, ix, entered, e);
}

/* ---- a call's status; abandon ---- */

struct ending {
    voice_done_fn *cb;
    void *arg;
    json_t *res;
};

static void abandoned(const redisReply *reply, const char *err, void *arg)
{
    struct ending *e = arg;
    /* ERR_CONFLICT: the interaction moved on meanwhile (accepted, closed): nothing to do */
    if (err && strncmp(err, "ERR_CONFLICT ", 13) != 0 && strncmp(err, "ERR_NOT_FOUND ", 14) != 0) {
        if (strcmp(err, "unavailable") != 0 && strcmp(err, "timeout") != 0)
            log_error("voice: abandon failed: %s", err);
        e->cb(NULL, 503, "storage unavailable", e->arg);
    } else {
        json_object_set_new(e->res, "abandoned", json_boolean(!err));
        if (!err)
            json_object_set_new(e->res, "state", json_string("abandoned"));
        e->cb(e->res, 200, NULL, e->arg);
    }
    json_decref(e->res);
    free(e);
}

static void status_done(json_t *res, int status, const char *err, void *arg)
{
    struct ending *e = arg;
    if (!res || !json_is_true(json_object_get(res, "abandon"))) {
        e->cb(res, status, err, e->arg);
        free(e);
        return;
    }
    const char *argv[4] = {voice_json_str(res, "id"), "abandon", "",
                           "{\"reason\":\"caller_hangup\"}"};
    e->res = json_incref(res);
    if (store_script(SCRIPT_WORK, 4, argv, NULL, abandoned, e) < 0) {
        json_decref(e->res);
        e->cb(NULL, 503, store_status(), e->arg);
        free(e);
    }
}

void voice_call_status(const char *call_id, const char *ix_id, json_t *args, voice_done_fn *cb,
                       void *arg)
{
    struct ending *e = xcalloc(1, sizeof(*e));
    e->cb = cb;
    e->arg = arg;
    voice_script("status", call_id, ix_id, args, status_done, e);
}

/* ---- back in line when the agent's phone did not answer ---- */

struct requeueing {
    voice_done_fn *cb;
    void *arg;
    char *call_id, *ix_id;
};

static void requeue_polled(json_t *res, int status, const char *err, void *arg)
{
    struct requeueing *q = arg;
    q->cb(res, status, err, q->arg);
    free(q->call_id);
    free(q->ix_id);
    free(q);
}

static void requeued(const redisReply *reply, const char *err, void *arg)
{
    struct requeueing *q = arg;
    if (err && strncmp(err, "ERR_", 4) != 0) {
        requeue_polled(NULL, 503, "storage unavailable", q);
        return;
    }
    if (err)
        log_warn("voice: %s could not go back in line: %s", q->ix_id, err);
    voice_script("poll", q->call_id, q->ix_id, NULL, requeue_polled, q);
}

void voice_requeue(const char *call_id, const char *ix_id, const char *queue, voice_done_fn *cb,
                   void *arg)
{
    struct requeueing *q = xcalloc(1, sizeof(*q));
    q->cb = cb;
    q->arg = arg;
    q->call_id = xstrdup(call_id);
    q->ix_id = xstrdup(ix_id);
    json_t *a = json_pack("{s:s,s:s}", "queue", queue, "note", "agent phone did not answer");
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    const char *argv[4] = {ix_id, "transfer", "", text};
    int rc = store_script(SCRIPT_WORK, 4, argv, NULL, requeued, q);
    free(text);
    if (rc < 0)
        requeue_polled(NULL, 503, store_status(), q);
}

/* ---- the interaction of a call ---- */

static char *clean_copy(const char *s, size_t max)
{
    if (!s || !*s || strlen(s) > max || !text_is_clean_utf8(s, strlen(s)) || strpbrk(s, "\r\n"))
        return NULL;
    return xstrdup(s);
}

void voice_fill_interaction(struct interaction *ix, const char *call_id, const char *from,
                            const char *to, const char *name, const struct voice_option *opt,
                            const char *queue, const char *policy, json_t *metadata)
{
    memset(ix, 0, sizeof(*ix));
    ix->channel = CH_VOICE;
    ix->direction = xstrdup("inbound");
    ix->external_id = xstrdup(call_id);
    ix->from = clean_copy(from, IX_MAX_ADDRESS);
    ix->to = clean_copy(to, IX_MAX_ADDRESS);
    ix->customer_name = clean_copy(name, IX_MAX_NAME);
    char norm[IDENT_MAX];
    const char *why = NULL;
    if (ix->from && identity_phone(ix->from, norm, sizeof(norm), &why) == 0)
        ix->ident[IDENT_PHONE] = xstrdup(norm);
    if (policy && *policy)
        ix->ident[IDENT_POLICY] = xstrdup(policy);
    if (queue && *queue)
        ix->queue = xstrdup(queue);
    else if (opt && opt->queue)
        ix->queue = xstrdup(opt->queue);
    /* the screen pop shows the subject: the IVR's outcome at a glance */
    ix->subject = xasprintf("Phone call%s%s%s%s%s", opt ? ": " : "", opt ? opt->intent : "",
                            policy && *policy ? " (policy " : "", policy && *policy ? policy : "",
                            policy && *policy ? ")" : "");
    if (metadata) {
        char *text = json_dumps(metadata, JSON_COMPACT);
        if (text && strlen(text) <= IX_MAX_METADATA)
            ix->metadata = text;
        else
            free(text);
    }
}

/* ---- the channel ---- */

static void voice_stop(void)
{
    voice_twilio_stop();
    voice_menu_free(&voice_conf.menu);
    free(voice_conf.menu_prompt);
    free(voice_conf.auth_token);
    free(voice_conf.cti_secret);
    memset(&voice_conf, 0, sizeof(voice_conf));
}

static int voice_start(struct event_base *base, const struct config *cfg, char **err)
{
    char *e = NULL;
    voice_conf.cfg = cfg;
    if (voice_menu_parse(cfg->voice_menu, &voice_conf.menu, &e) < 0) {
        *err = xasprintf("[voice] menu: %s", e);
        free(e);
        return -1;
    }
    for (int i = 0; i < voice_conf.menu.n; i++) {
        const char *q = voice_conf.menu.opt[i].queue;
        if (q && !router_queue_serves(cfg, q, "voice")) {
            *err = xasprintf("[voice] menu: queue \"%s\" %s", q,
                             config_queue(cfg, q) ? "does not serve the voice channel"
                                                  : "is not defined");
            return -1;
        }
    }
    voice_conf.menu_prompt = cfg->voice_menu_prompt ? xstrdup(cfg->voice_menu_prompt)
                                                    : voice_menu_prompt(&voice_conf.menu);
    if (cfg->voice_auth_token_file) {
        voice_conf.auth_token = read_secret_file(cfg->voice_auth_token_file, &e);
        if (!voice_conf.auth_token) {
            *err = xasprintf("[voice] auth_token_file: %s", e);
            free(e);
            return -1;
        }
        if (!cfg->voice_public_url) {
            *err = xstrdup("[voice] public_url: required with auth_token_file (the URL Twilio "
                           "signs)");
            return -1;
        }
        size_t n = strlen(cfg->voice_public_url);
        if ((strncmp(cfg->voice_public_url, "https://", 8) != 0 &&
             strncmp(cfg->voice_public_url, "http://", 7) != 0) ||
            cfg->voice_public_url[n - 1] == '/' || strpbrk(cfg->voice_public_url, "?#\"<>&' ")) {
            *err = xstrdup("[voice] public_url: http(s)://host[:port][/prefix], without a "
                           "trailing slash or query");
            return -1;
        }
        if (voice_twilio_start(base, err) < 0)
            return -1;
    }
    if (cfg->voice_cti_secret_file) {
        voice_conf.cti_secret = read_secret_file(cfg->voice_cti_secret_file, &e);
        if (!voice_conf.cti_secret) {
            *err = xasprintf("[voice] cti_secret_file: %s", e);
            free(e);
            return -1;
        }
    }
    log_info("voice: Twilio webhooks %s, CTI webhook %s, IVR menu of %d options",
             voice_conf.auth_token ? "on" : "off (no auth_token_file)",
             voice_conf.cti_secret ? "on" : "off (no cti_secret_file)", voice_conf.menu.n);
    return 0;
}

/* SIGHUP: the secrets are re-read, so a rotated auth token or CTI secret takes effect
 * without a restart (a file that cannot be read keeps the old secret). */
static void voice_reload(const struct config *cfg)
{
    secret_reload(&voice_conf.auth_token, cfg->voice_auth_token_file, "[voice] auth_token_file");
    secret_reload(&voice_conf.cti_secret, cfg->voice_cti_secret_file, "[voice] cti_secret_file");
}

static const struct http_route voice_routes[] = {
    {EVHTTP_REQ_POST, "/v1/voice/twilio/incoming", HTTP_AUTH_NONE, voice_twilio_incoming,
     "application/x-www-form-urlencoded", NULL, false},
    {EVHTTP_REQ_POST, "/v1/voice/twilio/status", HTTP_AUTH_NONE, voice_twilio_status,
     "application/x-www-form-urlencoded", NULL, false},
    {EVHTTP_REQ_POST, "/v1/voice/cti", HTTP_AUTH_NONE, voice_cti_webhook, "application/json",
     NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};

const struct channel voice_channel = {
    .name = "voice",
    .routes = voice_routes,
    .start = voice_start,
    .stop = voice_stop,
    .reload = voice_reload,
};
