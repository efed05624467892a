/* webchat.c - customer web chat. A chat session is one webchat interaction (external_id =
 * the session id) handed to ingest_submit(); its messages are case history and events
 * (daemon/scripts/chat.lua). The widget (web/chat/) talks to:
 *
 *   GET  /v1/chat/config                    topics, limits
 *   POST /v1/chat/sessions                  pre-chat form -> session (+ visitor token cookie)
 *   POST /v1/chat/sessions/{id}/messages    visitor (token) or the holding agent (bearer)
 *   POST /v1/chat/sessions/{id}/typing      typing indicator, either side
 *   GET  /v1/chat/sessions/{id}/events      the visitor's SSE stream (Last-Event-ID resumes)
 *   GET  /v1/chat/sessions/{id}/messages    transcript (visitor or holding agent)
 *   POST /v1/chat/sessions/{id}/close       end of chat; abandons it if still waiting;
 *        {"transcript": true} (visitor): the transcript by email, through the email outbox
 *   GET  /v1/interactions/{id}/timeline     the agent desktop's timeline of the customer
 *
 * Visitors are identified by a signed token (HMAC-SHA256 with a key of this deployment) in a
 * cookie or the X-Omnicc-Visitor header (cross-site embeds, where cookies may be blocked); a
 * policyholder logged in on the insurer's site by an identity hash computed by the site's
 * backend. Cross-origin use is limited to [webchat] allowed_origins (CORS). Limits: requests
 * per IP (in memory, per instance), new sessions per IP and messages per visitor (in Redis,
 * shared by instances), message size.
 *
 * The visitor hears of agents joining and leaving from the interaction's own events: every
 * instance taps the event stream and, for webchat interactions, has chat.lua turn them into
 * chat events once (deduplicated by entry id). */
#include "webchat.h"

#include "email.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/events.h"
#include "omnicc/http.h"
#include "omnicc/identity.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define VISITOR_COOKIE "omnicc_chat"
#define VISITOR_HEADER "X-Omnicc-Visitor"
#define MAX_TOPICS 64
#define MAP_BUCKETS 4096
#define IP_MAX_ENTRIES 100000
#define CHATS_MAX 200000
#define CLIENT_ID_MAX 64

/* A small chained string map: per-IP request counts, and the webchat interactions known. */
struct map_entry {
    struct map_entry *next;
    int count;
    char key[];
};
struct map {
    struct map_entry *b[MAP_BUCKETS];
    size_t n;
};

struct gone_timer {
    struct gone_timer *next, **pprev;
    struct event *ev;
    char session[40];
};

static struct {
    struct event_base *base;
    bool running;
    unsigned char key[256];
    size_t key_len;
    unsigned char secret[256]; /* identity hashes; secret_len 0: not configured */
    size_t secret_len;
    struct {
        char name[33];
        char *queue; /* NULL: routing rules (intent = topic), then the default queue */
    } topics[MAX_TOPICS];
    int n_topics;
    struct map ips;
    int64_t ip_minute;
    struct map chats;
    struct gone_timer *timers;
} wc;

/* ---- the map ---- */

static unsigned map_hash(const char *s)
{
    unsigned h = 5381;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = h * 33 + *p;
    return h % MAP_BUCKETS;
}

