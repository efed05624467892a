/* link.c - the terminal's connection to omniccd's branch bridge: a non-blocking TCP connect,
 * TLS with this terminal's certificate (the server's is verified against the configured CA,
 * and its name when server_name is set), then frames: a 4-byte big-endian length and JSON.
 *
 *   DOWN -> CONNECTING -> TLS -> HELLO -> UP, and back to DOWN on any failure, a timeout,
 *   or silence longer than two heartbeats; attempts back off from 0.5 s to 5 s.
 *
 * HELLO carries the last event seq seen, so the server replays what was missed. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "teller.h"

#define MAX_FRAME (16u << 20)
#define STEP_TIMEOUT_MS 10000

static void set_state(struct link *l, enum link_state st)
{
    if (l->state == st)
        return;
    l->state = st;
    if (l->on_state)
        l->on_state(st, l->arg);
}

int link_init(struct link *l, const struct teller_conf *c, char **err)
{
    memset(l, 0, sizeof(*l));
    l->conf = c;
    l->fd = -1;
    l->backoff_ms = 500;
    l->heartbeat_s = 30;
    snprintf(l->why, sizeof(l->why), "not connected yet");
    l->ctx = SSL_CTX_new(TLS_client_method());
    if (!l->ctx)
        goto ssl_fail;
    SSL_CTX_set_min_proto_version(l->ctx, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(l->ctx, c->ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(l->ctx, c->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(l->ctx, c->key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(l->ctx) != 1)
        goto ssl_fail;
    SSL_CTX_set_verify(l->ctx, SSL_VERIFY_PEER, NULL);
    return 0;
ssl_fail : {
    char buf[200] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    if (asprintf(err, "TLS setup (ca %s, cert %s, key %s): %s", c->ca, c->cert, c->key, buf) < 0)
        *err = NULL;
    SSL_CTX_free(l->ctx);
    l->ctx = NULL;
    return -1;
}
}

static void close_conn(struct link *l)
{
    if (l->ssl) {
        SSL_free(l->ssl);
        l->ssl = NULL;
    }
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->in_len = l->out_len = 0;
    l->want_write = false;
}

void link_free(struct link *l)
{
    close_conn(l);
    SSL_CTX_free(l->ctx);
    free(l->in);
    free(l->out);
    memset(l, 0, sizeof(*l));
    l->fd = -1;
}

void link_drop(struct link *l, const char *why)
{
    if (l->state == LINK_DOWN)
        return;
    snprintf(l->why, sizeof(l->why), "%s", why);
    close_conn(l);
    int64_t now = teller_mono_ms();
    l->next_attempt_ms = now + l->backoff_ms / 2 + rand() % (l->backoff_ms / 2 + 1);
    l->backoff_ms = l->backoff_ms * 2 > 5000 ? 5000 : l->backoff_ms * 2;
    set_state(l, LINK_DOWN);
}

void link_retry_now(struct link *l)
{
    if (l->state == LINK_DOWN && l->next_attempt_ms > teller_mono_ms() + 1000)
        l->next_attempt_ms = teller_mono_ms();
}

static void start_connect(struct link *l, int64_t now)
{
    char host[256], port[16];
    const char *colon = strrchr(l->conf->server, ':');
    if (!colon || colon - l->conf->server >= (long)sizeof(host)) {
        snprintf(l->why, sizeof(l->why), "server: expected host:port");
        l->next_attempt_ms = now + 5000;
        return;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - l->conf->server), l->conf->server);
    snprintf(port, sizeof(port), "%s", colon + 1);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(l->why, sizeof(l->why), "cannot resolve %s: %s", host, gai_strerror(rc));
        l->next_attempt_ms = now + l->backoff_ms;
        return;
    }
    l->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0 || (connect(l->fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS)) {
        snprintf(l->why, sizeof(l->why), "no connection (%s)", strerror(errno));
        freeaddrinfo(res);
        set_state(l, LINK_CONNECTING);
        link_drop(l, l->why);
        return;
    }
    freeaddrinfo(res);
    int one = 1;
    setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    l->deadline_ms = now + STEP_TIMEOUT_MS;
    set_state(l, LINK_CONNECTING);
}

int link_send(struct link *l, json_t *frame)
{
    char *text = json_dumps(frame, JSON_COMPACT);
    json_decref(frame);
    if (!text || (l->state != LINK_UP && l->state != LINK_HELLO)) {
        free(text);
        return -1;
    }
    size_t n = strlen(text);
    if (l->out_len + n + 4 > l->out_cap) {
        l->out_cap = (l->out_len + n + 4) * 2;
        l->out = realloc(l->out, l->out_cap);
    }
    l->out[l->out_len] = (unsigned char)(n >> 24);
    l->out[l->out_len + 1] = (unsigned char)(n >> 16);
    l->out[l->out_len + 2] = (unsigned char)(n >> 8);
    l->out[l->out_len + 3] = (unsigned char)n;
    memcpy(l->out + l->out_len + 4, text, n);
    l->out_len += n + 4;
    free(text);
    l->last_tx_ms = teller_mono_ms();
    return 0;
}

static void tls_step(struct link *l, int64_t now)
{
    int rc = SSL_connect(l->ssl);
    if (rc == 1) {
        l->last_rx_ms = now;
        l->deadline_ms = now + STEP_TIMEOUT_MS;
        set_state(l, LINK_HELLO); /* the app sends HELLO from on_state */
        return;
    }
    int e = SSL_get_error(l->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        l->want_write = e == SSL_ERROR_WANT_WRITE;
        return;
    }
    char buf[200] = "handshake failed";
    unsigned long err = ERR_get_error();
    if (err)
        ERR_error_string_n(err, buf, sizeof(buf));
    ERR_clear_error();
    link_drop(l, buf);
}

