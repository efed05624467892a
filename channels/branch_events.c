/* branch_events.c - events pushed to terminals, each with a per-terminal sequence number.
 *
 * Every terminal has an outbox in Redis (bterm:<T>:out, a stream whose entry ids are
 * "<seq>-0"): branch scripts write their events there (visit called, case updated) for
 * every terminal of the branch, in the same call as the change, so a terminal that was
 * away finds them on return; HELLO's cursor says where to resume.
 *
 * What other scripts decide for a teller (an offer, its withdrawal or timeout) is in the
 * global event stream. This instance reads that stream every [branch] event_poll_ms while
 * it holds sessions (non-blocking XREAD on the command connection: the blocking reader
 * belongs to events.c), relays entries about its signed-in tellers into their terminals'
 * outboxes (once each: the script keeps the last relayed id per terminal and agent), and
 * fetches an outbox whenever a "branch.*" event or a relay says it grew. Without sessions
 * it only follows the stream's top (one XREVRANGE COUNT 1 per poll). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branch.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define READ_COUNT 500
#define FETCH_COUNT 200

static struct {
    struct event_base *base;
    const struct config *cfg;
    struct event *timer;
    char last_id[48]; /* "$" until the stream's top is known */
    bool busy;        /* a read or relay is outstanding */
} be = {.last_id = "$"};

static void schedule(int ms)
{
    if (!be.timer)
        return; /* stopped: a late reply */
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(be.timer, &tv);
}

static int ready_sessions(void)
{
    int n = 0;
    for (struct bconn *c = bconn_first(); c; c = bconn_next(c))
        n += bconn_is_ready(c);
    return n;
}

/* ---- an outbox into its terminal ---- */

static void fetch(struct bconn *c);

static void push_entry(struct bconn *c, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    uint64_t seq = strtoull(e->element[0]->str, NULL, 10);
    const redisReply *f = e->element[1];
    const char *type = "event", *data = "{}", *at = "0";
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
        if (strcmp(k, "event") == 0)
            type = v;
        else if (strcmp(k, "data") == 0)
            data = v;
        else if (strcmp(k, "at") == 0)
            at = v;
    }
    json_t *d = json_loads(data, 0, NULL);
    bconn_send(c, json_pack("{s:i,s:s,s:I,s:s,s:I,s:o}", "v", BRANCH_PROTO_VERSION, "type", "EVENT",
                            "seq", (json_int_t)seq, "event", type, "at",
                            (json_int_t)strtoll(at, NULL, 10), "data", d ? d : json_object()));
    if (seq > *bconn_pushed_seq(c))
        *bconn_pushed_seq(c) = seq;
}

static void on_fetch(const redisReply *reply, const char *err, void *arg)
{
    struct bconn *c = arg;
    if (bconn_stopped())
        return;
    *bconn_fetching(c) = false;
    if (!bconn_reply_arrived(c))
        return;
    if (!err && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++)
            push_entry(c, reply->element[i]);
        if (reply->elements >= FETCH_COUNT)
            *bconn_dirty(c) = true;
    }
    if (*bconn_dirty(c) && bconn_is_ready(c))
        fetch(c);
}

static void fetch(struct bconn *c)
{
    *bconn_dirty(c) = false;
    char key[256], start[32], count[16];
    snprintf(key, sizeof(key), "%sbterm:%s:out", store_key_base(), bconn_terminal(c));
    snprintf(start, sizeof(start), "%llu", (unsigned long long)*bconn_pushed_seq(c) + 1);
    snprintf(count, sizeof(count), "%d", FETCH_COUNT);
    const char *argv[] = {"XRANGE", key, start, "+", "COUNT", count};
    if (store_command(6, argv, NULL, on_fetch, c) == 0) {
        *bconn_fetching(c) = true;
        bconn_hold(c);
    } else {
        *bconn_dirty(c) = true; /* Redis is away: the next poll retries */
    }
}

void branch_events_kick(struct bconn *c)
{
    if (!bconn_is_ready(c))
        return;
    if (*bconn_fetching(c))
        *bconn_dirty(c) = true; /* once the fetch under way is back */
    else
        fetch(c);
}

static void kick_terminal(const char *terminal)
{
    for (struct bconn *c = bconn_first(); c; c = bconn_next(c))
        if (bconn_is_ready(c) && strcmp(bconn_terminal(c), terminal) == 0)
            branch_events_kick(c);
}

static void kick_branch(const char *branch)
{
    for (struct bconn *c = bconn_first(); c; c = bconn_next(c))
        if (bconn_is_ready(c) && strcmp(bconn_branch(c), branch) == 0)
            branch_events_kick(c);
}

/* ---- the global stream ---- */

