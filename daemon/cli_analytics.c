/* cli_analytics.c - `omniccd -c FILE export --since T [--format ndjson|csv] [--table
 * events|facts]` (docs/EXPORT.md), `omniccd -c FILE reports rebuild [--from-export]` and
 * `reports fold` (docs/ANALYTICS.md): one-shot commands against the running deployment's
 * Redis, through the same store (and scripts) as the daemon; the rebuild from the case
 * histories uses a synchronous connection of its own. */
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
    /* fold */
    long long fold_hours, fold_fields;
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
    char *url = cfg->redis_url         ? xstrdup(cfg->redis_url)
                : cfg->redis_sentinels ? xasprintf("sentinel://%s", cfg->redis_master_name)
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

/* ---- reports fold: the daemon's fold of ended hours into the day counters, until none
 * is due (report_rebuild.lua 'fold'; docs/ANALYTICS.md) ---- */

static void fold_step(void);

static void fold_step_done(const redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) {
        fprintf(stderr, "reports fold: %s\n", err ? err : "unexpected reply");
        stop(2);
        return;
    }
    c.fold_hours += reply->element[1]->integer;
    c.fold_fields += reply->element[2]->integer;
    if (reply->element[3]->integer > 0 && reply->element[1]->integer > 0) {
        fold_step();
        return;
    }
    printf("{\"hours\":%lld,\"fields\":%lld,\"folded_to\":%lld}\n", c.fold_hours,
           c.fold_fields, reply->element[0]->integer);
    stop(0);
}

static void fold_step(void)
{
    const char *argv[2] = {"fold", "8000"}; /* as the daemon (api_reports.c) */
    if (store_script(SCRIPT_REPORT_REBUILD, 2, argv, NULL, fold_step_done, NULL) < 0)
        stop(2);
}

/* ---- reports rebuild from the case histories (synchronous: a one-shot command) ----
 *
 * Every call of lib.lua rollup() leaves its fact ('<hour>|<dims>|<metric>:<n> ...') in the
 * field 'rp' of the case history entry written by the same script call. The rebuild lists
 * every case history (SCAN, TYPE stream), sums those facts into staging hashes rpb:<hour>
 * (HINCRBY, pipelined one page of 1000 entries at a time), then deletes every rp:* hash and
 * renames each staging hash into place. Live counters stay untouched until that swap. */

struct strv {
    char **v;
    size_t n, cap;
};

