/* store.c - the one connection to Redis (hiredis async on the event loop).
 *
 * States: DISCONNECTED -> CONNECTING -> PREPARING (AUTH, SELECT, SCRIPT LOAD) -> READY.
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

static struct {
    struct event_base *base;
    struct evdns_base *dns;
    const struct config *cfg;
    char *url;
    enum store_state state;
    const char *why; /* reason for not READY */
    redisAsyncContext *ac;
    struct pending *head, *tail; /* outstanding commands, in send order */
    struct event *retry_ev, *tick_ev;
    int attempts;
    const char *drop_reason;
    char key_base[128];
    char sha[SCRIPT__COUNT][41];
    /* parsed url */
    bool is_unix;
    char host[256];
    int port;
    int db;
    struct store_stats stats;
    int scripts_to_load;
    bool closing;
} st;

static void store_connect(void);

static void set_state(enum store_state s, const char *why)
{
    if (st.state != s)
        log_debug("redis: state %d -> %d (%s)", st.state, s, why ? why : "");
    st.state = s;
    st.why = why;
}

const char *store_key_base(void)
{
    return st.key_base;
}

bool store_ready(void)
{
    return st.state == STORE_READY;
}

const char *store_status(void)
{
    return st.state == STORE_READY ? "ok" : (st.why ? st.why : "connecting");
}

const struct store_stats *store_get_stats(void)
{
    return &st.stats;
}

static void pending_unlink(struct pending *p)
{
    struct pending **pp = &st.head, *prev = NULL;
    while (*pp && *pp != p) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = p->next;
    if (st.tail == p)
        st.tail = prev;
}

static void pending_free(struct pending *p)
{
    free(p->cmd);
    free(p);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct pending *p = privdata;
    redisReply *reply = r;
    (void)ac;
    if (reply && reply->type == REDIS_REPLY_ERROR && p->script >= 0 && !p->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && st.ac && st.state == STORE_READY) {
        /* Redis lost its script cache (restart, SCRIPT FLUSH): load and resend, in order. */
        p->retried = true;
        log_warn("redis: NOSCRIPT for %s, reloading", script_names[p->script]);
        redisAsyncCommand(st.ac, NULL, NULL, "SCRIPT LOAD %s", script_sources[p->script]);
        if (redisAsyncFormattedCommand(st.ac, on_reply, p, p->cmd, p->cmdlen) == REDIS_OK) {
            st.stats.round_trips += 2;
            return;
        }
    }
    pending_unlink(p);
    if (!reply) {
        st.stats.errors++;
        p->cb(NULL, st.drop_reason ? st.drop_reason : "unavailable", p->arg);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        st.stats.errors++;
        p->cb(reply, reply->str, p->arg);
    } else {
        p->cb(reply, NULL, p->arg);
    }
    pending_free(p);
}

static int send_formatted(char *cmd, size_t len, int script, store_cb *cb, void *arg)
{
    struct pending *p = xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    p->cmd = cmd;
    p->cmdlen = len;
    p->script = script;
    p->deadline = monotonic_ms() + st.cfg->redis_command_timeout;
    if (redisAsyncFormattedCommand(st.ac, on_reply, p, cmd, len) != REDIS_OK) {
        pending_free(p);
        return -1;
    }
    if (st.tail)
        st.tail->next = p;
    else
        st.head = p;
    st.tail = p;
    st.stats.round_trips++;
    return 0;
}

static int send_argv(int argc, const char **argv, const size_t *argvlen, int script, store_cb *cb,
                     void *arg)
{
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return -1;
    if (send_formatted(cmd, (size_t)len, script, cb, arg) < 0) {
        /* formatted by hiredis with malloc: ours to free */
        return -1;
    }
    return 0;
}

int store_command(int argc, const char **argv, const size_t *argvlen, store_cb *cb, void *arg)
{
    if (st.state != STORE_READY || !st.ac)
        return -1;
    return send_argv(argc, argv, argvlen, -1, cb, arg);
}

int store_script(enum store_script s, int argc, const char **argv, const size_t *argvlen,
                 store_cb *cb, void *arg)
{
    if (st.state != STORE_READY || !st.ac)
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
    return send_argv(argc + 4, av, al, (int)s, cb, arg);
}

/* ---- connection life cycle ---- */

static void schedule_reconnect(void)
{
    if (st.closing)
        return;
    int64_t delay = 100LL << (st.attempts < 6 ? st.attempts : 6); /* 100 ms .. 6.4 s */
    if (delay > 5000)
        delay = 5000;
    delay = delay / 2 + (random() % (delay / 2 + 1)); /* jitter: many daemons, one Redis */
    st.attempts++;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    evtimer_add(st.retry_ev, &tv);
}

