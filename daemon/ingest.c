/* ingest.c - one interaction into Redis with one script call (see ingest.h). The document
 * the ingest script takes is built here: identifiers strongest first (the script lets the
 * first match win a conflict), the queue, and the priority boost in seconds. */
#include "omnicc/ingest.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/router.h"
#include "omnicc/segments.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

static const enum ident_kind ident_order[] = {IDENT_POLICY, IDENT_NATIONAL, IDENT_BRANCH,
                                              IDENT_EMAIL, IDENT_PHONE};

struct pending_ingest {
    ingest_done_fn *cb;
    void *arg;
};

json_t *ingest_document(const struct config *cfg, const struct interaction *ix,
                        const char *queue)
{
    json_t *doc = json_object();
    json_t *ids = json_array();
    for (size_t i = 0; i < ARRAY_SIZE(ident_order); i++) {
        const char *v = ix->ident[ident_order[i]];
        if (v)
            json_array_append_new(ids, json_pack("[ss]", ident_kind_name(ident_order[i]), v));
    }
    json_object_set_new(doc, "ids", ids);
    json_object_set_new(doc, "channel", json_string(channel_name(ix->channel)));
    json_object_set_new(doc, "external_id", json_string(ix->external_id));
    json_object_set_new(doc, "direction", json_string(ix->direction ? ix->direction : "inbound"));
    json_object_set_new(doc, "queue", json_string(queue));
    struct {
        const char *key, *val;
    } opt[] = {{"from", ix->from},         {"to", ix->to},
               {"subject", ix->subject},   {"body", ix->body},
               {"name", ix->customer_name}, {"case_id", ix->case_id},
               {"skills", ix->skills},     {"metadata", ix->metadata},
               {"policy", ix->ident[IDENT_POLICY]}};
    for (size_t i = 0; i < ARRAY_SIZE(opt); i++)
        if (opt[i].val)
            json_object_set_new(doc, opt[i].key, json_string(opt[i].val));
    json_object_set_new(doc, "priority", json_integer(ix->priority));
    int boost = config_channel_boost(cfg, channel_name(ix->channel)) +
                ix->priority * cfg->priority_step;
    json_object_set_new(doc, "boost", json_integer(boost));
    json_object_set_new(doc, "segment_boosts",
                        json_pack("{s:i,s:i,s:i,s:i}", "platinum", segment_boost(cfg, "platinum"),
                                  "gold", segment_boost(cfg, "gold"), "silver",
                                  segment_boost(cfg, "silver"), "standard", 0));
    return doc;
}

static void fail_with(ingest_done_fn *cb, void *arg, int status, const char *code,
                      const char *msg)
{
    struct ingest_result res = {.status = status, .error_code = code, .error = msg};
    cb(&res, arg);
}

static void ingest_done(const redisReply *reply, const char *err, void *arg)
{
    struct pending_ingest p = *(struct pending_ingest *)arg;
    free(arg);
    if (err) {
        if (strncmp(err, "ERR_NOT_FOUND ", 14) == 0)
            fail_with(p.cb, p.arg, 404, "not_found", err + 14);
        else if (strncmp(err, "ERR_INVALID ", 12) == 0)
            fail_with(p.cb, p.arg, 400, "invalid_field", err + 12);
        else if (store_error_is_transient(err))
            fail_with(p.cb, p.arg, 503, "unavailable", err);
        else {
            /* a bug, not an outage: retrying would not help, so no 503 */
            log_error("ingest: script failed: %s", err);
            fail_with(p.cb, p.arg, 500, "internal", "storage error");
        }
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 6) {
        fail_with(p.cb, p.arg, 503, "unavailable", "unexpected storage reply");
        return;
    }
    struct ingest_result res = {
        .status = reply->element[3]->integer == 1 ? 200 : 202,
        .id = reply->element[0]->str,
        .case_id = reply->element[1]->str,
        .customer_id = reply->element[2]->str,
        .duplicate = reply->element[3]->integer == 1,
        .conflicts = reply->element[4]->str,
        .reservation = reply->element[5]->str,
    };
    log_debug("ingest: %s case %s customer %s%s", res.id, res.case_id, res.customer_id,
              res.duplicate ? " (duplicate)" : "");
    p.cb(&res, p.arg);
}

void ingest_submit(const struct config *cfg, const struct interaction *ix, ingest_done_fn *cb,
                   void *arg)
{
    const char *queue = router_pick_queue(cfg, ix);
    if (!queue) {
        char msg[200];
        snprintf(msg, sizeof(msg), "queue: no queue%s%s serves the %s channel",
                 ix->queue ? " named " : "", ix->queue ? ix->queue : "", channel_name(ix->channel));
        fail_with(cb, arg, 400, "invalid_field", msg);
        return;
    }
    json_t *doc = ingest_document(cfg, ix, queue);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    struct pending_ingest *p = xmalloc(sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    const char *argv[1] = {text};
    if (store_script(SCRIPT_INGEST, 1, argv, NULL, ingest_done, p) < 0) {
        free(p);
        fail_with(cb, arg, 503, "unavailable", store_status());
    }
    free(text);
}
