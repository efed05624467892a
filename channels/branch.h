/* branch.h - the bancassurance branch terminal bridge, shared by channels/branch*.c only.
 *
 *   branch_proto.c  frames and request validation: pure functions, no I/O (fuzzed)
 *   branch_tls.c    the TLS context: CA, CRL (reloaded on SIGHUP), terminal identity
 *   branch_conn.c   the listener and one state machine per terminal connection
 *   branch_ops.c    a validated request -> one script call (branch_op.lua) -> ACK/NACK
 *   branch_events.c events for terminals: per-terminal outboxes with sequence numbers
 *   branch_api.c    admin REST: branches, their figures, the access log
 *   branch.c        the const struct channel, start/stop/reload
 *
 * Protocol (docs/BRANCH.md): a frame is a 4-byte big-endian length then that many bytes of
 * UTF-8 JSON, an object {v, type, msg_id, ...}. Every request is answered by ACK or NACK
 * naming its msg_id; events are pushed as EVENT frames with a per-terminal seq. */
#ifndef OMNICC_CHANNELS_BRANCH_H
#define OMNICC_CHANNELS_BRANCH_H

#include <jansson.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnicc/channel.h"
#include "omnicc/http.h"

struct config;
struct event_base;
struct bconn;

extern const struct channel branch_channel;

#define BRANCH_PROTO_VERSION 1
#define BRANCH_ID_MAX 32
#define BRANCH_TERMINAL_MAX 64
#define BRANCH_MSG_ID_MAX 64
#define BRANCH_AGENT_MAX 64
#define BRANCH_TOKEN_MAX 256

/* ---- branch_proto.c ---- */

enum branch_frame_status {
    BRANCH_FRAME_MORE,      /* not all of it has arrived */
    BRANCH_FRAME_READY,     /* 4 + *len bytes are there */
    BRANCH_FRAME_EMPTY,     /* length 0: protocol error, the connection closes */
    BRANCH_FRAME_TOO_LARGE, /* length above the limit: the connection closes at once */
};

enum branch_frame_status branch_frame_peek(const unsigned char *buf, size_t avail, size_t max,
                                           uint32_t *len);
void branch_frame_prefix(unsigned char out[4], uint32_t len);

enum branch_op_kind {
    BOP_HELLO,
    BOP_PING,
    BOP_SIGNIN,
    BOP_SIGNOUT,
    BOP_VISIT_CREATE,
    BOP_CALL_NEXT,
    BOP_SERVE,
    BOP_RECALL,
    BOP_PARK,
    BOP_TRANSFER,
    BOP_NO_SHOW,
    BOP_END,
    BOP_NOTE,
    BOP_CONSENT,
    BOP_LOOKUP,
    BOP_DOCUMENT,
    BOP_HANDOVER,
    BOP_APPOINTMENT,
    BOP_OFFER_ACCEPT,
    BOP_OFFER_REJECT,
    BOP_FNOL,
    BOP__COUNT
};

#define BOP_F_TELLER 1u /* acts for a teller signed in on the connection */
#define BOP_F_STORED 2u /* its result is kept under msg_id: a resend returns it, changes nothing   \
                         */
#define BOP_F_SPOOL 4u  /* the teller program may queue it while the link is down */

struct branch_nack {
    const char *code; /* "invalid", "bad_json", "unknown_type", "forbidden", ... */
    char message[240];
};

struct branch_field;

struct branch_op {
    enum branch_op_kind kind;
    const char *type;      /* the frame's "type" */
    const char *script_op; /* operation of branch_op.lua; NULL: answered by the daemon */
    unsigned flags;
    const struct branch_field *fields;
    int target; /* 0, or which of visit / visit_ref / case must be given */
};

struct branch_limits {
    size_t max_frame;
    const char *purposes; /* space-separated purpose codes a lookup may give */
};

/* A validated request. args holds the normalised arguments for the script (never the
 * token, never the document's bytes). */
struct branch_req {
    const struct branch_op *op;
    char msg_id[BRANCH_MSG_ID_MAX + 1];
    char agent[BRANCH_AGENT_MAX + 1]; /* "" when the frame names none */
    char branch[BRANCH_ID_MAX + 1];   /* "" when the frame names none */
    json_t *args;
    char *token;        /* SIGNIN */
    unsigned char *doc; /* DOCUMENT: the decoded content */
    size_t doc_len;
};

/* Parse and validate one frame's payload. 0, or -1 with *nack filled (req->msg_id is set
 * whenever the frame carried a well-formed one, so the NACK can name it). Nothing is
 * allocated in req on failure. */
