/* router.c - routing configuration, eligibility and the deadline timer.
 *
 * Eligibility is computed here, in C, once per agent change: an agent may serve a queue
 * when every required skill meets its level. A queue with overflow_skills has a virtual
 * queue "NAME~overflow" with the relaxed requirements; waiting work moves there when
 * overflow_after passes. The scripts then only read the per-queue indexes. */
#include "omnicc/router.h"

#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/analytics.h"
#include "omnicc/config.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define SWEEP_BATCH 100
#define SWEEP_FALLBACK_MS 1000 /* deadlines made by other instances are seen within this */

static struct {
    struct event_base *base;
    const struct config *cfg;
    struct event *timer;
    int64_t armed_for; /* epoch ms the timer is set for, 0 when idle */
    bool running;
} rt;

bool router_queue_serves(const struct config *cfg, const char *queue, const char *channel)
{
    const struct queue_conf *q = config_queue(cfg, queue);
    if (!q)
        return false;
    size_t n = strlen(channel);
    for (const char *p = q->channels; (p = strstr(p, channel)) != NULL; p += n) {
        bool start = p == q->channels || p[-1] == ' ' || p[-1] == ',' || p[-1] == '\t';
        bool end = p[n] == '\0' || p[n] == ' ' || p[n] == ',' || p[n] == '\t';
        if (start && end)
            return true;
    }
    return false;
}

static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; p && (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return true;
    return false;
}

const char *router_pick_queue(const struct config *cfg, const struct interaction *ix)
{
    const char *ch = channel_name(ix->channel);
    if (ix->queue)
        return router_queue_serves(cfg, ix->queue, ch) ? ix->queue : NULL;
    for (int i = 0; i < cfg->n_rules; i++) {
        const struct routing_rule *r = &cfg->rules[i];
        if ((r->channel && strcmp(r->channel, ch) != 0) ||
            (r->intent && (!ix->intent || strcmp(r->intent, ix->intent) != 0)) ||
            (r->skill && !has_word(ix->skills, r->skill)) ||
            !router_queue_serves(cfg, r->queue, ch))
            continue;
        return r->queue;
    }
    if (router_queue_serves(cfg, cfg->default_queue, ch))
        return cfg->default_queue;
    for (int i = 0; i < cfg->n_queues; i++)
        if (router_queue_serves(cfg, cfg->queues[i]->name, ch))
            return cfg->queues[i]->name;
    return NULL;
}

static bool meets(json_t *skills, const struct skill_req *req, int n)
{
    for (int i = 0; i < n; i++) {
        json_t *lvl = json_object_get(skills, req[i].name);
        if (!lvl || json_integer_value(lvl) < req[i].level)
            return false;
    }
    return true;
}

static int parse_overflow_skills(const char *text, struct skill_req *out)
{
    int n = 0;
    char *copy = xstrdup(text), *save = NULL;
    for (char *t = strtok_r(copy, " \t,", &save); t && n < CONFIG_MAX_QUEUE_SKILLS;
         t = strtok_r(NULL, " \t,", &save)) {
        char *colon = strchr(t, ':');
        out[n].level = colon ? atoi(colon + 1) : 1;
        if (colon)
            *colon = '\0';
        out[n].name = xstrdup(t);
        n++;
    }
    free(copy);
    return n;
}

static char *pool_id(const char *strategy, const struct skill_req *req, int n);

/* "<channel> <pool>" for each channel of a queue the agent is eligible for, once each
 * (the agent's index entries, agent:<id>:pools) */
static void add_pool_members(json_t *set, const char *channels_text, const char *pool)
{
    char *copy = xstrdup(channels_text), *save = NULL;
    for (char *ch = strtok_r(copy, " ", &save); ch; ch = strtok_r(NULL, " ", &save)) {
        char *m = xasprintf("%s %s", ch, pool);
        json_object_set_new(set, m, json_true());
        free(m);
    }
    free(copy);
}

