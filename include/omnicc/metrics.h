/* metrics.h - in-process counters and histograms exposed at /metrics (Prometheus text). */
#ifndef OMNICC_METRICS_H
#define OMNICC_METRICS_H

#include <stdint.h>
#include <event2/buffer.h>

void metrics_http_request(const char *route, int status, int64_t elapsed_ms);
void metrics_ingest_latency(int64_t elapsed_ms);
void metrics_render(struct evbuffer *out);
void metrics_free(void);

#endif
