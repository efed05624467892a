/* branch_proto.c - the branch terminal protocol's frames and the validation of every request
 * type, as pure functions (no I/O, no Redis): what reaches branch_ops.c is well formed,
 * bounded and normalised, and a refused frame has written nothing anywhere. Fuzzed by
 * tests/fuzz/fuzz_branch.c.
 *
 * Each request type is one row of branch_ops[]: its frame type, the script operation, its
 * flags and its fields (kind, required, bound). Unknown fields are refused, so a terminal
 * never believes something was recorded that the server ignored. */
#include <ctype.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branch.h"
#include "omnicc/identity.h"
#include "omnicc/interaction.h"
#include "omnicc/util.h"

enum field_kind {
    FK_NAME,    /* [A-Za-z0-9_.:-], at most max */
    FK_SERVICE, /* [A-Za-z0-9_-], at most 32 */
    FK_ID_I,    /* I-123 */
    FK_ID_C,    /* C-123 */
    FK_ID_R,    /* */
    FK_MSGREF,  /* a msg_id */
    FK_LINE,    /* one line of clean UTF-8, at most max bytes */
    FK_TEXT,    /* clean UTF-8 (newlines allowed), at most max bytes */
    FK_UINT,    /* integer 0..max */
    FK_BOOL,
    FK_TIME,     /* epoch milliseconds, 2000-01-01 .. 2100-01-01 */
    FK_CUSTOMER, /* {policy, phone, email, national_id, branch_customer_id, name} */
    FK_BASE64,   /* decoded into req->doc */
    FK_SHA256,   /* 64 lowercase hex digits */
    FK_PURPOSE,  /* one of the configured purpose codes */
    FK_LOOKUP_BY,
    FK_CHANNEL,
    FK_SECRET, /* kept out of args (req->token) */
    FK_MIME,   /* type/subtype */
};

#define REQ 1u

struct branch_field {
    const char *name;
    enum field_kind kind;
    unsigned flags;
    long long max;
};

#define TGT_VISIT 1 /* exactly one of visit, visit_ref */
#define TGT_CASE 2  /* exactly one of visit, visit_ref, case */

#define F_VISIT                                                                                    \
    {"visit", FK_ID_I, 0, 0},                                                                      \
    {                                                                                              \
        "visit_ref", FK_MSGREF, 0, 0                                                               \
    }
#define F_CASE                                                                                     \
    F_VISIT,                                                                                       \
    {                                                                                              \
        "case", FK_ID_C, 0, 0                                                                      \
    }
#define F_END                                                                                      \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

static const struct branch_field f_hello[] = {
    {"cursor", FK_UINT, 0, 1LL << 53}, {"client", FK_LINE, 0, 100}, F_END};
static const struct branch_field f_none[] = {F_END};
static const struct branch_field f_signin[] = {{"token", FK_SECRET, REQ, BRANCH_TOKEN_MAX}, F_END};
static const struct branch_field f_visit_create[] = {
    {"service", FK_SERVICE, REQ, 32}, {"customer", FK_CUSTOMER, 0, 0},
    {"note", FK_TEXT, 0, 4000},       {"priority", FK_UINT, 0, 100},
    {"serve_now", FK_BOOL, 0, 0},     {"counter", FK_NAME, 0, 16},
    {"captured_at", FK_TIME, 0, 0},   F_END};
static const struct branch_field f_call_next[] = {
    {"counter", FK_NAME, REQ, 16}, {"service", FK_SERVICE, 0, 32}, F_END};
static const struct branch_field f_visit_only[] = {F_VISIT, F_END};
static const struct branch_field f_recall[] = {F_VISIT, {"counter", FK_NAME, 0, 16}, F_END};
static const struct branch_field f_park[] = {F_VISIT, {"reason", FK_NAME, 0, 64}, F_END};
static const struct branch_field f_transfer[] = {
    F_VISIT, {"service", FK_SERVICE, REQ, 32}, {"note", FK_TEXT, 0, 4000}, F_END};