static json_t *eligible_queues(const struct config *cfg, json_t *skills, json_t *pools)
{
    json_t *out = json_array();
    for (int i = 0; i < cfg->n_queues; i++) {
        const struct queue_conf *q = cfg->queues[i];
        if (meets(skills, q->skill, q->n_skills)) {
            json_array_append_new(out, json_string(q->name));
            char *p = pool_id(q->strategy, q->skill, q->n_skills);
            add_pool_members(pools, q->channels, p);
            free(p);
        }
        if (q->overflow_skills) {
            struct skill_req relaxed[CONFIG_MAX_QUEUE_SKILLS];
            int n = parse_overflow_skills(q->overflow_skills, relaxed);
            if (meets(skills, relaxed, n)) {
                json_array_append_new(out, json_sprintf("%s~overflow", q->name));
                char *p = pool_id(q->strategy, relaxed, n);
                add_pool_members(pools, q->channels, p);
                free(p);
            }
            for (int k = 0; k < n; k++)
                free(relaxed[k].name);
        }
    }
    return out;
}

static const char *const channels[] = {"voice", "email", "fax", "branch", "webchat"};

static int per_channel(json_t *body, const char *field, int max, json_t **out, char **err)
{
    json_t *obj = json_object_get(body, field);
    *out = json_object();
    if (!obj || json_is_null(obj))
        return 0;
    if (!json_is_object(obj)) {
        *err = xasprintf("%s: must be an object of channel: number", field);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (channel_from_name(k) < 0) {
            *err = xasprintf("%s.%.20s: not a channel", field, k);
            return -1;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
            *err = xasprintf("%s.%s: must be an integer 0-%d", field, k, max);
            return -1;
        }
        json_object_set(*out, k, v);
    }
    return 0;
}

json_t *router_agent_doc(const struct config *cfg, json_t *body, char **err)
{
    static const char *const allowed[] = {"id", "name", "skills", "capacity", "capacity_total",
                                          "wrapup", "softphone", "branch", NULL};
    json_t *cap = NULL, *wrap = NULL, *doc = NULL;
    const char *k;
    json_t *v;
    *err = NULL;
    json_object_foreach(body, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, k) == 0;
        if (!ok) {
            *err = xasprintf("%.40s: unknown field", k);
            return NULL;
        }
    }
    json_t *id = json_object_get(body, "id");
    if (!json_is_string(id) || !name_is_valid(json_string_value(id), 64)) {
        *err = xstrdup("id: required, 1-64 letters, digits, _ - . :");
        return NULL;
    }
    json_t *skills = json_object_get(body, "skills");
    if (skills && !json_is_null(skills)) {
        if (!json_is_object(skills) || json_object_size(skills) > 64) {
            *err = xstrdup("skills: must be an object of skill: level (1-5), at most 64");
            return NULL;
        }
        json_object_foreach(skills, k, v)
        {
            if (!name_is_valid(k, 64) || strchr(k, ':')) {
                *err = xasprintf("skills.%.40s: bad skill name", k);
                return NULL;
            }
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 5) {
                *err = xasprintf("skills.%s: level must be an integer 1-5", k);
                return NULL;
            }
        }
    }
    if (per_channel(body, "capacity", 100, &cap, err) < 0 ||
        per_channel(body, "wrapup", 3600, &wrap, err) < 0)
        goto fail;
    json_int_t sum = 0;
    for (size_t i = 0; i < ARRAY_SIZE(channels); i++)
        sum += json_integer_value(json_object_get(cap, channels[i]));
    json_t *total = json_object_get(body, "capacity_total");
    json_int_t cap_total = sum;
    if (total && !json_is_null(total)) {
        if (!json_is_integer(total) || json_integer_value(total) < 0 ||
            json_integer_value(total) > 500) {
            *err = xstrdup("capacity_total: must be an integer 0-500");
            goto fail;
        }
        cap_total = json_integer_value(total);
    }
    struct {
        const char *field;
        size_t max;
    } strs[] = {{"name", IX_MAX_NAME}, {"softphone", 256}, {"branch", 64}};
    for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
        json_t *s = json_object_get(body, strs[i].field);
        if (s && !json_is_null(s) &&
            (!json_is_string(s) || json_string_length(s) > strs[i].max ||
             !text_is_clean_utf8(json_string_value(s), json_string_length(s)) ||
             strchr(json_string_value(s), '\n'))) {
            *err = xasprintf("%s: must be a single-line string of at most %zu bytes",
                             strs[i].field, strs[i].max);
            goto fail;
        }
    }
    json_t *branch = json_object_get(body, "branch");
    if (json_is_string(branch) && json_string_length(branch) &&
        !name_is_valid(json_string_value(branch), 64)) {
        *err = xstrdup("branch: letters, digits, _ - . : only");
        goto fail;
    }
    json_t *sk = skills && json_is_object(skills) ? skills : NULL;
    json_t *empty = json_object();
    char *skills_text = json_dumps(sk ? sk : empty, JSON_COMPACT | JSON_SORT_KEYS);
    json_t *pool_set = json_object(), *pools = json_array();
    json_t *queues = eligible_queues(cfg, sk ? sk : empty, pool_set);
    json_object_foreach(pool_set, k, v)
    {
        json_array_append_new(pools, json_string(k));
    }
    json_decref(pool_set);
    doc = json_pack("{s:O,s:s,s:O,s:O,s:I,s:o,s:o}", "id", id, "skills", skills_text, "capacity",
                    cap, "wrapup", wrap, "capacity_total", cap_total, "queues", queues, "pools",
                    pools);
    free(skills_text);
    json_decref(empty);
    for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
        json_t *s = json_object_get(body, strs[i].field);
        if (json_is_string(s))
            json_object_set(doc, strs[i].field, s);
    }
