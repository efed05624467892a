/* branch_conn.c - the terminal bridge's listener and its connections: TLS with required
 * client certificates (bufferevent_openssl), one state machine per connection changed only
 * by bconn_set_state(), frames read with a hard size limit, a token bucket per branch.
 *
 *   HANDSHAKE -> HELLO_WAIT -> HELLO_SENT -> READY -> CLOSING -> CLOSED
 *        \___________\______________\__________\________________/
 *
 * A connection is never freed inside one of its own bufferevent callbacks, nor while a Redis
 * reply will still point at it: closing moves it to the reap list, and the reaper frees it
 * from the loop once `pending` is zero. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "branch.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

#define MAX_TELLERS 8
#define MAX_INFLIGHT 32      /* requests of one connection waiting on Redis; then reading pauses */
#define MAX_BAD_FRAMES 20    /* malformed frames in a row after which the connection closes */
#define MAX_OUTPUT (8 << 20) /* a terminal that does not read its frames is dropped */
#define WRITE_TIMEOUT_S 30
#define RATE_BUCKETS 256

enum bconn_state {
    BCONN_HANDSHAKE,  /* TLS under way; on the live list */
    BCONN_HELLO_WAIT, /* certificate verified, branch and terminal known; HELLO awaited */
    BCONN_HELLO_SENT, /* HELLO checked in Redis; later frames wait in the input buffer */
    BCONN_READY,      /* session open: requests, pushed events */
    BCONN_CLOSING,    /* flushing the last frames; input ignored */
    BCONN_CLOSED,     /* off the live list, on the reap list until no reply is pending */
};

static const char *const state_names[] = {"handshake", "hello-wait", "hello-sent",
                                          "ready",     "closing",    "closed"};

/* legal transitions, as a bit set of target states per state */
#define BIT(s) (1u << (s))
static const unsigned transitions[] = {
    [BCONN_HANDSHAKE] = BIT(BCONN_HELLO_WAIT) | BIT(BCONN_CLOSING) | BIT(BCONN_CLOSED),
    [BCONN_HELLO_WAIT] = BIT(BCONN_HELLO_SENT) | BIT(BCONN_CLOSING) | BIT(BCONN_CLOSED),
    [BCONN_HELLO_SENT] = BIT(BCONN_READY) | BIT(BCONN_CLOSING) | BIT(BCONN_CLOSED),
    [BCONN_READY] = BIT(BCONN_CLOSING) | BIT(BCONN_CLOSED),
    [BCONN_CLOSING] = BIT(BCONN_CLOSED),
    [BCONN_CLOSED] = 0,
};

struct teller {
    char id[BRANCH_AGENT_MAX + 1];
    char sha[65];
};

struct bconn {
    struct bconn *next, *prev; /* the live list (state < CLOSED) */
    struct bconn *reap_next;   /* the reap list (CLOSED) */
    struct bufferevent *bev;
    enum bconn_state state;
    char peer[64];
    char branch[BRANCH_ID_MAX + 1];
    char terminal[BRANCH_TERMINAL_MAX + 1];
    struct teller tellers[MAX_TELLERS];
    int n_tellers;
    int pending;         /* Redis replies that will arrive pointing here */
    int inflight;        /* requests not yet answered */
    int bad_frames;      /* malformed frames in a row */
    uint64_t pushed_seq; /* last event seq written to the terminal */
    bool dirty, fetching;
    bool in_input;
    json_t *services; /* {SERVICE: QUEUE} from WELCOME */
    int64_t opened_ms;
};

struct rate {
    struct rate *next;
    char branch[BRANCH_ID_MAX + 1];
    double tokens;
    int64_t at_ms;
};

static struct {
    struct event_base *base;
    const struct config *cfg;
    struct evconnlistener *listener;
    struct branch_tls *tls;
    struct bconn *live, *reap;
    struct event *reap_ev;
    int count;
    struct branch_limits lim;
    struct rate *rates[RATE_BUCKETS];
    int64_t refused_logged_ms;
    bool stopped; /* replies still arriving point at freed connections: drop them */
} bc;

static void process_input(struct bconn *c);
static void process_frames(struct bconn *c);

/* ---- state ---- */

