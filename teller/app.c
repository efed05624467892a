/* app.c - what the teller does, independent of the screen.
 *
 * Every request goes out one at a time, in order, and waits for its ACK or NACK: a note or
 * the end of a visit created while the link was down refers to that visit by the msg_id of
 * its creation (visit_ref), so it must reach the server after it. Work that changes
 * something (a walk-in, a note, an outcome, consent, an FNOL, a handover) is written to the
 * spool first (fsync'd) and is shown as pending until acknowledged; when the link is down
 * it simply waits there, and the teller carries on. Reads (a lookup, call next, offers)
 * need the link and say so when it is down.
 *
 * Refusals that may pass later (storage unavailable, rate limited, the teller not signed
 * in on this link yet) leave a spooled entry pending; any other refusal marks it failed,
 * kept in the spool list for the teller to see. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "teller.h"

#define RETRY_MS 2000

int64_t teller_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t teller_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A random UUID (v4) from /dev/urandom, so msg_ids never repeat across restarts. */
void teller_msg_id(char out[TELLER_MSG_ID_MAX + 1])
{
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(b, 1, sizeof(b), f) != sizeof(b)) {
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (unsigned char)rand();
    }
    if (f)
        fclose(f);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, TELLER_MSG_ID_MAX + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

void app_status(struct app *a, bool error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->status, sizeof(a->status), fmt, ap);
    va_end(ap);
    a->status_error = error;
}

bool app_online(const struct app *a)
{
    return a->link.state == LINK_UP;
}

/* ---- small state files in the spool directory ---- */

static void state_write(struct app *a, const char *name, const char *text)
{
    char path[1100], tmp[1200];
    snprintf(path, sizeof(path), "%s/%s", a->conf.spool, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fputs(text, f);
    if (fclose(f) == 0)
        rename(tmp, path);
}

static json_t *state_read(struct app *a, const char *name)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/%s", a->conf.spool, name);
    return json_load_file(path, 0, NULL);
}

static void save_cursor(struct app *a)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "{\"cursor\":%llu}\n", (unsigned long long)a->cursor);
    state_write(a, "cursor.json", buf);
}

/* ---- sending ---- */

static json_t *new_frame(struct app *a, const char *type)
{
    char id[TELLER_MSG_ID_MAX + 1];
    teller_msg_id(id);
    json_t *f = json_pack("{s:i,s:s,s:s}", "v", 1, "type", type, "msg_id", id);
    if (a->agent[0])
        json_object_set_new(f, "agent", json_string(a->agent));
    return f;
}

static void send_signin(struct app *a)
{
    if (!a->have_teller || a->link.state != LINK_UP || a->signin_sent || a->inflight_id[0])
        return;
    json_t *f = new_frame(a, "SIGNIN");
    json_object_set_new(f, "token", json_string(a->token));
    /* SIGNIN takes the in-flight slot: nothing else goes out before the teller is known */
    snprintf(a->inflight_id, sizeof(a->inflight_id), "%s",
             json_string_value(json_object_get(f, "msg_id")));
    snprintf(a->inflight_type, sizeof(a->inflight_type), "SIGNIN");
    a->inflight_spool = NULL;
    a->inflight_deadline = teller_mono_ms() + a->conf.timeout_s * 1000LL;
    a->signin_sent = true;
    link_send(&a->link, f);
}

static struct spool_entry *next_pending(struct app *a)
{
    for (struct spool_entry *e = a->spool.head; e; e = e->next)
        if (e->state == SPOOL_PENDING && strcmp(e->agent, a->agent) == 0)
            return e;
    return NULL;
}