static struct map_entry *map_find(struct map *m, const char *key)
{
    for (struct map_entry *e = m->b[map_hash(key)]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static struct map_entry *map_add(struct map *m, const char *key)
{
    size_t n = strlen(key);
    struct map_entry *e = xcalloc(1, sizeof(*e) + n + 1);
    memcpy(e->key, key, n + 1);
    unsigned h = map_hash(key);
    e->next = m->b[h];
    m->b[h] = e;
    m->n++;
    return e;
}

static void map_del(struct map *m, const char *key)
{
    for (struct map_entry **pp = &m->b[map_hash(key)]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            struct map_entry *e = *pp;
            *pp = e->next;
            free(e);
            m->n--;
            return;
        }
    }
}

static void map_clear(struct map *m)
{
    for (int i = 0; i < MAP_BUCKETS; i++) {
        struct map_entry *e = m->b[i];
        while (e) {
            struct map_entry *next = e->next;
            free(e);
            e = next;
        }
        m->b[i] = NULL;
    }
    m->n = 0;
}

/* ---- tokens and hashes ---- */

static void hmac_hex(const unsigned char *key, size_t key_len, const char *msg, size_t len,
                     char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, len, md, &mdlen);
    for (unsigned i = 0; i < 32 && i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    return true;
}

char *webchat_token_mint(const unsigned char *key, size_t key_len, const char *visitor,
                         long long expires_s)
{
    char *body = xasprintf("v1.%s.%lld", visitor, expires_s), mac[65];
    hmac_hex(key, key_len, body, strlen(body), mac);
    char *tok = xasprintf("%s.%s", body, mac);
    free(body);
    return tok;
}

bool webchat_token_check(const unsigned char *key, size_t key_len, const char *token,
                         long long now_s, char *visitor)
{
    /* v1.<32 hex>.<digits>.<64 hex> */
    size_t n = token ? strlen(token) : 0;
    if (n < 3 + 32 + 2 + 1 + 64 || n > 3 + 32 + 2 + 20 + 64 || strncmp(token, "v1.", 3) != 0 ||
        !is_hex(token + 3, 32) || token[35] != '.')
        return false;
    const char *exp = token + 36, *dot = strchr(exp, '.');
    if (!dot || dot == exp || (size_t)(token + n - (dot + 1)) != 64 || !is_hex(dot + 1, 64))
        return false;
    for (const char *p = exp; p < dot; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    char mac[65];
    hmac_hex(key, key_len, token, (size_t)(dot - token), mac);
    if (CRYPTO_memcmp(mac, dot + 1, 64) != 0)
        return false;
    if (strtoll(exp, NULL, 10) <= now_s)
        return false;
    memcpy(visitor, token + 3, 32);
    visitor[32] = '\0';
    return true;
}

void webchat_identity_hash(const unsigned char *secret, size_t secret_len, const char *type,
                           const char *id, char out[65])
{
    char *msg = xasprintf("%s:%s", type, id);
    hmac_hex(secret, secret_len, msg, strlen(msg), out);
    free(msg);
}

/* 32 hex digits (128 bits) of HMAC(key, what:context:client_id): a visitor or session id a
 * retry with the same client_id finds again, and nobody without the key can predict. */
static void derive_hex(const char *client_id, const char *context, const char *what, char out[33])
{
    char *msg = xasprintf("%s:%s:%s", what, context, client_id), mac[65];
    hmac_hex(wc.key, wc.key_len, msg, strlen(msg), mac);
    free(msg);
    memcpy(out, mac, 32);
    out[32] = '\0';
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char raw[32];
    if (bytes > sizeof(raw) || RAND_bytes(raw, (int)bytes) != 1) {
        log_error("webchat: no randomness");
        abort();
    }
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

/* ---- request helpers ---- */

static const char *in_header(struct http_req *r, const char *name)
{
    return r->req ? evhttp_find_header(evhttp_request_get_input_headers(r->req), name) : NULL;
}

static void out_header(struct http_req *r, const char *name, const char *value)
{
    if (r->req)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

static bool session_id_ok(const char *s)
{
    return s && strlen(s) == 34 && s[0] == 'S' && s[1] == '-' && is_hex(s + 2, 32);
}

/* Requests per client address per minute, this instance: 0, or -1 after answering 429. */
static int limit_ip(struct http_req *r)
{
    const struct config *cfg = api_config();
    char *host = NULL;
    ev_uint16_t port = 0;
    if (!r->evcon)
        return 0;
    evhttp_connection_get_peer(r->evcon, &host, &port);
    if (!host)
        return 0;
    int64_t minute = now_ms() / 60000;
    if (minute != wc.ip_minute) {
        map_clear(&wc.ips);
        wc.ip_minute = minute;
    }
    struct map_entry *e = map_find(&wc.ips, host);
    if (!e && wc.ips.n < IP_MAX_ENTRIES)
        e = map_add(&wc.ips, host);
    if (!e || ++e->count > cfg->webchat_ip_rate) {
        out_header(r, "Retry-After", "60");
        http_reply_error(r, 429, "rate_limited",
                         "too many requests from this address; retry later");
        return -1;
    }
    return 0;
}

static bool origin_listed(const char *origin)
{
    const char *list = api_config()->webchat_allowed_origins;
    size_t n = strlen(origin);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != ',' && *e != '\t')
            e++;
        size_t len = (size_t)(e - p);
        while (len > 0 && p[len - 1] == '/')
            len--;
        if (len && len == n && strncasecmp(p, origin, n) == 0)
            return true;
        p = e;
    }
    return false;
}

static bool same_origin(struct http_req *r, const char *origin)
{
    const char *host = in_header(r, "Host");
    if (!host)
        return false;
    const char *rest = strncasecmp(origin, "http://", 7) == 0    ? origin + 7
                       : strncasecmp(origin, "https://", 8) == 0 ? origin + 8
                                                                 : NULL;
    return rest && strcasecmp(rest, host) == 0;
}

/* Browsers' cross-origin calls: allowed origins get CORS headers (with credentials, so the
 * visitor cookie travels); others 403. No Origin, or our own: nothing to do. 0 or -1. */
static int cors(struct http_req *r)
{
    const char *origin = in_header(r, "Origin");
    if (!origin || same_origin(r, origin))
        return 0;
    if (!origin_listed(origin)) {
        http_reply_error(r, 403, "origin_not_allowed",
                         "this origin may not use the chat API ([webchat] allowed_origins)");
        return -1;
    }
    out_header(r, "Access-Control-Allow-Origin", origin);
    out_header(r, "Access-Control-Allow-Credentials", "true");
    out_header(r, "Vary", "Origin");
    return 0;
}

static void preflight(struct http_req *r)
{
    if (limit_ip(r) < 0 || cors(r) < 0)
        return;
    out_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    out_header(r, "Access-Control-Allow-Headers",
               "Content-Type, Authorization, Last-Event-ID, " VISITOR_HEADER);
    out_header(r, "Access-Control-Max-Age", "600");
    http_reply_raw(r, 204, "text/plain", "", 0);
}

/* The visitor token from the header, else the cookie (NULL when neither). */
static const char *visitor_token(struct http_req *r, char *buf, size_t bufsize)
{
    const char *h = in_header(r, VISITOR_HEADER);
    if (h && *h)
        return h;
    const char *c = in_header(r, "Cookie");
    size_t nlen = strlen(VISITOR_COOKIE);
    for (const char *p = c; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        if (strncmp(p, VISITOR_COOKIE, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1, *e = strchr(v, ';');
            size_t len = e ? (size_t)(e - v) : strlen(v);
            if (len >= bufsize)
                return NULL;
            memcpy(buf, v, len);
            buf[len] = '\0';
            return buf;
        }
        p = strchr(p, ';');
    }
    return NULL;
}

static bool visitor_of(struct http_req *r, char visitor[33])
{
    char buf[256];
    const char *tok = visitor_token(r, buf, sizeof(buf));
    return tok && webchat_token_check(wc.key, wc.key_len, tok, now_ms() / 1000, visitor);
}

struct caller {
    char who[8];   /* visitor | agent */
    char auth[72]; /* visitor id | agent token sha256 | "" for the admin token */
};

/* A bearer token makes an agent (or the admin); else the visitor token. 0, or -1 after
 * answering 401. */
static int caller_of(struct http_req *r, struct caller *c, bool agents_allowed)
{
    const char *h = in_header(r, "Authorization");
    if (agents_allowed && h && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *tok = h + 7;
        while (*tok == ' ')
            tok++;
        const char *admin = api_config()->api_token_value;
        snprintf(c->who, sizeof(c->who), "agent");
        if (admin && secure_equals(tok, strlen(tok), admin, strlen(admin))) {
            c->auth[0] = '\0';
            return 0;
        }
        if (*tok && strlen(tok) <= 256) {
            unsigned char md[SHA256_DIGEST_LENGTH];
            SHA256((const unsigned char *)tok, strlen(tok), md);
            for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
                snprintf(c->auth + 2 * i, 3, "%02x", md[i]);
            return 0;
        }
    } else if (visitor_of(r, c->auth)) {
        snprintf(c->who, sizeof(c->who), "visitor");
        return 0;
    }
    out_header(r, "WWW-Authenticate", "Bearer realm=\"omnicc\"");
    http_reply_error(r, 401, "unauthorized",
                     "missing or invalid visitor token (cookie " VISITOR_COOKIE
                     " or header " VISITOR_HEADER ")%s",
                     agents_allowed ? " or bearer token" : "");
    return -1;
}

static void reply_script_error(struct http_req *r, const char *err)
{
    if (strncmp(err, "ERR_RATE ", 9) == 0) {
        out_header(r, "Retry-After", "60");
        http_reply_error(r, 429, "rate_limited", "%s", err + 9);
        return;
    }
    api_reply_script_error(r, err);
}

/* The common prologue of the session routes: limits, CORS, session id, caller. */
static int session_prologue(struct http_req *r, struct caller *c, bool agents_allowed)
{
    if (limit_ip(r) < 0 || cors(r) < 0)
        return -1;
    if (!session_id_ok(r->params[0])) {
        http_reply_error(r, 404, "not_found", "no chat session with that id");
        return -1;
    }
    return caller_of(r, c, agents_allowed);
}

/* ---- GET /v1/chat/config ---- */

static void get_config(struct http_req *r)
{
    if (limit_ip(r) < 0 || cors(r) < 0)
        return;
    json_t *topics = json_array();
    for (int i = 0; i < wc.n_topics; i++)
        json_array_append_new(topics, json_string(wc.topics[i].name));
    const struct config *cfg = api_config();
    http_reply_json(r, 200,
                    json_pack("{s:o,s:i,s:b}", "topics", topics, "max_message",
                              cfg->webchat_max_message, "identity", wc.secret_len > 0));
}

/* ---- POST /v1/chat/sessions ---- */

struct new_session {
    struct http_req *r;
    struct interaction ix;
    char session[40];
    char visitor[33];
    char *token;
    char topic[33];
    bool verified;
    bool retryable; /* a client_id was given: the same request again finds this session */
};

static void new_session_free(struct new_session *ns)
{
    ix_free(&ns->ix);
    free(ns->token);
    free(ns);
}

static void set_cookie(struct http_req *r, const char *token)
{
    const struct config *cfg = api_config();
    bool secure = cfg->webchat_cookie_secure && strcmp(cfg->webchat_cookie_secure, "yes") == 0;
    char *c = xasprintf("%s=%s; Path=/v1/chat/; Max-Age=%d; HttpOnly; %s", VISITOR_COOKIE, token,
                        cfg->webchat_visitor_ttl,
                        secure ? "Secure; SameSite=None; Partitioned" : "SameSite=Lax");
    out_header(r, "Set-Cookie", c);
    free(c);
}

static void session_ingested(const struct ingest_result *res, void *arg)
{
    struct new_session *ns = arg;
    struct http_req *r = ns->r;
    if (res->status >= 400) {
        if (res->status == 503)
            http_reply_unavailable(r, res->error);
        else
            http_reply_error(r, res->status, res->error_code, "%s", res->error);
        new_session_free(ns);
        return;
    }
    if (!map_find(&wc.chats, res->id) && wc.chats.n < CHATS_MAX)
        map_add(&wc.chats, res->id);
    set_cookie(r, ns->token);
    char *ev = xasprintf("/v1/chat/sessions/%s/events", ns->session);
    json_t *out =
        json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:i,s:b}", "session", ns->session, "visitor_token",
                  ns->token, "topic", ns->topic, "verified", ns->verified, "state",
                  res->duplicate ? "open"
                  : res->reservation && *res->reservation ? "offered"
                                                          : "queued",
                  "events", ev, "max_message", api_config()->webchat_max_message, "duplicate",
                  res->duplicate);
    free(ev);
    new_session_free(ns);
    http_reply_json(r, res->duplicate ? 200 : 201, out);
}

static void session_opened(const redisReply *reply, const char *err, void *arg)
{
    struct new_session *ns = arg;
    if (err) {
        reply_script_error(ns->r, err);
        new_session_free(ns);
        return;
    }
    ingest_submit(api_config(), &ns->ix, session_ingested, ns);
}

/* Optional single-line string field of at most max bytes: 0 (out NULL when absent) or -1. */
static int opt_text(json_t *obj, const char *field, size_t max, const char **out, char **why)
{
    json_t *v = json_object_get(obj, field);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!s || n > max || !text_is_clean_utf8(s, n) || strchr(s, '\n') || strchr(s, '\r')) {
        *why = xasprintf("%s: text of at most %zu bytes on one line", field, max);
        return -1;
    }
    *out = n ? s : NULL;
    return 0;
}

