/* voice_wire.c - the phone channel's wire formats, without I/O (see voice.h): form bodies
 * decoded by libevent, Twilio's request signature, the CTI signature and event, the IVR
 * menu. Everything here takes untrusted bytes and is fuzzed (tests/fuzz/fuzz_voice.c). */
#include "voice.h"

#include <ctype.h>
#include <event2/http.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "omnicc/identity.h"
#include "omnicc/interaction.h"
#include "omnicc/util.h"

/* ---- forms ---- */

int voice_form_decode(const char *body, size_t len, struct evkeyvalq *out)
{
    TAILQ_INIT(out);
    /* a NUL byte, raw or encoded, would make two different bodies decode alike */
    if (memchr(body, '\0', len) || memmem(body, len, "%00", 3))
        return -1;
    char *copy = xstrndup(body, len);
    int rc = evhttp_parse_query_str(copy, out);
    free(copy);
    if (rc < 0) {
        evhttp_clear_headers(out);
        return -1;
    }
    /* libevent decodes values (with '+' as space) but leaves names as sent */
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, out, next)
    {
        size_t n = 0;
        char *name = evhttp_uridecode(kv->key, 1, &n);
        if (!name || strlen(name) != n || n == 0) {
            free(name);
            evhttp_clear_headers(out);
            return -1;
        }
        free(kv->key);
        kv->key = name;
    }
    return 0;
}

/* ---- Twilio signature ---- */

static int cmp_pair(const void *a, const void *b)
{
    const struct evkeyval *x = *(const struct evkeyval *const *)a;
    const struct evkeyval *y = *(const struct evkeyval *const *)b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->value, y->value);
}

void voice_twilio_signature(const char *token, const char *url, const struct evkeyvalq *params,
                            char out[VOICE_SIG_B64])
{
    size_t n = 0, total = strlen(url);
    const struct evkeyval *kv;
    TAILQ_FOREACH(kv, params, next)
    {
        n++;
        total += strlen(kv->key) + strlen(kv->value);
    }
    const struct evkeyval **sorted = xcalloc(n ? n : 1, sizeof(*sorted));
    size_t i = 0;
    TAILQ_FOREACH(kv, params, next)
        sorted[i++] = kv;
    qsort(sorted, n, sizeof(*sorted), cmp_pair);
    char *data = xmalloc(total + 1), *p = data;
    size_t l = strlen(url);
    memcpy(p, url, l);
    p += l;
    for (i = 0; i < n; i++) {
        l = strlen(sorted[i]->key);
        memcpy(p, sorted[i]->key, l);
        p += l;
        l = strlen(sorted[i]->value);
        memcpy(p, sorted[i]->value, l);
        p += l;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha1(), token, (int)strlen(token), (const unsigned char *)data, total, md, &mdlen);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    free(data);
    free(sorted);
}

/* Where the port of "scheme://user@host:port/path" is: [*colon, *end) (colon == end when
 * there is none). false when url is not of that form. */
static bool url_port_span(const char *url, size_t *colon, size_t *end, bool *https)
{
    const char *sep = strstr(url, "://");
    if (!sep)
        return false;
    size_t scheme_len = (size_t)(sep - url);
    if (scheme_len == 5 && strncasecmp(url, "https", 5) == 0)
        *https = true;
    else if (scheme_len == 4 && strncasecmp(url, "http", 4) == 0)
        *https = false;
    else
        return false;
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *host = auth;
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@')
            host = auth + i + 1;
    const char *hend = auth + alen;
    const char *scan = host;
    if (*host == '[') { /* [v6]:port */
        const char *rb = memchr(host, ']', (size_t)(hend - host));
        if (!rb)
            return false;
        scan = rb + 1;
    }
    const char *c = memchr(scan, ':', (size_t)(hend - scan));
    *colon = (size_t)((c ? c : hend) - url);
    *end = (size_t)(hend - url);
    return true;
}

bool voice_twilio_valid(const char *token, const char *url, const struct evkeyvalq *params,
                        const char *header)
{
    if (!token || !url || !header || !*header)
        return false;
    char *variants[3] = {xstrdup(url), NULL, NULL};
    size_t colon, end;
    bool https = false;
    if (url_port_span(url, &colon, &end, &https)) {
        if (colon < end) /* without the port */
            variants[1] = xasprintf("%.*s%s", (int)colon, url, url + end);
        else /* with the scheme's default port */
            variants[2] = xasprintf("%.*s:%s%s", (int)end, url, https ? "443" : "80", url + end);
    }
    bool ok = false;
    size_t hlen = strlen(header);
    for (int i = 0; i < 3; i++) {
        if (!variants[i])
            continue;
        char sig[VOICE_SIG_B64];
        voice_twilio_signature(token, variants[i], params, sig);
        ok |= secure_equals(header, hlen, sig, strlen(sig));
        free(variants[i]);
    }
    return ok;
}

