/* cli_analytics.c - `omniccd -c FILE export --since T [--format ndjson|csv] [--table
 * events|facts]` (docs/EXPORT.md) and `omniccd -c FILE reports rebuild` (docs/ANALYTICS.md):
 * one-shot commands against the running deployment's Redis, through the same store (and
 * scripts) as the daemon. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/analytics.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

void export_csv_header(FILE *f, const char *table);
void export_csv_row(FILE *f, const char *table, json_t *e);

static struct {
    struct event_base *base;
    struct event *tick;
    int64_t deadline;
    int exit_code;
    void (*start)(void);
    /* export */
    char cursor[64];
    const char *format, *table;
    long long count;
    /* rebuild */
    char scan[32];
    long long cleared, facts;
} c;

static void stop(int code)
{
    c.exit_code = code;
    event_base_loopexit(c.base, NULL);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (!store_ready()) {
        if (store_fatal() || monotonic_ms() > c.deadline) {
            log_error("Redis not reachable (%s)", store_status());
            stop(2);
        }
        return;
    }
    event_del(c.tick);
    c.start();
}

static int run(const struct config *cfg, void (*start)(void))
{
    char *url = cfg->redis_url ? xstrdup(cfg->redis_url)
                               : xasprintf("unix://%s/redis.sock", cfg->state_dir);
    char *err = NULL;
    c.base = event_base_new();
    c.start = start;
    if (store_init(c.base, cfg, url, &err) < 0) {
        fprintf(stderr, "%s\n", err);
        free(err);
        free(url);
        event_base_free(c.base);
        return 2;
    }
    c.deadline = monotonic_ms() + 10000;
    c.exit_code = 2;
    c.tick = event_new(c.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 20 * 1000};
    event_add(c.tick, &tv);
    event_base_dispatch(c.base);
    store_close();
    event_free(c.tick);
    event_base_free(c.base);
    free(url);
    return c.exit_code;
}

/* ---- export ---- */

static void export_next(void);

static void export_page(const redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        fprintf(stderr, "export: %s\n", err ? err : "unexpected reply");
        stop(2);
        return;
    }
    const redisReply *es = reply->element[1];
    for (size_t i = 0; i < es->elements; i++) {
        const redisReply *e = es->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
            continue;
        json_t *o = export_entry_json(e->element[0]->str, e->element[1]);
        if (strcmp(c.format, "csv") == 0) {
            export_csv_row(stdout, c.table, o);
        } else {
            char *line = json_dumps(o, JSON_COMPACT);
            puts(line);
            free(line);
        }
        json_decref(o);
        snprintf(c.cursor, sizeof(c.cursor), "%s", e->element[0]->str);
        c.count++;
    }
    if (es->elements == 0) {
        fflush(stdout);
        fprintf(stderr, "export: %lld entries; next cursor %s\n", c.count, c.cursor);
        stop(0);
        return;
    }
    export_next();
}

static void export_next(void)
{
    const char *argv[2] = {c.cursor, "5000"};
    if (store_script(SCRIPT_EXPORT_READ, 2, argv, NULL, export_page, NULL) < 0) {
        fprintf(stderr, "export: Redis not reachable\n");
        stop(2);
    }
}

static void export_start(void)
{
    if (strcmp(c.format, "csv") == 0)
        export_csv_header(stdout, c.table);
    export_next();
}

int cli_export(const struct config *cfg, int argc, char **argv)
{
    const char *since = "0";
    c.format = "ndjson";
    c.table = "events";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--since") == 0 && i + 1 < argc)
            since = argv[++i];
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
            c.format = argv[++i];
        else if (strcmp(argv[i], "--table") == 0 && i + 1 < argc)
            c.table = argv[++i];
        else {
            fprintf(stderr, "export: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(c.format, "ndjson") && strcmp(c.format, "csv")) {
        fprintf(stderr, "export: --format ndjson or csv\n");
        return 2;
    }
    if (strcmp(c.table, "events") && strcmp(c.table, "facts")) {
        fprintf(stderr, "export: --table events or facts\n");
        return 2;
    }
    unsigned long long ms, seq;
    int n = 0;
    if (strcmp(since, "0") == 0) {
        snprintf(c.cursor, sizeof(c.cursor), "0");
    } else if (sscanf(since, "%llu-%llu%n", &ms, &seq, &n) == 2 && since[n] == '\0') {
        snprintf(c.cursor, sizeof(c.cursor), "%llu-%llu", ms, seq); /* a cursor: resume after it */
    } else {
        int64_t t;
        if (analytics_parse_time(since, &t) < 0 || t <= 0) {
            fprintf(stderr, "export: --since: a cursor (1700000000000-0), a date or a time\n");
            return 2;
        }
        /* every entry at or after t: resume after the last possible id of t-1 */
        snprintf(c.cursor, sizeof(c.cursor), "%lld-18446744073709551615", (long long)t - 1);
    }
    return run(cfg, export_start);
}

/* ---- reports rebuild ---- */

static void rebuild_replay(void);

static void replay_done(const redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        fprintf(stderr, "reports rebuild: %s\n", err ? err : "unexpected reply");
        stop(2);
        return;
    }
    snprintf(c.cursor, sizeof(c.cursor), "%s", reply->element[0]->str);
    c.facts += reply->element[2]->integer;
    if (reply->element[1]->integer == 0) {
        printf("{\"cleared_keys\":%lld,\"facts_replayed\":%lld}\n", c.cleared, c.facts);
        stop(0);
        return;
    }
    rebuild_replay();
}

static void rebuild_replay(void)
{
    const char *argv[2] = {"replay", c.cursor};
    if (store_script(SCRIPT_REPORT_REBUILD, 2, argv, NULL, replay_done, NULL) < 0)
        stop(2);
}

static void rebuild_clear(void);

static void clear_done(const redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        fprintf(stderr, "reports rebuild: %s\n", err ? err : "unexpected reply");
        stop(2);
        return;
    }
    snprintf(c.scan, sizeof(c.scan), "%s", reply->element[0]->str);
    c.cleared += reply->element[1]->integer;
    if (strcmp(c.scan, "0") == 0) {
        snprintf(c.cursor, sizeof(c.cursor), "0");
        rebuild_replay();
        return;
    }
    rebuild_clear();
}

static void rebuild_clear(void)
{
    const char *argv[2] = {"clear", c.scan};
    if (store_script(SCRIPT_REPORT_REBUILD, 2, argv, NULL, clear_done, NULL) < 0)
        stop(2);
}

int cli_reports(const struct config *cfg, int argc, char **argv)
{
    if (argc != 1 || strcmp(argv[0], "rebuild") != 0) {
        fprintf(stderr, "usage: omniccd -c FILE reports rebuild\n");
        return 2;
    }
    snprintf(c.scan, sizeof(c.scan), "0");
    return run(cfg, rebuild_clear);
}