static const struct branch_field f_end[] = {
    F_VISIT, {"outcome", FK_NAME, REQ, 64}, {"note", FK_TEXT, 0, 4000}, F_END};
static const struct branch_field f_note[] = {F_CASE, {"text", FK_TEXT, REQ, 8000}, F_END};
static const struct branch_field f_consent[] = {F_CASE,
                                                {"kind", FK_NAME, REQ, 64},
                                                {"granted", FK_BOOL, REQ, 0},
                                                {"text", FK_TEXT, 0, 2000},
                                                {"captured_at", FK_TIME, 0, 0},
                                                F_END};
static const struct branch_field f_lookup[] = {{"by", FK_LOOKUP_BY, REQ, 0},
                                               {"value", FK_LINE, REQ, IDENT_MAX - 1},
                                               {"purpose", FK_PURPOSE, REQ, 0},
                                               F_END};
static const struct branch_field f_document[] = {F_CASE,
                                                 {"name", FK_LINE, REQ, 200},
                                                 {"mime", FK_MIME, REQ, 100},
                                                 {"content", FK_BASE64, REQ, 0},
                                                 {"sha256", FK_SHA256, 0, 0},
                                                 F_END};
static const struct branch_field f_handover[] = {F_CASE,
                                                 {"queue", FK_NAME, REQ, 64},
                                                 {"note", FK_TEXT, REQ, 8000},
                                                 {"channel", FK_CHANNEL, 0, 0},
                                                 F_END};
static const struct branch_field f_appointment[] = {F_CASE,
                                                    {"service", FK_SERVICE, REQ, 32},
                                                    {"at", FK_TIME, REQ, 0},
                                                    {"note", FK_TEXT, 0, 2000},
                                                    F_END};
static const struct branch_field f_offer[] = {
    {"reservation", FK_ID_R, REQ, 0}, {"counter", FK_NAME, 0, 16}, F_END};
static const struct branch_field f_fnol[] = {F_CASE,
                                             {"loss_at", FK_TIME, REQ, 0},
                                             {"loss_kind", FK_NAME, REQ, 64},
                                             {"description", FK_TEXT, REQ, 8000},
                                             {"captured_at", FK_TIME, REQ, 0},
                                             {"policy", FK_LINE, 0, IDENT_MAX - 1},
                                             {"location", FK_LINE, 0, 300},
                                             F_END};

#define T BOP_F_TELLER
#define S BOP_F_STORED
#define P BOP_F_SPOOL
static const struct branch_op branch_ops[BOP__COUNT] = {
    {BOP_HELLO, "HELLO", "hello", 0, f_hello, 0},
    {BOP_PING, "PING", NULL, 0, f_none, 0},
    {BOP_SIGNIN, "SIGNIN", "signin", 0, f_signin, 0},
    {BOP_SIGNOUT, "SIGNOUT", NULL, T, f_none, 0},
    {BOP_VISIT_CREATE, "VISIT_CREATE", "visit_register", T | S | P, f_visit_create, 0},
    {BOP_CALL_NEXT, "CALL_NEXT", "call_next", T | S, f_call_next, 0},
    {BOP_SERVE, "VISIT_SERVE", "serve", T | S | P, f_visit_only, TGT_VISIT},
    {BOP_RECALL, "VISIT_RECALL", "recall", T | S, f_recall, TGT_VISIT},
    {BOP_PARK, "VISIT_PARK", "park", T | S | P, f_park, TGT_VISIT},
    {BOP_TRANSFER, "VISIT_TRANSFER", "transfer", T | S | P, f_transfer, TGT_VISIT},
    {BOP_NO_SHOW, "VISIT_NO_SHOW", "no_show", T | S | P, f_visit_only, TGT_VISIT},
    {BOP_END, "VISIT_END", "end", T | S | P, f_end, TGT_VISIT},
    {BOP_NOTE, "NOTE", "note", T | S | P, f_note, TGT_CASE},
    {BOP_CONSENT, "CONSENT", "consent", T | S | P, f_consent, TGT_CASE},
    {BOP_LOOKUP, "LOOKUP", "lookup", T | S, f_lookup, 0},
    {BOP_DOCUMENT, "DOCUMENT", "document", T | S | P, f_document, TGT_CASE},
    {BOP_HANDOVER, "HANDOVER", "handover", T | S | P, f_handover, TGT_CASE},
    {BOP_APPOINTMENT, "APPOINTMENT", "appointment", T | S | P, f_appointment, TGT_CASE},
    {BOP_OFFER_ACCEPT, "OFFER_ACCEPT", "offer_accept", T | S, f_offer, 0},
    {BOP_OFFER_REJECT, "OFFER_REJECT", "offer_reject", T | S, f_offer, 0},
    {BOP_FNOL, "FNOL", "fnol", T | S | P, f_fnol, TGT_CASE},
};
#undef T
#undef S
#undef P

