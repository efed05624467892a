/* api_export.c - GET /v1/export/events: the warehouse export (docs/EXPORT.md). Pages of
 * the export stream 'xs' as NDJSON, schema version 1; the id of each line is the cursor to
 * resume after it, so a loader that stores the last id it committed gets every entry exactly
 * once, across restarts of either side. Also the row formats shared with `omniccd export`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "omnicc/analytics.h"
#include "omnicc/api.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

static const char *const FACT_METRICS[] = {"offered", "answered", "abandoned", "answered_in_sla",
                                           "wait_ms", "handled", "handle_ms", "wrap_ms",
                                           "transfers", "timed_out", "new_cases", "repeat_cases"};

static bool valid_cursor(const char *c)
{
    if (!c || !*c)
        return true;
    size_t n = strspn(c, "0123456789");
    if (n == 0 || n > 20)
        return false;
    if (c[n] == '\0')
        return true;
    return c[n] == '-' && strspn(c + n + 1, "0123456789") == strlen(c + n + 1) && c[n + 1];
}

/* stream ids "ms-seq": -1, 0, 1 */
static int id_cmp(const char *a, const char *b)
{
    unsigned long long am = strtoull(a, NULL, 10), bm = strtoull(b, NULL, 10);
    const char *ad = strchr(a, '-'), *bd = strchr(b, '-');
    unsigned long long as = ad ? strtoull(ad + 1, NULL, 10) : 0, bs = bd ? strtoull(bd + 1, NULL, 10) : 0;
    if (am != bm)
        return am < bm ? -1 : 1;
    return as == bs ? 0 : (as < bs ? -1 : 1);
}

json_t *export_entry_json(const char *id, const redisReply *f)
{
    json_t *o = json_object();
    json_object_set_new(o, "v", json_integer(1));
    json_object_set_new(o, "id", json_string(id));
    json_t *metrics = NULL;
    for (size_t i = 0; f && f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
        if (!k || !v)
            continue;
        if (strcmp(k, "at") == 0 || strcmp(k, "hour") == 0 || strcmp(k, "wait_ms") == 0) {
            json_object_set_new(o, k, json_integer(strtoll(v, NULL, 10)));
        } else if (strcmp(k, "dims") == 0) {
            /* "<channel>|<queue>|<segment>|<branch>|<agent>" (lib.lua rollup()) */
            static const char *const names[] = {"channel", "queue", "segment", "branch", "agent"};
            const char *p = v;
            for (size_t d = 0; d < ARRAY_SIZE(names); d++) {
                const char *bar = strchr(p, '|');
                size_t n = bar && d + 1 < ARRAY_SIZE(names) ? (size_t)(bar - p) : strlen(p);
                json_object_set_new(o, names[d], json_stringn(p, n));
                if (!bar)
                    break;
                p = bar + 1;
            }
        } else if (strcmp(k, "m") == 0) {
            /* "metric:n metric:n" */
            if (!metrics)
                metrics = json_object();
            const char *p = v;
            while (*p) {
                const char *colon = strchr(p, ':');
                if (!colon)
                    break;
                char *name = xstrndup(p, (size_t)(colon - p));
                char *end;
                long long n = strtoll(colon + 1, &end, 10);
                json_object_set_new(metrics, name, json_integer(n));
                free(name);
                p = end;
                while (*p == ' ')
                    p++;
            }
        } else {
            json_object_set_new(o, k, json_string(v));
        }
    }
    if (metrics || strcmp(json_string_value(json_object_get(o, "kind")) ?: "", "fact") == 0)
        json_object_set_new(o, "metrics", metrics ? metrics : json_object());
    return o;
}