static void bconn_set_state(struct bconn *c, enum bconn_state to, const char *why)
{
    if (c->state == to)
        return;
    if (!(transitions[c->state] & BIT(to))) {
        log_error("branch %s/%s: illegal transition %s -> %s", c->branch, c->terminal,
                  state_names[c->state], state_names[to]);
        abort();
    }
    log_debug("branch %s/%s (%s): %s -> %s%s%s", c->branch[0] ? c->branch : "?",
              c->terminal[0] ? c->terminal : "?", c->peer, state_names[c->state], state_names[to],
              why ? ": " : "", why ? why : "");
    enum bconn_state from = c->state;
    c->state = to;
    if (to == BCONN_CLOSING) {
        bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            bconn_set_state(c, BCONN_CLOSED, why);
        return;
    }
    if (to == BCONN_CLOSED) {
        (void)from;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        if (c->prev)
            c->prev->next = c->next;
        else
            bc.live = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->next = c->prev = NULL;
        c->reap_next = bc.reap;
        bc.reap = c;
        bc.count--;
        event_active(bc.reap_ev, EV_TIMEOUT, 0);
    }
}

static void reap(evutil_socket_t fd, short what, void *arg)
{
    struct bconn **pp = &bc.reap;
    while (*pp) {
        struct bconn *c = *pp;
        if (c->pending > 0) {
            pp = &c->reap_next;
            continue;
        }
        *pp = c->reap_next;
        bufferevent_free(c->bev); /* closes the socket and frees the SSL */
        memset(c->tellers, 0, sizeof(c->tellers));
        json_decref(c->services);
        free(c);
    }
}

static void close_now(struct bconn *c, const char *why)
{
    if (c->state != BCONN_CLOSED)
        bconn_set_state(c, BCONN_CLOSED, why);
}

void bconn_protocol_close(struct bconn *c, const char *why)
{
    if (c->state < BCONN_CLOSING) {
        log_info("branch %s/%s: closing: %s", c->branch, c->terminal, why);
        bconn_set_state(c, BCONN_CLOSING, why);
    }
}

/* ---- accessors for the other branch files ---- */

bool bconn_is_ready(const struct bconn *c)
{
    return c->state == BCONN_READY;
}

const char *bconn_branch(const struct bconn *c)
{
    return c->branch;
}

const char *bconn_terminal(const struct bconn *c)
{
    return c->terminal;
}

uint64_t *bconn_pushed_seq(struct bconn *c)
{
    return &c->pushed_seq;
}

bool *bconn_dirty(struct bconn *c)
{
    return &c->dirty;
}

bool *bconn_fetching(struct bconn *c)
{
    return &c->fetching;
}

int bconn_count(void)
{
    return bc.count;
}

struct bconn *bconn_first(void)
{
    return bc.live;
}

struct bconn *bconn_next(struct bconn *c)
{
    return c->next;
}

void bconn_hold(struct bconn *c)
{
    c->pending++;
}

void bconn_request_begin(struct bconn *c)
{
    c->inflight++;
}

void bconn_request_done(struct bconn *c)
{
    c->inflight--;
    if (c->state == BCONN_READY || c->state == BCONN_HELLO_WAIT)
        process_input(c); /* reading pauses at MAX_INFLIGHT */
}

bool bconn_reply_arrived(struct bconn *c)
{
    c->pending--;
    if (c->state == BCONN_CLOSED) {
        if (c->pending == 0)
            event_active(bc.reap_ev, EV_TIMEOUT, 0);
        return false;
    }
    return c->state != BCONN_CLOSING;
}

void bconn_session_open(struct bconn *c, uint64_t cursor)
{
    c->pushed_seq = cursor;
    bconn_set_state(c, BCONN_READY, "welcome");
    struct timeval idle = {bc.cfg->branch_idle_timeout, 0}, wr = {WRITE_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, &idle, &wr);
    branch_events_kick(c);
    process_input(c); /* frames that arrived behind HELLO */
}

bool bconn_teller_add(struct bconn *c, const char *agent, const char *sha)
{
    for (int i = 0; i < c->n_tellers; i++) {
        if (strcmp(c->tellers[i].id, agent) == 0) {
            snprintf(c->tellers[i].sha, sizeof(c->tellers[i].sha), "%s", sha);
            return true;
        }
    }
    if (c->n_tellers >= MAX_TELLERS)
        return false;
    snprintf(c->tellers[c->n_tellers].id, sizeof(c->tellers[0].id), "%s", agent);
    snprintf(c->tellers[c->n_tellers].sha, sizeof(c->tellers[0].sha), "%s", sha);
    c->n_tellers++;
    return true;
}