const struct branch_op *branch_op_by_kind(enum branch_op_kind kind)
{
    return kind < BOP__COUNT ? &branch_ops[kind] : NULL;
}

const struct branch_op *branch_op_by_type(const char *type)
{
    for (size_t i = 0; i < BOP__COUNT; i++)
        if (strcmp(branch_ops[i].type, type) == 0)
            return &branch_ops[i];
    return NULL;
}

/* ---- frames ---- */

enum branch_frame_status branch_frame_peek(const unsigned char *buf, size_t avail, size_t max,
                                           uint32_t *len)
{
    if (avail < 4)
        return BRANCH_FRAME_MORE;
    uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    *len = n;
    if (n == 0)
        return BRANCH_FRAME_EMPTY;
    if (n > max)
        return BRANCH_FRAME_TOO_LARGE;
    return avail - 4 >= n ? BRANCH_FRAME_READY : BRANCH_FRAME_MORE;
}

void branch_frame_prefix(unsigned char out[4], uint32_t len)
{
    out[0] = (unsigned char)(len >> 24);
    out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
}

/* ---- names and identities ---- */

static bool charset_ok(const char *s, size_t max, const char *extra)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
            return false;
    return true;
}

bool branch_id_valid(const char *s)
{
    return charset_ok(s, BRANCH_ID_MAX, "_-");
}

bool branch_terminal_valid(const char *s)
{
    return charset_ok(s, BRANCH_TERMINAL_MAX, "_.-");
}

bool branch_msg_id_valid(const char *s)
{
    return charset_ok(s, BRANCH_MSG_ID_MAX, "_.:-");
}

int branch_identity_parse(const char *text, char branch[BRANCH_ID_MAX + 1],
                          char terminal[BRANCH_TERMINAL_MAX + 1])
{
    static const char urn[] = "urn:omnicc:terminal:";
    char b[80], t[80];
    const char *sep;
    if (!text || strlen(text) > 200)
        return -1;
    if (strncmp(text, urn, sizeof(urn) - 1) == 0) {
        const char *rest = text + sizeof(urn) - 1;
        sep = strchr(rest, ':');
        if (!sep || (size_t)(sep - rest) >= sizeof(b) || strlen(sep + 1) >= sizeof(t))
            return -1;
        snprintf(b, sizeof(b), "%.*s", (int)(sep - rest), rest);
        snprintf(t, sizeof(t), "%s", sep + 1);
    } else {
        sep = strchr(text, '@');
        if (!sep || (size_t)(sep - text) >= sizeof(t) || strlen(sep + 1) >= sizeof(b))
            return -1;
        snprintf(t, sizeof(t), "%.*s", (int)(sep - text), text);
        snprintf(b, sizeof(b), "%s", sep + 1);
    }
    if (!branch_id_valid(b) || !branch_terminal_valid(t))
        return -1;
    memcpy(branch, b, strlen(b) + 1);
    memcpy(terminal, t, strlen(t) + 1);
    return 0;
}