/* ---- CTI signature ---- */

void voice_cti_sign(const char *secret, const char *timestamp, const char *body, size_t len,
                    char out[65])
{
    size_t tl = strlen(timestamp);
    unsigned char *data = xmalloc(tl + 1 + len + 1);
    memcpy(data, timestamp, tl);
    data[tl] = '.';
    memcpy(data + tl + 1, body, len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), data, tl + 1 + len, md, &mdlen);
    free(data);
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

int voice_cti_verify(const char *secret, const char *timestamp, const char *signature,
                     const char *body, size_t len, int64_t now_s, int window, const char **why)
{
    if (!timestamp || !signature) {
        *why = "missing X-Omnicc-Timestamp or X-Omnicc-Signature";
        return -1;
    }
    size_t tl = strlen(timestamp);
    bool digits = tl > 0 && tl <= 12;
    for (size_t i = 0; digits && i < tl; i++)
        digits = isdigit((unsigned char)timestamp[i]);
    if (!digits) {
        *why = "X-Omnicc-Timestamp: Unix seconds expected";
        return -1;
    }
    long long ts = strtoll(timestamp, NULL, 10);
    long long skew = (long long)now_s - ts;
    if (skew > window || skew < -window) {
        *why = "X-Omnicc-Timestamp outside the replay window";
        return -1;
    }
    if (strncmp(signature, "sha256=", 7) != 0) {
        *why = "X-Omnicc-Signature: sha256=<hex> expected";
        return -1;
    }
    char given[65], want[65];
    size_t sl = strlen(signature + 7);
    if (sl != 64) {
        *why = "signature mismatch";
        return -1;
    }
    for (size_t i = 0; i < 64; i++)
        given[i] = (char)tolower((unsigned char)signature[7 + i]);
    given[64] = '\0';
    voice_cti_sign(secret, timestamp, body, len, want);
    if (!secure_equals(given, 64, want, 64)) {
        *why = "signature mismatch";
        return -1;
    }
    return 0;
}

/* ---- CTI events ---- */

void voice_cti_event_free(struct voice_cti_event *ev)
{
    free(ev->call_id);
    free(ev->from);
    free(ev->to);
    free(ev->direction);
    free(ev->agent);
    free(ev->cause);
    free(ev->queue);
    free(ev->digits);
    free(ev->intent);
    free(ev->policy);
    free(ev->name);
    memset(ev, 0, sizeof(*ev));
}

enum field_kind { F_TEXT, F_NAME, F_CALL_ID, F_DIGITS };

static bool field_ok(enum field_kind kind, const char *s, size_t n)
{
    if (!text_is_clean_utf8(s, n) || strpbrk(s, "\r\n\t"))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (kind == F_NAME && !isalnum(c) && c != '_' && c != '-' && c != '.' && c != ':')
            return false;
        if (kind == F_CALL_ID && !isalnum(c) && !strchr("_-.:@+", c))
            return false;
        if (kind == F_DIGITS && !isdigit(c) && c != '*' && c != '#')
            return false;
    }
    return true;
}

static int get_field(json_t *obj, const char *key, enum field_kind kind, size_t maxlen,
                     bool required, char **out, char **err)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            *err = xasprintf("%s: required", key);
            return -1;
        }
        return 0;
    }
    if (json_is_integer(v) && kind != F_NAME) { /* PBXs send causes and ids as numbers */
        *out = xasprintf("%lld", (long long)json_integer_value(v));
        return 0;
    }
    if (!json_is_string(v)) {
        *err = xasprintf("%s: must be a string", key);
        return -1;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 && !required)
        return 0;
    if (n == 0 || n > maxlen || !field_ok(kind, s, n)) {
        *err = xasprintf("%s: %s", key,
                         n == 0 ? "empty" : n > maxlen ? "too long" : "contains characters "
                                                                     "not allowed here");
        return -1;
    }
    *out = xstrndup(s, n);
    return 0;
}