fail:
    json_decref(cap);
    json_decref(wrap);
    return doc;
}

static int req_cmp(const void *a, const void *b)
{
    const struct skill_req *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->level - y->level;
}

/* The routing pool of a queue: "<strategy>/<skill>:<level>,..." with the requirements
 * sorted. Queues with the same requirements and strategy have the same eligible agents in
 * the same order, so they share one index of available agents per channel (lib.lua,
 * docs/ROUTING.md "Pools"): an agent's change writes its pools, not each of its queues. */
static char *pool_id(const char *strategy, const struct skill_req *req, int n)
{
    struct skill_req sorted[CONFIG_MAX_QUEUE_SKILLS];
    memcpy(sorted, req, (size_t)n * sizeof(*req));
    qsort(sorted, (size_t)n, sizeof(*sorted), req_cmp);
    size_t cap = strlen(strategy) + 2;
    for (int i = 0; i < n; i++)
        cap += strlen(sorted[i].name) + 8;
    char *out = xmalloc(cap);
    size_t len = (size_t)snprintf(out, cap, "%s/", strategy);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s:%d", i ? "," : "", sorted[i].name,
                                sorted[i].level);
    return out;
}

char *router_queue_pool(const struct queue_conf *q, bool overflow)
{
    if (!overflow || !q->overflow_skills)
        return pool_id(q->strategy, q->skill, q->n_skills);
    struct skill_req relaxed[CONFIG_MAX_QUEUE_SKILLS];
    int n = parse_overflow_skills(q->overflow_skills, relaxed);
    char *pool = pool_id(q->strategy, relaxed, n);
    for (int k = 0; k < n; k++)
        free(relaxed[k].name);
    return pool;
}

static json_t *queue_doc(const struct queue_conf *q, const char *name, bool virtual_overflow)
{
    const char *target = "";
    char *virt = NULL, *pool = router_queue_pool(q, virtual_overflow);
    if (!virtual_overflow) {
        if (q->overflow_queue)
            target = q->overflow_queue;
        else if (q->overflow_skills)
            target = virt = xasprintf("%s~overflow", q->name);
    }
    json_t *d = json_pack("{s:s,s:s,s:s,s:i,s:i,s:s,s:i,s:s,s:i}", "name", name, "channels",
                          q->channels, "strategy", q->strategy, "sticky_seconds", q->sticky_seconds,
                          "overflow_after", virtual_overflow ? 0 : q->overflow_after,
                          "overflow_target", target, "max_wait", q->max_wait, "on_max_wait",
                          q->on_max_wait, "sla_seconds", q->sla_seconds);
    json_object_set_new(d, "pool", json_string(pool));
    free(pool);
    free(virt);
    return d;
}

/* queues written per sync_config call: ~1.5 ms of Redis on a first start (one HGETALL, a
 * DEL and one HSET each, and their heads), less when nothing changed; 1,000 in 20 calls */
#define SYNC_QUEUES_PER_PAGE 50