static void pump(struct app *a)
{
    if (a->inflight_id[0] || !app_online(a) || !a->verified)
        return;
    int64_t now = teller_mono_ms();
    struct spool_entry *e = next_pending(a);
    if (e && now >= a->retry_at) {
        json_t *f = json_loads(e->frame, 0, NULL);
        if (!f) {
            spool_mark(&a->spool, e, SPOOL_FAILED, "unreadable spool entry");
            pump(a);
            return;
        }
        snprintf(a->inflight_id, sizeof(a->inflight_id), "%s", e->msg_id);
        snprintf(a->inflight_type, sizeof(a->inflight_type), "%s", e->type);
        a->inflight_spool = e;
        a->inflight_deadline = now + a->conf.timeout_s * 1000LL;
        link_send(&a->link, f);
        return;
    }
    if (!e && a->volatile_next) {
        json_t *f = a->volatile_next;
        a->volatile_next = NULL;
        snprintf(a->inflight_id, sizeof(a->inflight_id), "%s",
                 json_string_value(json_object_get(f, "msg_id")));
        snprintf(a->inflight_type, sizeof(a->inflight_type), "%s",
                 json_string_value(json_object_get(f, "type")));
        a->inflight_spool = NULL;
        a->inflight_frame = json_incref(f);
        a->inflight_deadline = now + a->conf.timeout_s * 1000LL;
        link_send(&a->link, f);
    }
}

/* Work that changes something: into the spool (durably), then out when the link allows. */
static bool spool_action(struct app *a, json_t *f, const char *summary)
{
    if (!a->have_teller) {
        json_decref(f);
        app_status(a, true, "Sign in first (F12).");
        return false;
    }
    struct spool_entry *e = spool_add(&a->spool, f, summary);
    json_decref(f);
    if (!e) {
        app_status(a, true, "Could not write the spool (%s): nothing was recorded.",
                   strerror(errno));
        return false;
    }
    if (app_online(a))
        app_status(a, false, "%s: sending.", summary);
    else
        app_status(a, false, "Saved OFFLINE (sent when the link returns): %s", summary);
    pump(a);
    return true;
}

/* A read or a claim: needs the link now. */
static bool online_action(struct app *a, json_t *f, const char *what)
{
    if (!app_online(a) || !a->verified) {
        json_decref(f);
        app_status(a, true, "OFFLINE: %s needs the link to the server; nothing was done%s.", what,
                   app_online(a) ? " (not signed in yet)" : "");
        return false;
    }
    if (a->volatile_next) {
        json_decref(f);
        app_status(a, true, "Still waiting for the previous request.");
        return false;
    }
    a->volatile_next = f;
    app_status(a, false, "%s...", what);
    pump(a);
    return true;
}

/* visit / visit_ref / case for work about the customer in front of the teller */
static bool set_target(struct app *a, json_t *f, bool visit_only)
{
    if (a->cur.id[0])
        json_object_set_new(f, "visit", json_string(a->cur.id));
    else if (a->cur.ref[0])
        json_object_set_new(f, "visit_ref", json_string(a->cur.ref));
    else if (!visit_only && a->case_hint[0])
        json_object_set_new(f, "case", json_string(a->case_hint));
    else {
        json_decref(f);
        app_status(a, true,
                   visit_only ? "No visit at this counter: call next (F4) or open one (F3)."
                              : "No customer: open a visit (F3), call next (F4) or "
                                "look one up (F2).");
        return false;
    }
    return true;
}

/* ---- actions ---- */

bool app_signin(struct app *a, const char *agent, const char *token)
{
    if (!*agent || !*token) {
        app_status(a, true, "Give your agent id and your token.");
        return false;
    }
    snprintf(a->agent, sizeof(a->agent), "%s", agent);
    snprintf(a->token, sizeof(a->token), "%s", token);
    a->have_teller = true;
    a->verified = false;
    a->signin_sent = false;
    a->agent_name[0] = '\0';
    if (app_online(a)) {
        send_signin(a);
        app_status(a, false, "Signing in as %s...", agent);
    } else {
        app_status(a, false,
                   "OFFLINE: signed in as %s on this terminal only; the server checks "
                   "the token when the link returns.",
                   agent);
    }
    return true;
}