/* ---- base64 ---- */

/* OpenSSL decodes; what is accepted is only the canonical text (padded, no whitespace, no
 * bits set in the padding): the decoded bytes must encode back to exactly the input. */
long branch_base64_decode(const char *in, size_t len, unsigned char *out)
{
    if (len == 0 || len % 4 || len > INT_MAX)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    n -= (in[len - 1] == '=') + (in[len - 2] == '='); /* padding decodes as zero bytes */
    if (n <= 0)
        return -1;
    char *again = xmalloc(len + 1);
    bool canonical = EVP_EncodeBlock((unsigned char *)again, out, n) == (int)len &&
                     memcmp(again, in, len) == 0;
    free(again);
    return canonical ? n : -1;
}

/* ---- request validation ---- */

#define NACK(code_, ...)                                                                           \
    do {                                                                                           \
        nack->code = (code_);                                                                      \
        snprintf(nack->message, sizeof(nack->message), __VA_ARGS__);                               \
        return -1;                                                                                 \
    } while (0)

/* Field names are echoed in messages: only printable ASCII, bounded. */
static const char *shown(const char *s, char *buf, size_t size)
{
    size_t i = 0;
    for (; s[i] && i + 1 < size && i < 40; i++)
        buf[i] = isprint((unsigned char)s[i]) && s[i] != '"' ? s[i] : '?';
    buf[i] = '\0';
    return buf;
}

