/* analytics.h - service reports, warehouse export, data rights (docs/ANALYTICS.md,
 * docs/EXPORT.md). Route tables are listed in http.c; the command-line parts in main.c. */
#ifndef OMNICC_ANALYTICS_H
#define OMNICC_ANALYTICS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "http.h"

struct config;

extern const struct http_route api_reports_routes[]; /* daemon/api_reports.c */
extern const struct http_route api_export_routes[];  /* daemon/api_export.c */
extern const struct http_route api_privacy_routes[]; /* daemon/api_privacy.c */

/* Make [analytics] timezone the process's local zone (TZ), before any thread starts.
 * 0, or -1 with *err when the zone is unknown. */
int analytics_set_timezone(const struct config *cfg, char **err);

/* "2026-03-29" (local midnight), "2026-03-29T10:00[:SS]" (local), with "Z" or "+01:00"
 * (absolute), or epoch milliseconds. 0 on success. */
int analytics_parse_time(const char *s, int64_t *out_ms);

/* Day counters (docs/ANALYTICS.md): the UTC hour the local day ([analytics] timezone) of
 * UTC hour h starts in (an hour belongs to the day of its last second). */
int64_t analytics_day_start(int64_t h);
/* {zone, today, tomorrow, now_hour, map: [hour, day, ...]} for sync_config.lua: the map
 * hour -> day from 45 days back to 2 days ahead (a new JSON object). */
struct json_t *analytics_days_document(const struct config *cfg);
/* From the router's timer: once an hour, extends the map 'rdays' 2 days ahead; every
 * minute, folds the hours that have ended into the day counters. */
void analytics_days_tick(void);

/* Append one entry to the append-only audit stream: action, the object, details (JSON
 * object text or NULL). The request's peer address and the actor are added. */
void analytics_audit(struct http_req *r, const char *action, const char *object, const char *detail);

/* Export entry -> one JSON object of schema version 1 (docs/EXPORT.md); steals nothing. */
struct redisReply;
struct json_t;
struct json_t *export_entry_json(const char *id, const struct redisReply *fields);

/* The retention job (daemon/retention.c): a timer every [analytics] retention_interval
 * seconds, each run bounded (100 interactions), again at once while there is a backlog. */
struct event_base;
void retention_start(struct event_base *base);
void retention_stop(void);

/* `omniccd -c FILE export --since T --format ndjson|csv` and `reports rebuild`. */
int cli_export(const struct config *cfg, int argc, char **argv);
int cli_reports(const struct config *cfg, int argc, char **argv);

#endif