void app_signout(struct app *a)
{
    if (app_online(a) && a->verified)
        link_send(&a->link, new_frame(a, "SIGNOUT"));
    memset(a->token, 0, sizeof(a->token));
    a->have_teller = a->verified = a->signin_sent = false;
    app_status(a, false, "Signed out%s.",
               a->spool.pending ? "; pending work waits for its teller to sign in" : "");
    a->agent[0] = '\0';
    memset(&a->cur, 0, sizeof(a->cur));
    json_decref(a->customer);
    a->customer = NULL;
    a->case_hint[0] = '\0';
}

bool app_lookup(struct app *a, const char *by, const char *value, const char *purpose)
{
    if (!*value) {
        app_status(a, true, "Type what to look up.");
        return false;
    }
    json_t *f = new_frame(a, "LOOKUP");
    json_object_set_new(f, "by", json_string(by));
    json_object_set_new(f, "value", json_string(value));
    json_object_set_new(f, "purpose", json_string(purpose));
    return online_action(a, f, "Customer lookup");
}

bool app_visit_create(struct app *a, const char *service, json_t *customer, const char *note,
                      bool serve_now)
{
    if (a->cur.id[0] || a->cur.ref[0]) {
        if (serve_now) {
            json_decref(customer);
            app_status(a, true, "End the current visit first (F6).");
            return false;
        }
    }
    json_t *f = new_frame(a, "VISIT_CREATE");
    json_object_set_new(f, "service", json_string(service));
    if (customer && json_object_size(customer))
        json_object_set(f, "customer", customer);
    if (note && *note)
        json_object_set_new(f, "note", json_string(note));
    json_object_set_new(f, "captured_at", json_integer(teller_now_ms()));
    if (serve_now) {
        json_object_set_new(f, "serve_now", json_true());
        json_object_set_new(f, "counter", json_string(a->conf.counter));
    }
    const char *who = json_string_value(json_object_get(customer, "name"));
    char summary[120];
    snprintf(summary, sizeof(summary), "Walk-in %s%s%s", service, who ? ": " : "", who ? who : "");
    if (serve_now) {
        memset(&a->cur, 0, sizeof(a->cur));
        snprintf(a->cur.ref, sizeof(a->cur.ref), "%s",
                 json_string_value(json_object_get(f, "msg_id")));
        snprintf(a->cur.customer, sizeof(a->cur.customer), "%s", who ? who : "(walk-in)");
        snprintf(a->cur.service, sizeof(a->cur.service), "%s", service);
        snprintf(a->cur.state, sizeof(a->cur.state), "serving");
        a->cur.since = teller_now_ms();
    }
    json_decref(customer);
    return spool_action(a, f, summary);
}

bool app_call_next(struct app *a)
{
    if (a->cur.id[0] || a->cur.ref[0]) {
        app_status(a, true, "End the current visit first (F6).");
        return false;
    }
    json_t *f = new_frame(a, "CALL_NEXT");
    json_object_set_new(f, "counter", json_string(a->conf.counter));
    return online_action(a, f, "Call next");
}

bool app_visit_end(struct app *a, const char *outcome, const char *note)
{
    json_t *f = new_frame(a, "VISIT_END");
    if (!set_target(a, f, true))
        return false;
    json_object_set_new(f, "outcome", json_string(outcome));
    if (note && *note)
        json_object_set_new(f, "note", json_string(note));
    char summary[120];
    snprintf(summary, sizeof(summary), "End %s: %s", a->cur.ticket[0] ? a->cur.ticket : "visit",
             outcome);
    memset(&a->cur, 0, sizeof(a->cur));
    return spool_action(a, f, summary);
}

