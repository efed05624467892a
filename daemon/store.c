/* store.c - the one connection to Redis (hiredis async on the event loop).
 *
 * States: DISCONNECTED -> CONNECTING -> PREPARING (AUTH, SELECT, SCRIPT LOAD, the data layout
 * version check and its migrations, the prepare script) -> READY.
 * Only READY accepts work; otherwise callers answer 503 at once. Every command carries a
 * deadline: if the oldest outstanding reply is late, the connection is dropped, every
 * pending callback fires with "timeout", and we reconnect with backoff and jitter. A reply
 * that arrives for a request already answered 503 cannot exist, because hiredis fires each
 * callback exactly once and we only answer from that callback.
 *
 * Hostnames are resolved with evdns, never getaddrinfo() on the loop.
 *
 * With [redis] sentinels, every (re)connect first asks the sentinels, one after the other,
 * for the primary (SENTINEL get-master-addr-by-name) and checks ROLE on the connection it
 * opens; a subscription to +switch-master on one sentinel moves both connections at once
 * when a failover happens, and a READONLY reply (we are talking to a demoted primary) drops
 * the connection so that it asks again. Until a primary answers, callers get 503.
 *
 * With [redis] ack_replicas, state-changing scripts are followed on the same connection by
 * WAIT N ack_timeout, one WAIT out at a time behind all the scripts sent since the last
 * one: each script's reply is copied and handed to its callback only once WAIT says N
 * replicas have it (else "NOREPLICAS": 503, and the caller's retry is made harmless by the
 * idempotency keys). */
#include "omnicc/store.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/util.h"
#include "scripts.h"

enum store_state { STORE_DISCONNECTED, STORE_CONNECTING, STORE_PREPARING, STORE_READY };

struct pending {
    struct pending *next;
    store_cb *cb;
    void *arg;
    int64_t deadline;
    char *cmd; /* formatted command, kept for a NOSCRIPT retry */
    size_t cmdlen;
    int script; /* -1 when not a script call */
    bool retried;
    int64_t extra_ms; /* on top of command_timeout: a WAIT may block for ack_timeout */
    /* Under ack_replicas. A state-changing script: the WAIT that covers it (its place in
     * that WAIT's members at slot) and its reply, copied, kept until that WAIT answers.
     * A WAIT: the scripts sent before it that it covers (NULL where one stopped waiting). */
    struct pending *wait;
    int slot;
    struct pending **members;
    int n_members;
    redisReply *held;
    bool unconfirmed; /* its WAIT could not be queued: never acknowledged */
};

/* One Redis connection. "main" runs scripts and commands with a deadline each; "reader"
 * only runs blocking stream reads (XREAD BLOCK) for event fan-out, which would stall
 * every command queued behind them on a shared connection. */
struct conn {
    const char *name;
    bool load_scripts;
    enum store_state state;
    const char *why; /* reason for not READY */
    redisAsyncContext *ac;
    struct pending *head, *tail; /* outstanding commands, in send order */
    struct event *retry_ev;
    int attempts;
    const char *drop_reason;
    int scripts_to_load;
    int64_t extra_deadline_ms; /* reader: the BLOCK time on top of command_timeout */
    /* ack_replicas: the WAIT that will cover the scripts sent in this loop iteration, sent
     * behind them by wait_ev before the loop waits again */
    struct pending *batch;
    struct event *wait_ev;
    bool wait_in_flight; /* a WAIT was sent and has not answered: the next one waits for it */
    char host[256]; /* where this connection goes: from the url, or from the sentinels */
    int port;
    bool resolving; /* an evdns lookup of host is under way */
    /* Sentinel mode: the query for the primary under way, on which sentinel, its deadline */
    redisAsyncContext *sac;
    int sentinel_next, sentinel_tries, sentinel_asked;
    struct event *sentinel_ev;
};

static struct conn main_conn = {.name = "redis", .load_scripts = true};
static struct conn reader_conn = {.name = "redis reader"};

static struct {
    struct event_base *base;
    struct evdns_base *dns;
    const struct config *cfg;
    char *url;
    struct event *tick_ev;
    char key_base[128];
    char sha[SCRIPT__COUNT][41];
    /* parsed url */
    bool is_unix;
    char host[256];
    int port;
    int db;
    struct store_stats stats;
    bool closing;
    int prepare_script;
    char **(*prepare_argfn)(void);
    /* [redis] sentinels, parsed */
    struct {
        char host[256];
        int port;
    } sentinel[CONFIG_MAX_SENTINELS];
    int n_sentinels;
    /* the +switch-master subscription on one sentinel */
    redisAsyncContext *sub;
    int sub_next;
    struct event *sub_retry_ev;
    /* after a WAIT came back short, writes fail fast until then (monotonic ms) */
    int64_t replicas_short_until;
    char *fatal; /* a layout this omniccd cannot read: no reconnect, main exits */
} st = {.prepare_script = -1};

/* Scripts that change nothing need no WAIT. */
static const bool script_read_only[SCRIPT__COUNT] = {
    [SCRIPT_GET_INTERACTION] = true, [SCRIPT_GET_CASE] = true,    [SCRIPT_GET_CUSTOMER] = true,
    [SCRIPT_AGENT_READ] = true,      [SCRIPT_QUEUE_STATS] = true, [SCRIPT_REPORT] = true,
    [SCRIPT_EXPORT_READ] = true,
};

/* migrations[n] takes layout n to n + 1 (daemon/scripts/migrate_<n+1>.lua). */
static const enum store_script migrations[STORE_SCHEMA_VERSION] = {SCRIPT_MIGRATE_1,
                                                                   SCRIPT_MIGRATE_2};

void store_set_prepare_script(enum store_script s, char **(*argfn)(void))
{
    st.prepare_script = (int)s;
    st.prepare_argfn = argfn;
}