static bool word_in(const char *list, const char *word)
{
    size_t n = strlen(word);
    if (!n)
        return false;
    for (const char *p = list; p && (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return true;
    return false;
}

static int check_string(json_t *v, const struct branch_field *f, bool multiline,
                        struct branch_nack *nack)
{
    if (!json_is_string(v))
        NACK("invalid", "%s: must be a string", f->name);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 && (f->flags & REQ))
        NACK("invalid", "%s: must not be empty", f->name);
    if ((long long)n > f->max)
        NACK("invalid", "%s: longer than %lld bytes", f->name, f->max);
    if (!text_is_clean_utf8(s, n) || (!multiline && (memchr(s, '\n', n) || memchr(s, '\r', n))))
        NACK("invalid", "%s: contains control characters", f->name);
    return 0;
}

static int normalise_ident(enum ident_kind kind, const char *label, const char *raw, json_t *out,
                           const char *key, struct branch_nack *nack)
{
    char norm[IDENT_MAX];
    const char *why = NULL;
    if (strlen(raw) >= IDENT_MAX || identity_normalize(kind, raw, norm, sizeof(norm), &why) < 0)
        NACK("invalid", "%s: %s", label, why ? why : "too long");
    json_object_set_new(out, key, json_string(norm));
    return 0;
}

static int check_customer(json_t *v, json_t *args, struct branch_nack *nack)
{
    static const struct {
        const char *field;
        int kind; /* -1: the name */
    } allowed[] = {{"policy", IDENT_POLICY},
                   {"phone", IDENT_PHONE},
                   {"email", IDENT_EMAIL},
                   {"national_id", IDENT_NATIONAL},
                   {"branch_customer_id", IDENT_BRANCH},
                   {"name", -1}};
    if (!json_is_object(v))
        NACK("invalid", "customer: must be an object");
    json_t *out = json_object();
    const char *k;
    json_t *fv;
    char buf[48];
    json_object_foreach(v, k, fv)
    {
        size_t i = 0;
        while (i < ARRAY_SIZE(allowed) && strcmp(allowed[i].field, k) != 0)
            i++;
        if (i == ARRAY_SIZE(allowed)) {
            json_decref(out);
            NACK("invalid", "customer.%s: unknown field", shown(k, buf, sizeof(buf)));
        }
        struct branch_field f = {allowed[i].field, FK_LINE, REQ,
                                 allowed[i].kind < 0 ? IX_MAX_NAME : IDENT_MAX - 1};
        char label[48];
        snprintf(label, sizeof(label), "customer.%s", allowed[i].field);
        f.name = label;
        if (check_string(fv, &f, false, nack) < 0) {
            json_decref(out);
            return -1;
        }
        if (allowed[i].kind < 0) {
            json_object_set(out, "name", fv);
        } else if (normalise_ident((enum ident_kind)allowed[i].kind, label, json_string_value(fv),
                                   out, allowed[i].field, nack) < 0) {
            json_decref(out);
            return -1;
        }
    }
    json_object_set_new(args, "customer", out);
    return 0;
}

static int check_field(const struct branch_field *f, json_t *v, const struct branch_limits *lim,
                       struct branch_req *req, struct branch_nack *nack)
{
    json_t *args = req->args;
    switch (f->kind) {
    case FK_NAME:
    case FK_SERVICE:
        if (!json_is_string(v) ||
            !(f->kind == FK_NAME ? name_is_valid(json_string_value(v), (size_t)f->max)
                                 : branch_id_valid(json_string_value(v))))
            NACK("invalid", "%s: a name of letters, digits, _ - %s(at most %lld)", f->name,
                 f->kind == FK_NAME ? ". : " : "", f->max ? f->max : 32);
        break;
    case FK_ID_I:
    case FK_ID_C:
    case FK_ID_R: {
        char prefix = f->kind == FK_ID_I ? 'I' : f->kind == FK_ID_C ? 'C' : 'R';
        if (!json_is_string(v) || !id_is_valid(json_string_value(v), prefix))
            NACK("invalid", "%s: must look like %c-123", f->name, prefix);
        break;
    }
    case FK_MSGREF:
        if (!json_is_string(v) || !branch_msg_id_valid(json_string_value(v)))
            NACK("invalid", "%s: a msg_id (1-64 of letters, digits, _ . : -)", f->name);
        break;
    case FK_LINE:
    case FK_TEXT:
        if (check_string(v, f, f->kind == FK_TEXT, nack) < 0)
            return -1;
        break;
    case FK_UINT:
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > f->max)
            NACK("invalid", "%s: an integer 0-%lld", f->name, f->max);
        break;
    case FK_BOOL:
        if (!json_is_boolean(v))
            NACK("invalid", "%s: true or false", f->name);
        break;
    case FK_TIME:
        if (!json_is_integer(v) || json_integer_value(v) < 946684800000LL ||
            json_integer_value(v) > 4102444800000LL)
            NACK("invalid", "%s: epoch milliseconds (2000-2100)", f->name);
        break;
    case FK_CUSTOMER:
        return check_customer(v, args, nack);
    case FK_BASE64: {
        if (!json_is_string(v) || json_string_length(v) == 0)
            NACK("invalid", "%s: base64 of the document", f->name);
        size_t n = json_string_length(v);
        if (n > lim->max_frame)
            NACK("invalid", "%s: too large", f->name);
        unsigned char *buf = xmalloc(n / 4 * 3 + 3);
        long got = branch_base64_decode(json_string_value(v), n, buf);
        if (got <= 0) {
            free(buf);
            NACK("invalid", "%s: not canonical padded base64", f->name);
        }
        free(req->doc);
        req->doc = buf;
        req->doc_len = (size_t)got;
        return 0; /* the bytes never go to the script */
    }
    case FK_SHA256: {
        const char *s = json_string_value(v);
        bool ok = s && strlen(s) == 64;
        for (int i = 0; ok && i < 64; i++)
            ok = isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f');
        if (!ok)
            NACK("invalid", "%s: 64 lowercase hex digits", f->name);
        break;
    }
    case FK_PURPOSE:
        if (!json_is_string(v) || !name_is_valid(json_string_value(v), 32) ||
            !word_in(lim->purposes, json_string_value(v)))
            NACK("invalid", "%s: one of: %.180s", f->name, lim->purposes);
        break;
    case FK_LOOKUP_BY: {
        const char *s = json_string_value(v);
        if (!s || (strcmp(s, "policy") && strcmp(s, "phone") && strcmp(s, "email") &&
                   strcmp(s, "national_id") && strcmp(s, "branch_customer_id")))
            NACK("invalid", "%s: policy, phone, email, national_id or branch_customer_id", f->name);
        break;
    }
    case FK_CHANNEL:
        if (!json_is_string(v) || channel_from_name(json_string_value(v)) < 0)
            NACK("invalid", "%s: voice, email, fax, branch or webchat", f->name);
        break;
    case FK_MIME: {
        const char *m = json_string_value(v);
        size_t n = m ? strlen(m) : 0, slash = m ? strcspn(m, "/") : 0;
        bool ok = n > 2 && n <= (size_t)f->max && slash > 0 && slash + 1 < n;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)m[i]) || strchr("!#$&^_.+-", m[i]) || i == slash;
        if (!ok)
            NACK("invalid", "%s: a media type such as application/pdf", f->name);
        break;
    }
    case FK_SECRET:
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            (long long)json_string_length(v) > f->max)
            NACK("invalid", "%s: required, at most %lld bytes", f->name, f->max);
        req->token = xstrdup(json_string_value(v));
        return 0;
    }
    json_object_set(args, f->name, v);
    return 0;
}