static void on_prepared(const redisReply *reply, const char *err, void *arg)
{
    intptr_t which = (intptr_t)arg;
    if (err) {
        log_error("redis: preparing connection failed (%s): %s",
                  which < 0 ? "auth/select" : script_names[which], err);
        set_state(STORE_PREPARING, "redis setup failed");
        if (st.ac) {
            st.drop_reason = "unavailable";
            redisAsyncDisconnect(st.ac);
        }
        return;
    }
    if (which >= 0) {
        if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, st.sha[which]) != 0) {
            log_error("redis: script %s loaded with an unexpected sha", script_names[which]);
        }
        if (--st.scripts_to_load == 0) {
            st.attempts = 0;
            set_state(STORE_READY, NULL);
            log_info("redis: ready (%s)", st.url);
        }
    }
}

static void prepare_connection(void)
{
    set_state(STORE_PREPARING, "loading scripts");
    if (st.cfg->redis_password) {
        const char *av[3] = {"AUTH", NULL, NULL};
        int ac = 0;
        av[ac++] = "AUTH";
        if (st.cfg->redis_user)
            av[ac++] = st.cfg->redis_user;
        av[ac++] = st.cfg->redis_password;
        send_argv(ac, av, NULL, -1, on_prepared, (void *)(intptr_t)-1);
    }
    if (st.db > 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", st.db);
        const char *av[2] = {"SELECT", db};
        send_argv(2, av, NULL, -1, on_prepared, (void *)(intptr_t)-1);
    }
    st.scripts_to_load = SCRIPT__COUNT;
    for (int i = 0; i < SCRIPT__COUNT; i++) {
        const char *av[3] = {"SCRIPT", "LOAD", script_sources[i]};
        send_argv(3, av, NULL, -1, on_prepared, (void *)(intptr_t)i);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        log_warn("redis: connect to %s failed: %s", st.url, ac->errstr);
        st.ac = NULL; /* hiredis frees the context after this callback */
        set_state(STORE_DISCONNECTED, "redis unreachable");
        schedule_reconnect();
        return;
    }
    log_debug("redis: connected to %s", st.url);
    prepare_connection();
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        log_warn("redis: connection lost: %s", ac->errstr);
    st.ac = NULL;
    st.head = st.tail = NULL; /* every pending callback has fired with NULL */
    st.drop_reason = NULL;
    set_state(STORE_DISCONNECTED, "redis unreachable");
    st.stats.reconnects++;
    schedule_reconnect();
}

static void attach(redisAsyncContext *ac)
{
    if (!ac || ac->err) {
        log_warn("redis: cannot connect to %s: %s", st.url, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        set_state(STORE_DISCONNECTED, "redis unreachable");
        schedule_reconnect();
        return;
    }
    st.ac = ac;
    redisLibeventAttach(ac, st.base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    (void)arg;
    if (result != 0 || !res) {
        log_warn("redis: cannot resolve %s: %s", st.host, evutil_gai_strerror(result));
        set_state(STORE_DISCONNECTED, "redis host unresolved");
        schedule_reconnect();
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (res->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip, sizeof(ip));
    evutil_freeaddrinfo(res);
    attach(redisAsyncConnect(ip, st.port));
}

static void store_connect(void)
{
    if (st.closing)
        return;
    set_state(STORE_CONNECTING, "connecting to redis");
    if (st.is_unix) {
        attach(redisAsyncConnectUnix(st.host));
        return;
    }
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, st.host, &a4) == 1 || inet_pton(AF_INET6, st.host, &a6) == 1) {
        attach(redisAsyncConnect(st.host, st.port));
        return;
    }
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    evdns_getaddrinfo(st.dns, st.host, NULL, &hints, on_resolved, NULL);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    store_connect();
}

/* The deadline check: replies come back in send order, so the head is the oldest. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    if (st.ac && st.head && monotonic_ms() > st.head->deadline) {
        log_warn("redis: no reply within %d ms, reconnecting", st.cfg->redis_command_timeout);
        st.stats.timeouts++;
        st.drop_reason = "timeout";
        redisAsyncContext *ac = st.ac;
        redisAsyncFree(ac); /* fires every pending callback with NULL, then on_disconnect */
        if (st.ac == ac) {
            /* on_disconnect only runs for connected contexts */
            st.ac = NULL;
            st.head = st.tail = NULL;
            st.drop_reason = NULL;
            set_state(STORE_DISCONNECTED, "redis timed out");
            st.stats.reconnects++;
            schedule_reconnect();
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
    memset(&st, 0, sizeof(st));
    st.base = base;
    st.cfg = cfg;
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
    st.retry_ev = evtimer_new(base, on_retry, NULL);
    st.tick_ev = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tick = {0, 100 * 1000};
    evtimer_add(st.tick_ev, &tick);
    store_connect();
    return 0;
}

void store_close(void)
{
    st.closing = true;
    if (st.ac) {
        redisAsyncContext *ac = st.ac;
        st.drop_reason = "shutting down";
        redisAsyncFree(ac);
        st.ac = NULL;
    }
    if (st.retry_ev)
        event_free(st.retry_ev);
    if (st.tick_ev)
        event_free(st.tick_ev);
    if (st.dns)
        evdns_base_free(st.dns, 0);
    st.retry_ev = st.tick_ev = NULL;
    st.dns = NULL;
    xfree(st.url);
}
