/* retention.c - the retention job (docs/ANALYTICS.md, "Retention"): every [analytics]
 * retention_interval seconds, interactions older than their channel's retention_<channel>
 * lose their content (retention.lua, at most RETENTION_BATCH per call, again at once while
 * a full batch came back), and the attachments they referenced are deleted from disk. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omnicc/analytics.h"
#include "omnicc/api.h"
#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define RETENTION_BATCH 100

static const char *const CHANNELS[5] = {"voice", "email", "fax", "branch", "webchat"};

static struct {
    struct event *timer;
    bool running;
} rt;

static void arm(int seconds)
{
    struct timeval tv = {seconds, 0};
    evtimer_add(rt.timer, &tv);
}

static void run_done(const redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    rt.running = false;
    const struct config *cfg = api_config();
    if (!rt.timer)
        return;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        if (err && !store_error_is_transient(err))
            log_warn("retention: %s", err);
        arm(cfg->retention_interval);
        return;
    }
    long long n = reply->element[0]->integer;
    for (size_t i = 1; i < reply->elements; i++) {
        const char *sha = reply->element[i]->str;
        if (!sha || !attachment_sha_valid(sha))
            continue;
        char *path = xasprintf("%s/attachments/%.2s/%s", cfg->state_dir, sha, sha);
        char *meta = xasprintf("%s.meta", path);
        unlink(path);
        unlink(meta);
        free(path);
        free(meta);
    }
    if (n > 0)
        log_info("retention: %lld interactions past their retention period cleared", n);
    arm(n >= RETENTION_BATCH ? 0 : cfg->retention_interval);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    const struct config *cfg = api_config();
    if (!cfg || rt.running)
        return;
    json_t *cut = json_object();
    int64_t now = now_ms();
    for (int i = 0; i < 5; i++)
        if (cfg->retention_days[i] > 0)
            json_object_set_new(cut, CHANNELS[i],
                                json_integer(now - (int64_t)(cfg->retention_days[i] * 86400000.0)));
    if (json_object_size(cut) == 0 || !store_ready()) {
        json_decref(cut);
        arm(cfg->retention_interval);
        return;
    }
    char *text = json_dumps(cut, JSON_COMPACT);
    json_decref(cut);
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", RETENTION_BATCH);
    const char *argv[2] = {text, batch};
    rt.running = true;
    if (store_script(SCRIPT_RETENTION, 2, argv, NULL, run_done, NULL) < 0) {
        rt.running = false;
        arm(cfg->retention_interval);
    }
    free(text);
}

void retention_start(struct event_base *base)
{
    rt.timer = evtimer_new(base, tick, NULL);
    arm(1);
}

void retention_stop(void)
{
    if (rt.timer) {
        event_free(rt.timer);
        rt.timer = NULL;
    }
}