bool app_note(struct app *a, const char *text)
{
    if (!*text) {
        app_status(a, true, "The note is empty.");
        return false;
    }
    json_t *f = new_frame(a, "NOTE");
    if (!set_target(a, f, false))
        return false;
    json_object_set_new(f, "text", json_string(text));
    char summary[120];
    snprintf(summary, sizeof(summary), "Note: %.60s", text);
    return spool_action(a, f, summary);
}

bool app_consent(struct app *a, const char *kind, bool granted, const char *text)
{
    json_t *f = new_frame(a, "CONSENT");
    if (!set_target(a, f, false))
        return false;
    json_object_set_new(f, "kind", json_string(kind));
    json_object_set_new(f, "granted", json_boolean(granted));
    if (text && *text)
        json_object_set_new(f, "text", json_string(text));
    json_object_set_new(f, "captured_at", json_integer(teller_now_ms()));
    char summary[120];
    snprintf(summary, sizeof(summary), "Consent %s: %s", kind, granted ? "yes" : "no");
    return spool_action(a, f, summary);
}

bool app_fnol(struct app *a, int64_t loss_at, const char *kind, const char *description,
              const char *location)
{
    if (!*description) {
        app_status(a, true, "Describe the loss.");
        return false;
    }
    json_t *f = new_frame(a, "FNOL");
    if (!set_target(a, f, false))
        return false;
    json_object_set_new(f, "loss_at", json_integer(loss_at));
    json_object_set_new(f, "loss_kind", json_string(kind));
    json_object_set_new(f, "description", json_string(description));
    if (location && *location)
        json_object_set_new(f, "location", json_string(location));
    json_object_set_new(f, "captured_at", json_integer(teller_now_ms()));
    char summary[120];
    snprintf(summary, sizeof(summary), "First notice of loss: %s", kind);
    return spool_action(a, f, summary);
}

bool app_handover(struct app *a, const char *queue, const char *channel, const char *note)
{
    if (!*note) {
        app_status(a, true, "Say what the contact centre should do.");
        return false;
    }
    json_t *f = new_frame(a, "HANDOVER");
    if (!set_target(a, f, false))
        return false;
    json_object_set_new(f, "queue", json_string(queue));
    json_object_set_new(f, "channel", json_string(channel));
    json_object_set_new(f, "note", json_string(note));
    char summary[120];
    snprintf(summary, sizeof(summary), "Handover to %s", queue);
    if (a->cur.id[0] || a->cur.ref[0])
        memset(&a->cur, 0, sizeof(a->cur)); /* the visit ends with the handover */
    return spool_action(a, f, summary);
}

bool app_offer(struct app *a, int i, bool accept)
{
    if (i < 0 || i >= a->n_offers) {
        app_status(a, true, "No such offer.");
        return false;
    }
    if (accept && (a->cur.id[0] || a->cur.ref[0])) {
        app_status(a, true, "End the current visit first (F6).");
        return false;
    }
    json_t *f = new_frame(a, accept ? "OFFER_ACCEPT" : "OFFER_REJECT");
    json_object_set_new(f, "reservation", json_string(a->offers[i].reservation));
    if (accept)
        json_object_set_new(f, "counter", json_string(a->conf.counter));
    return online_action(a, f, accept ? "Accepting the offer" : "Rejecting the offer");
}

/* ---- replies ---- */

static void set_visit_from(struct app *a, json_t *v)
{
    const char *id = json_string_value(json_object_get(v, "visit"));
    if (!id)
        return;
    snprintf(a->cur.id, sizeof(a->cur.id), "%s", id);
    const char *t = json_string_value(json_object_get(v, "ticket"));
    snprintf(a->cur.ticket, sizeof(a->cur.ticket), "%s", t ? t : "");
    t = json_string_value(json_object_get(v, "case_id"));
    snprintf(a->cur.case_id, sizeof(a->cur.case_id), "%s", t ? t : "");
    t = json_string_value(json_object_get(v, "service"));
    snprintf(a->cur.service, sizeof(a->cur.service), "%s", t ? t : "");
    t = json_string_value(json_object_get(v, "state"));
    snprintf(a->cur.state, sizeof(a->cur.state), "%s", t ? t : "");
    if (!a->cur.since)
        a->cur.since = teller_now_ms();
    if (a->cur.case_id[0])
        snprintf(a->case_hint, sizeof(a->case_hint), "%s", a->cur.case_id);
}

