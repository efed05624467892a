/* http.c - the HTTP server: one dispatch function matches the path against the route tables
 * (404/405), checks the bearer token (401), the content type (415) and the body size (413),
 * then hands a struct http_req to the route's handler. Every error is JSON:
 * {"error": {"code": "...", "message": "..."}}.
 *
 * A handler that waits on Redis keeps its http_req; if the client disconnects meanwhile,
 * libevent frees the request, so the connection's close callback clears r->req and the
 * eventual reply is dropped instead of touching freed memory. */
#include "omnicc/http.h"

#include <ctype.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "omnicc/api.h"
#include "omnicc/attachments.h"
#include "omnicc/channel.h"
#include "omnicc/config.h"
#include "omnicc/analytics.h"
#include "omnicc/log.h"
#include "omnicc/metrics.h"
#include "omnicc/static.h"
#include "omnicc/util.h"

static const struct http_route *const route_tables[] = {
    api_system_routes,
    api_interactions_routes,
    api_customers_routes,
    api_cases_routes,
    api_agents_routes,
    api_queues_routes,
    api_reports_routes,
    api_export_routes,
    api_privacy_routes,
    attachments_routes,
    static_routes,
};

static struct {
    struct evhttp *http;
    struct evhttp_bound_socket *sockets[CONFIG_MAX_LISTEN];
    int n_sockets;
    const struct config *cfg;
    int inflight;
} srv;

int http_inflight(void)
{
    return srv.inflight;
}

void http_set_config(const struct config *cfg)
{
    srv.cfg = cfg;
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

/* Match "/v1/cases/{id}/close" against a path; fills decoded params. The shape is checked
 * first without allocating: a request is tried against every route before its own, and only
 * the one that matches decodes its parameters. */
static bool route_match(const char *pattern, const char *path, char **params)
{
    const char *seg[HTTP_MAX_PARAMS];
    size_t seglen[HTTP_MAX_PARAMS];
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *se = strchr(s, '/');
            if (!se)
                se = s + strlen(s);
            if (se == s || np >= HTTP_MAX_PARAMS)
                return false;
            seg[np] = s;
            seglen[np++] = (size_t)(se - s);
            p = strchr(p, '}') + 1;
            s = se;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    if (*p || *s)
        return false;
    for (int i = 0; i < np; i++) {
        char *raw = xstrndup(seg[i], seglen[i]);
        size_t outlen = 0;
        char *dec = evhttp_uridecode(raw, 0, &outlen);
        free(raw);
        if (!dec || strlen(dec) != outlen) {
            free(dec);
            for (int j = 0; j < i; j++)
                xfree(params[j]);
            return false;
        }
        params[i] = dec;
    }
    return true;
}

static void http_req_free(struct http_req *r)
{
    for (int i = 0; i < HTTP_MAX_PARAMS; i++)
        free(r->params[i]);
    evhttp_clear_headers(&r->query);
    free(r->body);
    free(r);
}

static void on_client_gone(struct evhttp_connection *evcon, void *arg)
{
    struct http_req *r = arg;
    r->req = NULL; /* libevent is about to free it; the handler's reply will be dropped */
}

static void finish(struct http_req *r, int status)
{
    srv.inflight--;
    metrics_http_request(r->route ? (r->route->metric ? r->route->metric : r->route->pattern)
                                  : "unmatched",
                         status, monotonic_ms() - r->started_ms);
    if (r->req && r->evcon)
        evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    http_req_free(r);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

void http_reply_raw(struct http_req *r, int status, const char *content_type, const char *data,
                    size_t len)
{
    if (r->req) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
        evhttp_add_header(h, "Content-Type", content_type);
        evhttp_add_header(h, "Cache-Control", "no-store");
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        struct evbuffer *buf = evbuffer_new();
        evbuffer_add(buf, data, len);
        evhttp_send_reply(r->req, status, reason(status), buf);
        evbuffer_free(buf);
    }
    finish(r, status);
}

void http_reply_json(struct http_req *r, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        http_reply_raw(r, 500, "application/json",
                       "{\"error\":{\"code\":\"internal\",\"message\":\"encoding failed\"}}", 59);
        return;
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n++] = '\n';
    http_reply_raw(r, status, "application/json", text, n);
    free(text);
}