char **router_sync_documents(void)
{
    const struct config *cfg = rt.cfg;
    json_t *queues = json_array();
    for (int i = 0; i < cfg->n_queues; i++) {
        const struct queue_conf *q = cfg->queues[i];
        json_array_append_new(queues, queue_doc(q, q->name, false));
        if (q->overflow_skills) {
            char *virt = xasprintf("%s~overflow", q->name);
            json_array_append_new(queues, queue_doc(q, virt, true));
            free(virt);
        }
    }
    size_t nq = json_array_size(queues);
    size_t pages = (nq + SYNC_QUEUES_PER_PAGE - 1) / SYNC_QUEUES_PER_PAGE;
    char **docs = xcalloc(pages + 2, sizeof(*docs));
    /* first the routing keys and the report days (the days map alone is a few ms) */
    json_t *rconf = json_pack(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "offer_timeout:voice", cfg->offer_timeout_voice,
        "offer_timeout:webchat", cfg->offer_timeout_webchat, "offer_timeout:branch",
        cfg->offer_timeout_branch, "offer_timeout:email", cfg->offer_timeout_email,
        "offer_timeout:fax", cfg->offer_timeout_fax, "reject_block", cfg->reject_block,
        "max_no_answer", cfg->max_no_answer, "stats_window", cfg->stats_window);
    /* analytics switches for lib.lua's rollup()/export (docs/ANALYTICS.md) */
    json_object_set_new(rconf, "rollups",
                        json_integer(strcmp(cfg->analytics_rollups, "no") == 0 ? 0 : 1));
    json_object_set_new(rconf, "export_maxlen", json_integer(cfg->analytics_export_maxlen));
    static const char *const ret_ch[] = {"voice", "email", "fax", "branch", "webchat"};
    char ret_list[64] = "";
    for (int i = 0; i < 5; i++)
        if (cfg->retention_days[i] > 0)
            snprintf(ret_list + strlen(ret_list), sizeof(ret_list) - strlen(ret_list), "%s%s",
                     ret_list[0] ? " " : "", ret_ch[i]);
    json_object_set_new(rconf, "retention_channels", json_string(ret_list));
    json_t *first = json_pack("{s:o,s:o,s:[]}", "routing", rconf, "days",
                              analytics_days_document(cfg), "queues");
    docs[0] = json_dumps(first, JSON_COMPACT);
    json_decref(first);
    for (size_t p = 0; p < pages; p++) {
        json_t *page = json_array();
        for (size_t i = p * SYNC_QUEUES_PER_PAGE; i < nq && i < (p + 1) * SYNC_QUEUES_PER_PAGE; i++)
            json_array_append(page, json_array_get(queues, i));
        json_t *doc = json_pack("{s:o}", "queues", page);
        docs[p + 1] = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
    }
    json_decref(queues);
    return docs;
}

/* ---- the deadline timer ---- */

static void arm(int64_t due_ms)
{
    int64_t now = now_ms();
    int64_t fallback = now + SWEEP_FALLBACK_MS;
    if (due_ms < 0 || due_ms > fallback)
        due_ms = fallback;
    if (rt.armed_for && rt.armed_for <= due_ms)
        return;
    int64_t delay = due_ms - now;
    if (delay < 0)
        delay = 0;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    rt.armed_for = due_ms;
    evtimer_add(rt.timer, &tv);
}

void router_deadline_at(int64_t due_ms)
{
    if (rt.timer)
        arm(due_ms);
}

static void sweep_done(const redisReply *reply, const char *err, void *arg)
{
    rt.running = false;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        if (err && strcmp(err, "unavailable") != 0)
            log_warn("router: sweep failed: %s", err);
        arm(-1);
        return;
    }
    long long processed = reply->element[0]->integer;
    long long next = reply->element[1]->integer;
    /* agents of an older data set still being put in their routing pools (sweep.lua) */
    bool migrating = reply->elements > 2 && reply->element[2]->integer > 0;
    if (processed)
        log_debug("router: %lld deadlines processed", processed);
    /* a full batch means more are due now */
    arm(processed >= SWEEP_BATCH || migrating ? now_ms() : next);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    rt.armed_for = 0;
    analytics_days_tick(); /* the local-day map of the report counters, once an hour */
    if (rt.running) {
        arm(-1);
        return;
    }
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", SWEEP_BATCH);
    const char *argv[1] = {batch};
    if (store_script(SCRIPT_SWEEP, 1, argv, NULL, sweep_done, NULL) < 0) {
        arm(-1);
        return;
    }
    rt.running = true;
}

void router_start(struct event_base *base, const struct config *cfg)
{
    rt.base = base;
    rt.cfg = cfg;
    rt.timer = evtimer_new(base, on_timer, NULL);
    store_set_prepare_script(SCRIPT_SYNC_CONFIG, router_sync_documents);
    arm(-1);
}

void router_stop(void)
{
    if (rt.timer)
        event_free(rt.timer);
    rt.timer = NULL;
}
