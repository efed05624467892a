/* api_reports.c - GET /v1/reports/service: the service report (docs/ANALYTICS.md), summed
 * from the hour-bucket counters the state-changing scripts keep (lib.lua rollup()), never
 * from history. Periods (hour, day, week) are cut in [analytics] timezone, which is the
 * process's TZ (analytics_set_timezone at start-up), so a daylight-saving day has 23 or 25
 * hours. Hours go to the report script in chunks of whole periods, in parallel. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "omnicc/analytics.h"
#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define HOURS_PER_SCRIPT 800 /* hashes read per script call: hours, or whole days */

int analytics_set_timezone(const struct config *cfg, char **err)
{
    const char *tz = cfg->analytics_timezone ? cfg->analytics_timezone : "UTC";
    if (strcmp(tz, "UTC") != 0) {
        char path[256];
        snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
        if (tz[0] == '/' || strstr(tz, "..") || access(path, R_OK) != 0) {
            *err = xasprintf("[analytics] timezone: unknown time zone '%s' (need tzdata)", tz);
            return -1;
        }
    }
    setenv("TZ", tz, 1);
    tzset();
    return 0;
}

int analytics_parse_time(const char *s, int64_t *out_ms)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end == '\0' && errno == 0 && v > 100000000000LL) { /* epoch ms */
        *out_ms = v;
        return 0;
    }
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    const char *p = s + 10;
    if (*p == 'T' || *p == ' ') {
        int m2 = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &m2) != 2 || m2 != 5)
            return -1;
        p += 1 + m2;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &sec, &m2) != 1 || m2 != 2)
                return -1;
            p += 3;
        }
    }
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t;
    if (*p == '\0') {
        tm.tm_isdst = -1;
        t = mktime(&tm); /* local ([analytics] timezone) */
    } else if (strcmp(p, "Z") == 0) {
        t = timegm(&tm);
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh = (p[1] - '0') * 10 + (p[2] - '0'), om = (p[4] - '0') * 10 + (p[5] - '0');
        t = timegm(&tm) - (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (t == (time_t)-1)
        return -1;
    *out_ms = (int64_t)t * 1000;
    return 0;
}

/* "2026-03-29T00:00:00+01:00" in the report zone */
static char *local_iso(int64_t hour)
{
    time_t t = (time_t)hour * 3600;
    struct tm tm;
    localtime_r(&t, &tm);
    char b[40], z[8];
    strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
    strftime(z, sizeof(z), "%z", &tm);
    return xasprintf("%s%.3s:%.2s", b, z, z + 3);
}

/* start of the next period after hour h (UTC hours), in the report zone. An hour belongs
 * to the local day (and week) of its last second: in a zone with a non-whole-hour offset
 * (India, +05:30) the UTC hour 18:00-19:00 is 23:30-00:30 local and starts the next day,
 * so every day is the 24 UTC hours from the one holding local midnight. */
static int64_t next_boundary(int64_t h, const char *interval)
{
    if (strcmp(interval, "hour") == 0)
        return h + 1;
    time_t t = (time_t)h * 3600 + 3599;
    struct tm tm;
    localtime_r(&t, &tm);
    int days = 1;
    if (strcmp(interval, "week") == 0)
        days = 7 - ((tm.tm_wday + 6) % 7); /* to next Monday */
    struct tm n = {0};
    n.tm_year = tm.tm_year;
    n.tm_mon = tm.tm_mon;
    n.tm_mday = tm.tm_mday + days;
    n.tm_isdst = -1;
    time_t nt = mktime(&n);
    int64_t nh = (int64_t)nt / 3600; /* zones with non-whole-hour offsets: hour floor */
    return nh > h ? nh : h + 1;
}

int64_t analytics_day_start(int64_t h)
{
    time_t t = (time_t)h * 3600 + 3599;
    struct tm tm;
    localtime_r(&t, &tm);
    struct tm n = {0};
    n.tm_year = tm.tm_year;
    n.tm_mon = tm.tm_mon;
    n.tm_mday = tm.tm_mday;
    n.tm_isdst = -1;
    int64_t d = (int64_t)mktime(&n) / 3600; /* as next_boundary() of the day before */
    return d <= h ? d : h;
}

#define DAYS_BACK (45 * 24)
#define DAYS_AHEAD (48)

json_t *analytics_days_document(const struct config *cfg)
{
    int64_t now_h = now_ms() / 3600000, today = analytics_day_start(now_h);
    json_t *map = json_array();
    for (int64_t h = now_h - DAYS_BACK; h <= now_h + DAYS_AHEAD; h++) {
        json_array_append_new(map, json_integer(h));
        json_array_append_new(map, json_integer(analytics_day_start(h)));
    }
    return json_pack("{s:s,s:I,s:I,s:I,s:o}", "zone",
                     cfg && cfg->analytics_timezone ? cfg->analytics_timezone : "UTC", "today",
                     (json_int_t)today, "tomorrow", (json_int_t)next_boundary(now_h, "day"),
                     "now_hour", (json_int_t)now_h, "map", map);
}

static void days_written(const redisReply *reply, const char *err, void *arg)
{
    (void)reply;
    (void)arg;
    if (err)
        log_warn("reports: extending the day map 'rdays': %s", err);
}

/* The fold of ended hours into the day counters (report_rebuild.lua 'fold', lib.lua
 * rollup()): checked every FOLD_EVERY_MS by each instance, again on the next tick while
 * hours are still due (a call reads at most FOLD_FIELDS hour-hash fields, about one busy
 * hour, so a backlog after downtime is worked off in steps that leave Redis to others
 * between). */
#define FOLD_EVERY_MS 60000
#define FOLD_FIELDS "8000"

static struct {
    int64_t next_ms;
    bool running;
} fold;

static void fold_done(const redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    fold.running = false;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) {
        if (!err || strcmp(err, "unavailable") != 0)
            log_warn("reports: folding hours into the day counters: %s",
                     err ? err : "unexpected reply");
        fold.next_ms = monotonic_ms() + FOLD_EVERY_MS;
        return;
    }
    long long mark = reply->element[0]->integer, hours = reply->element[1]->integer,
              fields = reply->element[2]->integer, due = reply->element[3]->integer;
    if (hours)
        log_info("reports: %lld hour(s) folded into the day counters (%lld fields), up to hour "
                 "%lld; %lld still due",
                 hours, fields, mark, due);
    fold.next_ms = due > 0 ? 0 : monotonic_ms() + FOLD_EVERY_MS;
}