void http_reply_error(struct http_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    if (!err) /* msg was not valid UTF-8: never echo such bytes back */
        err = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", "invalid input");
    http_reply_json(r, status, err);
}

void http_reply_unavailable(struct http_req *r, const char *why)
{
    if (r->req)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
    http_reply_error(r, 503, "unavailable", "storage unavailable (%s); retry later",
                     why && strcmp(why, "ok") != 0 ? why : "redis");
}

json_t *http_body_json_object(struct http_req *r)
{
    json_error_t jerr;
    json_t *obj = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        http_reply_error(r, 400, "malformed_json", "body is not valid JSON: %s (line %d)",
                         jerr.text, jerr.line);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        http_reply_error(r, 400, "malformed_json", "body must be a JSON object");
        return NULL;
    }
    return obj;
}

const char *http_query(struct http_req *r, const char *key)
{
    return evhttp_find_header(&r->query, key);
}

static const char *bearer(struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/* Admin token: compared here. Agent token: only its hash travels on, to the script that
 * checks it belongs to the agent the request acts for (one round trip either way). */
static bool authenticate(struct http_req *r, enum http_auth need)
{
    const char *tok = bearer(r->req);
    const char *admin = srv.cfg->api_token_value;
    if (!tok)
        return need == HTTP_AUTH_NONE;
    if (admin && secure_equals(tok, strlen(tok), admin, strlen(admin))) {
        r->is_admin = true;
        return true;
    }
    if (need != HTTP_AUTH_AGENT || strlen(tok) > 256)
        return need == HTTP_AUTH_NONE;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, strlen(tok), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(r->auth_sha + 2 * i, 3, "%02x", md[i]);
    return true;
}

struct evhttp_request *http_begin_stream(struct http_req *r, const char *content_type,
                                         void (*on_close)(struct evhttp_connection *, void *),
                                         void *arg)
{
    struct evhttp_request *req = r->req;
    if (!req) {
        finish(r, 499);
        return NULL;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(req, 200, "OK");
    struct evhttp_connection *evcon = r->evcon;
    finish(r, 200);
    evhttp_connection_set_closecb(evcon, on_close, arg);
    return req;
}

static bool content_type_ok(struct evhttp_request *req, const char *want)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!ct)
        return false;
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static void dispatch(struct evhttp_request *req, void *arg)
{
    struct http_req *r = xcalloc(1, sizeof(*r));
    r->req = req;
    r->evcon = evhttp_request_get_connection(req);
    r->started_ms = monotonic_ms();
    TAILQ_INIT(&r->query);
    srv.inflight++;

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (!path || !*path) {
        http_reply_error(r, 400, "bad_request", "malformed request target");
        return;
    }
    if (q && evhttp_parse_query_str(q, &r->query) < 0) {
        http_reply_error(r, 400, "bad_request", "malformed query string");
        return;
    }

    const struct http_route *match = NULL;
    char allow[128] = "";
    size_t n_core = ARRAY_SIZE(route_tables), n_tables = n_core;
    for (const struct channel *const *c = channel_table; *c; c++)
        n_tables++;
    for (size_t t = 0; t < n_tables && !match; t++) {
        const struct http_route *table =
            t < n_core ? route_tables[t] : channel_table[t - n_core]->routes;
        for (const struct http_route *rt = table; rt && rt->pattern; rt++) {
            char *params[HTTP_MAX_PARAMS] = {0};
            if (!route_match(rt->pattern, path, params))
                continue;
            if (rt->method == method || (method == EVHTTP_REQ_HEAD && rt->method == EVHTTP_REQ_GET)) {
                memcpy(r->params, params, sizeof(params));
                match = rt;
                break;
            }
            for (int i = 0; i < HTTP_MAX_PARAMS; i++)
                free(params[i]);
            if (strlen(allow) + 10 < sizeof(allow)) {
                if (*allow)
                    strcat(allow, ", ");
                strcat(allow, method_name(rt->method));
            }
        }
    }
    if (!match) {
        if (*allow) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
            http_reply_error(r, 405, "method_not_allowed", "%s is not allowed here; use %s",
                             method_name(method), allow);
        } else {
            http_reply_error(r, 404, "not_found", "no such resource");
        }
        return;
    }
    r->route = match;
    if (match->auth != HTTP_AUTH_NONE && !authenticate(r, match->auth)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"omnicc\"");
        http_reply_error(r, 401, "unauthorized", "missing or wrong bearer token");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    long long limit = match->large_body ? srv.cfg->import_max_body : srv.cfg->max_body;
    if ((long long)len > limit) {
        http_reply_error(r, 413, "too_large", "body larger than %lld bytes", limit);
        return;
    }
    if (match->body_type && !content_type_ok(req, match->body_type)) {
        http_reply_error(r, 415, "unsupported_media_type", "Content-Type must be %s",
                         match->body_type);
        return;
    }
    r->body = xmalloc(len + 1);
    evbuffer_copyout(in, r->body, len);
    r->body[len] = '\0';
    r->body_len = len;
    if (r->evcon)
        evhttp_connection_set_closecb(r->evcon, on_client_gone, r);
    match->handler(r);
}

