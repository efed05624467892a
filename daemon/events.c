/* events.c - SSE fan-out. One blocking stream read per instance (store reader connection),
 * clients indexed by agent so an event costs the clients it concerns, not all of them.
 * A client is never freed inside libevent's callbacks for its own connection: close marks
 * it, and the reaper frees it from the loop. */
#include "omnicc/events.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/http.h"
#include "omnicc/log.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define BUCKETS 4096
#define READ_BLOCK_MS 5000
#define READ_COUNT 1000
#define KEEPALIVE_S 15
#define CATCHUP_MAX 1000

enum client_state { CLIENT_CATCHING_UP, CLIENT_LIVE, CLIENT_CLOSED };

struct client {
    struct client *next;       /* in its bucket (or the supervisor list) */
    struct client *reap_next;  /* on the reap list once closed */
    struct evhttp_request *req;
    struct evhttp_request *orphan; /* closed by the client: the request is ours to free */
    enum client_state state;
    char agent[72];            /* "" for a supervisor stream */
    char session[72];          /* a web chat visitor's stream: its session ("" otherwise) */
    void (*on_gone)(const char *session);
    char last_id[48];          /* last entry id delivered */
    struct evbuffer *held;     /* live frames that arrived during catch-up */
    int pending_ops;           /* catch-up reply outstanding: do not free yet */
};

static struct {
    struct event_base *base;
    struct client *buckets[BUCKETS];
    struct client *supervisors;
    struct client *reap;
    struct event *tick, *keepalive;
    char last_id[48];
    bool reading;
    int count;
    events_tap_fn *tap;
} ev;

static unsigned bucket_of(const char *agent)
{
    unsigned h = 5381;
    for (const unsigned char *p = (const unsigned char *)agent; *p; p++)
        h = h * 33 + *p;
    return h % BUCKETS;
}

int events_client_count(void)
{
    return ev.count;
}

static int id_cmp(const char *a, const char *b)
{
    unsigned long long ams = strtoull(a, NULL, 10), bms = strtoull(b, NULL, 10);
    if (ams != bms)
        return ams < bms ? -1 : 1;
    const char *ad = strchr(a, '-'), *bd = strchr(b, '-');
    unsigned long long as = ad ? strtoull(ad + 1, NULL, 10) : 0;
    unsigned long long bs = bd ? strtoull(bd + 1, NULL, 10) : 0;
    return as < bs ? -1 : as > bs ? 1 : 0;
}

/* Stream entry fields: at, type, agent, data (JSON) [, session]. Visitor streams never
 * see agent ids (hide_agent). */
static void format_frame(struct evbuffer *out, const redisReply *entry, bool hide_agent)
{
    const redisReply *id = entry->element[0], *f = entry->element[1];
    const char *type = "event", *agent = "", *data = "{}", *at = "0";
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
        if (strcmp(k, "type") == 0)
            type = v;
        else if (strcmp(k, "agent") == 0)
            agent = v;
        else if (strcmp(k, "data") == 0)
            data = v;
        else if (strcmp(k, "at") == 0)
            at = v;
    }
    if (hide_agent)
        agent = "";
    /* agent ids and types are validated names; data is JSON from cjson (no newlines) */
    evbuffer_add_printf(out, "id: %s\nevent: %s\ndata: {\"id\":\"%s\",\"type\":\"%s\",\"at\":%s,"
                             "\"agent\":\"%s\",\"data\":%s}\n\n",
                        id->str, type, id->str, type, at, agent, data);
}

static void send_to(struct client *c, const redisReply *entry)
{
    const char *id = entry->element[0]->str;
    if (c->state == CLIENT_CLOSED || id_cmp(id, c->last_id) <= 0)
        return;
    if (c->state == CLIENT_CATCHING_UP) {
        if (evbuffer_get_length(c->held) < (1u << 20))
            format_frame(c->held, entry, c->session[0] != '\0');
        return;
    }
    struct evbuffer *b = evbuffer_new();
    format_frame(b, entry, c->session[0] != '\0');
    evhttp_send_reply_chunk(c->req, b);
    evbuffer_free(b);
    snprintf(c->last_id, sizeof(c->last_id), "%s", id);
}

static const char *entry_field(const redisReply *entry, const char *name)
{
    const redisReply *f = entry->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strcmp(f->element[i]->str, name) == 0)
            return f->element[i + 1]->str;
    return NULL;
}