void bconn_teller_remove(struct bconn *c, const char *agent)
{
    for (int i = 0; i < c->n_tellers; i++) {
        if (strcmp(c->tellers[i].id, agent) == 0) {
            c->tellers[i] = c->tellers[--c->n_tellers];
            memset(&c->tellers[c->n_tellers], 0, sizeof(c->tellers[0]));
            return;
        }
    }
}

const char *bconn_teller_sha(const struct bconn *c, const char *agent)
{
    for (int i = 0; i < c->n_tellers; i++)
        if (strcmp(c->tellers[i].id, agent) == 0)
            return c->tellers[i].sha;
    return NULL;
}

json_t *bconn_services(struct bconn *c)
{
    return c->services;
}

void bconn_set_services(struct bconn *c, json_t *services)
{
    json_decref(c->services);
    c->services = json_incref(services);
}

int bconn_teller_count(const struct bconn *c)
{
    return c->n_tellers;
}

const char *bconn_teller_at(const struct bconn *c, int i)
{
    return i < c->n_tellers ? c->tellers[i].id : NULL;
}

/* ---- output ---- */

void bconn_send_text(struct bconn *c, const char *text, size_t len)
{
    if (c->state >= BCONN_CLOSED)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) > MAX_OUTPUT) {
        log_warn("branch %s/%s: terminal does not read its frames; dropping it", c->branch,
                 c->terminal);
        close_now(c, "output backlog");
        return;
    }
    /* one contiguous write: one TLS record, one segment (see TCP_NODELAY in on_accept) */
    unsigned char *frame = xmalloc(len + 4);
    branch_frame_prefix(frame, (uint32_t)len);
    memcpy(frame + 4, text, len);
    evbuffer_add(out, frame, len + 4);
    free(frame);
}

void bconn_send(struct bconn *c, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) {
        log_error("branch %s/%s: a frame could not be encoded", c->branch, c->terminal);
        return;
    }
    bconn_send_text(c, text, strlen(text));
    free(text);
}

void bconn_nack(struct bconn *c, const char *msg_id, const char *code, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:s}", "v", BRANCH_PROTO_VERSION, "type", "NACK",
                          "code", code, "message", msg, "msg_id", msg_id ? msg_id : "");
    if (!o) /* the message was not UTF-8: never echo such bytes */
        o = json_pack("{s:i,s:s,s:s,s:s,s:s}", "v", BRANCH_PROTO_VERSION, "type", "NACK", "code",
                      code, "message", "invalid input", "msg_id", msg_id ? msg_id : "");
    if (!msg_id)
        json_object_set_new(o, "msg_id", json_null());
    bconn_send(c, o);
}

/* ---- rate limit: a token bucket per branch (per instance) ---- */

static bool rate_take(const char *branch)
{
    unsigned h = 5381;
    for (const unsigned char *p = (const unsigned char *)branch; *p; p++)
        h = h * 33 + *p;
    struct rate **slot = &bc.rates[h % RATE_BUCKETS], *r = *slot;
    while (r && strcmp(r->branch, branch) != 0)
        r = r->next;
    int64_t now = monotonic_ms();
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        snprintf(r->branch, sizeof(r->branch), "%s", branch);
        r->tokens = bc.cfg->branch_burst;
        r->at_ms = now;
        r->next = *slot;
        *slot = r;
    }
    r->tokens += (double)(now - r->at_ms) * bc.cfg->branch_rate / 1000.0;
    if (r->tokens > bc.cfg->branch_burst)
        r->tokens = bc.cfg->branch_burst;
    r->at_ms = now;
    if (r->tokens < 1.0)
        return false;
    r->tokens -= 1.0;
    return true;
}

/* ---- input ---- */