int voice_cti_parse(const char *body, size_t len, struct voice_cti_event *ev, char **err)
{
    memset(ev, 0, sizeof(*ev));
    json_error_t jerr;
    json_t *obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj || !json_is_object(obj)) {
        *err = obj ? xstrdup("body must be a JSON object")
                   : xasprintf("body is not valid JSON: %s", jerr.text);
        json_decref(obj);
        return -1;
    }
    const char *type = json_string_value(json_object_get(obj, "event"));
    if (!type) {
        *err = xstrdup("event: required (newCall, answer or hangup)");
        goto fail;
    }
    if (strcmp(type, "newCall") == 0)
        ev->type = CTI_NEW_CALL;
    else if (strcmp(type, "answer") == 0)
        ev->type = CTI_ANSWER;
    else if (strcmp(type, "hangup") == 0)
        ev->type = CTI_HANGUP;
    else {
        *err = xstrdup("event: must be newCall, answer or hangup");
        goto fail;
    }
    if (get_field(obj, "call_id", F_CALL_ID, 128, true, &ev->call_id, err) < 0 ||
        get_field(obj, "from", F_TEXT, IX_MAX_ADDRESS, false, &ev->from, err) < 0 ||
        get_field(obj, "to", F_TEXT, IX_MAX_ADDRESS, false, &ev->to, err) < 0 ||
        get_field(obj, "direction", F_NAME, 16, false, &ev->direction, err) < 0 ||
        get_field(obj, "agent", F_NAME, 64, false, &ev->agent, err) < 0 ||
        get_field(obj, "cause", F_TEXT, 128, false, &ev->cause, err) < 0 ||
        get_field(obj, "queue", F_NAME, 64, false, &ev->queue, err) < 0 ||
        get_field(obj, "digits", F_DIGITS, 32, false, &ev->digits, err) < 0 ||
        get_field(obj, "intent", F_NAME, 64, false, &ev->intent, err) < 0 ||
        get_field(obj, "policy", F_TEXT, IDENT_MAX - 1, false, &ev->policy, err) < 0 ||
        get_field(obj, "name", F_TEXT, IX_MAX_NAME, false, &ev->name, err) < 0)
        goto fail;
    if (ev->direction && strcmp(ev->direction, "inbound") != 0 &&
        strcmp(ev->direction, "outbound") != 0) {
        *err = xstrdup("direction: must be inbound or outbound");
        goto fail;
    }
    if (ev->type == CTI_ANSWER && !ev->agent) {
        *err = xstrdup("agent: required for answer");
        goto fail;
    }
    json_decref(obj);
    return 0;
fail:
    json_decref(obj);
    voice_cti_event_free(ev);
    return -1;
}

/* ---- IVR menu ---- */

void voice_menu_free(struct voice_menu *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->opt[i].intent);
        free(m->opt[i].queue);
        for (int w = 0; w < m->opt[i].n_words; w++)
            free(m->opt[i].words[w]);
    }
    memset(m, 0, sizeof(*m));
}

static bool is_name(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static char *parse_option(const char *tok, struct voice_option *o)
{
    size_t n = strlen(tok);
    if (n < 3 || !strchr("0123456789*#", tok[0]) || tok[1] != '=')
        return xasprintf("\"%s\": expected KEY=intent[@queue][(words)] with KEY 0-9 * #", tok);
    o->key = tok[0];
    const char *p = tok + 2;
    size_t il = strcspn(p, "@(");
    if (!is_name(p, il))
        return xasprintf("\"%s\": intent must be 1-64 letters, digits, _ or -", tok);
    o->intent = xstrndup(p, il);
    p += il;
    if (*p == '@') {
        p++;
        size_t ql = strcspn(p, "(");
        if (!is_name(p, ql))
            return xasprintf("\"%s\": queue must be a queue name", tok);
        o->queue = xstrndup(p, ql);
        p += ql;
    }
    if (*p == '(') {
        const char *close = strchr(p, ')');
        if (!close || close[1])
            return xasprintf("\"%s\": words go in parentheses at the end", tok);
        p++;
        while (p < close) {
            size_t wl = strcspn(p, ",)");
            if (wl == 0 || wl > 64)
                return xasprintf("\"%s\": empty or overlong word", tok);
            if (o->n_words >= VOICE_WORDS_MAX)
                return xasprintf("\"%s\": at most %d words", tok, VOICE_WORDS_MAX);
            o->words[o->n_words++] = xstrndup(p, wl);
            p += wl;
            if (*p == ',')
                p++;
        }
        p = close + 1;
    }
    if (*p)
        return xasprintf("\"%s\": unexpected text after the option", tok);
    return NULL;
}

int voice_menu_parse(const char *text, struct voice_menu *m, char **err)
{
    memset(m, 0, sizeof(*m));
    if (!text)
        return 0;
    char *copy = xstrdup(text), *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (m->n >= VOICE_MENU_MAX) {
            *err = xasprintf("at most %d options", VOICE_MENU_MAX);
            goto fail;
        }
        struct voice_option *o = &m->opt[m->n++];
        char *e = parse_option(tok, o);
        if (e) {
            *err = e;
            goto fail;
        }
        for (int i = 0; i < m->n - 1; i++)
            if (m->opt[i].key == o->key) {
                *err = xasprintf("key %c is used twice", o->key);
                goto fail;
            }
    }
    free(copy);
    return 0;
fail:
    free(copy);
    voice_menu_free(m);
    return -1;
}