static void strv_push(struct strv *s, const char *str, size_t len)
{
    if (s->n == s->cap)
        s->v = xrealloc(s->v, (s->cap = s->cap ? 2 * s->cap : 1024) * sizeof(*s->v));
    s->v[s->n++] = xstrndup(str, len);
}

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* every key matching pattern (and of type, when given), each once: SCAN may repeat keys */
static int scan_keys(redisContext *rc, const char *pattern, const char *type, struct strv *out)
{
    char cursor[32] = "0";
    do {
        redisReply *r = type ? redisCommand(rc, "SCAN %s MATCH %s COUNT 1000 TYPE %s", cursor,
                                            pattern, type)
                             : redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            fprintf(stderr, "reports rebuild: SCAN: %s\n",
                    r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            strv_push(out, r->element[1]->element[i]->str, r->element[1]->element[i]->len);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    if (out->n) {
        qsort(out->v, out->n, sizeof(*out->v), cmp_cstr);
        size_t w = 1;
        for (size_t i = 1; i < out->n; i++) {
            if (strcmp(out->v[i], out->v[w - 1]) == 0)
                free(out->v[i]);
            else
                out->v[w++] = out->v[i];
        }
        out->n = w;
    }
    return 0;
}

/* read back n pipelined replies; -1 on the first error */
static int drain(redisContext *rc, long long n, const char *what)
{
    int rv = 0;
    for (long long i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK) {
            fprintf(stderr, "reports rebuild: %s: %s\n", what, rc->errstr);
            return -1;
        }
        if (r->type == REDIS_REPLY_ERROR && rv == 0) {
            fprintf(stderr, "reports rebuild: %s: %s\n", what, r->str);
            rv = -1;
        }
        freeReplyObject(r);
    }
    return rv;
}

static int delete_keys(redisContext *rc, struct strv *keys)
{
    for (size_t i = 0; i < keys->n; i++)
        redisAppendCommand(rc, "UNLINK %s", keys->v[i]);
    return drain(rc, (long long)keys->n, "UNLINK");
}

struct rebuild_counts {
    long long histories, entries, facts, cleared;
    int64_t *hours;
    size_t n_hours, cap_hours;
    int64_t memo_hour, memo_day; /* analytics_day_start() of the last fact's hour */
    int memo_set;
    /* the fold mark ('rdays' 'folded'): hours from it on are not in the day counters yet
     * (the fold adds them); INT64_MAX when the database has none (counted directly) */
    int64_t mark;
    bool has_mark;
};

static void hour_seen(struct rebuild_counts *k, int64_t h)
{
    if (k->n_hours && k->hours[k->n_hours - 1] == h)
        return;
    if (k->n_hours == k->cap_hours) {
        if (k->n_hours >= 65536) { /* keep it small: sort, unique */
            qsort(k->hours, k->n_hours, sizeof(int64_t), cmp_i64);
            size_t w = 1;
            for (size_t i = 1; i < k->n_hours; i++)
                if (k->hours[i] != k->hours[w - 1])
                    k->hours[w++] = k->hours[i];
            k->n_hours = w;
        }
        if (k->n_hours == k->cap_hours)
            k->hours = xrealloc(k->hours, (k->cap_hours = k->cap_hours ? 2 * k->cap_hours : 1024) *
                                              sizeof(int64_t));
    }
    k->hours[k->n_hours++] = h;
}

/* one 'rp' field: facts a line; HINCRBY appended (not sent) for each metric; -1 if malformed */
static int apply_facts(redisContext *rc, const char *base, const char *rp, size_t len,
                       struct rebuild_counts *k, long long *queued)
{
    const char *p = rp, *end = rp + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        /* <hour>|<channel>|<queue>|<segment>|<branch>|<agent>|<metric>:<n> ... */
        const char *bar[6];
        int nb = 0;
        for (const char *q = p; q < le && nb < 6; q++)
            if (*q == '|')
                bar[nb++] = q;
        if (nb < 6)
            return -1;
        char *e;
        long long hour = strtoll(p, &e, 10);
        if (e != bar[0])
            return -1;
        int dlen = (int)(bar[5] - bar[0] - 1);
        char key[256];
        snprintf(key, sizeof(key), "%srpb:%lld", base, hour);
        /* the day counters rdb:<day>:<dim> '<value>|<metric>' (branch, agent '-' not kept) */
        static const char *const dims[5] = {"channel", "queue", "segment", "branch", "agent"};
        if (hour != k->memo_hour || !k->memo_set) {
            k->memo_hour = hour;
            k->memo_day = analytics_day_start(hour);
            k->memo_set = 1;
        }
        char dkey[5][256];
        for (int d = 0; d < 5; d++)
            snprintf(dkey[d], sizeof(dkey[d]), "%srdb:%lld:%s", base, (long long)k->memo_day,
                     dims[d]);
        bool unfolded = hour >= k->mark;
        bool none[5] = {unfolded, unfolded, unfolded,
                        unfolded || (bar[4] - bar[3] == 2 && bar[3][1] == '-'),
                        unfolded || (bar[5] - bar[4] == 2 && bar[4][1] == '-')};
        const char *m = bar[5] + 1;
        long long before = *queued;
        while (m < le) {
            while (m < le && *m == ' ')
                m++;
            const char *colon = memchr(m, ':', (size_t)(le - m));
            if (!colon)
                break;
            long long n = strtoll(colon + 1, &e, 10);
            if (e == colon + 1 || e > le)
                return -1;
            char *field = xasprintf("%.*s|%.*s", dlen, bar[0] + 1, (int)(colon - m), m);
            char num[32];
            snprintf(num, sizeof(num), "%lld", n);
            const char *av[4] = {"HINCRBY", key, field, num};
            redisAppendCommandArgv(rc, 4, av, NULL);
            free(field);
            (*queued)++;
            for (int d = 0; d < 5; d++) {
                if (none[d])
                    continue;
                const char *v0 = bar[d] + 1;
                char *df = xasprintf("%.*s|%.*s", (int)(bar[d + 1] - v0), v0, (int)(colon - m), m);
                const char *dv[4] = {"HINCRBY", dkey[d], df, num};
                redisAppendCommandArgv(rc, 4, dv, NULL);
                free(df);
                (*queued)++;
            }
            m = e;
        }
        k->facts++;
        if (*queued > before) /* the staging hash exists: it is renamed at the end */
            hour_seen(k, hour);
        p = le + 1;
    }
    return 0;
}