static void show_customer(struct app *a, json_t *res)
{
    json_decref(a->customer);
    a->customer = json_incref(res);
    json_t *cases = json_object_get(res, "cases");
    if (!cases)
        cases = json_object_get(res, "open_cases");
    size_t i;
    json_t *c;
    a->case_hint[0] = '\0';
    json_array_foreach(cases, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "status"));
        if (!st || strcmp(st, "open") == 0) {
            snprintf(a->case_hint, sizeof(a->case_hint), "%s",
                     json_string_value(json_object_get(c, "id")));
            break;
        }
    }
}

static void on_ack(struct app *a, json_t *f)
{
    json_t *res = json_object_get(f, "result");
    const char *type = a->inflight_type;
    if (strcmp(type, "SIGNIN") == 0) {
        a->verified = true;
        const char *name =
            json_string_value(json_object_get(json_object_get(res, "agent"), "name"));
        snprintf(a->agent_name, sizeof(a->agent_name), "%s", name && *name ? name : a->agent);
        app_status(a, false, "Signed in as %s.%s", a->agent_name,
                   next_pending(a) ? " Sending the work kept while offline." : "");
        return;
    }
    if (a->inflight_spool) {
        char summary[160];
        snprintf(summary, sizeof(summary), "%s%s",
                 json_is_true(json_object_get(f, "replayed")) ? "delivered before; " : "",
                 a->inflight_spool->summary);
        spool_mark(&a->spool, a->inflight_spool, SPOOL_SENT, summary);
    }
    if (strcmp(type, "VISIT_CREATE") == 0) {
        const char *refused = json_string_value(json_object_get(res, "serve_now_refused"));
        if (strcmp(a->cur.ref, a->inflight_id) == 0) {
            if (refused)
                memset(&a->cur, 0, sizeof(a->cur)); /* it waits in the queue instead */
            else
                set_visit_from(a, res);
        }
        if (refused)
            app_status(a, true, "Ticket %s waits: not served now (%s).",
                       json_string_value(json_object_get(res, "ticket")), refused);
        else
            app_status(a, false, "Visit %s recorded (ticket %s).",
                       json_string_value(json_object_get(res, "visit")),
                       json_string_value(json_object_get(res, "ticket")));
    } else if (strcmp(type, "CALL_NEXT") == 0 || strcmp(type, "OFFER_ACCEPT") == 0) {
        memset(&a->cur, 0, sizeof(a->cur));
        if (strcmp(type, "CALL_NEXT") == 0) {
            set_visit_from(a, json_object_get(res, "visit"));
            const char *name =
                json_string_value(json_object_get(json_object_get(res, "customer"), "name"));
            snprintf(a->cur.customer, sizeof(a->cur.customer), "%s", name ? name : "(unnamed)");
            show_customer(a, res);
            if (a->cur.case_id[0])
                snprintf(a->case_hint, sizeof(a->case_hint), "%s", a->cur.case_id);
            app_status(a, false, "Ticket %s to counter %s.", a->cur.ticket, a->conf.counter);
        } else {
            const char *ix = json_string_value(json_object_get(res, "interaction"));
            snprintf(a->cur.id, sizeof(a->cur.id), "%s", ix ? ix : "");
            snprintf(a->cur.state, sizeof(a->cur.state), "called");
            const char *cs = json_string_value(json_object_get(res, "case_id"));
            snprintf(a->cur.case_id, sizeof(a->cur.case_id), "%s", cs ? cs : "");
            snprintf(a->case_hint, sizeof(a->case_hint), "%s", a->cur.case_id);
            a->cur.since = teller_now_ms();
            for (int i = 0; i < a->n_offers; i++) {
                if (strcmp(a->offers[i].interaction, a->cur.id) == 0) {
                    snprintf(a->cur.customer, sizeof(a->cur.customer), "%s", a->offers[i].summary);
                    a->offers[i] = a->offers[--a->n_offers];
                    break;
                }
            }
            app_status(a, false, "Offer accepted: %s.", a->cur.id);
        }
    } else if (strcmp(type, "LOOKUP") == 0) {
        if (json_is_true(json_object_get(res, "found"))) {
            show_customer(a, res);
            app_status(a, false, "Customer %s found (lookup logged).",
                       json_string_value(json_object_get(json_object_get(res, "customer"), "id")));
        } else {
            app_status(a, true, "No customer with that identifier (lookup logged).");
        }
    } else if (strcmp(type, "HANDOVER") == 0) {
        app_status(a, false, "Handed over to %s as %s.",
                   json_string_value(json_object_get(res, "queue")),
                   json_string_value(json_object_get(res, "interaction")));
    } else if (strcmp(type, "FNOL") == 0) {
        app_status(a, false, "First notice of loss %s recorded.",
                   json_string_value(json_object_get(res, "fnol")));
    } else if (strcmp(type, "OFFER_REJECT") == 0) {
        app_status(a, false, "Offer rejected.");
    } else if (a->inflight_spool) {
        app_status(a, false, "Sent: %s.", a->inflight_spool->summary);
    }
}