static void fold_tick(void)
{
    if (fold.running || monotonic_ms() < fold.next_ms)
        return;
    const char *argv[2] = {"fold", FOLD_FIELDS};
    if (store_script(SCRIPT_REPORT_REBUILD, 2, argv, NULL, fold_done, NULL) == 0)
        fold.running = true;
}

void analytics_days_tick(void)
{
    static int64_t done_h;
    int64_t now_h = now_ms() / 3600000;
    if (!store_ready())
        return;
    fold_tick();
    if (now_h == done_h)
        return;
    int n = 2 + 2 * (DAYS_AHEAD + 1);
    const char **argv = xcalloc((size_t)n, sizeof(*argv));
    char **own = xcalloc((size_t)n, sizeof(*own));
    argv[0] = "HSET";
    argv[1] = own[1] = xasprintf("%srdays", store_key_base());
    for (int i = 0; i <= DAYS_AHEAD; i++) {
        argv[2 + 2 * i] = own[2 + 2 * i] = xasprintf("%lld", (long long)(now_h + i));
        argv[3 + 2 * i] = own[3 + 2 * i] =
            xasprintf("%lld", (long long)analytics_day_start(now_h + i));
    }
    if (store_command(n, argv, NULL, days_written, NULL) == 0)
        done_h = now_h;
    for (int i = 0; i < n; i++)
        free(own[i]);
    free(own);
    free(argv);
}

static const char *const METRICS[] = {"offered", "answered", "abandoned", "answered_in_sla",
                                      "wait_ms", "handled", "handle_ms", "wrap_ms",
                                      "transfers", "timed_out", "new_cases", "repeat_cases"};

static json_t *ratio(json_int_t a, json_int_t b, double scale)
{
    if (b <= 0)
        return json_null();
    return json_real((double)((int64_t)((double)a * scale / (double)b * 10000.0 + 0.5)) / 10000.0);
}

/* raw sums -> the report figures (definitions in docs/ANALYTICS.md) */
static json_t *figures(json_t *raw)
{
    json_t *o = json_object();
    json_int_t v[ARRAY_SIZE(METRICS)];
    for (size_t i = 0; i < ARRAY_SIZE(METRICS); i++) {
        v[i] = json_integer_value(json_object_get(raw, METRICS[i]));
        json_object_set_new(o, METRICS[i], json_integer(v[i]));
    }
    json_int_t offered = v[0], answered = v[1], abandoned = v[2], in_sla = v[3], wait = v[4],
               handled = v[5], handle = v[6], wrap = v[7], new_cases = v[10];
    json_object_set_new(o, "abandon_rate", ratio(abandoned, offered, 1));
    json_object_set_new(o, "service_level", ratio(in_sla, answered + abandoned, 1));
    json_object_set_new(o, "asa_seconds", ratio(wait, answered, 0.001));
    json_object_set_new(o, "aht_seconds", ratio(handle + wrap, handled, 0.001));
    json_object_set_new(o, "contacts_per_case", ratio(offered, new_cases, 1));
    json_object_set_new(o, "fcr_rate", ratio(new_cases - v[11], new_cases, 1));
    return o;
}