static int rebuild_history(redisContext *rc, const char *base, const char *key,
                           struct rebuild_counts *k)
{
    char start[64] = "-";
    for (;;) {
        redisReply *r = redisCommand(rc, "XRANGE %s %s + COUNT 1000", key, start);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "reports rebuild: XRANGE %s: %s\n", key,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            return -1;
        }
        long long queued = 0;
        int bad = 0;
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
                continue;
            k->entries++;
            const redisReply *f = e->element[1];
            for (size_t j = 0; j + 1 < f->elements; j += 2)
                if (strcmp(f->element[j]->str, "rp") == 0 &&
                    apply_facts(rc, base, f->element[j + 1]->str, f->element[j + 1]->len, k,
                                &queued) < 0 && !bad) {
                    fprintf(stderr, "reports rebuild: %s %s: malformed field rp\n", key,
                            e->element[0]->str);
                    bad = 1;
                }
            snprintf(start, sizeof(start), "(%s", e->element[0]->str);
        }
        size_t n = r->elements;
        freeReplyObject(r);
        if (drain(rc, queued, "HINCRBY") < 0 || bad)
            return -1;
        if (n < 1000)
            return 0;
    }
}

static int rebuild_from_histories(const struct config *cfg)
{
    char *url = cfg->redis_url ? xstrdup(cfg->redis_url)
                               : xasprintf("unix://%s/redis.sock", cfg->state_dir);
    char *err = NULL;
    redisContext *rc = store_connect_sync(cfg, url, &err);
    free(url);
    if (!rc) {
        fprintf(stderr, "reports rebuild: %s\n", err);
        free(err);
        return 2;
    }
    char base[160];
    snprintf(base, sizeof(base), "%s:{main}:", cfg->redis_prefix);
    struct rebuild_counts k = {0};
    struct strv keys = {0};
    int rv = 2;
    redisReply *mr = redisCommand(rc, "HGET %srdays folded", base);
    if (!mr || (mr->type != REDIS_REPLY_STRING && mr->type != REDIS_REPLY_NIL)) {
        fprintf(stderr, "reports rebuild: HGET rdays: %s\n",
                mr && mr->type == REDIS_REPLY_ERROR ? mr->str : rc->errstr);
        if (mr)
            freeReplyObject(mr);
        redisFree(rc);
        return 2;
    }
    k.has_mark = mr->type == REDIS_REPLY_STRING;
    k.mark = k.has_mark ? strtoll(mr->str, NULL, 10) : INT64_MAX;
    freeReplyObject(mr);
    char *pat = xasprintf("%srpb:*", base); /* left by an interrupted rebuild */
    if (scan_keys(rc, pat, NULL, &keys) < 0 || delete_keys(rc, &keys) < 0)
        goto out;
    strv_free(&keys);
    free(pat);
    pat = xasprintf("%srdb:*", base);
    if (scan_keys(rc, pat, NULL, &keys) < 0 || delete_keys(rc, &keys) < 0)
        goto out;
    strv_free(&keys);
    free(pat);
    pat = xasprintf("%scase:*:hist", base);
    if (scan_keys(rc, pat, "stream", &keys) < 0)
        goto out;
    for (size_t i = 0; i < keys.n; i++) {
        if (rebuild_history(rc, base, keys.v[i], &k) < 0)
            goto out;
        k.histories++;
    }
    strv_free(&keys);
    free(pat);
    /* the swap: every live counter out, every rebuilt one in */
    pat = xasprintf("%srp:*", base);
    if (scan_keys(rc, pat, NULL, &keys) < 0 || delete_keys(rc, &keys) < 0)
        goto out;
    k.cleared = (long long)keys.n;
    if (k.n_hours)
        qsort(k.hours, k.n_hours, sizeof(int64_t), cmp_i64);
    size_t renames = 0;
    for (size_t i = 0; i < k.n_hours; i++) {
        if (i && k.hours[i] == k.hours[i - 1])
            continue;
        redisAppendCommand(rc, "RENAME %srpb:%lld %srp:%lld", base, (long long)k.hours[i], base,
                           (long long)k.hours[i]);
        renames++;
    }
    if (drain(rc, (long long)renames, "RENAME") < 0)
        goto out;
    /* the day counters: the same swap, then the map hour -> day of every hour counted, in
     * this zone, complete from the first day on ('from' 0) */
    strv_free(&keys);
    free(pat);
    pat = xasprintf("%srd:*", base);
    if (scan_keys(rc, pat, NULL, &keys) < 0 || delete_keys(rc, &keys) < 0)
        goto out;
    strv_free(&keys);
    free(pat);
    pat = xasprintf("%srdb:*", base);
    if (scan_keys(rc, pat, NULL, &keys) < 0)
        goto out;
    size_t blen = strlen(base);
    for (size_t i = 0; i < keys.n; i++)
        redisAppendCommand(rc, "RENAME %s %srd:%s", keys.v[i], base, keys.v[i] + blen + 4);
    if (drain(rc, (long long)keys.n, "RENAME") < 0)
        goto out;
    size_t day_keys = keys.n, mapped = 0;
    for (size_t i = 0; i < k.n_hours; i++) {
        if (i && k.hours[i] == k.hours[i - 1])
            continue;
        redisAppendCommand(rc, "HSET %srdays %lld %lld", base, (long long)k.hours[i],
                           (long long)analytics_day_start(k.hours[i]));
        mapped++;
    }
    redisAppendCommand(rc, "HSET %srdays zone %s from 0", base,
                       cfg->analytics_timezone ? cfg->analytics_timezone : "UTC");
    /* the mark back where this rebuild read it: hours a daemon folded meanwhile into the
     * counters just replaced are folded again, into these */
    if (k.has_mark)
        redisAppendCommand(rc, "HSET %srdays folded %lld", base, (long long)k.mark);
    if (drain(rc, (long long)mapped + 1 + k.has_mark, "HSET") < 0)
        goto out;
    printf("{\"histories\":%lld,\"entries\":%lld,\"facts\":%lld,\"hours\":%zu,"
           "\"day_keys\":%zu,\"cleared_keys\":%lld}\n",
           k.histories, k.entries, k.facts, renames, day_keys, k.cleared);
    rv = 0;
out:
    strv_free(&keys);
    free(pat);
    free(k.hours);
    redisFree(rc);
    return rv;
}

int cli_reports(const struct config *cfg, int argc, char **argv)
{
    if (argc == 1 && strcmp(argv[0], "rebuild") == 0)
        return rebuild_from_histories(cfg);
    if (argc == 2 && strcmp(argv[0], "rebuild") == 0 && strcmp(argv[1], "--from-export") == 0) {
        snprintf(c.scan, sizeof(c.scan), "0");
        return run(cfg, rebuild_clear);
    }
    if (argc == 1 && strcmp(argv[0], "fold") == 0)
        return run(cfg, fold_step);
    fprintf(stderr, "usage: omniccd -c FILE reports rebuild [--from-export] | reports fold\n");
    return 2;
}