int http_start(struct event_base *base, const struct config *cfg, char **err)
{
    srv.cfg = cfg;
    srv.http = evhttp_new(base);
    /* libevent's own 413 (an HTML page) is only reached above this hard ceiling; below it
     * the dispatcher answers 413 in JSON. */
    long long ceiling = cfg->max_body * 2 + 65536;
    if (cfg->import_max_body + 65536 > ceiling)
        ceiling = cfg->import_max_body + 65536;
    evhttp_set_max_body_size(srv.http, (ev_ssize_t)ceiling);
    evhttp_set_max_headers_size(srv.http, 32768);
    evhttp_set_timeout(srv.http, cfg->read_timeout);
    evhttp_set_allowed_methods(srv.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                             EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(srv.http, dispatch, NULL);
    for (int i = 0; i < cfg->n_listen; i++) {
        char host[256];
        const char *colon = strrchr(cfg->listen[i], ':');
        snprintf(host, sizeof(host), "%.*s", (int)(colon - cfg->listen[i]), cfg->listen[i]);
        char *h = host;
        if (h[0] == '[') { /* [::1]:8080 */
            h++;
            h[strlen(h) - 1] = '\0';
        }
        struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(srv.http, h,
                                                                       (ev_uint16_t)atoi(colon + 1));
        if (!s) {
            *err = xasprintf("cannot listen on %s", cfg->listen[i]);
            return -1;
        }
        /* Accepted sockets inherit TCP_NODELAY (Linux, the BSDs): Nagle may hold a small
         * SSE frame behind an unacknowledged one, and an SSE client sends no data that
         * could carry the ACK early. Replies and frames are written whole, so turning
         * Nagle off multiplies no small writes. */
        int one = 1;
        if (setsockopt(evhttp_bound_socket_get_fd(s), IPPROTO_TCP, TCP_NODELAY, &one,
                       sizeof(one)) != 0)
            log_warn("http: %s: TCP_NODELAY not set; SSE frames may wait for ACKs",
                     cfg->listen[i]);
        srv.sockets[srv.n_sockets++] = s;
        log_info("http: listening on %s", cfg->listen[i]);
    }
    return 0;
}

void http_stop_accepting(void)
{
    for (int i = 0; i < srv.n_sockets; i++)
        evhttp_del_accept_socket(srv.http, srv.sockets[i]);
    srv.n_sockets = 0;
}

void http_free(void)
{
    if (srv.http)
        evhttp_free(srv.http);
    srv.http = NULL;
}