int branch_req_parse(const char *text, size_t len, const struct branch_limits *lim,
                     struct branch_req *req, struct branch_nack *nack);
void branch_req_clear(struct branch_req *req);
const struct branch_op *branch_op_by_kind(enum branch_op_kind kind);
const struct branch_op *branch_op_by_type(const char *type);

bool branch_id_valid(const char *s);       /* [A-Za-z0-9_-]{1,32} */
bool branch_terminal_valid(const char *s); /* [A-Za-z0-9_.-]{1,64} */
bool branch_msg_id_valid(const char *s);   /* [A-Za-z0-9_.:-]{1,64} */
/* "urn:omnicc:terminal:BRANCH:TERMINAL" (SAN URI) or "TERMINAL@BRANCH" (CN). 0 or -1. */
int branch_identity_parse(const char *text, char branch[BRANCH_ID_MAX + 1],
                          char terminal[BRANCH_TERMINAL_MAX + 1]);
/* Strict base64 (RFC 4648, padded). Returns the decoded length or -1; out has room for
 * 3 * (len / 4) bytes. */
long branch_base64_decode(const char *in, size_t len, unsigned char *out);

/* ---- branch_tls.c ---- */

struct branch_tls;
struct branch_tls *branch_tls_new(const struct config *cfg, char **err);
void branch_tls_free(struct branch_tls *t);
SSL_CTX *branch_tls_ctx(struct branch_tls *t);
/* The branch and terminal a verified peer certificate names (serial map, SAN URI, CN). */
int branch_tls_identity(struct branch_tls *t, X509 *cert, char branch[BRANCH_ID_MAX + 1],
                        char terminal[BRANCH_TERMINAL_MAX + 1], char **err);
bool branch_tls_revoked(struct branch_tls *t, X509 *cert);

/* ---- branch_conn.c ---- */

int branch_conn_start(struct event_base *base, const struct config *cfg, char **err);
void branch_conn_stop(void);
void branch_conn_reload(const struct config *cfg);
/* Write one frame (compact JSON; steals obj). */
void bconn_send(struct bconn *c, json_t *obj);
void bconn_send_text(struct bconn *c, const char *text, size_t len);
void bconn_nack(struct bconn *c, const char *msg_id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void bconn_protocol_close(struct bconn *c, const char *why);
/* A Redis reply will point at c: it is not freed before bconn_reply_arrived(), which
 * returns false when c is closing or gone (drop the reply then). */
void bconn_hold(struct bconn *c);
/* After branch_conn_stop(): every connection is gone; a late reply only frees its own. */
bool bconn_stopped(void);
bool bconn_reply_arrived(struct bconn *c);
/* A request is being answered: reading pauses while too many are. */
void bconn_request_begin(struct bconn *c);
void bconn_request_done(struct bconn *c);
/* The branch's services {SERVICE: QUEUE} as WELCOME gave them (borrowed). */
json_t *bconn_services(struct bconn *c);
void bconn_set_services(struct bconn *c, json_t *services);
bool bconn_is_ready(const struct bconn *c);
void bconn_session_open(struct bconn *c, uint64_t cursor);
const char *bconn_branch(const struct bconn *c);
const char *bconn_terminal(const struct bconn *c);
/* Tellers signed in on the connection. */
bool bconn_teller_add(struct bconn *c, const char *agent, const char *sha);
void bconn_teller_remove(struct bconn *c, const char *agent);
const char *bconn_teller_sha(const struct bconn *c, const char *agent);
int bconn_teller_count(const struct bconn *c);
const char *bconn_teller_at(const struct bconn *c, int i);
/* Iterate live connections (for events). */
struct bconn *bconn_first(void);
struct bconn *bconn_next(struct bconn *c);
uint64_t *bconn_pushed_seq(struct bconn *c);
bool *bconn_dirty(struct bconn *c);
bool *bconn_fetching(struct bconn *c);
int bconn_count(void);

/* ---- branch_ops.c ---- */

void branch_ops_init(const struct config *cfg);
void branch_ops_run(struct bconn *c, struct branch_req *req); /* takes over req */

/* ---- branch_events.c ---- */

void branch_events_start(struct event_base *base, const struct config *cfg);
void branch_events_stop(void);
/* Fetch the connection's outbox past its pushed seq (a session opened, or news). */
void branch_events_kick(struct bconn *c);

/* ---- branch_api.c ---- */

extern const struct http_route branch_api_routes[];
void branch_api_start(struct event_base *base, const struct config *cfg);
void branch_api_stop(void);
/* The configured branches are in Redis (since the store last connected). */
bool branch_api_synced(void);

#endif