static void handle_frame(struct bconn *c, const char *payload, size_t len)
{
    struct branch_req req;
    struct branch_nack nack;
    if (branch_req_parse(payload, len, &bc.lim, &req, &nack) < 0) {
        log_debug("branch %s/%s: refused frame: %s: %s", c->branch, c->terminal, nack.code,
                  nack.message);
        bconn_nack(c, req.msg_id[0] ? req.msg_id : NULL, nack.code, "%s", nack.message);
        if (++c->bad_frames >= MAX_BAD_FRAMES)
            bconn_protocol_close(c, "too many refused frames");
        return;
    }
    c->bad_frames = 0;
    const char *refuse = NULL, *code = "no_session";
    if (c->state == BCONN_HELLO_WAIT && req.op->kind != BOP_HELLO && req.op->kind != BOP_PING)
        refuse = "send HELLO first";
    else if (c->state == BCONN_READY && req.op->kind == BOP_HELLO)
        refuse = "the session is already open", code = "conflict";
    else if (req.branch[0] && strcmp(req.branch, c->branch) != 0)
        refuse = "this terminal's certificate is for another branch", code = "forbidden";
    else if (req.op->kind != BOP_PING && !rate_take(c->branch))
        refuse = "too many requests from this branch; retry in a second", code = "rate_limited";
    if (refuse) {
        if (strcmp(code, "forbidden") == 0)
            log_warn("branch %s/%s: refused %s for branch %s: certificate is for %s", c->branch,
                     c->terminal, req.op->type, req.branch, c->branch);
        bconn_nack(c, req.msg_id, code, "%s", refuse);
        branch_req_clear(&req);
        return;
    }
    if (req.op->kind == BOP_HELLO)
        bconn_set_state(c, BCONN_HELLO_SENT, NULL);
    branch_ops_run(c, &req); /* takes over req */
}

/* Frames are handled in order; a request answered at once may call back in here (through
 * bconn_request_done), which the flag turns into a no-op: the outer loop carries on. */
static void process_input(struct bconn *c)
{
    if (c->in_input)
        return;
    c->in_input = true;
    process_frames(c);
    c->in_input = false;
}

