/* branch_ops.c - a validated terminal request becomes one script call (branch_op.lua), and
 * its reply an ACK or a NACK naming the msg_id. The script checks the teller's token hash,
 * the teller's branch and the visit's branch in the same round trip as the action, and
 * keeps the result under terminal + msg_id, so a resend after a reconnect returns the first
 * result and changes nothing.
 *
 * A walk-in (VISIT_CREATE) is an ingest like any other channel's (ingest_submit: identity,
 * case, queue), external_id "TERMINAL:msg_id" making it idempotent too, then the branch
 * script registers it as a visit (ticket, counters, events). A document's bytes are
 * written content-addressed under state_dir, durably and off the loop thread (filestore.h),
 * before the script records it. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "branch.h"
#include "omnicc/config.h"
#include "omnicc/filestore.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/router.h"
#include "omnicc/segments.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

struct bop {
    struct bconn *c;
    struct branch_req req;
    char agent[BRANCH_AGENT_MAX + 1];
    char sha[65];
    int64_t started_ms;
};

static struct {
    const struct config *cfg;
    char ttl[24];
} bo;

void branch_ops_init(const struct config *cfg)
{
    bo.cfg = cfg;
    snprintf(bo.ttl, sizeof(bo.ttl), "%d", cfg->branch_result_ttl);
}

static void bop_free(struct bop *o)
{
    branch_req_clear(&o->req);
    memset(o->sha, 0, sizeof(o->sha));
    free(o);
}

static void sha256_hex(const unsigned char *data, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Answer and finish a request (frees o). */
static void finish_nack(struct bop *o, const char *code, const char *msg)
{
    bconn_nack(o->c, o->req.msg_id, code, "%s", msg);
    struct bconn *c = o->c;
    bop_free(o);
    bconn_request_done(c);
}

static void finish_ack(struct bop *o, json_t *result, bool replayed)
{
    json_t *ack = json_pack("{s:i,s:s,s:s,s:s,s:b,s:o}", "v", BRANCH_PROTO_VERSION, "type", "ACK",
                            "msg_id", o->req.msg_id, "op", o->req.op->type, "replayed", replayed,
                            "result", result ? result : json_object());
    bconn_send(o->c, ack);
    struct bconn *c = o->c;
    bop_free(o);
    bconn_request_done(c);
}

/* Script errors are "ERR_<KIND> message"; anything else is Redis's or ours. */
static void nack_script_error(struct bop *o, const char *err)
{
    static const struct {
        const char *prefix, *code;
    } map[] = {{"ERR_NOT_FOUND ", "not_found"}, {"ERR_CONFLICT ", "conflict"},
               {"ERR_FORBIDDEN ", "forbidden"}, {"ERR_INVALID ", "invalid"},
               {"ERR_EMPTY ", "empty"},         {"ERR_BUSY ", "busy"}};
    for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
        size_t n = strlen(map[i].prefix);
        if (strncmp(err, map[i].prefix, n) == 0) {
            finish_nack(o, map[i].code, err + n);
            return;
        }
    }
    if (strcmp(err, "unavailable") && strcmp(err, "timeout") && strcmp(err, "shutting down"))
        log_error("branch %s/%s: %s failed: %s", bconn_branch(o->c), bconn_terminal(o->c),
                  o->req.op->type, err);
    finish_nack(o, "unavailable", "storage unavailable; retry the same msg_id later");
}

