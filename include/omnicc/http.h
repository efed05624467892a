/* http.h - the HTTP server (libevent evhttp): route tables, bearer auth, JSON in and out,
 * JSON errors. Route groups live in their own files and export a table; http.c lists the
 * tables. A request whose answer waits on Redis is a struct http_req owned by the handler
 * until http_reply*() is called exactly once; the client may vanish meanwhile. */
#ifndef OMNICC_HTTP_H
#define OMNICC_HTTP_H

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct config;

enum http_auth {
    HTTP_AUTH_NONE,  /* /healthz, /metrics, provider webhooks (own signatures) */
    HTTP_AUTH_ADMIN, /* bearer token from [api] */
    HTTP_AUTH_AGENT, /* the admin token, or an agent's own token (checked by the script
                        against the agent acted for: r->auth_sha) */
};

#define HTTP_MAX_PARAMS 4

struct http_req {
    struct evhttp_request *req;        /* NULL once the client has gone */
    struct evhttp_connection *evcon;
    const struct http_route *route;
    char *params[HTTP_MAX_PARAMS];     /* decoded {placeholders} of the path */
    struct evkeyvalq query;
    char *body;                        /* NUL-terminated copy of the request body */
    size_t body_len;
    int64_t started_ms;
    bool is_admin;
    char auth_sha[65];                 /* sha256 hex of an agent bearer token; "" for admin */
    void *data;                        /* the handler's own state */
};

typedef void http_handler_fn(struct http_req *r);

struct http_route {
    enum evhttp_cmd_type method;
    const char *pattern;   /* "/v1/cases/{id}/close" */
    enum http_auth auth;
    http_handler_fn *handler;
    const char *body_type; /* required Content-Type ("application/json"), or NULL */
    const char *metric;    /* label for /metrics (defaults to pattern) */
    bool large_body;       /* limit is [http] import_max_body instead of max_body */
};

int http_start(struct event_base *base, const struct config *cfg, char **err);
/* Stop accepting; in-flight requests still get their answers. */
void http_stop_accepting(void);
void http_free(void);
void http_set_config(const struct config *cfg);
int http_inflight(void);

void http_reply_json(struct http_req *r, int status, json_t *body); /* steals body */
void http_reply_error(struct http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_reply_raw(struct http_req *r, int status, const char *content_type, const char *data,
                    size_t len);
/* 503 with Retry-After, for when Redis is unreachable. */
void http_reply_unavailable(struct http_req *r, const char *why);

/* Parse the body as a JSON object; on failure replies 400 and returns NULL. */
json_t *http_body_json_object(struct http_req *r);
const char *http_query(struct http_req *r, const char *key);

/* Turn the request into a long-lived stream (SSE): sends the 200 head, ends r's life as a
 * request (r is freed) and returns the evhttp request, valid until on_close fires. */
struct evhttp_request *http_begin_stream(struct http_req *r, const char *content_type,
                                         void (*on_close)(struct evhttp_connection *, void *),
                                         void *arg);

#endif