static void deliver(struct link *l)
{
    size_t off = 0;
    while (l->in_len - off >= 4) {
        const unsigned char *p = l->in + off;
        uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (n == 0 || n > MAX_FRAME) {
            link_drop(l, "the server sent a malformed frame");
            return;
        }
        if (l->in_len - off - 4 < n)
            break;
        json_t *f = json_loadb((const char *)p + 4, n, 0, NULL);
        off += 4 + n;
        if (!f) {
            link_drop(l, "the server sent a frame that is not JSON");
            return;
        }
        if (l->on_frame)
            l->on_frame(f, l->arg);
        json_decref(f);
        if (l->state == LINK_DOWN)
            return; /* the app dropped the link */
    }
    memmove(l->in, l->in + off, l->in_len - off);
    l->in_len -= off;
}

static void io_step(struct link *l, int64_t now)
{
    l->want_write = false;
    while (l->out_len > 0) {
        int rc = SSL_write(l->ssl, l->out, (int)l->out_len);
        if (rc > 0) {
            memmove(l->out, l->out + rc, l->out_len - (size_t)rc);
            l->out_len -= (size_t)rc;
            continue;
        }
        int e = SSL_get_error(l->ssl, rc);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            l->want_write = e == SSL_ERROR_WANT_WRITE;
            break;
        }
        link_drop(l, "the connection broke while sending");
        return;
    }
    for (;;) {
        if (l->in_cap - l->in_len < 16384) {
            l->in_cap = l->in_cap ? l->in_cap * 2 : 65536;
            l->in = realloc(l->in, l->in_cap);
        }
        int rc = SSL_read(l->ssl, l->in + l->in_len, (int)(l->in_cap - l->in_len));
        if (rc > 0) {
            l->in_len += (size_t)rc;
            l->last_rx_ms = now;
            deliver(l);
            if (l->state == LINK_DOWN)
                return;
            continue;
        }
        int e = SSL_get_error(l->ssl, rc);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            l->want_write = true;
            break;
        }
        char buf[200] = "the server closed the connection";
        unsigned long err = ERR_get_error();
        if (err)
            ERR_error_string_n(err, buf, sizeof(buf));
        ERR_clear_error();
        link_drop(l, buf);
        return;
    }
}

int link_prepare(struct link *l, struct pollfd *pfd, int64_t now)
{
    pfd->fd = l->fd;
    pfd->events = 0;
    pfd->revents = 0;
    int timeout = 250;
    switch (l->state) {
    case LINK_DOWN:
        pfd->fd = -1;
        if (l->next_attempt_ms > now && l->next_attempt_ms - now < timeout)
            timeout = (int)(l->next_attempt_ms - now);
        break;
    case LINK_CONNECTING:
        pfd->events = POLLOUT;
        break;
    case LINK_TLS:
        pfd->events = l->want_write ? POLLOUT : POLLIN;
        break;
    case LINK_HELLO:
    case LINK_UP:
        pfd->events = POLLIN | ((l->out_len || l->want_write) ? POLLOUT : 0);
        if (l->ssl && SSL_pending(l->ssl))
            timeout = 0;
        break;
    }
    return timeout < 0 ? 0 : timeout;
}

void link_service(struct link *l, short revents, int64_t now)
{
    switch (l->state) {
    case LINK_DOWN:
        if (now >= l->next_attempt_ms)
            start_connect(l, now);
        return;
    case LINK_CONNECTING:
        if (now > l->deadline_ms) {
            link_drop(l, "connecting timed out");
            return;
        }
        if (revents & (POLLOUT | POLLERR | POLLHUP)) {
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            if (soerr) {
                char buf[160];
                snprintf(buf, sizeof(buf), "no connection (%s)", strerror(soerr));
                link_drop(l, buf);
                return;
            }
            l->ssl = SSL_new(l->ctx);
            SSL_set_fd(l->ssl, l->fd);
            SSL_set_mode(l->ssl,
                         SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            if (l->conf->server_name) {
                SSL_set_tlsext_host_name(l->ssl, l->conf->server_name);
                SSL_set1_host(l->ssl, l->conf->server_name);
            }
            set_state(l, LINK_TLS);
            tls_step(l, now);
        }
        return;
    case LINK_TLS:
        if (now > l->deadline_ms) {
            link_drop(l, "TLS handshake timed out");
            return;
        }
        if (revents)
            tls_step(l, now);
        return;
    case LINK_HELLO:
        if (now > l->deadline_ms) {
            link_drop(l, "the server did not welcome this terminal");
            return;
        }
        /* fall through */
    case LINK_UP:
        if (revents || l->out_len || (l->ssl && SSL_pending(l->ssl)))
            io_step(l, now);
        if (l->state == LINK_UP && now - l->last_rx_ms > 2000LL * l->heartbeat_s + 5000)
            link_drop(l, "the server went silent");
        return;
    }
}

/* WELCOME arrived: the session is open. */
void link_welcomed(struct link *l, int heartbeat_s)
{
    l->heartbeat_s = heartbeat_s > 0 ? heartbeat_s : 30;
    l->backoff_ms = 500;
    l->why[0] = '\0';
    set_state(l, LINK_UP);
}