static void on_nack(struct app *a, json_t *f)
{
    const char *code = json_string_value(json_object_get(f, "code"));
    const char *msg = json_string_value(json_object_get(f, "message"));
    code = code ? code : "error";
    msg = msg ? msg : "";
    if (strcmp(a->inflight_type, "SIGNIN") == 0) {
        a->verified = false;
        if (!strcmp(code, "unavailable") || !strcmp(code, "rate_limited")) {
            a->signin_sent = false;
            a->retry_at = teller_mono_ms() + RETRY_MS;
            app_status(a, true, "The server cannot check the sign-in now (%s); retrying.", code);
            return;
        }
        a->have_teller = false;
        memset(a->token, 0, sizeof(a->token));
        app_status(a, true, "Sign-in refused: %s", msg);
        return;
    }
    if (a->inflight_spool) {
        if (!strcmp(code, "unavailable") || !strcmp(code, "rate_limited")) {
            a->retry_at = teller_mono_ms() + RETRY_MS;
            app_status(a, true, "The server cannot take it now (%s); retrying.", code);
            return;
        }
        if (!strcmp(code, "no_teller")) {
            a->verified = false;
            a->signin_sent = false;
            return;
        }
        char result[160];
        snprintf(result, sizeof(result), "%s: %s", code, msg);
        spool_mark(&a->spool, a->inflight_spool, SPOOL_FAILED, result);
        app_status(a, true, "REFUSED %s: %s (see F11)", a->inflight_spool->summary, msg);
        return;
    }
    if (!strcmp(code, "empty"))
        app_status(a, false, "Nobody is waiting for your services.");
    else
        app_status(a, true, "Refused (%s): %s", code, msg);
}

/* ---- events ---- */

static void remove_offer(struct app *a, const char *resv)
{
    for (int i = 0; resv && i < a->n_offers; i++) {
        if (strcmp(a->offers[i].reservation, resv) == 0) {
            a->offers[i] = a->offers[--a->n_offers];
            return;
        }
    }
}

