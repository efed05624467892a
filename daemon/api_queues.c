/* api_queues.c - live queue statistics for supervisors: GET /v1/queues and
 * /v1/queues/{name}. Pages of queues go to the stats script in parallel, so no single
 * script runs long however many queues are configured. Each page names, per queue, what
 * the daemon already knows from its configuration (pool, channels, strategy, service
 * level), so the script reads only counters and no queue configuration. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define QUEUES_PER_SCRIPT 50

struct stats_job {
    struct http_req *r;
    char **pages;     /* one slot per page: the script's JSON array, as it came */
    size_t *lens;
    size_t n_pages;
    int outstanding;
    char *error;
    bool single;
};

struct page_ref {
    struct stats_job *job;
    size_t index;
};

/* The inside of a page's JSON array ("[a,b]" -> "a,b"); NULL when empty. The pages come
 * from our own script (cjson), so the answer is spliced from them as text: at a thousand
 * queues, parsing and re-encoding them cost omniccd as much as Redis spent making them. */
static const char *page_items(const char *text, size_t len, size_t *n)
{
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n'))
        len--;
    if (len < 2 || text[0] != '[' || text[len - 1] != ']') /* cjson writes an empty page {} */
        return NULL;
    *n = len - 2;
    return *n ? text + 1 : NULL;
}

static void stats_reply(struct stats_job *job)
{
    struct http_req *r = job->r;
    if (job->error) {
        api_reply_script_error(r, job->error);
        return;
    }
    struct evbuffer *out = evbuffer_new();
    bool any = false;
    if (!job->single)
        evbuffer_add(out, "{\"queues\":[", 11);
    for (size_t i = 0; i < job->n_pages; i++) {
        size_t n;
        const char *items = job->pages[i] ? page_items(job->pages[i], job->lens[i], &n) : NULL;
        if (!items)
            continue;
        if (any)
            evbuffer_add(out, ",", 1);
        evbuffer_add(out, items, n);
        any = true;
    }
    if (!job->single)
        evbuffer_add(out, "]}", 2);
    if (job->single && !any) {
        http_reply_error(r, 404, "not_found", "no such queue");
    } else {
        size_t len = evbuffer_get_length(out);
        http_reply_raw(r, 200, "application/json", (const char *)evbuffer_pullup(out, -1), len);
    }
    evbuffer_free(out);
}

static void page_done(const redisReply *reply, const char *err, void *arg)
{
    struct page_ref *ref = arg;
    struct stats_job *job = ref->job;
    if (err && !job->error)
        job->error = xstrdup(err);
    else if (!err && reply->type == REDIS_REPLY_STRING && ref->index < job->n_pages) {
        job->pages[ref->index] = xmalloc(reply->len);
        memcpy(job->pages[ref->index], reply->str, reply->len);
        job->lens[ref->index] = reply->len;
    }
    free(ref);
    if (--job->outstanding > 0)
        return;
    stats_reply(job);
    for (size_t i = 0; i < job->n_pages; i++)
        free(job->pages[i]);
    free(job->pages);
    free(job->lens);
    free(job->error);
    free(job);
}

/* Sends one stats script per page text (a JSON array of stats_entry()s). */
static void run_stats(struct http_req *r, char *const *texts, size_t n_pages, bool single)
{
    const struct config *cfg = api_config();
    struct stats_job *job = xcalloc(1, sizeof(*job));
    job->r = r;
    job->single = single;
    job->n_pages = n_pages;
    job->pages = xcalloc(n_pages ? n_pages : 1, sizeof(*job->pages));
    job->lens = xcalloc(n_pages ? n_pages : 1, sizeof(*job->lens));
    char window[16];
    snprintf(window, sizeof(window), "%d", cfg->stats_window);
    job->outstanding = 1;
    for (size_t p = 0; p < n_pages; p++) {
        struct page_ref *ref = xcalloc(1, sizeof(*ref));
        ref->job = job;
        ref->index = p;
        const char *argv[2] = {texts[p], window};
        job->outstanding++;
        if (store_script(SCRIPT_QUEUE_STATS, 2, argv, NULL, page_done, ref) < 0) {
            job->outstanding--;
            free(ref);
            if (!job->error)
                job->error = xstrdup("unavailable");
        }
    }
    struct page_ref *self = xcalloc(1, sizeof(*self));
    self->job = job;
    self->index = SIZE_MAX; /* the hand-off's own count, no page */
    page_done(&(redisReply){.type = REDIS_REPLY_NIL}, NULL, self);
}