static void on_welcome(struct bop *o, json_t *res)
{
    json_t *cursor = json_object_get(o->req.args, "cursor");
    json_int_t seq = json_integer_value(json_object_get(res, "seq"));
    json_int_t oldest = json_integer_value(json_object_get(res, "oldest"));
    json_t *branch = json_object_get(res, "branch");
    json_t *welcome = json_pack("{s:i,s:s,s:s,s:{s:s,s:s},s:O,s:I,s:I,s:I,s:i,s:I,s:[s]}", "v",
                                BRANCH_PROTO_VERSION, "type", "WELCOME", "msg_id", o->req.msg_id,
                                "session", "branch", bconn_branch(o->c), "terminal",
                                bconn_terminal(o->c), "branch", branch, "cursor", seq, "oldest",
                                oldest, "max_frame", (json_int_t)bo.cfg->branch_max_frame,
                                "heartbeat_s", bo.cfg->branch_idle_timeout / 3, "server_time",
                                (json_int_t)now_ms(), "features", "spool-refs");
    /* events after the terminal's cursor are replayed; without one it starts from now */
    uint64_t from = cursor ? (uint64_t)json_integer_value(cursor) : (uint64_t)seq;
    if (from > (uint64_t)seq)
        from = (uint64_t)seq; /* a cursor from another life of this terminal id */
    json_object_set_new(welcome, "replay_from", json_integer((json_int_t)from));
    json_object_set_new(
        welcome, "gap",
        json_boolean(cursor && from + 1 < (uint64_t)oldest && (uint64_t)seq >= (uint64_t)oldest));
    bconn_set_services(o->c, json_object_get(branch, "services"));
    bconn_send(o->c, welcome);
    struct bconn *c = o->c;
    bop_free(o);
    bconn_session_open(c, from);
    bconn_request_done(c);
}

static void script_done(const redisReply *reply, const char *err, void *arg)
{
    struct bop *o = arg;
    if (bconn_stopped() || !bconn_reply_arrived(o->c)) {
        bop_free(o);
        return;
    }
    if (err) {
        if (o->req.op->kind == BOP_HELLO) {
            bconn_nack(o->c, o->req.msg_id,
                       strncmp(err, "ERR_NOT_FOUND ", 14) == 0 ? "not_found" : "unavailable", "%s",
                       strncmp(err, "ERR_", 4) == 0 ? strchr(err, ' ') + 1 : err);
            bconn_protocol_close(o->c, "hello refused");
            struct bconn *c = o->c;
            bop_free(o);
            bconn_request_done(c);
            return;
        }
        nack_script_error(o, err);
        return;
    }
    json_t *res = NULL;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING)
        res = json_loadb(reply->element[1]->str, reply->element[1]->len, 0, NULL);
    if (!res) {
        log_error("branch: %s: unexpected script reply", o->req.op->type);
        finish_nack(o, "internal", "unexpected storage reply");
        return;
    }
    bool replayed = reply->element[0]->integer == 1;
    switch (o->req.op->kind) {
    case BOP_HELLO:
        on_welcome(o, res);
        json_decref(res);
        return;
    case BOP_SIGNIN:
        if (!bconn_teller_add(o->c, o->agent, o->sha)) {
            json_decref(res);
            finish_nack(o, "conflict", "too many tellers signed in on this terminal");
            return;
        }
        log_info("branch %s/%s: teller %s signed in", bconn_branch(o->c), bconn_terminal(o->c),
                 o->agent);
        if (json_integer_value(json_object_get(res, "caught_up")) > 0)
            branch_events_kick(o->c);
        break;
    default:
        break;
    }
    finish_ack(o, res, replayed);
}

static void run_script(struct bop *o)
{
    char *args = json_dumps(o->req.args, JSON_COMPACT);
    const char *argv[8] = {o->req.op->script_op,
                           bconn_terminal(o->c),
                           bconn_branch(o->c),
                           (o->req.op->flags & BOP_F_STORED) ? o->req.msg_id : "",
                           o->agent,
                           o->sha,
                           args ? args : "{}",
                           bo.ttl};
    if (store_script(SCRIPT_BRANCH_OP, 8, argv, NULL, script_done, o) < 0) {
        free(args);
        if (o->req.op->kind == BOP_HELLO) {
            bconn_nack(o->c, o->req.msg_id, "unavailable", "storage unavailable; reconnect later");
            bconn_protocol_close(o->c, "storage unavailable");
            struct bconn *c = o->c;
            bop_free(o);
            bconn_request_done(c);
            return;
        }
        finish_nack(o, "unavailable", "storage unavailable; retry the same msg_id later");
        return;
    }
    free(args);
    bconn_hold(o->c);
}

/* ---- walk-ins: ingest, then register the visit ---- */

