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
 * Hostnames are resolved with evdns, never getaddrinfo() on the loop. */
#include "omnicc/store.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
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
    char *(*prepare_argfn)(void);
    char *fatal; /* a layout this omniccd cannot read: no reconnect, main exits */
} st = {.prepare_script = -1};

/* migrations[n] takes layout n to n + 1 (daemon/scripts/migrate_<n+1>.lua). */
static const enum store_script migrations[STORE_SCHEMA_VERSION] = {SCRIPT_MIGRATE_1};

void store_set_prepare_script(enum store_script s, char *(*argfn)(void))
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
    return main_conn.state == STORE_READY ? "ok" : (main_conn.why ? main_conn.why : "connecting");
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
    free(p->cmd);
    free(p);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct pending *p = privdata;
    struct conn *c = conn_of(ac);
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR && p->script >= 0 && !p->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && c->ac && c->state == STORE_READY) {
        /* Redis lost its script cache (restart, SCRIPT FLUSH): load and resend, in order. */
        p->retried = true;
        log_warn("redis: NOSCRIPT for %s, reloading", script_names[p->script]);
        redisAsyncCommand(c->ac, NULL, NULL, "SCRIPT LOAD %s", script_sources[p->script]);
        if (redisAsyncFormattedCommand(c->ac, on_reply, p, p->cmd, p->cmdlen) == REDIS_OK) {
            st.stats.round_trips += 2;
            return;
        }
    }
    pending_unlink(c, p);
    if (reply && c->head) {
        /* Redis answers in order: the next command's wait starts now. A long pipeline that
         * Redis keeps answering is progress, not a hang. */
        int64_t next = monotonic_ms() + st.cfg->redis_command_timeout + c->extra_deadline_ms;
        if (c->head->deadline < next)
            c->head->deadline = next;
    }
    if (!reply) {
        st.stats.errors++;
        p->cb(NULL, c->drop_reason ? c->drop_reason : "unavailable", p->arg);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        st.stats.errors++;
        p->cb(reply, reply->str, p->arg);
    } else {
        p->cb(reply, NULL, p->arg);
    }
    pending_free(p);
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
    p->deadline = monotonic_ms() + st.cfg->redis_command_timeout + c->extra_deadline_ms;
    if (redisAsyncFormattedCommand(c->ac, on_reply, p, cmd, len) != REDIS_OK) {
        pending_free(p);
        return -1;
    }
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    st.stats.round_trips++;
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
    if (--c->scripts_to_load == 0) {
        c->attempts = 0;
        set_state(c, STORE_READY, NULL);
        log_info("%s: ready (%s)", c->name, st.url);
    }
}

/* The prepare script (routing configuration) and the PING whose reply makes c READY. */
static void prepare_finish(struct conn *c)
{
    intptr_t tag = c == &reader_conn ? -2 : -1;
    if (c->load_scripts && st.prepare_script >= 0) {
        char *arg = st.prepare_argfn();
        const char *av[5] = {"EVALSHA", st.sha[st.prepare_script], "1", st.key_base, arg};
        c->scripts_to_load++;
        send_argv(c, 5, av, NULL, -1, on_prepared, (void *)tag);
        free(arg);
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
        log_warn("%s: connect to %s failed: %s", c->name, st.url, ac->errstr);
        c->ac = NULL; /* hiredis frees the context after this callback */
        set_state(c, STORE_DISCONNECTED, "redis unreachable");
        schedule_reconnect(c);
        return;
    }
    log_debug("%s: connected to %s", c->name, st.url);
    prepare_connection(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = conn_of(ac);
    if (status != REDIS_OK)
        log_warn("%s: connection lost: %s", c->name, ac->errstr);
    c->ac = NULL;
    c->head = c->tail = NULL; /* every pending callback has fired with NULL */
    c->drop_reason = NULL;
    set_state(c, STORE_DISCONNECTED, "redis unreachable");
    st.stats.reconnects++;
    schedule_reconnect(c);
}

static void attach(struct conn *c, redisAsyncContext *ac)
{
    if (!ac || ac->err) {
        log_warn("%s: cannot connect to %s: %s", c->name, st.url, ac ? ac->errstr : "out of memory");
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

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct conn *c = arg;
    if (result != 0 || !res) {
        log_warn("%s: cannot resolve %s: %s", c->name, st.host, evutil_gai_strerror(result));
        set_state(c, STORE_DISCONNECTED, "redis host unresolved");
        schedule_reconnect(c);
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (res->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip, sizeof(ip));
    evutil_freeaddrinfo(res);
    attach(c, redisAsyncConnect(ip, st.port));
}

static void conn_connect(struct conn *c)
{
    if (st.closing)
        return;
    set_state(c, STORE_CONNECTING, "connecting to redis");
    if (st.is_unix) {
        attach(c, redisAsyncConnectUnix(st.host));
        return;
    }
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, st.host, &a4) == 1 || inet_pton(AF_INET6, st.host, &a6) == 1) {
        attach(c, redisAsyncConnect(st.host, st.port));
        return;
    }
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    evdns_getaddrinfo(st.dns, st.host, NULL, &hints, on_resolved, c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    conn_connect(arg);
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

static int parse_url(const char *url, char **err)
{
    st.db = 0;
    if (strncmp(url, "unix://", 7) == 0) {
        st.is_unix = true;
        snprintf(st.host, sizeof(st.host), "%s", url + 7);
        if (st.host[0] != '/') {
            *err = xasprintf("unix:// url needs an absolute path");
            return -1;
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        *err = xasprintf("redis url must start with redis:// or unix://");
        return -1;
    }
    const char *h = url + 8, *at = strrchr(h, '@');
    if (at)
        h = at + 1; /* credentials belong in password_file, not here */
    const char *slash = strchr(h, '/');
    const char *colon = NULL;
    if (h[0] == '[') {
        const char *rb = strchr(h, ']');
        if (!rb) {
            *err = xasprintf("bad IPv6 address in redis url");
            return -1;
        }
        snprintf(st.host, sizeof(st.host), "%.*s", (int)(rb - h - 1), h + 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = strchr(h, ':');
        if (colon && slash && colon > slash)
            colon = NULL;
        size_t hl = colon ? (size_t)(colon - h) : slash ? (size_t)(slash - h) : strlen(h);
        snprintf(st.host, sizeof(st.host), "%.*s", (int)hl, h);
    }
    st.port = colon ? atoi(colon + 1) : 6379;
    if (slash && slash[1])
        st.db = atoi(slash + 1);
    if (!st.host[0] || st.port <= 0 || st.port > 65535 || st.db < 0 || st.db > 15) {
        *err = xasprintf("bad redis url");
        return -1;
    }
    return 0;
}

int store_init(struct event_base *base, const struct config *cfg, const char *url, char **err)
{
    st.base = base;
    st.cfg = cfg;
    st.closing = false;
    st.url = xstrdup(url);
    if (parse_url(url, err) < 0)
        return -1;
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
        conns[i]->retry_ev = evtimer_new(base, on_retry, conns[i]);
        conn_connect(conns[i]);
    }
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
        if (c->retry_ev)
            event_free(c->retry_ev);
        c->retry_ev = NULL;
        c->state = STORE_DISCONNECTED;
    }
    if (st.tick_ev)
        event_free(st.tick_ev);
    if (st.dns)
        evdns_base_free(st.dns, 0);
    st.tick_ev = NULL;
    st.dns = NULL;
    xfree(st.url);
    xfree(st.fatal);
}