static int check_identity(json_t *idn, struct interaction *ix, char **why)
{
    static const char *const allowed[] = {"type", "id", "hash", "name", NULL};
    if (!json_is_object(idn)) {
        *why = xstrdup("identity: must be an object {type, id, hash}");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(idn, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, k) == 0;
        if (!ok) {
            *why = xstrdup("identity: unknown field (type, id, hash, name)");
            return -1;
        }
    }
    if (!wc.secret_len) {
        *why = xstrdup("identity: not accepted: [webchat] identity_secret_file is not configured");
        return -1;
    }
    const char *type = json_string_value(json_object_get(idn, "type"));
    const char *id = json_string_value(json_object_get(idn, "id"));
    const char *hash = json_string_value(json_object_get(idn, "hash"));
    static const struct {
        const char *name;
        enum ident_kind kind;
    } kinds[] = {{"policy", IDENT_POLICY},
                 {"email", IDENT_EMAIL},
                 {"phone", IDENT_PHONE},
                 {"national_id", IDENT_NATIONAL},
                 {"branch_customer_id", IDENT_BRANCH}};
    int kind = -1;
    for (size_t i = 0; type && i < ARRAY_SIZE(kinds); i++)
        if (strcmp(type, kinds[i].name) == 0)
            kind = (int)kinds[i].kind;
    if (kind < 0) {
        *why = xstrdup("identity.type: policy, email, phone, national_id or branch_customer_id");
        return -1;
    }
    if (!id || !*id || strlen(id) >= IDENT_MAX) {
        *why = xstrdup("identity.id: required, the identifier the hash signs");
        return -1;
    }
    if (!hash || strlen(hash) != 64) {
        *why = xstrdup("identity.hash: required, 64 hex digits (HMAC-SHA256)");
        return -1;
    }
    char want[65], got[65];
    webchat_identity_hash(wc.secret, wc.secret_len, type, id, want);
    for (int i = 0; i < 64; i++)
        got[i] = (char)tolower((unsigned char)hash[i]);
    got[64] = '\0';
    if (CRYPTO_memcmp(want, got, 64) != 0)
        return 1; /* forged or from another deployment */
    char norm[IDENT_MAX];
    const char *reason = NULL;
    if (identity_normalize((enum ident_kind)kind, id, norm, sizeof(norm), &reason) < 0) {
        *why = xasprintf("identity.id: %s", reason ? reason : "not a valid identifier");
        return -1;
    }
    free(ix->ident[kind]);
    ix->ident[kind] = xstrdup(norm);
    return 0;
}