static void conn_connect(struct conn *c);

static void set_state(struct conn *c, enum store_state s, const char *why)
{
    if (c->state != s)
        log_debug("%s: state %d -> %d (%s)", c->name, c->state, s, why ? why : "");
    c->state = s;
    c->why = why;
}

const char *store_key_base(void)
{
    return st.key_base;
}

bool store_ready(void)
{
    return main_conn.state == STORE_READY;
}

const char *store_fatal(void)
{
    return st.fatal;
}

const char *store_status(void)
{
    if (st.fatal)
        return st.fatal;
    if (main_conn.state == STORE_READY) /* state changes refused for a moment: say why */
        return monotonic_ms() < st.replicas_short_until
                   ? "NOREPLICAS too few replicas confirmed the last writes"
                   : "ok";
    return main_conn.why ? main_conn.why : "connecting";
}

bool store_error_is_transient(const char *err)
{
    static const char *const prefixes[] = {"unavailable", "timeout", "shutting down", "LOADING",
                                           "BUSY", "READONLY", "NOREPLICAS", "MASTERDOWN",
                                           "TRYAGAIN", "CLUSTERDOWN", "OOM"};
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
        if (strncmp(err, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

const struct store_stats *store_get_stats(void)
{
    return &st.stats;
}

static struct conn *conn_of(const redisAsyncContext *ac)
{
    return ac->data;
}

static void pending_unlink(struct conn *c, struct pending *p)
{
    struct pending **pp = &c->head, *prev = NULL;
    while (*pp && *pp != p) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = p->next;
    if (c->tail == p)
        c->tail = prev;
}

static void pending_free(struct pending *p)
{
    if (p->held)
        freeReplyObject(p->held);
    free(p->members);
    free(p->cmd);
    free(p);
}

/* A deep copy of a reply: hiredis frees its own as soon as the callback returns, and a
 * script's reply must outlive it until the WAIT behind it answers. Allocated with malloc
 * like hiredis's own objects, so freeReplyObject() frees it. */
static redisReply *reply_copy(const redisReply *r)
{
    redisReply *c = xcalloc(1, sizeof(*c));
    c->type = r->type;
    c->integer = r->integer;
    if (r->str) {
        c->str = xmalloc(r->len + 1);
        memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
        c->len = r->len;
    }
    if (r->element && r->elements) {
        c->element = xcalloc(r->elements, sizeof(*c->element));
        c->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++)
            c->element[i] = r->element[i] ? reply_copy(r->element[i]) : NULL;
    }
    return c;
}

/* Redis answers in order: when one reply came, the next command's wait starts now. A long
 * pipeline that Redis keeps answering is progress, not a hang. */
static void head_progressed(struct conn *c)
{
    if (!c->head)
        return;
    int64_t next = monotonic_ms() + st.cfg->redis_command_timeout + c->extra_deadline_ms +
                   c->head->extra_ms;
    if (c->head->deadline < next)
        c->head->deadline = next;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);
static void on_wait(redisAsyncContext *ac, void *r, void *privdata);

static int pending_send(struct conn *c, struct pending *p, redisCallbackFn *fn)
{
    p->deadline = monotonic_ms() + st.cfg->redis_command_timeout + c->extra_deadline_ms +
                  p->extra_ms;
    if (redisAsyncFormattedCommand(c->ac, fn, p, p->cmd, p->cmdlen) != REDIS_OK)
        return -1;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    st.stats.round_trips++;
    return 0;
}

/* The script p is covered by the next WAIT. WAIT holds the connection until the replicas
 * answer, and each WAIT is a round trip to them: one per script would serialise every write
 * on it. So the scripts sent while no WAIT is out share one, sent behind them before the
 * loop waits again (wait_ev); those sent while a WAIT is out (Redis runs them once it
 * returns) share the next one, sent when it answers. Under load the batches grow and the
 * replica round trips stay one at a time, instead of one per pass of the loop queued
 * behind each other. */
static void wait_join(struct conn *c, struct pending *p)
{
    struct pending *w = c->batch;
    if (!w) {
        w = c->batch = xcalloc(1, sizeof(*w));
        w->script = -1;
        w->extra_ms = st.cfg->redis_ack_timeout;
        if (!c->wait_in_flight)
            event_active(c->wait_ev, EV_TIMEOUT, 0);
    }
    if (w->n_members % 64 == 0)
        w->members = xrealloc(w->members, (size_t)(w->n_members + 64) * sizeof(*w->members));
    p->wait = w;
    p->slot = w->n_members;
    w->members[w->n_members++] = p;
}

/* wait_ev: WAIT ack_replicas ack_timeout behind the batch of scripts. */
static void on_wait_flush(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct pending *w = c->batch;
    c->batch = NULL;
    if (!w)
        return;
    char n[16], t[16];
    snprintf(n, sizeof(n), "%d", st.cfg->redis_ack_replicas);
    snprintf(t, sizeof(t), "%d", st.cfg->redis_ack_timeout);
    const char *av[3] = {"WAIT", n, t};
    long long len = redisFormatCommandArgv(&w->cmd, 3, av, NULL);
    w->cmdlen = len > 0 ? (size_t)len : 0;
    if (len >= 0 && c->ac && pending_send(c, w, on_wait) == 0) {
        c->wait_in_flight = true;
    } else {
        /* the connection is going away: its scripts answer "unavailable", and any that
         * would still succeed is never acknowledged without the replicas' word */
        for (int i = 0; i < w->n_members; i++)
            if (w->members[i]) {
                w->members[i]->wait = NULL;
                w->members[i]->unconfirmed = true;
            }
        pending_free(w);
    }
}

/* The script p no longer waits for its WAIT (failed, or resent after NOSCRIPT). */
static void wait_detach(struct pending *p)
{
    if (p->wait) {
        p->wait->members[p->slot] = NULL;
        p->wait = NULL;
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct pending *p = privdata;
    struct conn *c = conn_of(ac);
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR && p->script >= 0 && !p->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && c->ac && c->state == STORE_READY) {
        /* Redis lost its script cache (restart, SCRIPT FLUSH, a failover to a replica that
         * never loaded it): load and resend, in order; a new WAIT follows the resent call. */
        p->retried = true;
        log_warn("redis: NOSCRIPT for %s, reloading", script_names[p->script]);
        redisAsyncCommand(c->ac, NULL, NULL, "SCRIPT LOAD %s", script_sources[p->script]);
        if (redisAsyncFormattedCommand(c->ac, on_reply, p, p->cmd, p->cmdlen) == REDIS_OK) {
            st.stats.round_trips += 2;
            if (p->wait || p->unconfirmed) {
                wait_detach(p);
                p->unconfirmed = false;
                wait_join(c, p);
            }
            return;
        }
    }
    pending_unlink(c, p);
    head_progressed(c);
    if (p->wait && reply && reply->type != REDIS_REPLY_ERROR) {
        /* the state changed on the primary: acknowledged once the replicas have it too */
        p->held = reply_copy(reply);
        return;
    }
    wait_detach(p);
    if (!reply) {
        st.stats.errors++;
        p->cb(NULL, c->drop_reason ? c->drop_reason : "unavailable", p->arg);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        st.stats.errors++;
        p->cb(reply, reply->str, p->arg);
        if (st.n_sentinels && strncmp(reply->str, "READONLY", 8) == 0 && c->ac == ac) {
            /* a demoted primary: ask the sentinels again (safe inside a callback) */
            log_warn("%s: %s:%d is read-only now, asking the sentinels for the primary",
                     c->name, c->host, c->port);
            redisAsyncDisconnect(ac);
        }
    } else if (p->unconfirmed) {
        p->cb(NULL, "unavailable: replication not confirmed", p->arg);
    } else {
        p->cb(reply, NULL, p->arg);
    }
    pending_free(p);
}

/* The WAIT behind a batch of state-changing scripts: their replies go to their callers only
 * when enough replicas acknowledged. */
static void on_wait(redisAsyncContext *ac, void *r, void *privdata)
{
    struct pending *w = privdata;
    struct conn *c = conn_of(ac);
    redisReply *reply = r;
    pending_unlink(c, w);
    head_progressed(c);
    c->wait_in_flight = false;
    if (c->batch) /* the scripts sent meanwhile: their WAIT now */
        event_active(c->wait_ev, EV_TIMEOUT, 0);
    bool enough = reply && reply->type == REDIS_REPLY_INTEGER &&
                  reply->integer >= st.cfg->redis_ack_replicas;
    if (reply && !enough) {
        /* written on the primary only: not acknowledged. New writes fail fast for a while
         * rather than each batch holding the connection for ack_timeout. */
        st.replicas_short_until = monotonic_ms() + st.cfg->redis_ack_timeout;
        log_warn("redis: %lld of %d replicas confirmed a write within %d ms: answering 503",
                 reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL,
                 st.cfg->redis_ack_replicas, st.cfg->redis_ack_timeout);
    }
    for (int i = 0; i < w->n_members; i++) {
        struct pending *p = w->members[i];
        if (!p)
            continue;
        p->wait = NULL;
        if (enough && p->held) {
            p->cb(p->held, NULL, p->arg);
        } else if (reply && p->held) {
            st.stats.errors++;
            st.stats.replica_shortfalls++;
            p->cb(NULL, "NOREPLICAS not enough replicas confirmed the write in time", p->arg);
        } else {
            st.stats.errors++;
            p->cb(NULL, c->drop_reason ? c->drop_reason : "unavailable", p->arg);
        }
        pending_free(p);
    }
    pending_free(w);
}

static int send_formatted(struct conn *c, char *cmd, size_t len, int script, store_cb *cb,
                          void *arg)
{
    struct pending *p = xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    p->cmd = cmd;
    p->cmdlen = len;
    p->script = script;
    if (pending_send(c, p, on_reply) < 0) {
        pending_free(p);
        return -1;
    }
    if (script >= 0 && !script_read_only[script] && st.cfg->redis_ack_replicas > 0 &&
        c->state == STORE_READY)
        wait_join(c, p);
    return 0;
}

static int send_argv(struct conn *c, int argc, const char **argv, const size_t *argvlen,
                     int script, store_cb *cb, void *arg)
{
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return -1;
    return send_formatted(c, cmd, (size_t)len, script, cb, arg); /* frees cmd on failure */
}

int store_command(int argc, const char **argv, const size_t *argvlen, store_cb *cb, void *arg)
{
    if (main_conn.state != STORE_READY || !main_conn.ac)
        return -1;
    return send_argv(&main_conn, argc, argv, argvlen, -1, cb, arg);
}

int store_script(enum store_script s, int argc, const char **argv, const size_t *argvlen,
                 store_cb *cb, void *arg)
{
    if (main_conn.state != STORE_READY || !main_conn.ac)
        return -1;
    if (!script_read_only[s] && st.cfg->redis_ack_replicas > 0 &&
        monotonic_ms() < st.replicas_short_until)
        return -1; /* the replicas were just found missing: 503 at once, the caller retries */
    enum { MAX_ARGS = 64 };
    const char *av[MAX_ARGS + 4];
    size_t al[MAX_ARGS + 4];
    if (argc > MAX_ARGS)
        return -1;
    av[0] = "EVALSHA";
    av[1] = st.sha[s];
    av[2] = "1";
    av[3] = st.key_base;
    for (int i = 0; i < 4; i++)
        al[i] = strlen(av[i]);
    for (int i = 0; i < argc; i++) {
        av[4 + i] = argv[i];
        al[4 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    return send_argv(&main_conn, argc + 4, av, al, (int)s, cb, arg);
}

bool store_reader_ready(void)
{
    return reader_conn.state == STORE_READY;
}

int store_stream_read(const char *stream_suffix, const char *last_id, int block_ms, int count,
                      store_cb *cb, void *arg)
{
    if (reader_conn.state != STORE_READY || !reader_conn.ac)
        return -1;
    char key[256], blk[16], cnt[16];
    snprintf(key, sizeof(key), "%s%s", st.key_base, stream_suffix);
    snprintf(blk, sizeof(blk), "%d", block_ms);
    snprintf(cnt, sizeof(cnt), "%d", count);
    const char *av[] = {"XREAD", "COUNT", cnt, "BLOCK", blk, "STREAMS", key, last_id};
    reader_conn.extra_deadline_ms = block_ms;
    return send_argv(&reader_conn, 8, av, NULL, -1, cb, arg);
}

/* ---- connection life cycle ---- */

/* For logs: the url, or in Sentinel mode the primary the sentinels named. */
static const char *conn_where(const struct conn *c)
{
    static char buf[300];
    if (!st.n_sentinels)
        return st.url;
    snprintf(buf, sizeof(buf), "%s:%d", c->host, c->port);
    return buf;
}

static void schedule_reconnect(struct conn *c)
{
    if (st.closing || st.fatal)
        return;
    int64_t delay = 100LL << (c->attempts < 6 ? c->attempts : 6); /* 100 ms .. 6.4 s */
    if (delay > 5000)
        delay = 5000;
    delay = delay / 2 + (random() % (delay / 2 + 1)); /* jitter: many daemons, one Redis */
    c->attempts++;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    evtimer_add(c->retry_ev, &tv);
}

static void conn_drop(struct conn *c, const char *reason)
{
    if (!c->ac)
        return;
    c->drop_reason = reason;
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac); /* fires every pending callback with NULL, then on_disconnect */
    if (c->ac == ac) {
        /* on_disconnect only runs for contexts that finished connecting */
        c->ac = NULL;
        c->head = c->tail = NULL;
        c->drop_reason = NULL;
        set_state(c, STORE_DISCONNECTED, "redis unreachable");
        st.stats.reconnects++;
        schedule_reconnect(c);
    }
}

static void prepared_step(struct conn *c)
{
    if (--c->scripts_to_load == 0) {
        c->attempts = 0;
        set_state(c, STORE_READY, NULL);
        if (st.n_sentinels)
            log_info("%s: ready (primary %s of %s)", c->name, conn_where(c),
                     st.cfg->redis_master_name);
        else
            log_info("%s: ready (%s)", c->name, st.url);
    }
}

static void on_prepared(const redisReply *reply, const char *err, void *arg)
{
    intptr_t which = (intptr_t)arg;
    struct conn *c = which == -2 ? &reader_conn : &main_conn;
    if (err) {
        log_error("%s: preparing connection failed (%s): %s", c->name,
                  which < 0 ? "auth/select" : script_names[which], err);
        set_state(c, STORE_PREPARING, "redis setup failed");
        if (c->ac)
            redisAsyncDisconnect(c->ac); /* safe inside a callback; reconnects with backoff */
        return;
    }
    if (which >= 0 && (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, st.sha[which]) != 0))
        log_error("redis: script %s loaded with an unexpected sha", script_names[which]);
    prepared_step(c);
}

/* Sentinel mode: the address the sentinels gave must be the primary now (a sentinel may
 * still name the old one for a moment during a failover). */
static void on_role(const redisReply *reply, const char *err, void *arg)
{
    struct conn *c = arg;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "master") != 0) {
        if (!err) /* when err, on_prepared reports the failure */
            log_warn("%s: %s:%d is not the primary (ROLE %s), asking the sentinels again",
                     c->name, c->host, c->port,
                     reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                             reply->element[0]->type == REDIS_REPLY_STRING
                         ? reply->element[0]->str
                         : "?");
        set_state(c, STORE_PREPARING, "no writable primary");
        if (c->ac)
            redisAsyncDisconnect(c->ac);
        return;
    }
    prepared_step(c);
}