const struct voice_option *voice_menu_match(const struct voice_menu *m, const char *digits,
                                            const char *speech)
{
    if (digits && *digits) {
        if (strlen(digits) != 1)
            return NULL;
        for (int i = 0; i < m->n; i++)
            if (m->opt[i].key == digits[0])
                return &m->opt[i];
        return NULL;
    }
    if (!speech || !*speech)
        return NULL;
    for (int i = 0; i < m->n; i++) {
        if (strcasestr(speech, m->opt[i].intent))
            return &m->opt[i];
        for (int w = 0; w < m->opt[i].n_words; w++)
            if (strcasestr(speech, m->opt[i].words[w]))
                return &m->opt[i];
    }
    return NULL;
}

char *voice_menu_prompt(const struct voice_menu *m)
{
    size_t cap = 64 + (size_t)m->n * 96, len = 0;
    char *out = xmalloc(cap);
    out[0] = '\0';
    for (int i = 0; i < m->n; i++) {
        char key[8] = {m->opt[i].key, '\0'};
        if (m->opt[i].key == '*')
            snprintf(key, sizeof(key), "star");
        else if (m->opt[i].key == '#')
            snprintf(key, sizeof(key), "hash");
        snprintf(out + len, cap - len, "%sFor %s, press %s.", i ? " " : "", m->opt[i].intent, key);
        len += strlen(out + len);
    }
    for (char *p = out; *p; p++) /* intents are names: read "car_claims" as "car claims" */
        if (*p == '_' || *p == '-')
            *p = ' ';
    return out;
}

int voice_policy_input(const char *format, const char *digits, const char *speech, char *out,
                       size_t outsize)
{
    char raw[IDENT_MAX];
    const char *why = NULL;
    if (digits && *digits) {
        size_t n = strlen(digits);
        if (digits[n - 1] == '#')
            n--;
        if (n == 0 || n >= sizeof(raw))
            return -1;
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)digits[i]))
                return -1;
        if (format && *format) {
            size_t fl = strlen(format), d = 0, o = 0;
            if (fl >= sizeof(raw))
                return -1;
            for (size_t i = 0; i < fl; i++) {
                if (format[i] == '#') {
                    if (d >= n)
                        return -1;
                    raw[o++] = digits[d++];
                } else {
                    raw[o++] = format[i];
                }
            }
            if (d != n)
                return -1;
            raw[o] = '\0';
        } else {
            memcpy(raw, digits, n);
            raw[n] = '\0';
        }
    } else if (speech && *speech) {
        size_t o = 0;
        for (const char *s = speech; *s && o < sizeof(raw) - 1; s++)
            if (!isspace((unsigned char)*s))
                raw[o++] = *s;
        while (o > 0 && (raw[o - 1] == '.' || raw[o - 1] == ','))
            o--; /* speech recognition ends sentences */
        raw[o] = '\0';
        if (o == 0)
            return -1;
    } else {
        return -1;
    }
    return identity_policy(raw, out, outsize, &why);
}

const char *voice_dial_noun(const char *softphone)
{
    if (!softphone || !*softphone)
        return "Client";
    if (strncasecmp(softphone, "sip:", 4) == 0 || strncasecmp(softphone, "sips:", 5) == 0)
        return "Sip";
    if (softphone[0] == '+' || isdigit((unsigned char)softphone[0]))
        return "Number";
    return "Client";
}