/* Cross-field rules and normalisation that need more than one field. */
static int check_request(struct branch_req *req, struct branch_nack *nack)
{
    json_t *a = req->args;
    int given = !!json_object_get(a, "visit") + !!json_object_get(a, "visit_ref");
    if (req->op->target == TGT_VISIT && given != 1)
        NACK("invalid", "visit or visit_ref: give exactly one");
    if (req->op->target == TGT_CASE && given + !!json_object_get(a, "case") != 1)
        NACK("invalid", "visit, visit_ref or case: give exactly one");
    if (req->op->kind == BOP_LOOKUP) {
        static const struct {
            const char *by;
            enum ident_kind kind;
        } map[] = {{"policy", IDENT_POLICY},
                   {"phone", IDENT_PHONE},
                   {"email", IDENT_EMAIL},
                   {"national_id", IDENT_NATIONAL},
                   {"branch_customer_id", IDENT_BRANCH}};
        const char *by = json_string_value(json_object_get(a, "by"));
        const char *raw = json_string_value(json_object_get(a, "value"));
        for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
            if (strcmp(map[i].by, by) != 0)
                continue;
            if (normalise_ident(map[i].kind, "value", raw, a, "value", nack) < 0)
                return -1;
            json_object_set_new(a, "kind", json_string(ident_kind_name(map[i].kind)));
            /* the access log keeps which identifier was used, not all of it */
            const char *norm = json_string_value(json_object_get(a, "value"));
            size_t n = strlen(norm);
            char masked[16];
            snprintf(masked, sizeof(masked), "***%s", n > 4 ? norm + n - 4 : "");
            json_object_set_new(a, "masked", json_string(masked));
        }
    }
    if (req->op->kind == BOP_FNOL && json_object_get(a, "policy") &&
        normalise_ident(IDENT_POLICY, "policy", json_string_value(json_object_get(a, "policy")), a,
                        "policy", nack) < 0)
        return -1;
    return 0;
}