static void csv_field(FILE *f, const char *s)
{
    if (!s)
        return;
    if (strpbrk(s, ",\"\n\r") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

void export_csv_header(FILE *f, const char *table);
void export_csv_row(FILE *f, const char *table, json_t *e);

/* The two tables of docs/EXPORT.md: omnicc_events (every entry) and omnicc_facts. */
void export_csv_header(FILE *f, const char *table)
{
    if (strcmp(table, "facts") == 0) {
        fputs("id,at_ms,hour_start,case_id,interaction_id,channel,queue,segment,branch,agent", f);
        for (size_t i = 0; i < ARRAY_SIZE(FACT_METRICS); i++)
            fprintf(f, ",%s", FACT_METRICS[i]);
        fputc('\n', f);
    } else {
        fputs("id,at_ms,kind,case_id,type,interaction_id,agent,doc\n", f);
    }
}

void export_csv_row(FILE *f, const char *table, json_t *e)
{
    if (strcmp(table, "facts") == 0) {
        if (strcmp(jstr(e, "kind") ?: "", "fact") != 0)
            return;
        time_t t = (time_t)json_integer_value(json_object_get(e, "hour")) * 3600;
        struct tm tm;
        gmtime_r(&t, &tm);
        char hs[32];
        strftime(hs, sizeof(hs), "%Y-%m-%dT%H:00:00Z", &tm);
        csv_field(f, jstr(e, "id"));
        fprintf(f, ",%lld,%s,", (long long)json_integer_value(json_object_get(e, "at")), hs);
        static const char *const cols[] = {"case", "interaction", "channel", "queue",
                                           "segment", "branch", "agent"};
        for (size_t i = 0; i < ARRAY_SIZE(cols); i++) {
            if (i)
                fputc(',', f);
            csv_field(f, jstr(e, cols[i]));
        }
        json_t *m = json_object_get(e, "metrics");
        for (size_t i = 0; i < ARRAY_SIZE(FACT_METRICS); i++)
            fprintf(f, ",%lld", (long long)json_integer_value(json_object_get(m, FACT_METRICS[i])));
        fputc('\n', f);
        return;
    }
    csv_field(f, jstr(e, "id"));
    fprintf(f, ",%lld,", (long long)json_integer_value(json_object_get(e, "at")));
    csv_field(f, jstr(e, "kind"));
    fputc(',', f);
    csv_field(f, jstr(e, "case"));
    fputc(',', f);
    csv_field(f, jstr(e, "type"));
    fputc(',', f);
    csv_field(f, jstr(e, "interaction"));
    fputc(',', f);
    csv_field(f, jstr(e, "agent"));
    fputc(',', f);
    char *doc = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    csv_field(f, doc);
    free(doc);
    fputc('\n', f);
}

static void page_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (api_reply_script_error(r, err))
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        http_reply_error(r, 500, "internal", "unexpected reply");
        return;
    }
    const char *cursor = http_query(r, "cursor");
    const char *oldest = reply->element[0]->str ? reply->element[0]->str : "";
    if (cursor && *cursor && strcmp(cursor, "0") != 0 && *oldest && id_cmp(cursor, oldest) < 0) {
        http_reply_error(r, 410, "gone",
                         "cursor %s is older than the oldest entry kept (%s): entries were trimmed "
                         "([analytics] export_maxlen); restart the export from the beginning",
                         cursor, oldest);
        return;
    }
    const redisReply *es = reply->element[1];
    size_t len = 0;
    char *buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    const char *last = cursor && *cursor ? cursor : "0";
    for (size_t i = 0; i < es->elements; i++) {
        const redisReply *e = es->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
            continue;
        json_t *o = export_entry_json(e->element[0]->str, e->element[1]);
        char *line = json_dumps(o, JSON_COMPACT);
        fputs(line, f);
        fputc('\n', f);
        free(line);
        json_decref(o);
        last = e->element[0]->str;
    }
    fclose(f);
    struct evkeyvalq *h = r->req ? evhttp_request_get_output_headers(r->req) : NULL;
    if (h) {
        evhttp_add_header(h, "Omnicc-Next-Cursor", last);
        evhttp_add_header(h, "Omnicc-Export-Schema", "1");
    }
    http_reply_raw(r, 200, "application/x-ndjson", buf, len);
    free(buf);
}

static void export_events(struct http_req *r)
{
    const char *cursor = http_query(r, "cursor");
    if (!valid_cursor(cursor)) {
        http_reply_error(r, 400, "invalid", "cursor: an entry id (1700000000000-0) or 0");
        return;
    }
    const char *lim = http_query(r, "limit");
    long n = lim ? strtol(lim, NULL, 10) : 1000;
    if (n < 1 || n > 10000) {
        http_reply_error(r, 400, "invalid", "limit: 1 to 10000");
        return;
    }
    if (!r->req) {
        return;
    }
    char ns[16];
    snprintf(ns, sizeof(ns), "%ld", n);
    const char *argv[2] = {cursor ? cursor : "0", ns};
    char *detail = xasprintf("{\"cursor\":\"%s\",\"limit\":%ld}", cursor ? cursor : "0", n);
    analytics_audit(r, "export.events", "", detail);
    free(detail);
    if (store_script(SCRIPT_EXPORT_READ, 2, argv, NULL, page_done, r) < 0)
        http_reply_unavailable(r, "Redis not reachable");
}

const struct http_route api_export_routes[] = {
    {EVHTTP_REQ_GET, "/v1/export/events", HTTP_AUTH_ADMIN, export_events, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
