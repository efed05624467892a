/* api_system.c - /healthz and /metrics (unauthenticated, for load balancers and Prometheus). */
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/api.h"
#include "omnicc/metrics.h"
#include "omnicc/store.h"

static void healthz(struct http_req *r)
{
    if (store_ready())
        http_reply_json(r, 200, json_pack("{s:s,s:s}", "status", "ok", "redis", "ok"));
    else {
        if (r->req)
            evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
        http_reply_json(r, 503, json_pack("{s:s,s:s}", "status", "unavailable", "redis",
                                          store_status()));
    }
}

static void metrics(struct http_req *r)
{
    struct evbuffer *b = evbuffer_new();
    metrics_render(b);
    size_t n = evbuffer_get_length(b);
    char *text = malloc(n + 1);
    evbuffer_remove(b, text, n);
    evbuffer_free(b);
    http_reply_raw(r, 200, "text/plain; version=0.0.4", text, n);
    free(text);
}

const struct http_route api_system_routes[] = {
    {EVHTTP_REQ_GET, "/healthz", HTTP_AUTH_NONE, healthz, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/metrics", HTTP_AUTH_NONE, metrics, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