/* [name, pool, channels, strategy, sla_seconds]: one queue of a queue_stats page */
static json_t *stats_entry(const struct queue_conf *q, bool overflow)
{
    char *pool = router_queue_pool(q, overflow);
    json_t *e = overflow ? json_pack("[s+,s,s,s,i]", q->name, "~overflow", pool, q->channels,
                                     q->strategy, q->sla_seconds)
                         : json_pack("[s,s,s,s,i]", q->name, pool, q->channels, q->strategy,
                                     q->sla_seconds);
    free(pool);
    return e;
}

/* The pages of every queue, made once: the queues do not change while omniccd runs, and at
 * a thousand queues building them (pools, JSON) cost omniccd more than splicing the answer. */
static struct {
    char **texts;
    size_t n;
} all_pages;

static void build_all_pages(const struct config *cfg)
{
    json_t *entries = json_array();
    for (int i = 0; i < cfg->n_queues; i++) {
        json_array_append_new(entries, stats_entry(cfg->queues[i], false));
        if (cfg->queues[i]->overflow_skills)
            json_array_append_new(entries, stats_entry(cfg->queues[i], true));
    }
    size_t n = json_array_size(entries);
    all_pages.n = (n + QUEUES_PER_SCRIPT - 1) / QUEUES_PER_SCRIPT;
    all_pages.texts = xcalloc(all_pages.n ? all_pages.n : 1, sizeof(*all_pages.texts));
    for (size_t p = 0; p < all_pages.n; p++) {
        json_t *page = json_array();
        for (size_t i = p * QUEUES_PER_SCRIPT; i < n && i < (p + 1) * QUEUES_PER_SCRIPT; i++)
            json_array_append(page, json_array_get(entries, i));
        all_pages.texts[p] = json_dumps(page, JSON_COMPACT);
        json_decref(page);
    }
    json_decref(entries);
}

void api_queues_free(void)
{
    for (size_t i = 0; i < all_pages.n; i++)
        free(all_pages.texts[i]);
    free(all_pages.texts);
    all_pages.texts = NULL;
    all_pages.n = 0;
}

static void list_queues(struct http_req *r)
{
    if (!all_pages.texts)
        build_all_pages(api_config());
    run_stats(r, all_pages.texts, all_pages.n, false);
}

static void get_queue(struct http_req *r)
{
    const struct config *cfg = api_config();
    const char *name = r->params[0];
    char base[80];
    snprintf(base, sizeof(base), "%s", name);
    char *tilde = strstr(base, "~overflow");
    if (tilde && strcmp(tilde, "~overflow") == 0)
        *tilde = '\0';
    const struct queue_conf *q = config_queue(cfg, base);
    if (!q || (tilde && !q->overflow_skills)) {
        http_reply_error(r, 404, "not_found", "no such queue");
        return;
    }
    json_t *page = json_pack("[o]", stats_entry(q, tilde != NULL));
    char *text = json_dumps(page, JSON_COMPACT);
    json_decref(page);
    run_stats(r, &text, 1, true);
    free(text);
}

const struct http_route api_queues_routes[] = {
    {EVHTTP_REQ_GET, "/v1/queues", HTTP_AUTH_ADMIN, list_queues, NULL, NULL, false},
    {EVHTTP_REQ_GET, "/v1/queues/{name}", HTTP_AUTH_ADMIN, get_queue, NULL, NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