static void dispatch_entry(const redisReply *entry)
{
    const char *agent = entry_field(entry, "agent");
    const char *type = entry_field(entry, "type");
    const char *due = entry_field(entry, "due");
    /* A deadline some instance just made: sweep on time here too. An offer always carries
     * one (its reservation's expiry, or an earlier deadline of the same script, after
     * whose sweep the timer is armed for the next), so whoever made the offer, this
     * instance expires it on time without parsing the screen pop. */
    if (due)
        router_deadline_at(strtoll(due, NULL, 10));
    if (agent && *agent)
        for (struct client *c = ev.buckets[bucket_of(agent)]; c; c = c->next)
            if (strcmp(c->agent, agent) == 0)
                send_to(c, entry);
    for (struct client *c = ev.supervisors; c; c = c->next)
        send_to(c, entry);
    const char *session = entry_field(entry, "session");
    if (session && *session)
        for (struct client *c = ev.buckets[bucket_of(session)]; c; c = c->next)
            if (c->session[0] && strcmp(c->session, session) == 0)
                send_to(c, entry);
    if (ev.tap)
        ev.tap(type ? type : "", agent ? agent : "", session ? session : "",
               entry_field(entry, "data") ? entry_field(entry, "data") : "{}",
               entry->element[0]->str);
}

static bool entry_ok(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           e->element[0]->type == REDIS_REPLY_STRING && e->element[1]->type == REDIS_REPLY_ARRAY;
}

static void read_more(void);

static void on_read(const redisReply *reply, const char *err, void *arg)
{
    ev.reading = false;
    if (err) {
        if (strcmp(err, "shutting down") != 0)
            log_debug("events: stream read failed: %s", err);
        return; /* the tick retries */
    }
    /* nil on BLOCK timeout; else [[stream, [[id, fields], ...]]] */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        const redisReply *entries = reply->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            if (!entry_ok(entries->element[i]))
                continue;
            dispatch_entry(entries->element[i]);
            snprintf(ev.last_id, sizeof(ev.last_id), "%s", entries->element[i]->element[0]->str);
        }
    }
    read_more();
}

static void on_top(const redisReply *reply, const char *err, void *arg)
{
    ev.reading = false;
    if (err)
        return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 && entry_ok(reply->element[0]))
        snprintf(ev.last_id, sizeof(ev.last_id), "%s", reply->element[0]->element[0]->str);
    else
        snprintf(ev.last_id, sizeof(ev.last_id), "0-0");
    read_more();
}

static void read_more(void)
{
    if (ev.reading)
        return;
    if (strcmp(ev.last_id, "$") == 0) {
        /* start from the newest entry by id, so no gap opens between two reads; asked on
         * the main connection, so it is ordered before any command sent after it */
        char key[256];
        snprintf(key, sizeof(key), "%sevents", store_key_base());
        const char *argv[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
        if (store_command(6, argv, NULL, on_top, NULL) == 0)
            ev.reading = true;
        return;
    }
    if (!store_reader_ready())
        return;
    if (store_stream_read("events", ev.last_id, READ_BLOCK_MS, READ_COUNT, on_read, NULL) == 0)
        ev.reading = true;
}

static struct client **client_list(struct client *c)
{
    if (c->session[0])
        return &ev.buckets[bucket_of(c->session)];
    return c->agent[0] ? &ev.buckets[bucket_of(c->agent)] : &ev.supervisors;
}

static void client_unlink(struct client *c)
{
    struct client **pp = client_list(c);
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
}

static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    struct client *c = arg;
    if (c->state == CLIENT_CLOSED)
        return;
    c->state = CLIENT_CLOSED;
    /* When the client hung up, libevent detached the unfinished request from the connection
     * and leaves it to us (the reaper frees it); when the daemon closes the connection, the
     * request is still attached and libevent frees it with the connection. */
    if (c->req && !evhttp_request_get_connection(c->req))
        c->orphan = c->req;
    c->req = NULL;
    client_unlink(c);
    c->reap_next = ev.reap;
    ev.reap = c;
    ev.count--;
    if (c->on_gone)
        c->on_gone(c->session);
}

static void reap(void)
{
    struct client **pp = &ev.reap;
    while (*pp) {
        struct client *c = *pp;
        if (c->pending_ops == 0) {
            *pp = c->reap_next;
            if (c->orphan)
                evhttp_request_free(c->orphan);
            evbuffer_free(c->held);
            free(c);
        } else {
            pp = &c->reap_next;
        }
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    reap();
    read_more();
}

static void keepalive_one(struct client *c)
{
    if (c->state != CLIENT_LIVE)
        return;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, ": keepalive\n\n");
    evhttp_send_reply_chunk(c->req, b);
    evbuffer_free(b);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    for (int i = 0; i < BUCKETS; i++)
        for (struct client *c = ev.buckets[i]; c; c = c->next)
            keepalive_one(c);
    for (struct client *c = ev.supervisors; c; c = c->next)
        keepalive_one(c);
}

static void go_live(struct client *c)
{
    c->state = CLIENT_LIVE;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "retry: 2000\n: live\n\n");
    evhttp_send_reply_chunk(c->req, b);
    if (evbuffer_get_length(c->held))
        evhttp_send_reply_chunk(c->req, c->held); /* drains held */
    evbuffer_free(b);
}