static void visit_ingested(const struct ingest_result *res, void *arg)
{
    struct bop *o = arg;
    if (bconn_stopped() || !bconn_reply_arrived(o->c)) {
        bop_free(o);
        return;
    }
    if (res->status >= 400) {
        finish_nack(o,
                    res->status == 503   ? "unavailable"
                    : res->status == 404 ? "not_found"
                                         : "invalid",
                    res->error ? res->error : "refused");
        return;
    }
    json_object_set_new(o->req.args, "visit", json_string(res->id));
    json_object_set_new(o->req.args, "duplicate", json_boolean(res->duplicate));
    run_script(o);
}

static int visit_create(struct bop *o)
{
    json_t *a = o->req.args;
    const char *service = json_string_value(json_object_get(a, "service"));
    const char *queue = json_string_value(json_object_get(bconn_services(o->c), service));
    if (!queue) {
        finish_nack(o, "invalid", "service: this branch does not offer it");
        return -1;
    }
    struct interaction ix;
    memset(&ix, 0, sizeof(ix));
    ix.channel = CH_BRANCH;
    ix.direction = xstrdup("inbound");
    ix.external_id = xasprintf("%s:%s", bconn_terminal(o->c), o->req.msg_id);
    ix.queue = xstrdup(queue);
    ix.subject = xasprintf("Branch visit: %s", service);
    json_t *note = json_object_get(a, "note");
    if (note)
        ix.body = xstrdup(json_string_value(note));
    ix.priority = (int)json_integer_value(json_object_get(a, "priority"));
    json_t *cust = json_object_get(a, "customer");
    static const struct {
        const char *field;
        enum ident_kind kind;
    } ids[] = {{"policy", IDENT_POLICY},
               {"phone", IDENT_PHONE},
               {"email", IDENT_EMAIL},
               {"national_id", IDENT_NATIONAL},
               {"branch_customer_id", IDENT_BRANCH}};
    for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
        const char *v = json_string_value(json_object_get(cust, ids[i].field));
        if (v)
            ix.ident[ids[i].kind] = xstrdup(v);
    }
    const char *name = json_string_value(json_object_get(cust, "name"));
    if (name)
        ix.customer_name = xstrdup(name);
    json_t *meta = json_pack("{s:s,s:s,s:s,s:s}", "branch", bconn_branch(o->c), "terminal",
                             bconn_terminal(o->c), "service", service, "intent", service);
    ix.metadata = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
    ix.intent = xstrdup(service);
    json_decref(meta);
    bconn_hold(o->c);
    ingest_submit(bo.cfg, &ix, visit_ingested, o);
    ix_free(&ix);
    return 0;
}

/* ---- documents: content-addressed files under state_dir ---- */

/* The bytes were written and fsynced off the loop thread (filestore.h), or not. */
static void document_stored(void *arg, const char *sha, const char *err)
{
    struct bop *o = arg;
    (void)sha;
    if (bconn_stopped() || !bconn_reply_arrived(o->c)) {
        bop_free(o);
        return;
    }
    if (err) {
        log_error("branch %s/%s: document: %s", bconn_branch(o->c), bconn_terminal(o->c), err);
        finish_nack(o, "unavailable", "the document could not be stored; retry");
        return;
    }
    run_script(o);
}

/* Check the claimed hash, then write once, durably (a temporary file, fsync, rename, fsync
 * the directory) on the file store's threads; the script runs (and the terminal gets its
 * ACK) only once the document is on disk. o->req.doc is lent to the file store until
 * document_stored runs. Takes o. */
static void document_prepare(struct bop *o)
{
    char sha[65];
    sha256_hex(o->req.doc, o->req.doc_len, sha);
    const char *claimed = json_string_value(json_object_get(o->req.args, "sha256"));
    if (claimed && strcmp(claimed, sha) != 0) {
        finish_nack(o, "invalid", "sha256: does not match the content");
        return;
    }
    json_object_set_new(o->req.args, "sha256", json_string(sha));
    json_object_set_new(o->req.args, "size", json_integer((json_int_t)o->req.doc_len));
    char *root = xasprintf("%s/branch-documents", bo.cfg->state_dir);
    int rc = filestore_put(root, o->req.doc, o->req.doc_len, sha, NULL, document_stored, o);
    free(root);
    if (rc < 0) {
        log_error("branch %s/%s: document: the file store is busy or stopped",
                  bconn_branch(o->c), bconn_terminal(o->c));
        finish_nack(o, "unavailable", "the document could not be stored; retry");
        return;
    }
    bconn_hold(o->c);
}