static void create_session(struct http_req *r)
{
    if (limit_ip(r) < 0 || cors(r) < 0)
        return;
    const struct config *cfg = api_config();
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    static const char *const allowed[] = {"name",     "email", "phone",     "policy", "topic",
                                          "identity", "page",  "client_id", NULL};
    struct new_session *ns = xcalloc(1, sizeof(*ns));
    ns->r = r;
    char *why = NULL;
    int status = 400;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, k) == 0;
        if (!ok && !why)
            why = xasprintf("%.40s: unknown field", k);
    }
    const char *name = NULL, *page = NULL, *topic = NULL, *fields[3] = {NULL};
    static const char *const field_names[3] = {"email", "phone", "policy"};
    static const enum ident_kind field_kinds[3] = {IDENT_EMAIL, IDENT_PHONE, IDENT_POLICY};
    const char *client_id = json_string_value(json_object_get(body, "client_id"));
    if (!why && json_object_get(body, "client_id") &&
        (!client_id || strlen(client_id) < 16 || !name_is_valid(client_id, CLIENT_ID_MAX))) {
        why = xstrdup("client_id: 16 to 64 letters, digits, _ - . (random, one per chat the "
                      "visitor starts)");
        goto bad;
    }
    if (!why && (opt_text(body, "name", IX_MAX_NAME, &name, &why) < 0 ||
                 opt_text(body, "page", 1000, &page, &why) < 0 ||
                 opt_text(body, "topic", 32, &topic, &why) < 0))
        goto bad;
    for (int i = 0; i < 3 && !why; i++) {
        if (opt_text(body, field_names[i], IDENT_MAX - 1, &fields[i], &why) < 0)
            goto bad;
        if (!fields[i])
            continue;
        char norm[IDENT_MAX];
        const char *reason = NULL;
        if (identity_normalize(field_kinds[i], fields[i], norm, sizeof(norm), &reason) < 0) {
            why = xasprintf("%s: %s", field_names[i], reason ? reason : "not valid");
            goto bad;
        }
        ns->ix.ident[field_kinds[i]] = xstrdup(norm);
    }
    if (why)
        goto bad;
    int t = -1;
    for (int i = 0; i < wc.n_topics; i++)
        if (topic ? strcmp(topic, wc.topics[i].name) == 0 : i == 0)
            t = i;
    if (t < 0) {
        why = xasprintf("topic: one of the topics of GET /v1/chat/config");
        goto bad;
    }
    json_t *idn = json_object_get(body, "identity");
    if (idn && !json_is_null(idn)) {
        int rc = check_identity(idn, &ns->ix, &why);
        if (rc < 0)
            goto bad;
        if (rc > 0) {
            status = 403;
            why = xstrdup("identity: the hash does not match (see docs/API.md, web chat)");
            goto bad;
        }
        ns->verified = true;
        const char *iname = json_string_value(json_object_get(idn, "name"));
        if (iname && !name && strlen(iname) <= IX_MAX_NAME &&
            text_is_clean_utf8(iname, strlen(iname)) && !strchr(iname, '\n') &&
            !strchr(iname, '\r'))
            name = iname;
    }
    if (!ns->verified && !ns->ix.ident[IDENT_EMAIL] && !ns->ix.ident[IDENT_PHONE]) {
        why = xstrdup("email or phone: give one, so the agent can reach you");
        goto bad;
    }

    /* the visitor: the one the token names, else a new one; the token is renewed. With a
     * client_id, a retry of a request whose answer was lost finds the same visitor and the
     * same session (both derived from it under our key), so it opens no second chat. */
    ns->retryable = client_id != NULL;
    if (!visitor_of(r, ns->visitor)) {
        if (client_id)
            derive_hex(client_id, "", "visitor", ns->visitor);
        else
            random_hex(ns->visitor, 16);
    }
    ns->token = webchat_token_mint(wc.key, wc.key_len, ns->visitor,
                                   now_ms() / 1000 + cfg->webchat_visitor_ttl);
    memcpy(ns->session, "S-", 2);
    if (client_id)
        derive_hex(client_id, ns->visitor, "session", ns->session + 2);
    else
        random_hex(ns->session + 2, 16);
    snprintf(ns->topic, sizeof(ns->topic), "%s", wc.topics[t].name);

    struct interaction *ix = &ns->ix;
    ix->channel = CH_WEBCHAT;
    ix->direction = xstrdup("inbound");
    ix->external_id = xstrdup(ns->session);
    const char *from = ix->ident[IDENT_EMAIL]   ? ix->ident[IDENT_EMAIL]
                       : ix->ident[IDENT_PHONE] ? ix->ident[IDENT_PHONE]
                                                : "web chat visitor";
    ix->from = xstrdup(from);
    ix->subject = xasprintf("Web chat: %s", ns->topic);
    ix->customer_name = name ? xstrdup(name) : NULL;
    ix->queue = wc.topics[t].queue ? xstrdup(wc.topics[t].queue) : NULL;
    ix->intent = xstrdup(ns->topic);
    json_t *meta = json_pack("{s:s,s:s,s:s,s:b}", "session", ns->session, "visitor", ns->visitor,
                             "topic", ns->topic, "verified", ns->verified);
    if (page)
        json_object_set_new(meta, "page", json_string(page));
    if (ns->verified)
        json_object_set(meta, "identity", json_object_get(idn, "type"));
    ix->metadata = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(meta);

    char *host = NULL;
    ev_uint16_t port = 0;
    if (r->evcon)
        evhttp_connection_get_peer(r->evcon, &host, &port);
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", cfg->webchat_ip_session_rate);
    const char *argv[9] = {"open",    ns->session,      ns->visitor, host ? host : "-",
                           ns->topic, name ? name : "", limit,       ns->verified ? "1" : "0",
                           ns->retryable ? "1" : "0"};
    if (store_script(SCRIPT_CHAT, 9, argv, NULL, session_opened, ns) < 0) {
        new_session_free(ns);
        http_reply_unavailable(r, store_status());
    }
    json_decref(body); /* after the call: name points into it */
    return;