static void process_frames(struct bconn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while ((c->state == BCONN_HELLO_WAIT || c->state == BCONN_READY) &&
           c->inflight < MAX_INFLIGHT) {
        unsigned char hdr[4];
        size_t avail = evbuffer_get_length(in);
        if (avail < 4)
            return;
        evbuffer_copyout(in, hdr, 4);
        uint32_t len = 0;
        switch (branch_frame_peek(hdr, avail, bc.lim.max_frame, &len)) {
        case BRANCH_FRAME_MORE:
            return;
        case BRANCH_FRAME_EMPTY:
            log_info("branch %s/%s: empty frame; closing", c->branch, c->terminal);
            close_now(c, "empty frame");
            return;
        case BRANCH_FRAME_TOO_LARGE:
            log_info("branch %s/%s: frame of %u bytes above max_frame; closing", c->branch,
                     c->terminal, len);
            close_now(c, "frame too large");
            return;
        case BRANCH_FRAME_READY:
            break;
        }
        evbuffer_drain(in, 4);
        char *payload = xmalloc(len + 1);
        evbuffer_remove(in, payload, len);
        payload[len] = '\0';
        handle_frame(c, payload, len);
        free(payload);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    process_input(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct bconn *c = arg;
    if (c->state == BCONN_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bconn_set_state(c, BCONN_CLOSED, "flushed");
}

static void handshake_done(struct bconn *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    char *err = NULL;
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) {
        log_warn("branch: %s: no verified client certificate", c->peer);
        X509_free(cert);
        close_now(c, "no certificate");
        return;
    }
    if (branch_tls_identity(bc.tls, cert, c->branch, c->terminal, &err) < 0) {
        log_warn("branch: %s: %s", c->peer, err);
        free(err);
        X509_free(cert);
        close_now(c, "unnamed certificate");
        return;
    }
    if (branch_tls_revoked(bc.tls, cert)) { /* revoked since this handshake began */
        log_warn("branch %s/%s: certificate revoked", c->branch, c->terminal);
        X509_free(cert);
        close_now(c, "revoked");
        return;
    }
    X509_free(cert);
    log_info("branch %s/%s: terminal connected from %s (%s)", c->branch, c->terminal, c->peer,
             SSL_get_version(ssl));
    bconn_set_state(c, BCONN_HELLO_WAIT, "certificate verified");
    process_input(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct bconn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == BCONN_HANDSHAKE)
            handshake_done(c);
        return;
    }
    if (c->state == BCONN_CLOSED)
        return;
    if (c->state == BCONN_HANDSHAKE) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        char buf[200] = "connection closed";
        if (e)
            ERR_error_string_n(e, buf, sizeof(buf));
        log_warn("branch: %s: TLS handshake refused: %s%s", c->peer, buf,
                 (what & BEV_EVENT_TIMEOUT) ? " (timeout)" : "");
    } else if (what & BEV_EVENT_TIMEOUT) {
        log_info("branch %s/%s: %s timeout", c->branch, c->terminal,
                 c->state == BCONN_HELLO_WAIT ? "hello" : "idle");
    } else {
        log_info("branch %s/%s: terminal disconnected", c->branch, c->terminal);
    }
    close_now(c, (what & BEV_EVENT_TIMEOUT) ? "timeout" : "disconnected");
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    if (bc.count >= bc.cfg->branch_max_connections) {
        int64_t now = monotonic_ms();
        if (now - bc.refused_logged_ms > 10000) {
            log_warn("branch: %d connections: refusing more (max_connections)", bc.count);
            bc.refused_logged_ms = now;
        }
        evutil_closesocket(fd);
        return;
    }
    /* replies are small and answer a request: never hold them back waiting for an ACK */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL *ssl = SSL_new(branch_tls_ctx(bc.tls));
    if (!ssl) {
        evutil_closesocket(fd);
        return;
    }
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(bc.base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        return;
    }
    struct bconn *c = xcalloc(1, sizeof(*c));
    c->bev = bev;
    c->state = BCONN_HANDSHAKE;
    c->opened_ms = monotonic_ms();
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
    c->next = bc.live;
    if (bc.live)
        bc.live->prev = c;
    bc.live = c;
    bc.count++;
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(bev, EV_READ, 0, (size_t)bc.lim.max_frame + 4);
    struct timeval hello = {bc.cfg->branch_hello_timeout, 0}, wr = {WRITE_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, &hello, &wr);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    log_warn("branch: accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

int branch_conn_start(struct event_base *base, const struct config *cfg, char **err)
{
    bc.base = base;
    bc.cfg = cfg;
    bc.lim.max_frame = (size_t)cfg->branch_max_frame;
    bc.lim.purposes = cfg->branch_purposes;
    bc.tls = branch_tls_new(cfg, err);
    if (!bc.tls)
        return -1;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(cfg->branch_listen, (struct sockaddr *)&ss, &sslen) < 0) {
        *err = xasprintf("[branch] listen: expected host:port, got \"%s\"", cfg->branch_listen);
        return -1;
    }
    bc.listener = evconnlistener_new_bind(
        base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        4096, (struct sockaddr *)&ss, sslen);
    if (!bc.listener) {
        *err = xasprintf("cannot listen on %s (branch terminals)", cfg->branch_listen);
        return -1;
    }
    evconnlistener_set_error_cb(bc.listener, on_accept_error);
    bc.reap_ev = event_new(base, -1, 0, reap, NULL);
    log_info("branch: terminal bridge listening on %s (TLS, client certificates required)",
             cfg->branch_listen);
    return 0;
}

bool bconn_stopped(void)
{
    return bc.stopped;
}

void branch_conn_stop(void)
{
    bc.stopped = true;
    if (bc.listener)
        evconnlistener_free(bc.listener);
    bc.listener = NULL;
    while (bc.live)
        close_now(bc.live, "shutdown");
    for (struct bconn *c = bc.reap; c; c = c->reap_next)
        c->pending = 0; /* their replies, when they come, see bconn_stopped() */
    if (bc.reap_ev) {
        reap(-1, 0, NULL);
        event_free(bc.reap_ev);
        bc.reap_ev = NULL;
    }
    for (int i = 0; i < RATE_BUCKETS; i++) {
        while (bc.rates[i]) {
            struct rate *r = bc.rates[i];
            bc.rates[i] = r->next;
            free(r);
        }
    }
    branch_tls_free(bc.tls);
    bc.tls = NULL;
}

/* SIGHUP: a new TLS context (CA, certificate, CRL, serial map) for new connections; the
 * connected terminals stay, except those whose certificate the new CRL revokes. */
void branch_conn_reload(const struct config *cfg)
{
    if (!bc.listener)
        return;
    char *err = NULL;
    struct branch_tls *fresh = branch_tls_new(cfg, &err);
    if (!fresh) {
        log_error("branch: reload: keeping the running TLS context: %s", err);
        free(err);
        return;
    }
    branch_tls_free(bc.tls);
    bc.tls = fresh;
    int dropped = 0, kept = 0;
    for (struct bconn *c = bc.live, *next; c; c = next) {
        next = c->next;
        if (c->state == BCONN_HANDSHAKE)
            continue; /* checked when its handshake completes */
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
        if (cert && branch_tls_revoked(bc.tls, cert)) {
            log_warn("branch %s/%s: certificate revoked by the new CRL; disconnecting", c->branch,
                     c->terminal);
            close_now(c, "revoked");
            dropped++;
        } else {
            kept++;
        }
        X509_free(cert);
    }
    log_info("branch: reload: CRL and certificates re-read; %d terminals kept, %d revoked", kept,
             dropped);
}
