/* voice_cti.c - the generic CTI webhook, POST /v1/voice/cti, for PBXs (Asterisk, FreeSWITCH;
 * the contract is docs/CTI.md). Each request is one JSON event signed with HMAC-SHA256 over
 * "timestamp.body" (X-Omnicc-Timestamp, X-Omnicc-Signature), refused outside the replay
 * window. Every event is idempotent on the PBX's call id, so a PBX may resend freely:
 *
 *   newCall  queue the call (once) and say what to do now: {"action": "queue", ...} with
 *            wait instructions (resend newCall after retry_after seconds), {"action":
 *            "forward", "uri": ...} once an agent accepted, or {"action": "reject", ...}
 *   answer   the agent picked up (connection time, for talk time and the history)
 *   hangup   the call ended: a caller waiting or being offered abandons (offer withdrawn) */
#include "voice.h"

#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

struct cti {
    struct http_req *r;
    struct voice_cti_event ev;
};

static void cti_free(struct cti *c)
{
    voice_cti_event_free(&c->ev);
    free(c);
}

static void reply_failure(struct cti *c, int status, const char *err)
{
    if (status == 503)
        http_reply_unavailable(c->r, err);
    else
        http_reply_error(c->r, status, status == 404 ? "not_found" : "invalid_field", "%s",
                         err ? err : "failed");
    cti_free(c);
}

static json_t *reject(const char *reason, const char *id)
{
    json_t *out = json_pack("{s:s,s:s}", "action", "reject", "reason", reason);
    if (id && *id)
        json_object_set_new(out, "interaction", json_string(id));
    if (strcmp(reason, "closed") == 0 || strcmp(reason, "no_queue") == 0)
        json_object_set_new(out, "message", json_string(voice_conf.cfg->voice_goodbye_message));
    return out;
}

static void hung_up_meanwhile(json_t *res, int status, const char *err, void *arg)
{
    struct cti *c = arg;
    if (!res) {
        reply_failure(c, status, err);
        return;
    }
    http_reply_json(c->r, 200, reject("ended", voice_json_str(res, "id")));
    cti_free(c);
}

static void new_call_answered(json_t *res, int status, const char *err, void *arg)
{
    struct cti *c = arg;
    const struct config *cfg = voice_conf.cfg;
    if (!res) {
        if (status == 400) { /* no queue serves the call: the PBX should not hold it */
            log_warn("voice: CTI call %s refused: %s", c->ev.call_id, err ? err : "");
            http_reply_json(c->r, 200, reject("no_queue", NULL));
            cti_free(c);
            return;
        }
        reply_failure(c, status, err);
        return;
    }
    const char *state = voice_json_str(res, "state"), *id = voice_json_str(res, "id");
    bool waiting = strcmp(state, "queued") == 0 || strcmp(state, "offered") == 0;
    if (waiting && *voice_json_str(res, "call_ended")) {
        json_t *a = json_pack("{s:s}", "status", voice_json_str(res, "call_ended"));
        voice_call_status(c->ev.call_id, id, a, hung_up_meanwhile, c);
        json_decref(a);
        return;
    }
    json_t *out;
    if (waiting) {
        out = json_pack("{s:s,s:s,s:s,s:i,s:s,s:b}", "action", "queue", "interaction", id, "queue",
                        voice_json_str(res, "queue"), "retry_after", cfg->voice_hold_seconds,
                        "message", cfg->voice_wait_message, "max_wait_reached",
                        json_is_true(json_object_get(res, "max_wait")));
        long long pos = voice_json_int(res, "position"), ewt = voice_json_int(res, "estimated_wait_s");
        if (pos > 0)
            json_object_set_new(out, "position", json_integer(pos));
        if (ewt >= 0)
            json_object_set_new(out, "estimated_wait", json_integer(ewt));
    } else if (strcmp(state, "assigned") == 0) {
        out = json_pack("{s:s,s:s,s:s,s:s}", "action", "forward", "interaction", id, "agent",
                        voice_json_str(res, "agent"), "uri", voice_json_str(res, "softphone"));
    } else {
        out = reject(strcmp(state, "canceled") == 0 ? "closed" : state, id);
    }
    json_object_set_new(out, "duplicate", json_boolean(json_is_true(json_object_get(res, "duplicate"))));
    http_reply_json(c->r, 200, out);
    cti_free(c);
}