static void on_catchup(const redisReply *reply, const char *err, void *arg)
{
    struct client *c = arg;
    c->pending_ops--;
    if (c->state == CLIENT_CLOSED)
        return;
    if (!err && reply->type == REDIS_REPLY_ARRAY) {
        struct evbuffer *b = evbuffer_new();
        for (size_t i = 0; i < reply->elements; i++) {
            if (!entry_ok(reply->element[i]))
                continue;
            format_frame(b, reply->element[i], c->session[0] != '\0');
            snprintf(c->last_id, sizeof(c->last_id), "%s", reply->element[i]->element[0]->str);
        }
        evhttp_send_reply_chunk(c->req, b);
        evbuffer_free(b);
        /* frames held during catch-up that the replay already covered must go */
        struct evbuffer *keep = evbuffer_new();
        size_t n;
        char *line;
        bool dup = false;
        while ((line = evbuffer_readln(c->held, &n, EVBUFFER_EOL_LF)) != NULL) {
            if (strncmp(line, "id: ", 4) == 0)
                dup = id_cmp(line + 4, c->last_id) <= 0;
            if (!dup)
                evbuffer_add_printf(keep, "%s\n", line);
            free(line);
        }
        evbuffer_add_buffer(c->held, keep);
        evbuffer_free(keep);
    }
    go_live(c);
}

static void subscribe(struct http_req *r, const char *agent_id, const char *session,
                      void (*on_gone)(const char *session))
{
    const char *last = r->req ? evhttp_find_header(evhttp_request_get_input_headers(r->req),
                                                   "Last-Event-ID")
                              : NULL;
    if (!last)
        last = http_query(r, "last_event_id");
    bool valid_last = last && strlen(last) < 40 && strchr(last, '-') && id_cmp(last, "0-0") > 0;
    struct client *c = xcalloc(1, sizeof(*c));
    c->held = evbuffer_new();
    snprintf(c->agent, sizeof(c->agent), "%s", agent_id ? agent_id : "");
    snprintf(c->session, sizeof(c->session), "%s", session ? session : "");
    c->on_gone = on_gone;
    snprintf(c->last_id, sizeof(c->last_id), "%s", valid_last ? last : "0-0");
    c->req = http_begin_stream(r, "text/event-stream", on_client_close, c);
    if (!c->req) {
        evbuffer_free(c->held);
        free(c);
        return;
    }
    struct client **head = client_list(c);
    c->next = *head;
    *head = c;
    ev.count++;
    /* A reader without a start yet would take the newest entry when it gets one, skipping
     * whatever this stream should see until then: its start is fixed first (read_more asks
     * on the main connection, where this stream's own commands and scripts follow it). */
    if (strcmp(ev.last_id, "$") == 0)
        read_more();
    if (!valid_last) {
        /* a fresh stream starts now: nothing older than what the reader has seen */
        snprintf(c->last_id, sizeof(c->last_id), "%s",
                 strcmp(ev.last_id, "$") == 0 ? "0-0" : ev.last_id);
        go_live(c);
        return;
    }
    c->state = CLIENT_CATCHING_UP;
    char key[256], start[64], count[16];
    if (c->session[0])
        snprintf(key, sizeof(key), "%schat:%s:events", store_key_base(), c->session);
    else
        snprintf(key, sizeof(key), "%s%s%s%s", store_key_base(),
                 c->agent[0] ? "agent:" : "events", c->agent, c->agent[0] ? ":events" : "");
    snprintf(start, sizeof(start), "(%s", c->last_id);
    snprintf(count, sizeof(count), "%d", CATCHUP_MAX);
    const char *argv[] = {"XRANGE", key, start, "+", "COUNT", count};
    if (store_command(6, argv, NULL, on_catchup, c) == 0)
        c->pending_ops++;
    else
        go_live(c);
}

void events_subscribe(struct http_req *r, const char *agent_id)
{
    subscribe(r, agent_id, NULL, NULL);
}

void events_subscribe_session(struct http_req *r, const char *session,
                              void (*on_gone)(const char *session))
{
    subscribe(r, NULL, session, on_gone);
}

void events_set_tap(events_tap_fn *tap)
{
    ev.tap = tap;
}

void events_start(struct event_base *base)
{
    ev.base = base;
    snprintf(ev.last_id, sizeof(ev.last_id), "$");
    ev.tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 100 * 1000};
    event_add(ev.tick, &tv);
    ev.keepalive = event_new(base, -1, EV_PERSIST, on_keepalive, NULL);
    struct timeval ka = {KEEPALIVE_S, 0};
    event_add(ev.keepalive, &ka);
}

void events_stop(void)
{
    if (ev.tick)
        event_free(ev.tick);
    if (ev.keepalive)
        event_free(ev.keepalive);
    ev.tick = ev.keepalive = NULL;
    reap();
}