static void add_into(json_t *dst, json_t *src)
{
    const char *k;
    json_t *v;
    json_object_foreach(src, k, v)
    {
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : (json_int_t)json_number_value(v);
        json_t *d = json_object_get(dst, k);
        if (json_is_integer(d)) /* in place: a month by agent adds ~20,000 of them */
            json_integer_set(d, json_integer_value(d) + n);
        else
            json_object_set_new(dst, k, json_integer(n));
    }
}

struct report_job {
    struct http_req *r;
    char *dim, *interval;
    int64_t *bounds; /* n_periods + 1 */
    int n_periods;
    json_t *groups;  /* array per period: {value: raw} */
    json_t *totals;  /* array per period: raw */
    int outstanding;
    char *error;
};

struct chunk_ref {
    struct report_job *job;
    int first; /* index of the chunk's first period */
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *group_rows(json_t *groups)
{
    size_t n = json_object_size(groups), i = 0;
    const char **keys = xcalloc(n ? n : 1, sizeof(*keys));
    const char *k;
    json_t *v;
    json_object_foreach(groups, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), cmp_str);
    json_t *rows = json_array();
    for (i = 0; i < n; i++) {
        json_t *row = figures(json_object_get(groups, keys[i]));
        json_object_set_new(row, "key", json_string(keys[i]));
        json_array_append_new(rows, row);
    }
    free(keys);
    return rows;
}

static void finish(struct report_job *job)
{
    struct http_req *r = job->r;
    if (job->error) {
        api_reply_script_error(r, job->error);
    } else {
        json_t *periods = json_array();
        json_t *all_groups = json_object(), *all_total = json_object();
        for (int p = 0; p < job->n_periods; p++) {
            json_t *g = json_array_get(job->groups, p), *t = json_array_get(job->totals, p);
            const char *k;
            json_t *v;
            json_object_foreach(g, k, v)
            {
                json_t *acc = json_object_get(all_groups, k);
                if (!acc)
                    json_object_set_new(all_groups, k, acc = json_object());
                add_into(acc, v);
            }
            add_into(all_total, t);
            char *s = local_iso(job->bounds[p]), *e = local_iso(job->bounds[p + 1]);
            json_t *per = json_pack("{s:s,s:s,s:I,s:o,s:o}", "start", s, "end", e, "hours",
                                    (json_int_t)(job->bounds[p + 1] - job->bounds[p]), "total",
                                    figures(t), "groups", group_rows(g));
            free(s);
            free(e);
            json_array_append_new(periods, per);
        }
        char *s = local_iso(job->bounds[0]), *e = local_iso(job->bounds[job->n_periods]);
        const struct config *cfg = api_config();
        json_t *out = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o}", "from", s, "to", e,
                                "timezone", cfg->analytics_timezone ? cfg->analytics_timezone : "UTC",
                                "interval", job->interval, "group_by", job->dim, "total",
                                figures(all_total), "groups", group_rows(all_groups), "periods",
                                periods);
        free(s);
        free(e);
        json_decref(all_groups);
        json_decref(all_total);
        if (strcmp(http_query(r, "format") ? http_query(r, "format") : "", "csv") == 0) {
            /* one row per period and group, plus a total row per period */
            size_t len = 0;
            char *csv = NULL;
            FILE *f = open_memstream(&csv, &len);
            fprintf(f, "period_start,period_end,%s", job->dim);
            static const char *const cols[] = {
                "offered", "answered", "abandoned", "abandon_rate", "answered_in_sla",
                "service_level", "asa_seconds", "handled", "aht_seconds", "transfers",
                "timed_out", "new_cases", "contacts_per_case", "repeat_cases", "fcr_rate"};
            for (size_t i = 0; i < ARRAY_SIZE(cols); i++)
                fprintf(f, ",%s", cols[i]);
            fputc('\n', f);
            size_t pi;
            json_t *per;
            json_array_foreach(periods, pi, per)
            {
                json_t *rows = json_array();
                json_t *tot = json_deep_copy(json_object_get(per, "total"));
                json_object_set_new(tot, "key", json_string("(total)"));
                json_array_append_new(rows, tot);
                json_array_extend(rows, json_object_get(per, "groups"));
                size_t ri;
                json_t *row;
                json_array_foreach(rows, ri, row)
                {
                    const char *key = json_string_value(json_object_get(row, "key"));
                    fprintf(f, "%s,%s,\"", json_string_value(json_object_get(per, "start")),
                            json_string_value(json_object_get(per, "end")));
                    for (const char *c = key; *c; c++) {
                        if (*c == '"')
                            fputc('"', f);
                        fputc(*c, f);
                    }
                    fputc('"', f);
                    for (size_t i = 0; i < ARRAY_SIZE(cols); i++) {
                        json_t *x = json_object_get(row, cols[i]);
                        if (json_is_integer(x))
                            fprintf(f, ",%lld", (long long)json_integer_value(x));
                        else if (json_is_real(x))
                            fprintf(f, ",%.4f", json_real_value(x));
                        else
                            fputs(",", f);
                    }
                    fputc('\n', f);
                }
                json_decref(rows);
            }
            fclose(f);
            if (r->req)
                evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Disposition",
                                  "attachment; filename=\"service-report.csv\"");
            http_reply_raw(r, 200, "text/csv; charset=utf-8", csv, len);
            free(csv);
            json_decref(out);
        } else {
            /* rates have 4 decimals: 10 significant digits print them as they are
             * (12.3456, not 12.345599999999999), and a month by agent (~20,000 of them)
             * prints in a fraction of the time */
            char *text = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(10));
            json_decref(out);
            if (!text) {
                http_reply_error(r, 500, "internal", "encoding failed");
            } else {
                size_t n = strlen(text);
                text = xrealloc(text, n + 2);
                text[n++] = '\n';
                http_reply_raw(r, 200, "application/json", text, n);
                free(text);
            }
        }
    }
    json_decref(job->groups);
    json_decref(job->totals);
    free(job->bounds);
    free(job->dim);
    free(job->interval);
    free(job->error);
    free(job);
}