bad:
    json_decref(body);
    new_session_free(ns);
    http_reply_error(r, status, status == 403 ? "forbidden" : "invalid_field", "%s", why);
    free(why);
}

/* ---- messages, typing, close ---- */

static void message_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        reply_script_error(r, err);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[1]->type == REDIS_REPLY_STRING && *reply->element[1]->str &&
        !map_find(&wc.chats, reply->element[1]->str) && wc.chats.n < CHATS_MAX)
        map_add(&wc.chats, reply->element[1]->str);
    http_reply_json(r, 201,
                    json_pack("{s:s,s:b}", "id", reply->element[0]->str, "duplicate",
                              reply->element[2]->integer == 1));
}

static void post_message(struct http_req *r)
{
    struct caller c;
    if (session_prologue(r, &c, true) < 0)
        return;
    const struct config *cfg = api_config();
    json_t *body = http_body_json_object(r);
    if (!body)
        return;
    json_t *t = json_object_get(body, "text"), *cid = json_object_get(body, "client_id");
    const char *text = json_string_value(t), *client_id = json_string_value(cid);
    const char *k;
    json_t *v;
    const char *why = NULL;
    int status = 400;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "text") != 0 && strcmp(k, "client_id") != 0)
            why = "only text and client_id are allowed";
    }
    bool blank = true;
    for (const char *p = text; p && *p && blank; p++)
        blank = isspace((unsigned char)*p);
    if (why) {
    } else if (!text || blank) {
        why = "text: required";
    } else if (json_string_length(t) > (size_t)cfg->webchat_max_message) {
        status = 413;
        why = "text: longer than the chat's message size limit";
    } else if (!text_is_clean_utf8(text, json_string_length(t))) {
        why = "text: must be UTF-8 text without control characters";
    } else if (cid && !json_is_null(cid) &&
               (!client_id || !name_is_valid(client_id, CLIENT_ID_MAX) || strchr(client_id, ':'))) {
        why = "client_id: up to 64 letters, digits, _ - .";
    }
    if (why) {
        json_decref(body);
        if (status == 413)
            http_reply_error(r, 413, "too_large", "%s (%d bytes)", why, cfg->webchat_max_message);
        else
            http_reply_error(r, 400, "invalid_field", "%s", why);
        return;
    }
    char rate[16];
    snprintf(rate, sizeof(rate), "%d", cfg->webchat_visitor_rate);
    const char *argv[7] = {"message", r->params[0], c.who, c.auth, text, client_id ? client_id : "",
                           rate};
    if (store_script(SCRIPT_CHAT, 7, argv, NULL, message_done, r) < 0)
        http_reply_unavailable(r, store_status());
    json_decref(body);
}