/* ---- dispatch ---- */

static int handover_prepare(struct bop *o)
{
    json_t *a = o->req.args;
    const char *queue = json_string_value(json_object_get(a, "queue"));
    if (!json_object_get(a, "channel"))
        json_object_set_new(a, "channel", json_string("voice"));
    const char *ch = json_string_value(json_object_get(a, "channel"));
    if (!config_queue(bo.cfg, queue)) {
        finish_nack(o, "not_found", "queue: no such queue");
        return -1;
    }
    if (!router_queue_serves(bo.cfg, queue, ch)) {
        finish_nack(o, "invalid", "queue: it does not serve that channel");
        return -1;
    }
    json_object_set_new(a, "boost", json_integer(config_channel_boost(bo.cfg, ch)));
    json_object_set_new(a, "segment_boosts",
                        json_pack("{s:i,s:i,s:i,s:i}", "platinum",
                                  segment_boost(bo.cfg, "platinum"), "gold",
                                  segment_boost(bo.cfg, "gold"), "silver",
                                  segment_boost(bo.cfg, "silver"), "standard", 0));
    return 0;
}

void branch_ops_run(struct bconn *c, struct branch_req *req)
{
    struct bop *o = xcalloc(1, sizeof(*o));
    o->c = c;
    o->req = *req;
    memset(req, 0, sizeof(*req));
    o->started_ms = monotonic_ms();
    bconn_request_begin(c);
    enum branch_op_kind kind = o->req.op->kind;

    if (kind == BOP_PING) {
        bconn_send(c, json_pack("{s:i,s:s,s:s,s:I}", "v", BRANCH_PROTO_VERSION, "type", "PONG",
                                "msg_id", o->req.msg_id, "server_time", (json_int_t)now_ms()));
        bop_free(o);
        bconn_request_done(c);
        return;
    }
    if (kind == BOP_HELLO && !branch_api_synced()) {
        bconn_nack(c, o->req.msg_id, "unavailable", "starting up; say HELLO again in a second");
        bconn_protocol_close(c, "not ready");
        bop_free(o);
        bconn_request_done(c);
        return;
    }
    if (kind == BOP_SIGNIN) {
        snprintf(o->agent, sizeof(o->agent), "%s", o->req.agent);
        sha256_hex((const unsigned char *)o->req.token, strlen(o->req.token), o->sha);
        run_script(o);
        return;
    }
    if (o->req.op->flags & BOP_F_TELLER) {
        const char *agent = o->req.agent[0]              ? o->req.agent
                            : bconn_teller_count(c) == 1 ? bconn_teller_at(c, 0)
                                                         : NULL;
        const char *sha = agent ? bconn_teller_sha(c, agent) : NULL;
        if (!agent) {
            finish_nack(o, "no_teller",
                        bconn_teller_count(c) ? "several tellers are signed in: "
                                                "name the agent"
                                              : "sign in first (SIGNIN)");
            return;
        }
        if (!sha) {
            finish_nack(o, "no_teller", "that agent is not signed in on this terminal");
            return;
        }
        snprintf(o->agent, sizeof(o->agent), "%s", agent);
        snprintf(o->sha, sizeof(o->sha), "%s", sha);
    }
    switch (kind) {
    case BOP_SIGNOUT:
        bconn_teller_remove(c, o->agent);
        log_info("branch %s/%s: teller %s signed out", bconn_branch(c), bconn_terminal(c),
                 o->agent);
        finish_ack(o, json_pack("{s:s}", "agent", o->agent), false);
        return;
    case BOP_VISIT_CREATE:
        visit_create(o);
        return;
    case BOP_DOCUMENT:
        document_prepare(o); /* runs the script once the document is stored */
        return;
    case BOP_HANDOVER:
        if (handover_prepare(o) < 0)
            return;
        break;
    default:
        break;
    }
    run_script(o);
}