/* The prepare script (routing configuration) and the PING whose reply makes c READY. */
static void prepare_finish(struct conn *c)
{
    intptr_t tag = c == &reader_conn ? -2 : -1;
    if (c->load_scripts && st.prepare_script >= 0) {
        char **args = st.prepare_argfn();
        for (char **arg = args; *arg; arg++) {
            const char *av[5] = {"EVALSHA", st.sha[st.prepare_script], "1", st.key_base, *arg};
            c->scripts_to_load++;
            send_argv(c, 5, av, NULL, -1, on_prepared, (void *)tag);
            free(*arg);
        }
        free(args);
    }
    const char *ping[1] = {"PING"};
    send_argv(c, 1, ping, NULL, -1, on_prepared, (void *)tag);
}

/* ---- the data layout version (daemon/scripts/schema.lua, docs/OPERATIONS.md) ---- */

static void on_schema(const redisReply *reply, const char *err, void *arg);

static void send_schema_check(struct conn *c)
{
    char want[16], compat[16];
    snprintf(want, sizeof(want), "%d", STORE_SCHEMA_VERSION);
    snprintf(compat, sizeof(compat), "%d", STORE_SCHEMA_COMPAT);
    const char *av[6] = {"EVALSHA", st.sha[SCRIPT_SCHEMA], "1", st.key_base, want, compat};
    send_argv(c, 6, av, NULL, -1, on_schema, c);
}