static void on_event(struct app *a, json_t *f)
{
    json_int_t seq = json_integer_value(json_object_get(f, "seq"));
    if (seq > 0 && (uint64_t)seq > a->cursor) {
        a->cursor = (uint64_t)seq;
        save_cursor(a);
    }
    const char *ev = json_string_value(json_object_get(f, "event"));
    json_t *d = json_object_get(f, "data");
    if (!ev)
        return;
    if (strcmp(ev, "offer") == 0) {
        json_t *r = json_object_get(d, "reservation");
        json_t *ix = json_object_get(d, "interaction");
        const char *resv = json_string_value(json_object_get(r, "id"));
        if (!resv || a->n_offers >= APP_MAX_OFFERS)
            return;
        remove_offer(a, resv);
        struct offer *o = &a->offers[a->n_offers++];
        memset(o, 0, sizeof(*o));
        snprintf(o->reservation, sizeof(o->reservation), "%s", resv);
        snprintf(o->interaction, sizeof(o->interaction), "%s",
                 json_string_value(json_object_get(ix, "id")) ?: "");
        const char *name =
            json_string_value(json_object_get(json_object_get(d, "customer"), "name"));
        const char *subj = json_string_value(json_object_get(ix, "subject"));
        snprintf(o->summary, sizeof(o->summary), "%s%s%s", name ? name : "",
                 name && subj ? " - " : "", subj ? subj : "");
        o->expires_at = json_integer_value(json_object_get(r, "expires_at"));
        app_status(a, false, "New offer %s: %s (F10 to answer).", o->reservation, o->summary);
        return;
    }
    if (strncmp(ev, "offer.", 6) == 0) {
        remove_offer(a, json_string_value(json_object_get(d, "reservation")));
        return;
    }
    const char *ticket = json_string_value(json_object_get(d, "ticket"));
    if (strcmp(ev, "visit.created") == 0)
        snprintf(a->last_event, sizeof(a->last_event), "Ticket %s waiting for %s", ticket ?: "?",
                 json_string_value(json_object_get(d, "service")) ?: "?");
    else if (strcmp(ev, "visit.called") == 0)
        snprintf(a->last_event, sizeof(a->last_event), "Ticket %s called to counter %s",
                 ticket ?: "?", json_string_value(json_object_get(d, "counter")) ?: "?");
    else if (strcmp(ev, "visit.ended") == 0)
        snprintf(a->last_event, sizeof(a->last_event), "Ticket %s done (%s)", ticket ?: "?",
                 json_string_value(json_object_get(d, "outcome")) ?: "");
    else if (strcmp(ev, "case.updated") == 0)
        snprintf(a->last_event, sizeof(a->last_event), "Case %s: %s",
                 json_string_value(json_object_get(d, "case")) ?: "?",
                 json_string_value(json_object_get(d, "what")) ?: "updated");
}

/* ---- the link's callbacks ---- */

static void clear_inflight(struct app *a)
{
    a->inflight_id[0] = '\0';
    a->inflight_type[0] = '\0';
    a->inflight_spool = NULL;
    json_decref(a->inflight_frame);
    a->inflight_frame = NULL;
}

