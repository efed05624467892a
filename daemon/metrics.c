/* metrics.c - counters kept as things happen, rendered in Prometheus text format. The route
 * label comes from the route table (bounded), never from the request path. */
#include "omnicc/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/store.h"
#include "omnicc/util.h"

#define MAX_SERIES 256

struct req_series {
    const char *route;
    int status;
    unsigned long long count;
};

static const double latency_bounds_ms[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500};
#define N_BOUNDS ARRAY_SIZE(latency_bounds_ms)

static struct {
    struct req_series series[MAX_SERIES];
    int n;
    unsigned long long ingest_buckets[N_BOUNDS + 1];
    unsigned long long ingest_count;
    double ingest_sum_ms;
} m;

void metrics_http_request(const char *route, int status, int64_t elapsed_ms)
{
    for (int i = 0; i < m.n; i++) {
        if (m.series[i].status == status && strcmp(m.series[i].route, route) == 0) {
            m.series[i].count++;
            return;
        }
    }
    if (m.n < MAX_SERIES)
        m.series[m.n++] = (struct req_series){route, status, 1};
}

void metrics_ingest_latency(int64_t elapsed_ms)
{
    size_t i = 0;
    while (i < N_BOUNDS && (double)elapsed_ms > latency_bounds_ms[i])
        i++;
    m.ingest_buckets[i]++;
    m.ingest_count++;
    m.ingest_sum_ms += (double)elapsed_ms;
}

void metrics_render(struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP omnicc_http_requests_total HTTP requests by route and status.\n"
                             "# TYPE omnicc_http_requests_total counter\n");
    for (int i = 0; i < m.n; i++)
        evbuffer_add_printf(out, "omnicc_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                            m.series[i].route, m.series[i].status, m.series[i].count);
    evbuffer_add_printf(out, "# HELP omnicc_ingest_seconds Time from request to Redis acknowledgement.\n"
                             "# TYPE omnicc_ingest_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i < N_BOUNDS; i++) {
        cum += m.ingest_buckets[i];
        evbuffer_add_printf(out, "omnicc_ingest_seconds_bucket{le=\"%g\"} %llu\n",
                            latency_bounds_ms[i] / 1000.0, cum);
    }
    cum += m.ingest_buckets[N_BOUNDS];
    evbuffer_add_printf(out, "omnicc_ingest_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    evbuffer_add_printf(out, "omnicc_ingest_seconds_sum %g\nomnicc_ingest_seconds_count %llu\n",
                        m.ingest_sum_ms / 1000.0, m.ingest_count);
    const struct store_stats *s = store_get_stats();
    evbuffer_add_printf(out,
                        "# HELP omnicc_redis_round_trips_total Commands sent to Redis (both connections).\n"
                        "# TYPE omnicc_redis_round_trips_total counter\n"
                        "omnicc_redis_round_trips_total %llu\n"
                        "# HELP omnicc_redis_reconnects_total Connections to Redis lost.\n"
                        "# TYPE omnicc_redis_reconnects_total counter\n"
                        "omnicc_redis_reconnects_total %llu\n"
                        "# HELP omnicc_redis_timeouts_total Replies later than command_timeout.\n"
                        "# TYPE omnicc_redis_timeouts_total counter\n"
                        "omnicc_redis_timeouts_total %llu\n"
                        "# HELP omnicc_redis_errors_total Commands that failed.\n"
                        "# TYPE omnicc_redis_errors_total counter\n"
                        "omnicc_redis_errors_total %llu\n"
                        "# HELP omnicc_redis_replica_shortfalls_total State changes answered 503 "
                        "because fewer than ack_replicas replicas confirmed them in time.\n"
                        "# TYPE omnicc_redis_replica_shortfalls_total counter\n"
                        "omnicc_redis_replica_shortfalls_total %llu\n"
                        "# HELP omnicc_redis_failovers_total New primaries named by the sentinels.\n"
                        "# TYPE omnicc_redis_failovers_total counter\n"
                        "omnicc_redis_failovers_total %llu\n"
                        "# HELP omnicc_redis_up Whether Redis is connected and ready.\n"
                        "# TYPE omnicc_redis_up gauge\n"
                        "omnicc_redis_up %d\n",
                        s->round_trips, s->reconnects, s->timeouts, s->errors,
                        s->replica_shortfalls, s->failovers, store_ready() ? 1 : 0);
}

void metrics_free(void)
{
    memset(&m, 0, sizeof(m));
}