static void typing_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err)
        reply_script_error(r, err);
    else
        http_reply_raw(r, 204, "application/json", "", 0);
}

static void post_typing(struct http_req *r)
{
    struct caller c;
    if (session_prologue(r, &c, true) < 0)
        return;
    const char *argv[4] = {"typing", r->params[0], c.who, c.auth};
    if (store_script(SCRIPT_CHAT, 4, argv, NULL, typing_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void abandon_done(const redisReply *reply, const char *err, void *arg)
{
    if (err && strncmp(err, "ERR_CONFLICT", 12) != 0)
        log_warn("webchat: abandoning a chat failed: %s", err);
}

/* The customer left while waiting: the work script's abandon (queued or offered only). */
static void abandon(const char *ix_id)
{
    if (!id_is_valid(ix_id, 'I'))
        return;
    const char *argv[4] = {ix_id, "abandon", "", "{\"reason\":\"customer_left\"}"};
    if (store_script(SCRIPT_WORK, 4, argv, NULL, abandon_done, NULL) < 0)
        log_warn("webchat: cannot abandon %s: %s", ix_id, store_status());
}

/* The optional body of a close: {"transcript": true} asks for the transcript by email. 1
 * asked, 0 not, -1 malformed. */
static int close_wants_transcript(struct http_req *r)
{
    if (!r->body || r->body_len == 0)
        return 0;
    json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *t = json_object_get(o, "transcript");
    int rc = !json_is_object(o) || json_object_size(o) != (t ? 1u : 0u) ? -1
             : !t || json_is_false(t) || json_is_null(t)                ? 0
             : json_is_true(t)                                          ? 1
                                                                        : -1;
    json_decref(o);
    return rc;
}

static void close_transcript_done(const char *outcome, void *arg)
{
    struct http_req *r = arg;
    http_reply_json(r, 200, json_pack("{s:s,s:s,s:s}", "session", r->params[0], "state", "ended",
                                      "transcript", outcome));
}

static void close_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        reply_script_error(r, err);
        return;
    }
    const char *state = reply->element[2]->str, *ix_id = reply->element[1]->str;
    if (strcmp(reply->element[0]->str, "ok") == 0 &&
        (strcmp(state, "queued") == 0 || strcmp(state, "offered") == 0))
        abandon(ix_id);
    /* ended by this close or before (the end screen): the script sends it once, and the
     * answer says what became of it */
    if (close_wants_transcript(r) == 1 && id_is_valid(ix_id, 'I') &&
        email_queue_transcript(api_config(), ix_id, r->params[0], close_transcript_done, r) == 0)
        return;
    json_t *out = json_pack("{s:s,s:s}", "session", r->params[0], "state", "ended");
    if (close_wants_transcript(r) == 1)
        json_object_set_new(out, "transcript", json_string("unavailable"));
    http_reply_json(r, 200, out);
}

static void post_close(struct http_req *r)
{
    struct caller c;
    if (session_prologue(r, &c, true) < 0)
        return;
    int want = close_wants_transcript(r);
    if (want < 0 || (want > 0 && strcmp(c.who, "visitor") != 0)) {
        http_reply_error(r, 400, "invalid_field",
                         "body: optional {\"transcript\": true}, the visitor's only");
        return;
    }
    const char *argv[4] = {"close", r->params[0], c.who, c.auth};
    if (store_script(SCRIPT_CHAT, 4, argv, NULL, close_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void transcript_done(const redisReply *reply, const char *err, void *arg)
{
    static const char *const lists[] = {"events", NULL};
    if (err)
        reply_script_error(arg, err);
    else
        api_reply_script_json(arg, reply, NULL, lists);
}

static void get_messages(struct http_req *r)
{
    struct caller c;
    if (session_prologue(r, &c, true) < 0)
        return;
    const char *argv[4] = {"messages", r->params[0], c.who, c.auth};
    if (store_script(SCRIPT_CHAT, 4, argv, NULL, transcript_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

/* ---- the visitor's stream, and leaving ---- */

static void gone_done(const redisReply *reply, const char *err, void *arg)
{
    if (err) {
        log_debug("webchat: leave check failed: %s", err);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        strcmp(reply->element[0]->str, "abandon") == 0)
        abandon(reply->element[1]->str);
}

static void gone_timer_free(struct gone_timer *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    event_free(t->ev);
    free(t);
}

static void on_gone_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gone_timer *t = arg;
    const char *argv[2] = {"gone", t->session};
    if (store_script(SCRIPT_CHAT, 2, argv, NULL, gone_done, NULL) < 0)
        log_debug("webchat: leave check skipped: %s", store_status());
    gone_timer_free(t);
}

/* The visitor's stream closed: after leave_grace seconds, a visitor still away while the
 * chat waits has left (a reload or a network blip reconnects well within it). */
static void on_stream_gone(const char *session)
{
    if (!wc.running || !wc.base)
        return;
    struct gone_timer *t = xcalloc(1, sizeof(*t));
    snprintf(t->session, sizeof(t->session), "%s", session);
    t->ev = evtimer_new(wc.base, on_gone_timer, t);
    t->next = wc.timers;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = &wc.timers;
    wc.timers = t;
    struct timeval tv = {api_config()->webchat_leave_grace, 0};
    evtimer_add(t->ev, &tv);
}

static void connect_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        reply_script_error(r, err);
        return;
    }
    if (reply->element[0]->len && !map_find(&wc.chats, reply->element[0]->str) &&
        wc.chats.n < CHATS_MAX)
        map_add(&wc.chats, reply->element[0]->str);
    if (!r->req) { /* the visitor went before the stream began: count it as gone */
        char session[40];
        snprintf(session, sizeof(session), "%s", r->params[0]);
        http_reply_raw(r, 499, "text/plain", "", 0);
        on_stream_gone(session);
        return;
    }
    events_subscribe_session(r, r->params[0], on_stream_gone);
}

static void get_events(struct http_req *r)
{
    struct caller c;
    if (session_prologue(r, &c, false) < 0)
        return;
    const char *argv[3] = {"connect", r->params[0], c.auth};
    if (store_script(SCRIPT_CHAT, 3, argv, NULL, connect_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

/* ---- the agent desktop's timeline ---- */

static void timeline_done(const redisReply *reply, const char *err, void *arg)
{
    static const char *const lists[] = {"cases", "timeline", NULL};
    api_reply_script_json(arg, reply, err, lists);
}

static void get_timeline(struct http_req *r)
{
    if (!id_is_valid(r->params[0], 'I')) {
        http_reply_error(r, 404, "not_found", "no interaction with that id");
        return;
    }
    /* what a reply to an email may carry, for the desktop's composer */
    const struct config *cfg = api_config();
    char limits[256];
    snprintf(limits, sizeof(limits),
             "{\"body\":%d,\"attachments\":%d,\"attachment\":%lld,\"attachments_total\":%lld}",
             EMAIL_REPLY_BODY_MAX, cfg->email_max_attachments, (long long)cfg->email_max_attachment,
             (long long)cfg->email_max_attachments_total);
    const char *argv[4] = {"timeline", r->params[0], r->auth_sha, limits};
    if (store_script(SCRIPT_CHAT, 4, argv, NULL, timeline_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

/* ---- agents joining and leaving, from the event stream ---- */

static void sync_done(const redisReply *reply, const char *err, void *arg)
{
    if (err)
        log_debug("webchat: sync failed: %s", err);
}

static void tap(const char *type, const char *agent, const char *session, const char *data,
                const char *id)
{
    static const char *const lifecycle[] = {"offer.accepted",       "interaction.transferred",
                                            "interaction.wrapup",   "interaction.completed",
                                            "interaction.canceled", "interaction.abandoned"};
    bool queued = strcmp(type, "interaction.queued") == 0, offer = strcmp(type, "offer") == 0;
    int life = -1;
    for (size_t i = 0; i < ARRAY_SIZE(lifecycle); i++)
        if (strcmp(type, lifecycle[i]) == 0)
            life = (int)i;
    if (!queued && !offer && life < 0)
        return;
    /* cheap checks first: most traffic is other channels */
    if ((queued || offer) && !strstr(data, "\"channel\":\"webchat\""))
        return;
    if (life >= 0 && wc.chats.n == 0)
        return;
    json_t *d = json_loads(data, 0, NULL);
    const char *ix = NULL, *ch = NULL;
    if (offer) {
        json_t *i = json_object_get(d, "interaction");
        ix = json_string_value(json_object_get(i, "id"));
        ch = json_string_value(json_object_get(i, "channel"));
    } else {
        ix = json_string_value(json_object_get(d, "interaction"));
        ch = json_string_value(json_object_get(d, "channel"));
    }
    if (ix && (queued || offer)) {
        if (ch && strcmp(ch, "webchat") == 0 && !map_find(&wc.chats, ix) && wc.chats.n < CHATS_MAX)
            map_add(&wc.chats, ix);
    } else if (ix && map_find(&wc.chats, ix)) {
        const char *argv[4] = {"sync", ix, type, id};
        if (store_script(SCRIPT_CHAT, 4, argv, NULL, sync_done, NULL) < 0)
            log_debug("webchat: sync skipped: %s", store_status());
        if (life >= 3) /* completed, canceled, abandoned: nothing more to tell */
            map_del(&wc.chats, ix);
    }
    json_decref(d);
}

/* ---- start and stop ---- */

static int load_key(const struct config *cfg, char **err)
{
    char *path = cfg->webchat_visitor_key_file ? xstrdup(cfg->webchat_visitor_key_file)
                                               : xasprintf("%s/webchat.key", cfg->state_dir);
    char *e = NULL, *key = read_secret_file(path, &e);
    if (!key && !cfg->webchat_visitor_key_file) {
        /* first start: make one (an instance racing us wins; then we read theirs) */
        free(e);
        e = NULL;
        if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST)
            log_warn("webchat: cannot create %s: %s", cfg->state_dir, strerror(errno));
        char fresh[65];
        random_hex(fresh, 32);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (write(fd, fresh, 64) != 64 || write(fd, "\n", 1) != 1)
                log_warn("webchat: short write to %s", path);
            close(fd);
        }
        key = read_secret_file(path, &e);
    }
    if (!key || strlen(key) < 16 || strlen(key) > sizeof(wc.key)) {
        *err = xasprintf("webchat: visitor_key_file %s: %s", path,
                         key ? "must hold 16-256 characters" : e);
        free(e);
        free(key);
        free(path);
        return -1;
    }
    wc.key_len = strlen(key);
    memcpy(wc.key, key, wc.key_len);
    OPENSSL_cleanse(key, wc.key_len);
    free(key);
    free(path);
    if (cfg->webchat_identity_secret_file) {
        char *s = read_secret_file(cfg->webchat_identity_secret_file, &e);
        if (!s || strlen(s) < 16 || strlen(s) > sizeof(wc.secret)) {
            *err = xasprintf("webchat: identity_secret_file: %s",
                             s ? "must hold 16-256 characters" : e);
            free(e);
            free(s);
            return -1;
        }
        wc.secret_len = strlen(s);
        memcpy(wc.secret, s, wc.secret_len);
        OPENSSL_cleanse(s, wc.secret_len);
        free(s);
    }
    return 0;
}

static void free_topics(void)
{
    for (int i = 0; i < wc.n_topics; i++)
        xfree(wc.topics[i].queue);
    wc.n_topics = 0;
}

static int load_topics(const struct config *cfg, char **err)
{
    char *copy = xstrdup(cfg->webchat_topics), *save = NULL;
    for (char *tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        char *colon = strchr(tok, ':');
        if (colon)
            *colon = '\0';
        bool ok = *tok && strlen(tok) <= 32;
        for (const char *p = tok; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || *p == '_' || *p == '-';
        if (!ok || wc.n_topics >= MAX_TOPICS) {
            *err = xasprintf("webchat: topics: \"%s\": names of letters, digits, _ or - (at most "
                             "%d topics)",
                             tok, MAX_TOPICS);
            goto fail;
        }
        if (colon && !router_queue_serves(cfg, colon + 1, "webchat")) {
            *err =
                xasprintf("webchat: topics: %s: no queue \"%s\" serving webchat", tok, colon + 1);
            goto fail;
        }
        snprintf(wc.topics[wc.n_topics].name, sizeof(wc.topics[0].name), "%s", tok);
        wc.topics[wc.n_topics].queue = colon ? xstrdup(colon + 1) : NULL;
        wc.n_topics++;
    }
    free(copy);
    if (wc.n_topics == 0) {
        *err = xstrdup("webchat: topics: at least one topic");
        return -1;
    }
    return 0;
fail:
    free(copy);
    free_topics();
    return -1;
}

static int webchat_start(struct event_base *base, const struct config *cfg, char **err)
{
    wc.base = base;
    if (load_topics(cfg, err) < 0 || load_key(cfg, err) < 0)
        return -1;
    wc.running = true;
    events_set_tap(tap);
    return 0;
}

static void webchat_stop(void)
{
    wc.running = false;
    events_set_tap(NULL);
    while (wc.timers)
        gone_timer_free(wc.timers);
    map_clear(&wc.ips);
    map_clear(&wc.chats);
    free_topics();
    OPENSSL_cleanse(wc.key, sizeof(wc.key));
    OPENSSL_cleanse(wc.secret, sizeof(wc.secret));
    wc.key_len = wc.secret_len = 0;
}

static const struct http_route webchat_routes[] = {
    {EVHTTP_REQ_GET, "/v1/chat/config", HTTP_AUTH_NONE, get_config, NULL, NULL, false},
    {EVHTTP_REQ_OPTIONS, "/v1/chat/config", HTTP_AUTH_NONE, preflight, NULL, "/v1/chat/*", false},
    {EVHTTP_REQ_POST, "/v1/chat/sessions", HTTP_AUTH_NONE, create_session, "application/json", NULL,
     false},
    {EVHTTP_REQ_OPTIONS, "/v1/chat/sessions", HTTP_AUTH_NONE, preflight, NULL, "/v1/chat/*", false},
    {EVHTTP_REQ_POST, "/v1/chat/sessions/{id}/messages", HTTP_AUTH_NONE, post_message,
     "application/json", NULL, false},
    {EVHTTP_REQ_GET, "/v1/chat/sessions/{id}/messages", HTTP_AUTH_NONE, get_messages, NULL, NULL,
     false},
    {EVHTTP_REQ_OPTIONS, "/v1/chat/sessions/{id}/messages", HTTP_AUTH_NONE, preflight, NULL,
     "/v1/chat/*", false},
    {EVHTTP_REQ_POST, "/v1/chat/sessions/{id}/typing", HTTP_AUTH_NONE, post_typing, NULL, NULL,
     false},
    {EVHTTP_REQ_OPTIONS, "/v1/chat/sessions/{id}/typing", HTTP_AUTH_NONE, preflight, NULL,
     "/v1/chat/*", false},
    {EVHTTP_REQ_GET, "/v1/chat/sessions/{id}/events", HTTP_AUTH_NONE, get_events, NULL, NULL,
     false},
    {EVHTTP_REQ_OPTIONS, "/v1/chat/sessions/{id}/events", HTTP_AUTH_NONE, preflight, NULL,
     "/v1/chat/*", false},
    {EVHTTP_REQ_POST, "/v1/chat/sessions/{id}/close", HTTP_AUTH_NONE, post_close, NULL, NULL,
     false},
    {EVHTTP_REQ_OPTIONS, "/v1/chat/sessions/{id}/close", HTTP_AUTH_NONE, preflight, NULL,
     "/v1/chat/*", false},
    {EVHTTP_REQ_GET, "/v1/interactions/{id}/timeline", HTTP_AUTH_AGENT, get_timeline, NULL, NULL,
     false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};

const struct channel webchat_channel = {
    .name = "webchat",
    .routes = webchat_routes,
    .start = webchat_start,
    .stop = webchat_stop,
};