static void schema_failed(struct conn *c, const char *what, const char *err)
{
    log_error("%s: data layout %s failed: %s", c->name, what, err);
    set_state(c, STORE_PREPARING, "redis setup failed");
    if (c->ac)
        redisAsyncDisconnect(c->ac); /* safe inside a callback; reconnects with backoff */
}

static void on_migrated(const redisReply *reply, const char *err, void *arg)
{
    struct conn *c = arg;
    if (!reply)
        return; /* connection gone: the next connect checks again */
    if (err) {
        schema_failed(c, "migration", err);
        return;
    }
    log_info("%s: data layout migrated to version %lld", c->name,
             reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL);
    send_schema_check(c);
}

static void on_schema(const redisReply *reply, const char *err, void *arg)
{
    struct conn *c = arg;
    if (!reply)
        return;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_INTEGER) {
        schema_failed(c, "check", err ? err : "unexpected reply");
        return;
    }
    const char *status = reply->element[0]->str;
    long long version = reply->element[1]->integer;
    if (strcmp(status, "migrate") == 0 && version >= 0 && version < STORE_SCHEMA_VERSION) {
        log_info("%s: data layout version %lld, migrating to %lld", c->name, version, version + 1);
        char want[16];
        snprintf(want, sizeof(want), "%d", STORE_SCHEMA_VERSION);
        const char *av[5] = {"EVALSHA", st.sha[migrations[version]], "1", st.key_base, want};
        send_argv(c, 5, av, NULL, -1, on_migrated, c);
    } else if (strcmp(status, "ok") == 0) {
        if (version > STORE_SCHEMA_VERSION)
            log_warn("%s: data layout version %lld, written by a newer omniccd that keeps it "
                     "readable by this one (version %d): upgrade this one too",
                     c->name, version, STORE_SCHEMA_VERSION);
        else
            log_info("%s: data layout version %lld", c->name, version);
        prepare_finish(c);
    } else if (strcmp(status, "newer") == 0) {
        free(st.fatal);
        st.fatal = xasprintf("Redis layout is version %lld, this omniccd supports up to %d: "
                             "upgrade omniccd",
                             version, STORE_SCHEMA_VERSION);
        log_error("%s: %s", c->name, st.fatal);
        set_state(c, STORE_PREPARING, st.fatal);
        if (c->ac)
            redisAsyncDisconnect(c->ac); /* and no reconnect: schedule_reconnect checks fatal */
    } else {
        schema_failed(c, "check", status);
    }
}