static void on_frame(json_t *f, void *arg)
{
    struct app *a = arg;
    const char *type = json_string_value(json_object_get(f, "type"));
    const char *mid = json_string_value(json_object_get(f, "msg_id"));
    if (!type)
        return;
    if (strcmp(type, "WELCOME") == 0) {
        json_t *b = json_object_get(f, "branch");
        snprintf(a->branch, sizeof(a->branch), "%s",
                 json_string_value(json_object_get(b, "id")) ?: "");
        snprintf(a->branch_name, sizeof(a->branch_name), "%s",
                 json_string_value(json_object_get(b, "name")) ?: "");
        snprintf(a->terminal, sizeof(a->terminal), "%s",
                 json_string_value(json_object_get(json_object_get(f, "session"), "terminal"))
                     ?: "");
        json_decref(a->services);
        a->services = json_incref(json_object_get(b, "services"));
        json_t *cache = json_pack("{s:s,s:s,s:s,s:O}", "id", a->branch, "name", a->branch_name,
                                  "terminal", a->terminal, "services", a->services);
        char *text = json_dumps(cache, JSON_COMPACT);
        json_decref(cache);
        if (text)
            state_write(a, "branch.json", text);
        free(text);
        if (json_is_true(json_object_get(f, "gap")))
            app_status(a, true,
                       "Some branch events were missed while offline (too old to replay).");
        link_welcomed(&a->link, (int)json_integer_value(json_object_get(f, "heartbeat_s")));
        a->verified = false;
        a->signin_sent = false;
        send_signin(a);
        if (!a->have_teller)
            app_status(a, false, "Connected to %s. Sign in (F12).", a->branch_name);
        return;
    }
    if (strcmp(type, "EVENT") == 0) {
        on_event(a, f);
        return;
    }
    if (strcmp(type, "PONG") == 0)
        return;
    if (!mid || strcmp(mid, a->inflight_id) != 0) {
        if (strcmp(type, "NACK") == 0 && (!mid || !*mid))
            app_status(a, true, "The server refused a frame: %s",
                       json_string_value(json_object_get(f, "message")) ?: "");
        return; /* a late answer to something already given up */
    }
    if (strcmp(type, "ACK") == 0)
        on_ack(a, f);
    else if (strcmp(type, "NACK") == 0)
        on_nack(a, f);
    clear_inflight(a);
    pump(a);
}

static void on_state(enum link_state st, void *arg)
{
    struct app *a = arg;
    if (st == LINK_HELLO) {
        json_t *f = new_frame(a, "HELLO");
        json_object_del(f, "agent");
        if (a->cursor > 0)
            json_object_set_new(f, "cursor", json_integer((json_int_t)a->cursor));
        json_object_set_new(f, "client", json_string("omnicc-teller 0.1"));
        snprintf(a->link.hello_id, sizeof(a->link.hello_id), "%s",
                 json_string_value(json_object_get(f, "msg_id")));
        link_send(&a->link, f);
    } else if (st == LINK_DOWN) {
        if (a->inflight_id[0] && !a->inflight_spool && strcmp(a->inflight_type, "SIGNIN") != 0)
            app_status(a, true, "The link broke before the answer came: try again.");
        clear_inflight(a);
        json_decref(a->volatile_next);
        a->volatile_next = NULL;
        a->verified = false;
        a->signin_sent = false;
        a->n_offers = 0; /* offers are the server's: they come back with the link */
    }
}

void app_init(struct app *a)
{
    a->link.on_frame = on_frame;
    a->link.on_state = on_state;
    a->link.arg = a;
    json_t *c = state_read(a, "cursor.json");
    a->cursor = (uint64_t)json_integer_value(json_object_get(c, "cursor"));
    json_decref(c);
    json_t *b = state_read(a, "branch.json");
    if (b) {
        snprintf(a->branch, sizeof(a->branch), "%s",
                 json_string_value(json_object_get(b, "id")) ?: "");
        snprintf(a->branch_name, sizeof(a->branch_name), "%s",
                 json_string_value(json_object_get(b, "name")) ?: "");
        snprintf(a->terminal, sizeof(a->terminal), "%s",
                 json_string_value(json_object_get(b, "terminal")) ?: "");
        a->services = json_incref(json_object_get(b, "services"));
        json_decref(b);
    }
}

void app_tick(struct app *a, int64_t now)
{
    if (a->inflight_id[0] && now > a->inflight_deadline) {
        link_drop(&a->link, "no answer from the server");
        return;
    }
    if (app_online(a)) {
        if (a->have_teller && !a->verified && !a->signin_sent && now >= a->retry_at)
            send_signin(a);
        if (now - a->link.last_tx_ms > a->link.heartbeat_s * 1000LL)
            link_send(&a->link, new_frame(a, "PING"));
        pump(a);
    } else if (next_pending(a)) {
        link_retry_now(&a->link);
    }
}