static void on_relayed(const redisReply *reply, const char *err, void *arg)
{
    be.busy = false;
    if (err) {
        log_warn("branch: relaying events failed: %s", err);
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        json_t *res = json_loadb(reply->element[1]->str, reply->element[1]->len, 0, NULL);
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(res, "terminals"), i, t)
            kick_terminal(json_string_value(t));
        json_decref(res);
    }
    schedule(be.cfg->branch_event_poll_ms);
}

static const char *field(const redisReply *f, const char *name)
{
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strcmp(f->element[i]->str, name) == 0)
            return f->element[i + 1]->str;
    return NULL;
}

static void on_read(const redisReply *reply, const char *err, void *arg)
{
    be.busy = false;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 1) {
        schedule(be.cfg->branch_event_poll_ms); /* nil: nothing new */
        return;
    }
    const redisReply *entries = reply->element[0]->element[1];
    json_t *terms = json_object();
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const char *id = e->element[0]->str;
        snprintf(be.last_id, sizeof(be.last_id), "%s", id);
        const char *type = field(e->element[1], "type");
        const char *agent = field(e->element[1], "agent");
        const char *data = field(e->element[1], "data");
        if (!type)
            continue;
        if (strncmp(type, "branch.", 7) == 0) {
            json_t *d = data ? json_loads(data, 0, NULL) : NULL;
            const char *b = json_string_value(json_object_get(d, "branch"));
            if (b)
                kick_branch(b);
            json_decref(d);
            continue;
        }
        if (!agent || !*agent)
            continue;
        for (struct bconn *c = bconn_first(); c; c = bconn_next(c)) {
            if (!bconn_is_ready(c) || !bconn_teller_sha(c, agent))
                continue;
            json_t *list = json_object_get(terms, bconn_terminal(c));
            if (!list) {
                list = json_array();
                json_object_set_new(terms, bconn_terminal(c), list);
            }
            json_array_append_new(list, json_pack("[ssss]", agent, id, type, data ? data : "{}"));
        }
    }
    bool full = entries->elements >= READ_COUNT;
    if (json_object_size(terms) > 0) {
        json_t *args = json_pack("{s:o}", "terms", terms);
        char *text = json_dumps(args, JSON_COMPACT);
        json_decref(args);
        const char *argv[8] = {"relay", "", "", "", "", "", text, "60"};
        if (store_script(SCRIPT_BRANCH_OP, 8, argv, NULL, on_relayed, NULL) == 0) {
            be.busy = true;
            free(text);
            return;
        }
        free(text);
    } else {
        json_decref(terms);
    }
    schedule(full ? 0 : be.cfg->branch_event_poll_ms);
}

static void on_top(const redisReply *reply, const char *err, void *arg)
{
    be.busy = false;
    if (!err) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
            reply->element[0]->type == REDIS_REPLY_ARRAY)
            snprintf(be.last_id, sizeof(be.last_id), "%s", reply->element[0]->element[0]->str);
        else
            snprintf(be.last_id, sizeof(be.last_id), "0-0");
        /* whatever happened before this point is in the outboxes: fetch them once */
        for (struct bconn *c = bconn_first(); c; c = bconn_next(c))
            branch_events_kick(c);
    }
    schedule(be.cfg->branch_event_poll_ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    if (be.busy)
        return;
    if (!store_ready()) {
        snprintf(be.last_id, sizeof(be.last_id), "$");
        schedule(be.cfg->branch_event_poll_ms);
        return;
    }
    bool idle = ready_sessions() == 0;
    for (struct bconn *c = bconn_first(); c; c = bconn_next(c))
        if (*bconn_dirty(c) && !*bconn_fetching(c) && bconn_is_ready(c))
            fetch(c);
    char key[256], count[16];
    snprintf(key, sizeof(key), "%sevents", store_key_base());
    snprintf(count, sizeof(count), "%d", READ_COUNT);
    int rc;
    if (idle || strcmp(be.last_id, "$") == 0) {
        /* no session: only keep up with the stream's top, so that a session that opens
         * later is relayed everything after that point (before it, SIGNIN catches up) */
        const char *argv[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
        rc = store_command(6, argv, NULL, on_top, NULL);
    } else {
        const char *argv[] = {"XREAD", "COUNT", count, "STREAMS", key, be.last_id};
        rc = store_command(6, argv, NULL, on_read, NULL);
    }
    if (rc == 0)
        be.busy = true;
    else
        schedule(be.cfg->branch_event_poll_ms);
}

void branch_events_start(struct event_base *base, const struct config *cfg)
{
    be.base = base;
    be.cfg = cfg;
    be.timer = evtimer_new(base, on_timer, NULL);
    schedule(cfg->branch_event_poll_ms);
}

void branch_events_stop(void)
{
    if (be.timer)
        event_free(be.timer);
    be.timer = NULL;
}