static void prepare_connection(struct conn *c)
{
    intptr_t tag = c == &reader_conn ? -2 : -1;
    set_state(c, STORE_PREPARING, "loading scripts");
    c->scripts_to_load = 1; /* the final PING (prepare_finish) */
    if (st.cfg->redis_password) {
        const char *av[3];
        int ac = 0;
        av[ac++] = "AUTH";
        if (st.cfg->redis_user)
            av[ac++] = st.cfg->redis_user;
        av[ac++] = st.cfg->redis_password;
        c->scripts_to_load++;
        send_argv(c, ac, av, NULL, -1, on_prepared, (void *)tag);
    }
    if (st.n_sentinels) {
        const char *av[1] = {"ROLE"};
        c->scripts_to_load++;
        send_argv(c, 1, av, NULL, -1, on_role, c);
    }
    if (st.db > 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", st.db);
        const char *av[2] = {"SELECT", db};
        c->scripts_to_load++;
        send_argv(c, 2, av, NULL, -1, on_prepared, (void *)tag);
    }
    if (c->load_scripts) {
        for (int i = 0; i < SCRIPT__COUNT; i++) {
            const char *av[3] = {"SCRIPT", "LOAD", script_sources[i]};
            c->scripts_to_load++;
            send_argv(c, 3, av, NULL, -1, on_prepared, (void *)(intptr_t)i);
        }
        send_schema_check(c); /* prepare_finish() once the layout is known to be ours */
        return;
    }
    prepare_finish(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct conn *c = conn_of(ac);
    if (status != REDIS_OK) {
        log_warn("%s: connect to %s failed: %s", c->name, conn_where(c), ac->errstr);
        c->ac = NULL; /* hiredis frees the context after this callback */
        set_state(c, STORE_DISCONNECTED, "redis unreachable");
        schedule_reconnect(c);
        return;
    }
    log_debug("%s: connected to %s", c->name, conn_where(c));
    prepare_connection(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = conn_of(ac);
    if (status != REDIS_OK)
        log_warn("%s: connection lost: %s", c->name, ac->errstr);
    c->ac = NULL;
    c->head = c->tail = NULL; /* every pending callback has fired with NULL */
    c->wait_in_flight = false;
    c->drop_reason = NULL;
    set_state(c, STORE_DISCONNECTED, "redis unreachable");
    st.stats.reconnects++;
    schedule_reconnect(c);
}

static void attach(struct conn *c, redisAsyncContext *ac)
{
    if (!ac || ac->err) {
        log_warn("%s: cannot connect to %s: %s", c->name, conn_where(c),
                 ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        set_state(c, STORE_DISCONNECTED, "redis unreachable");
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    ac->data = c;
    redisLibeventAttach(ac, st.base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

/* "a.b.c.d" of the first address, or "" */
static void addrinfo_ip(const struct evutil_addrinfo *res, char *ip, size_t n)
{
    ip[0] = '\0';
    if (res->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, (socklen_t)n);
    else if (res->ai_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip, (socklen_t)n);
}

static bool is_ip(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct conn *c = arg;
    c->resolving = false;
    if (result != 0 || !res) {
        log_warn("%s: cannot resolve %s: %s", c->name, c->host, evutil_gai_strerror(result));
        set_state(c, STORE_DISCONNECTED, "redis host unresolved");
        schedule_reconnect(c);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    addrinfo_ip(res, ip, sizeof(ip));
    evutil_freeaddrinfo(res);
    if (st.closing)
        return;
    attach(c, redisAsyncConnect(ip, c->port));
}

/* Connect to c->host:c->port (or the unix socket of the url). */
static void conn_connect_addr(struct conn *c)
{
    if (st.is_unix) {
        attach(c, redisAsyncConnectUnix(st.host));
        return;
    }
    if (is_ip(c->host)) {
        attach(c, redisAsyncConnect(c->host, c->port));
        return;
    }
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->resolving = true;
    evdns_getaddrinfo(st.dns, c->host, NULL, &hints, on_resolved, c);
}

/* ---- Sentinel: which server is the primary ---- */

static void sentinel_ask(struct conn *c);

/* [redis] sentinel_password_file: AUTH first on every sentinel connection; a refusal is
 * logged here, and the command after it fails with NOAUTH (the next sentinel is asked). */
static void on_sentinel_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    int i = (int)(intptr_t)privdata;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_error("redis: sentinel %s:%d refused AUTH: %s", st.sentinel[i].host,
                  st.sentinel[i].port, reply->str);
}

static void sentinel_auth(redisAsyncContext *ac, int i, redisCallbackFn *done)
{
    const char *user = st.cfg->redis_sentinel_user, *pass = st.cfg->redis_sentinel_password;
    if (user)
        redisAsyncCommand(ac, done, (void *)(intptr_t)i, "AUTH %s %s", user, pass);
    else
        redisAsyncCommand(ac, done, (void *)(intptr_t)i, "AUTH %s", pass);
}

static void on_master_addr(redisAsyncContext *ac, void *r, void *privdata)
{
    struct conn *c = privdata;
    redisReply *reply = r;
    if (c->sac != ac)
        return; /* a query given up on (deadline, shutdown) */
    c->sac = NULL;
    evtimer_del(c->sentinel_ev);
    int i = c->sentinel_asked;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING && reply->element[0]->len > 0 &&
        reply->element[0]->len < sizeof(c->host) && atoi(reply->element[1]->str) > 0 &&
        atoi(reply->element[1]->str) <= 65535) {
        int port = atoi(reply->element[1]->str);
        if (strcmp(c->host, reply->element[0]->str) != 0 || c->port != port) {
            if (c->host[0] && c == &main_conn) /* the reader follows the same move */
                st.stats.failovers++;
            log_info("%s: sentinel %s:%d names %s:%d the primary of %s", c->name,
                     st.sentinel[i].host, st.sentinel[i].port, reply->element[0]->str, port,
                     st.cfg->redis_master_name);
        }
        snprintf(c->host, sizeof(c->host), "%s", reply->element[0]->str);
        c->port = port;
        redisAsyncDisconnect(ac);
        conn_connect_addr(c);
        return;
    }
    log_warn("%s: sentinel %s:%d: %s", c->name, st.sentinel[i].host, st.sentinel[i].port,
             !reply                             ? (ac->errstr[0] ? ac->errstr : "unreachable")
             : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                : "knows no primary of that name");
    if (reply)
        redisAsyncDisconnect(ac);
    sentinel_ask(c);
}

static void sentinel_query(struct conn *c, const char *ip)
{
    int i = c->sentinel_asked;
    redisAsyncContext *ac = redisAsyncConnect(ip, st.sentinel[i].port);
    if (!ac || ac->err) {
        log_warn("%s: sentinel %s:%d: %s", c->name, st.sentinel[i].host, st.sentinel[i].port,
                 ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        sentinel_ask(c);
        return;
    }
    c->sac = ac;
    ac->data = c;
    redisLibeventAttach(ac, st.base);
    if (st.cfg->redis_sentinel_password)
        sentinel_auth(ac, i, on_sentinel_auth);
    redisAsyncCommand(ac, on_master_addr, c, "SENTINEL get-master-addr-by-name %s",
                      st.cfg->redis_master_name);
    int64_t ms = st.cfg->redis_command_timeout;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->sentinel_ev, &tv);
}

static void on_sentinel_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct conn *c = arg;
    c->resolving = false;
    if (st.closing) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    if (result != 0 || !res) {
        log_warn("%s: cannot resolve sentinel %s: %s", c->name,
                 st.sentinel[c->sentinel_asked].host, evutil_gai_strerror(result));
        sentinel_ask(c);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    addrinfo_ip(res, ip, sizeof(ip));
    evutil_freeaddrinfo(res);
    sentinel_query(c, ip);
}

/* Ask the next sentinel; after each has been asked once in this round, back off. */
static void sentinel_ask(struct conn *c)
{
    if (st.closing)
        return;
    if (c->sentinel_tries >= st.n_sentinels) {
        set_state(c, STORE_DISCONNECTED, "no sentinel names a primary");
        schedule_reconnect(c);
        return;
    }
    c->sentinel_tries++;
    int i = c->sentinel_asked = c->sentinel_next++ % st.n_sentinels;
    if (is_ip(st.sentinel[i].host)) {
        sentinel_query(c, st.sentinel[i].host);
        return;
    }
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->resolving = true;
    evdns_getaddrinfo(st.dns, st.sentinel[i].host, NULL, &hints, on_sentinel_resolved, c);
}

static void on_sentinel_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    redisAsyncContext *ac = c->sac;
    c->sac = NULL;
    log_warn("%s: sentinel %s:%d did not answer in time", c->name,
             st.sentinel[c->sentinel_asked].host, st.sentinel[c->sentinel_asked].port);
    if (ac)
        redisAsyncFree(ac); /* its callback sees a query given up on */
    sentinel_ask(c);
}

static void conn_connect(struct conn *c)
{
    if (st.closing || c->resolving || c->sac || c->ac)
        return;
    if (st.n_sentinels) {
        set_state(c, STORE_CONNECTING, "asking the sentinels for the primary");
        c->sentinel_tries = 0;
        sentinel_ask(c);
        return;
    }
    set_state(c, STORE_CONNECTING, "connecting to redis");
    conn_connect_addr(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    conn_connect(arg);
}

/* A sentinel announced a new primary: a connection elsewhere leaves it now (its commands in
 * flight answer 503; retries are harmless) and asks the sentinels at once. */
static void conn_follow(struct conn *c, const char *ip, int port)
{
    if (c->ac && strcmp(c->host, ip) == 0 && c->port == port)
        return; /* already there */
    c->attempts = 0; /* should the question under way get a stale answer, ask again soon */
    if (c->sac || c->resolving)
        return; /* asking right now */
    conn_drop(c, "unavailable: failover");
    evtimer_del(c->retry_ev);
    c->attempts = 0;
    conn_connect(c);
}

static void sub_connect(void);

static void sub_retry_later(void)
{
    if (st.closing)
        return;
    struct timeval tv = {1, 0};
    evtimer_add(st.sub_retry_ev, &tv);
}

static void on_switch_master(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return; /* the subscribe confirmation, or the connection going away */
    /* "<name> <old ip> <old port> <new ip> <new port>" */
    char name[129], old_ip[256], new_ip[256];
    int old_port, new_port;
    if (sscanf(reply->element[2]->str, "%128s %255s %d %255s %d", name, old_ip, &old_port,
               new_ip, &new_port) != 5 ||
        strcmp(name, st.cfg->redis_master_name) != 0)
        return;
    log_warn("redis: failover of %s: %s:%d -> %s:%d (+switch-master)", name, old_ip, old_port,
             new_ip, new_port);
    conn_follow(&main_conn, new_ip, new_port);
    conn_follow(&reader_conn, new_ip, new_port);
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        log_debug("redis: sentinel subscription: %s", ac->errstr);
        st.sub = NULL;
        sub_retry_later();
    }
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    if (st.sub == ac)
        st.sub = NULL;
    if (!st.closing)
        log_warn("redis: sentinel subscription lost, moving to the next sentinel");
    sub_retry_later();
}

/* The subscription waits for AUTH's answer: a refused one drops the connection (the next
 * sentinel is tried in a second) instead of leaving a subscription that never came. */
static void on_sub_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    if (!reply || ac != st.sub)
        return; /* the connection is going away */
    if (reply->type == REDIS_REPLY_ERROR) {
        on_sentinel_auth(ac, r, privdata);
        redisAsyncDisconnect(ac);
        return;
    }
    redisAsyncCommand(ac, on_switch_master, NULL, "SUBSCRIBE +switch-master");
}

static void on_sub_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    if (st.closing || result != 0 || !res) {
        if (res)
            evutil_freeaddrinfo(res);
        sub_retry_later();
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    addrinfo_ip(res, ip, sizeof(ip));
    evutil_freeaddrinfo(res);
    int i = (int)(intptr_t)arg;
    redisAsyncContext *ac = redisAsyncConnect(ip, st.sentinel[i].port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        sub_retry_later();
        return;
    }
    st.sub = ac;
    redisLibeventAttach(ac, st.base);
    redisAsyncSetConnectCallback(ac, on_sub_connect);
    redisAsyncSetDisconnectCallback(ac, on_sub_disconnect);
    if (st.cfg->redis_sentinel_password)
        sentinel_auth(ac, i, on_sub_auth);
    else
        redisAsyncCommand(ac, on_switch_master, NULL, "SUBSCRIBE +switch-master");
}

/* Subscribe to +switch-master on one sentinel (the next one after a loss). */
static void sub_connect(void)
{
    if (st.closing || st.sub || !st.n_sentinels)
        return;
    int i = st.sub_next++ % st.n_sentinels;
    /* evdns answers numeric addresses at once, from inside this call */
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    evdns_getaddrinfo(st.dns, st.sentinel[i].host, NULL, &hints, on_sub_resolved,
                      (void *)(intptr_t)i);
}

static void on_sub_retry(evutil_socket_t fd, short what, void *arg)
{
    sub_connect();
}

/* The deadline check: replies come back in send order, so the head is the oldest. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct conn *conns[] = {&main_conn, &reader_conn};
    for (size_t i = 0; i < ARRAY_SIZE(conns); i++) {
        struct conn *c = conns[i];
        if (c->ac && c->head && monotonic_ms() > c->head->deadline) {
            log_warn("%s: no reply in time, reconnecting", c->name);
            st.stats.timeouts++;
            conn_drop(c, "timeout");
        }
    }
}

/* "redis://host[:port][/db]" (libevent's URI parser; an IPv6 host in brackets) or
 * "unix:///absolute/path". Credentials in the URL are ignored: they belong in
 * password_file. */
static int parse_url(const char *url, char **err)
{
    st.db = 0;
    st.is_unix = strncmp(url, "unix://", 7) == 0;
    if (st.is_unix) { /* a socket path, any characters: not parsed as a URI */
        if (url[7] != '/' || strlen(url + 7) >= sizeof(st.host)) {
            *err = xasprintf("unix:// url needs an absolute path");
            return -1;
        }
        snprintf(st.host, sizeof(st.host), "%s", url + 7);
        return 0;
    }
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    if (!scheme || strcmp(scheme, "redis") != 0) {
        *err = xasprintf(u ? "redis url must start with redis:// or unix://"
                           : "bad redis url (redis://host[:port][/db 0-15])");
        if (u)
            evhttp_uri_free(u);
        return -1;
    }
    const char *host = evhttp_uri_get_host(u), *path = evhttp_uri_get_path(u);
    size_t hl = host ? strlen(host) : 0;
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') { /* IPv6 literal */
        host++;
        hl -= 2;
    }
    int port = evhttp_uri_get_port(u);
    st.port = port < 0 ? 6379 : port;
    char *end = NULL;
    long db = path && path[0] == '/' && path[1] ? strtol(path + 1, &end, 10) : 0;
    bool ok = hl > 0 && hl < sizeof(st.host) && st.port > 0 && st.port <= 65535 &&
              (!end || *end == '\0') && db >= 0 && db <= 15 && !evhttp_uri_get_query(u);
    if (ok) {
        snprintf(st.host, sizeof(st.host), "%.*s", (int)hl, host);
        st.db = (int)db;
    } else {
        *err = xasprintf("bad redis url (redis://host[:port][/db 0-15])");
    }
    evhttp_uri_free(u);
    return ok ? 0 : -1;
}

int store_init(struct event_base *base, const struct config *cfg, const char *url, char **err)
{
    st.base = base;
    st.cfg = cfg;
    st.closing = false;
    st.url = xstrdup(url);
    st.n_sentinels = 0;
    if (cfg->redis_sentinels) {
        char *copy = xstrdup(cfg->redis_sentinels), *save = NULL;
        for (char *t = strtok_r(copy, " \t,", &save); t && st.n_sentinels < CONFIG_MAX_SENTINELS;
             t = strtok_r(NULL, " \t,", &save)) {
            int n = st.n_sentinels;
            if (config_host_port(t, st.sentinel[n].host, sizeof(st.sentinel[n].host),
                                 &st.sentinel[n].port) == 0)
                st.n_sentinels++;
        }
        free(copy);
        if (!st.n_sentinels) {
            *err = xasprintf("no usable sentinel address");
            return -1;
        }
    } else if (parse_url(url, err) < 0) {
        return -1;
    }
    snprintf(st.key_base, sizeof(st.key_base), "%s:{main}:", cfg->redis_prefix);
    for (int i = 0; i < SCRIPT__COUNT; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)script_sources[i], strlen(script_sources[i]), md);
        for (int k = 0; k < SHA_DIGEST_LENGTH; k++)
            snprintf(st.sha[i] + 2 * k, 3, "%02x", md[k]);
    }
    st.dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    struct conn *conns[] = {&main_conn, &reader_conn};
    for (size_t i = 0; i < ARRAY_SIZE(conns); i++) {
        struct conn *c = conns[i];
        c->host[0] = '\0';
        if (!st.n_sentinels) {
            snprintf(c->host, sizeof(c->host), "%s", st.host);
            c->port = st.port;
        }
        c->retry_ev = evtimer_new(base, on_retry, c);
        c->sentinel_ev = evtimer_new(base, on_sentinel_deadline, c);
        c->wait_ev = event_new(base, -1, 0, on_wait_flush, c);
        conn_connect(c);
    }
    st.sub_retry_ev = evtimer_new(base, on_sub_retry, NULL);
    sub_connect();
    st.tick_ev = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tick = {0, 100 * 1000};
    evtimer_add(st.tick_ev, &tick);
    return 0;
}

