/* store.h - everything omnicc keeps lives in Redis; this is the only module that talks to it.
 * hiredis async on the event loop, reconnect with backoff and jitter, Lua scripts loaded at
 * connect and called by EVALSHA (NOSCRIPT reloads and retries), a deadline on every command
 * so a Redis that stops answering cannot hang a request. */
#ifndef OMNICC_STORE_H
#define OMNICC_STORE_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;

enum store_script {
    SCRIPT_INGEST,
    SCRIPT_GET_INTERACTION,
    SCRIPT_GET_CASE,
    SCRIPT_GET_CUSTOMER,
    SCRIPT_MERGE_CUSTOMERS,
    SCRIPT_CASE_UPDATE,
    SCRIPT_IMPORT_CUSTOMERS,
    SCRIPT_SYNC_CONFIG,
    SCRIPT_AGENT_UPSERT,
    SCRIPT_AGENT_DELETE,
    SCRIPT_AGENT_READ,
    SCRIPT_AGENT_STATE,
    SCRIPT_AGENT_TOKEN,
    SCRIPT_RESERVATION,
    SCRIPT_WORK,
    SCRIPT_SWEEP,
    SCRIPT_QUEUE_STATS,
    SCRIPT_CHAT,
    SCRIPT_VOICE,
    SCRIPT_EMAIL_REPLY,
    SCRIPT_OUTBOX_CLAIM,
    SCRIPT_OUTBOX_RESULT,
    SCRIPT_EMAIL_DSN,
    SCRIPT_BRANCH_OP,
    SCRIPT_BRANCH_ADMIN,
    SCRIPT_REPORT,          /* analytics (docs/ANALYTICS.md, docs/EXPORT.md) */
    SCRIPT_REPORT_REBUILD,
    SCRIPT_EXPORT_READ,
    SCRIPT_CUSTOMER_EXPORT,
    SCRIPT_ERASE,
    SCRIPT_RETENTION,
    SCRIPT_FAX,
    SCRIPT_SCHEMA,          /* the data layout version, checked on connect */
    SCRIPT_MIGRATE_1,       /* layout 0 -> 1 */
    SCRIPT_MIGRATE_2,       /* layout 1 -> 2: routing pools, report day folds */
    SCRIPT__COUNT
};

/* reply is borrowed (valid only inside the callback); when err is non-NULL the command did
 * not run or failed: "unavailable", "timeout", or the Redis error text. Fires exactly once. */
typedef void store_cb(const redisReply *reply, const char *err, void *arg);

int store_init(struct event_base *base, const struct config *cfg, const char *url,
               char **err);
void store_close(void);
bool store_ready(void);
const char *store_status(void); /* why not ready (or why writes are refused now), for 503s */
/* A synchronous connection (AUTH, SELECT done) for one-shot command-line work off any
 * event loop; NULL and *err on failure. Never used by the daemon. */
redisContext *store_connect_sync(const struct config *cfg, const char *url, char **err);
/* The hash-tagged prefix every key of the routing domain shares: "omnicc:{main}:". */
const char *store_key_base(void);

/* Run a script: argv are ARGV (KEYS[1] is always the key base). 0, or -1 when Redis is
 * not ready (cb is not called then). */
int store_script(enum store_script s, int argc, const char **argv, const size_t *argvlen,
                 store_cb *cb, void *arg) __attribute__((warn_unused_result));
int store_command(int argc, const char **argv, const size_t *argvlen, store_cb *cb, void *arg)
    __attribute__((warn_unused_result));

/* A script run on every (re)connect before the connection is READY, once per argument in
 * the NULL-terminated array argfn returns (array and strings freed by the store): the
 * routing configuration, in pages so that no single call holds Redis long. */
void store_set_prepare_script(enum store_script s, char **(*argfn)(void));

/* The Redis data layout version this omniccd writes, and the oldest layout version whose
 * omniccd can still run on it (docs/OPERATIONS.md, "Upgrade"). On connect, before anything
 * else: an empty database gets this version; an older layout is migrated step by step
 * (SCRIPT_MIGRATE_<n> takes n-1 to n); a newer layout whose compat is above
 * STORE_SCHEMA_VERSION is refused (store_fatal()). */
#define STORE_SCHEMA_VERSION 2
#define STORE_SCHEMA_COMPAT 2
/* Why the store gave up for good (a layout this omniccd cannot read), else NULL. */
const char *store_fatal(void);

/* Event fan-out: XREAD BLOCK on a second connection, so blocking never delays commands.
 * stream_suffix is appended to the key base ("events"). */
bool store_reader_ready(void);
int store_stream_read(const char *stream_suffix, const char *last_id, int block_ms, int count,
                      store_cb *cb, void *arg) __attribute__((warn_unused_result));

/* True for failures a retry can cure (connection lost, timeout, Redis loading, busy,
 * read-only replica, no replicas): callers answer 503 + Retry-After. */
bool store_error_is_transient(const char *err);

/* Counters for /metrics. */
struct store_stats {
    unsigned long long round_trips, reconnects, timeouts, errors;
    unsigned long long replica_shortfalls; /* WAITs that came back with too few replicas */
    unsigned long long failovers;          /* primaries followed to a new address */
};
const struct store_stats *store_get_stats(void);

#endif