static int parse_envelope(json_t *obj, struct branch_req *req, struct branch_nack *nack)
{
    json_t *mid = json_object_get(obj, "msg_id");
    if (json_is_string(mid) && branch_msg_id_valid(json_string_value(mid)))
        snprintf(req->msg_id, sizeof(req->msg_id), "%s", json_string_value(mid));
    json_t *v = json_object_get(obj, "v");
    if (!v)
        NACK("invalid", "v: required (the protocol version, %d)", BRANCH_PROTO_VERSION);
    if (!json_is_integer(v) || json_integer_value(v) != BRANCH_PROTO_VERSION)
        NACK("bad_version", "v: this server speaks version %d", BRANCH_PROTO_VERSION);
    json_t *type = json_object_get(obj, "type");
    if (!json_is_string(type))
        NACK("invalid", "type: required");
    char buf[48];
    req->op = branch_op_by_type(json_string_value(type));
    if (!req->op)
        NACK("unknown_type", "type: unknown request type \"%s\"",
             shown(json_string_value(type), buf, sizeof(buf)));
    if (!mid)
        NACK("invalid", "msg_id: required");
    if (!req->msg_id[0])
        NACK("invalid", "msg_id: 1-64 of letters, digits, _ . : -");
    json_t *agent = json_object_get(obj, "agent");
    if (agent) {
        if (!json_is_string(agent) || !name_is_valid(json_string_value(agent), BRANCH_AGENT_MAX))
            NACK("invalid", "agent: an agent id");
        snprintf(req->agent, sizeof(req->agent), "%s", json_string_value(agent));
    }
    if (req->op->kind == BOP_SIGNIN && !req->agent[0])
        NACK("invalid", "agent: required");
    json_t *branch = json_object_get(obj, "branch");
    if (branch) {
        if (!json_is_string(branch) || !branch_id_valid(json_string_value(branch)))
            NACK("invalid", "branch: a branch id");
        snprintf(req->branch, sizeof(req->branch), "%s", json_string_value(branch));
    }
    return 0;
}

int branch_req_parse(const char *text, size_t len, const struct branch_limits *lim,
                     struct branch_req *req, struct branch_nack *nack)
{
    memset(req, 0, sizeof(*req));
    nack->code = NULL;
    nack->message[0] = '\0';
    json_error_t jerr;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        nack->code = "bad_json";
        snprintf(nack->message, sizeof(nack->message), "not valid JSON: %.120s", jerr.text);
        return -1;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        nack->code = "bad_json";
        snprintf(nack->message, sizeof(nack->message), "a frame is a JSON object");
        return -1;
    }
    if (parse_envelope(obj, req, nack) < 0)
        goto fail;
    req->args = json_object();
    const char *k;
    json_t *v;
    char buf[48];
    json_object_foreach(obj, k, v)
    {
        if (!strcmp(k, "v") || !strcmp(k, "type") || !strcmp(k, "msg_id") || !strcmp(k, "agent") ||
            !strcmp(k, "branch"))
            continue;
        const struct branch_field *f = req->op->fields;
        while (f->name && strcmp(f->name, k) != 0)
            f++;
        if (!f->name) {
            nack->code = "invalid";
            snprintf(nack->message, sizeof(nack->message), "%s: unknown field for %s",
                     shown(k, buf, sizeof(buf)), req->op->type);
            goto fail;
        }
        if (json_is_null(v) && !(f->flags & REQ))
            continue;
        if (check_field(f, v, lim, req, nack) < 0)
            goto fail;
    }
    for (const struct branch_field *f = req->op->fields; f->name; f++) {
        if ((f->flags & REQ) && !json_object_get(obj, f->name)) {
            nack->code = "invalid";
            snprintf(nack->message, sizeof(nack->message), "%s: required for %s", f->name,
                     req->op->type);
            goto fail;
        }
    }
    if (check_request(req, nack) < 0)
        goto fail;
    json_decref(obj);
    return 0;
fail:
    json_decref(obj);
    {
        char keep[BRANCH_MSG_ID_MAX + 1];
        memcpy(keep, req->msg_id, sizeof(keep));
        branch_req_clear(req);
        memcpy(req->msg_id, keep, sizeof(keep));
    }
    return -1;
}

void branch_req_clear(struct branch_req *req)
{
    if (!req)
        return;
    json_decref(req->args);
    if (req->token) {
        memset(req->token, 0, strlen(req->token));
        free(req->token);
    }
    free(req->doc);
    memset(req, 0, sizeof(*req));
}