void store_close(void)
{
    st.closing = true;
    struct conn *conns[] = {&main_conn, &reader_conn};
    for (size_t i = 0; i < ARRAY_SIZE(conns); i++) {
        struct conn *c = conns[i];
        if (c->ac) {
            c->drop_reason = "shutting down";
            redisAsyncContext *ac = c->ac;
            redisAsyncFree(ac);
            c->ac = NULL;
        }
        if (c->sac) {
            redisAsyncContext *ac = c->sac;
            c->sac = NULL;
            redisAsyncFree(ac);
        }
        if (c->retry_ev)
            event_free(c->retry_ev);
        if (c->sentinel_ev)
            event_free(c->sentinel_ev);
        if (c->wait_ev)
            event_free(c->wait_ev);
        c->retry_ev = c->sentinel_ev = c->wait_ev = NULL;
        if (c->batch) { /* its scripts were answered "shutting down" above */
            pending_free(c->batch);
            c->batch = NULL;
        }
        c->state = STORE_DISCONNECTED;
    }
    if (st.sub) {
        redisAsyncContext *ac = st.sub;
        st.sub = NULL;
        redisAsyncFree(ac);
    }
    if (st.sub_retry_ev)
        event_free(st.sub_retry_ev);
    st.sub_retry_ev = NULL;
    if (st.tick_ev)
        event_free(st.tick_ev);
    if (st.dns)
        evdns_base_free(st.dns, 0);
    st.tick_ev = NULL;
    st.dns = NULL;
    xfree(st.url);
    xfree(st.fatal);
}