static void new_call(struct cti *c)
{
    const struct voice_cti_event *ev = &c->ev;
    if (ev->direction && strcmp(ev->direction, "inbound") != 0) {
        reply_failure(c, 400, "direction: only inbound calls are queued");
        return;
    }
    const struct voice_menu *m = &voice_conf.menu;
    const struct voice_option *o = NULL;
    if (ev->digits)
        o = voice_menu_match(m, ev->digits, NULL);
    for (int i = 0; !o && ev->intent && i < m->n; i++)
        if (strcmp(m->opt[i].intent, ev->intent) == 0)
            o = &m->opt[i];
    char policy[IDENT_MAX];
    const char *why = NULL;
    bool have_policy = ev->policy && identity_policy(ev->policy, policy, sizeof(policy), &why) == 0;
    json_t *ivr = NULL;
    if (ev->digits || ev->intent || ev->policy) {
        json_t *step = json_pack("{s:s,s:s*,s:s*}", "step", "pbx", "digits", ev->digits, "intent",
                                 o ? o->intent : ev->intent);
        json_t *path = json_pack("[o]", step);
        if (ev->policy)
            json_array_append_new(path, json_pack("{s:s,s:s}", "step", "policy", "result",
                                                  have_policy ? policy : "invalid"));
        ivr = json_pack("{s:o,s:s*,s:s*}", "path", path, "intent", o ? o->intent : ev->intent,
                        "policy", have_policy ? policy : NULL);
    }
    json_t *meta = json_pack("{s:s,s:s}", "provider", "cti", "call_id", ev->call_id);
    if (ivr)
        json_object_set(meta, "ivr", ivr);
    struct interaction ix;
    voice_fill_interaction(&ix, ev->call_id, ev->from, ev->to, ev->name, o, ev->queue,
                           have_policy ? policy : NULL, meta);
    if (!o && ev->intent && !ev->queue) { /* an intent the menu does not know: keep it */
        free(ix.subject);
        ix.subject = xasprintf("Phone call: %s", ev->intent);
    }
    /* connected when the PBX says the agent answered (answer), not when told to forward */
    json_t *poll_args = json_pack("{s:b,s:s}", "connect", 0, "leg", "main");
    if (ivr)
        json_object_set_new(poll_args, "ivr", ivr);
    json_decref(meta);
    voice_enter_queue(&ix, poll_args, new_call_answered, c); /* c may be gone after this */
    json_decref(poll_args);
    ix_free(&ix);
}

static void acked(json_t *res, int status, const char *err, void *arg)
{
    struct cti *c = arg;
    if (!res) {
        reply_failure(c, status, err);
        return;
    }
    json_t *out = json_pack("{s:b}", "ok", 1);
    const char *id = voice_json_str(res, "id");
    json_object_set_new(out, "interaction", *id ? json_string(id) : json_null());
    if (*voice_json_str(res, "state"))
        json_object_set_new(out, "state", json_string(voice_json_str(res, "state")));
    if (*voice_json_str(res, "disposition"))
        json_object_set_new(out, "disposition", json_string(voice_json_str(res, "disposition")));
    http_reply_json(c->r, 200, out);
    cti_free(c);
}

void voice_cti_webhook(struct http_req *r)
{
    const struct config *cfg = voice_conf.cfg;
    if (!voice_conf.cti_secret) {
        http_reply_error(r, 404, "not_found",
                         "the CTI webhook is not configured ([voice] cti_secret_file)");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    const char *why = NULL;
    if (voice_cti_verify(voice_conf.cti_secret, evhttp_find_header(h, "X-Omnicc-Timestamp"),
                         evhttp_find_header(h, "X-Omnicc-Signature"), r->body, r->body_len,
                         now_ms() / 1000, cfg->voice_cti_window, &why) < 0) {
        log_warn("voice: refused a CTI request: %s", why);
        http_reply_error(r, 403, "forbidden", "%s", why);
        return;
    }
    struct cti *c = xcalloc(1, sizeof(*c));
    c->r = r;
    char *err = NULL;
    if (voice_cti_parse(r->body, r->body_len, &c->ev, &err) < 0) {
        http_reply_error(r, 400, "invalid_field", "%s", err);
        free(err);
        free(c);
        return;
    }
    json_t *a;
    switch (c->ev.type) {
    case CTI_NEW_CALL:
        new_call(c);
        return;
    case CTI_ANSWER:
        a = json_pack("{s:s,s:s,s:s}", "status", "answered", "agent", c->ev.agent, "leg", "main");
        break;
    case CTI_HANGUP:
    default:
        a = json_pack("{s:s,s:s}", "status", "completed", "leg", "main");
        if (c->ev.cause)
            json_object_set_new(a, "cause", json_string(c->ev.cause));
        break;
    }
    voice_call_status(c->ev.call_id, "", a, acked, c);
    json_decref(a);
}