static void chunk_done(const redisReply *reply, const char *err, void *arg)
{
    struct chunk_ref *ref = arg;
    struct report_job *job = ref->job;
    if (err && !job->error) {
        job->error = xstrdup(err);
    } else if (!err && reply->type == REDIS_REPLY_STRING) {
        json_t *o = json_loadb(reply->str, reply->len, 0, NULL);
        json_t *g = json_object_get(o, "groups"), *t = json_object_get(o, "totals");
        /* cjson encodes an empty table as {} and arrays of tables as [] */
        for (size_t i = 0; json_is_array(g) && i < json_array_size(g); i++) {
            json_t *gi = json_array_get(g, i);
            if (json_is_object(gi))
                json_array_set(job->groups, ref->first + i, gi);
            json_t *ti = json_array_get(t, i);
            if (json_is_object(ti))
                json_array_set(job->totals, ref->first + i, ti);
        }
        json_decref(o);
    }
    free(ref);
    if (--job->outstanding == 0)
        finish(job);
}

static void service_report(struct http_req *r)
{
    const struct config *cfg = api_config();
    const char *interval = http_query(r, "interval") ? http_query(r, "interval") : "day";
    const char *dim = http_query(r, "group_by") ? http_query(r, "group_by") : "channel";
    if (strcmp(interval, "hour") && strcmp(interval, "day") && strcmp(interval, "week")) {
        http_reply_error(r, 400, "invalid", "interval: hour, day or week");
        return;
    }
    if (strcmp(dim, "channel") && strcmp(dim, "queue") && strcmp(dim, "segment") &&
        strcmp(dim, "branch") && strcmp(dim, "agent")) {
        http_reply_error(r, 400, "invalid", "group_by: channel, queue, segment, branch or agent");
        return;
    }
    int64_t from_ms, to_ms;
    if (analytics_parse_time(http_query(r, "from"), &from_ms) < 0 ||
        analytics_parse_time(http_query(r, "to"), &to_ms) < 0) {
        http_reply_error(r, 400, "invalid",
                         "from, to: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (in %s), with Z or "
                         "+HH:MM for absolute times, or epoch milliseconds",
                         cfg->analytics_timezone ? cfg->analytics_timezone : "UTC");
        return;
    }
    /* both rounded down: an hour counts where its last second falls (next_boundary) */
    int64_t h0 = from_ms / 3600000, h1 = to_ms / 3600000;
    if (h1 <= h0) {
        http_reply_error(r, 400, "invalid", "to must be at least an hour after from");
        return;
    }
    if (h1 - h0 > (int64_t)cfg->analytics_report_max_days * 24) {
        http_reply_error(r, 400, "invalid", "period longer than [analytics] report_max_days (%d)",
                         cfg->analytics_report_max_days);
        return;
    }
    struct report_job *job = xcalloc(1, sizeof(*job));
    job->r = r;
    job->dim = xstrdup(dim);
    job->interval = xstrdup(interval);
    size_t cap = 64;
    job->bounds = xmalloc(cap * sizeof(int64_t));
    job->bounds[0] = h0;
    int n = 0;
    for (int64_t h = h0; h < h1;) {
        int64_t nb = next_boundary(h, interval);
        if (nb > h1)
            nb = h1;
        if ((size_t)n + 2 > cap)
            job->bounds = xrealloc(job->bounds, (cap *= 2) * sizeof(int64_t));
        job->bounds[++n] = nb;
        h = nb;
    }
    job->n_periods = n;
    job->groups = json_array();
    job->totals = json_array();
    for (int p = 0; p < n; p++) {
        json_array_append_new(job->groups, json_object());
        json_array_append_new(job->totals, json_object());
    }
    job->outstanding = 1;
    /* the reads of each period: its days when it is whole local days (day counters), else
     * its hours; a script call reads at most ~HOURS_PER_SCRIPT hashes */
    int64_t *reads = xcalloc((size_t)n, sizeof(*reads));
    bool *whole = xcalloc((size_t)n, sizeof(*whole));
    for (int p = 0; p < n; p++) {
        int64_t s0 = job->bounds[p], s1 = job->bounds[p + 1];
        whole[p] = strcmp(interval, "hour") != 0 && analytics_day_start(s0) == s0 &&
                   analytics_day_start(s1) == s1;
        reads[p] = whole[p] ? (s1 - s0 + 23) / 24 : s1 - s0;
    }
    int chunks = 0; /* the field budget is shared among the script calls */
    for (int p = 0; p < n; chunks++) {
        int q = p + 1;
        for (int64_t nr = reads[p]; q < n && nr + reads[q] <= HOURS_PER_SCRIPT; q++)
            nr += reads[q];
        p = q;
    }
    char budget[24];
    snprintf(budget, sizeof(budget), "%d",
             cfg->analytics_report_max_fields / (chunks ? chunks : 1) + 1);
    for (int p = 0; p < n;) {
        int q = p + 1;
        for (int64_t nr = reads[p]; q < n && nr + reads[q] <= HOURS_PER_SCRIPT; q++)
            nr += reads[q];
        json_t *b = json_array();
        for (int i = p; i <= q; i++)
            json_array_append_new(b, json_integer(job->bounds[i]));
        char *text = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        /* the local days of each whole-day period (day, week), read from the day counters */
        json_t *pd = json_array();
        for (int i = p; i < q; i++) {
            json_t *ds = json_array();
            int64_t s0 = job->bounds[i], s1 = job->bounds[i + 1];
            if (whole[i])
                for (int64_t d = s0; d < s1; d = next_boundary(d, "day"))
                    json_array_append_new(ds, json_integer(d));
            json_array_append_new(pd, ds);
        }
        char *days = json_dumps(pd, JSON_COMPACT);
        json_decref(pd);
        struct chunk_ref *ref = xcalloc(1, sizeof(*ref));
        ref->job = job;
        ref->first = p;
        const char *argv[5] = {dim, text, budget, days,
                               cfg->analytics_timezone ? cfg->analytics_timezone : "UTC"};
        job->outstanding++;
        if (store_script(SCRIPT_REPORT, 5, argv, NULL, chunk_done, ref) < 0) {
            job->outstanding--;
            free(ref);
            if (!job->error)
                job->error = xstrdup("unavailable");
        }
        free(text);
        free(days);
        p = q;
    }
    free(reads);
    free(whole);
    char *detail = xasprintf("{\"from\":%lld,\"to\":%lld,\"group_by\":\"%s\"}",
                             (long long)from_ms, (long long)to_ms, dim);
    analytics_audit(r, "report.service", "", detail);
    free(detail);
    job->outstanding--;
    if (job->outstanding == 0)
        finish(job);
}

const struct http_route api_reports_routes[] = {
    {EVHTTP_REQ_GET, "/v1/reports/service", HTTP_AUTH_ADMIN, service_report, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