/* A synchronous connection for one-shot command-line work run off any event loop
 * (`omniccd reports rebuild`): same url, AUTH and SELECT as the daemon's, no scripts. */
redisContext *store_connect_sync(const struct config *cfg, const char *url, char **err)
{
    st.cfg = cfg;
    if (parse_url(url, err) < 0)
        return NULL;
    struct timeval tv = {cfg->redis_command_timeout > 0 ? cfg->redis_command_timeout / 1000 + 5 : 10, 0};
    redisContext *c = st.is_unix ? redisConnectUnixWithTimeout(st.host, tv)
                                 : redisConnectWithTimeout(st.host, st.port, tv);
    if (!c || c->err) {
        *err = xasprintf("Redis %s: %s", url, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisReply *r = NULL;
    if (cfg->redis_password)
        r = cfg->redis_user ? redisCommand(c, "AUTH %s %s", cfg->redis_user, cfg->redis_password)
                            : redisCommand(c, "AUTH %s", cfg->redis_password);
    if (r && r->type != REDIS_REPLY_ERROR && st.db > 0) {
        freeReplyObject(r);
        r = redisCommand(c, "SELECT %d", st.db);
    }
    if (cfg->redis_password || st.db > 0) {
        if (!r || r->type == REDIS_REPLY_ERROR) {
            *err = xasprintf("Redis %s: %s", url, r ? r->str : c->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}
