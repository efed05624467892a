/* interaction.c - the generic JSON form of an interaction, validated field by field and
 * normalised into struct interaction. Every error names the field; nothing is half-filled:
 * on failure the struct is freed. */
#include "omnicc/interaction.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/util.h"

static const char *channel_names[CH__COUNT] = {"voice", "email", "fax", "branch", "webchat"};

const char *channel_name(enum channel_kind ch)
{
    return ch < CH__COUNT ? channel_names[ch] : "?";
}

int channel_from_name(const char *name)
{
    for (int i = 0; i < CH__COUNT; i++)
        if (strcmp(channel_names[i], name) == 0)
            return i;
    return -1;
}

void ix_free(struct interaction *ix)
{
    if (!ix)
        return;
    free(ix->direction);
    free(ix->external_id);
    free(ix->from);
    free(ix->to);
    free(ix->subject);
    free(ix->body);
    free(ix->customer_name);
    for (int i = 0; i < IDENT__COUNT; i++)
        free(ix->ident[i]);
    free(ix->case_id);
    free(ix->queue);
    free(ix->skills);
    free(ix->intent);
    free(ix->metadata);
    memset(ix, 0, sizeof(*ix));
}

bool id_is_valid(const char *id, char prefix)
{
    if (!id || id[0] != prefix || id[1] != '-' || !id[2])
        return false;
    size_t n = strlen(id);
    if (n > 24)
        return false;
    for (size_t i = 2; i < n; i++)
        if (!isdigit((unsigned char)id[i]))
            return false;
    return true;
}

bool name_is_valid(const char *s, size_t maxlen)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > maxlen)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.' && c != ':')
            return false;
    }
    return true;
}

/* Optional string field: absent/null is fine; otherwise a clean UTF-8 string of bounded
 * length. Returns 0 (and *out possibly NULL) or -1 with *err. */
static int opt_string(json_t *obj, const char *field, const char *label, size_t maxlen,
                      bool multiline, char **out, char **err)
{
    json_t *v = json_object_get(obj, field);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        *err = xasprintf("%s: must be a string", label);
        return -1;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > maxlen) {
        *err = xasprintf("%s: longer than %zu bytes", label, maxlen);
        return -1;
    }
    if (!text_is_clean_utf8(s, n) || (!multiline && (strchr(s, '\n') || strchr(s, '\r')))) {
        *err = xasprintf("%s: contains control characters", label);
        return -1;
    }
    *out = xstrndup(s, n);
    return 0;
}

static int check_fields(json_t *obj, const char *const *allowed, const char *where, char **err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0)
                ok = true;
        if (!ok) {
            char shown[80];
            size_t i = 0;
            for (; key[i] && i < 40; i++)
                shown[i] = isprint((unsigned char)key[i]) ? key[i] : '?';
            shown[i] = '\0';
            *err = xasprintf("%s%s: unknown field", where, shown);
            return -1;
        }
    }
    return 0;
}

static int parse_customer(json_t *cust, struct interaction *ix, char **err)
{
    static const char *const allowed[] = {"phone", "email", "policy", "branch_customer_id",
                                          "national_id", "name", NULL};
    static const char *const field_of[IDENT__COUNT] = {"phone", "email", "policy",
                                                       "branch_customer_id", "national_id"};
    if (!json_is_object(cust)) {
        *err = xstrdup("customer: must be an object");
        return -1;
    }
    if (check_fields(cust, allowed, "customer.", err) < 0)
        return -1;
    for (int k = 0; k < IDENT__COUNT; k++) {
        char label[64], *raw = NULL;
        snprintf(label, sizeof(label), "customer.%s", field_of[k]);
        if (opt_string(cust, field_of[k], label, IDENT_MAX - 1, false, &raw, err) < 0)
            return -1;
        if (!raw)
            continue;
        char norm[IDENT_MAX];
        const char *why = NULL;
        int rc = identity_normalize(k, raw, norm, sizeof(norm), &why);
        free(raw);
        if (rc < 0) {
            *err = xasprintf("%s: %s", label, why);
            return -1;
        }
        ix->ident[k] = xstrdup(norm);
    }
    return opt_string(cust, "name", "customer.name", IX_MAX_NAME, false, &ix->customer_name, err);
}

/* The sender's address identifies them when the body does not say otherwise. */
static void identify_from_address(struct interaction *ix)
{
    char norm[IDENT_MAX];
    const char *why;
    if (!ix->from || strcmp(ix->direction, "inbound") != 0)
        return;
    if ((ix->channel == CH_VOICE || ix->channel == CH_FAX) && !ix->ident[IDENT_PHONE] &&
        identity_phone(ix->from, norm, sizeof(norm), &why) == 0)
        ix->ident[IDENT_PHONE] = xstrdup(norm);
    if (ix->channel == CH_EMAIL && !ix->ident[IDENT_EMAIL] &&
        identity_email(ix->from, norm, sizeof(norm), &why) == 0)
        ix->ident[IDENT_EMAIL] = xstrdup(norm);
}

int ix_from_json(const struct config *cfg, json_t *obj, struct interaction *ix, char **err)
{
    static const char *const allowed[] = {"channel", "external_id", "direction", "from", "to",
                                          "customer", "subject", "body", "case_id", "queue",
                                          "skills", "priority", "metadata", NULL};
    memset(ix, 0, sizeof(*ix));
    *err = NULL;
    if (check_fields(obj, allowed, "", err) < 0)
        goto fail;

    json_t *ch = json_object_get(obj, "channel");
    if (!ch) {
        *err = xstrdup("channel: required (voice, email, fax, branch or webchat)");
        goto fail;
    }
    int chan = json_is_string(ch) ? channel_from_name(json_string_value(ch)) : -1;
    if (chan < 0) {
        *err = xstrdup("channel: must be voice, email, fax, branch or webchat");
        goto fail;
    }
    ix->channel = chan;

    if (opt_string(obj, "external_id", "external_id", IX_MAX_EXTERNAL_ID, false, &ix->external_id,
                   err) < 0)
        goto fail;
    if (!ix->external_id || !*ix->external_id) {
        *err = xstrdup("external_id: required: the provider's id of this interaction, "
                       "which makes retries harmless");
        goto fail;
    }
    if (opt_string(obj, "direction", "direction", 16, false, &ix->direction, err) < 0)
        goto fail;
    if (!ix->direction)
        ix->direction = xstrdup("inbound");
    if (strcmp(ix->direction, "inbound") != 0 && strcmp(ix->direction, "outbound") != 0) {
        *err = xstrdup("direction: must be inbound or outbound");
        goto fail;
    }
    if (opt_string(obj, "from", "from", IX_MAX_ADDRESS, false, &ix->from, err) < 0 ||
        opt_string(obj, "to", "to", IX_MAX_ADDRESS, false, &ix->to, err) < 0 ||
        opt_string(obj, "subject", "subject", IX_MAX_SUBJECT, false, &ix->subject, err) < 0 ||
        opt_string(obj, "body", "body", (size_t)cfg->max_body, true, &ix->body, err) < 0 ||
        opt_string(obj, "case_id", "case_id", 24, false, &ix->case_id, err) < 0 ||
        opt_string(obj, "queue", "queue", 64, false, &ix->queue, err) < 0)
        goto fail;
    if (ix->case_id && !id_is_valid(ix->case_id, 'C')) {
        *err = xstrdup("case_id: must look like C-123");
        goto fail;
    }
    if (ix->queue && !name_is_valid(ix->queue, 64)) {
        *err = xstrdup("queue: letters, digits, _ - . : only");
        goto fail;
    }
    if (ix->queue && cfg->n_queues > 0 && !config_queue(cfg, ix->queue)) {
        *err = xasprintf("queue: no queue named \"%s\" is configured", ix->queue);
        goto fail;
    }

    json_t *cust = json_object_get(obj, "customer");
    if (cust && !json_is_null(cust) && parse_customer(cust, ix, err) < 0)
        goto fail;
    identify_from_address(ix);

    json_t *skills = json_object_get(obj, "skills");
    if (skills && !json_is_null(skills)) {
        if (!json_is_array(skills) || json_array_size(skills) > IX_MAX_SKILLS) {
            *err = xasprintf("skills: must be an array of at most %d names", IX_MAX_SKILLS);
            goto fail;
        }
        size_t i;
        json_t *s;
        char buf[IX_MAX_SKILLS * 66] = "";
        json_array_foreach(skills, i, s)
        {
            if (!json_is_string(s) || !name_is_valid(json_string_value(s), 64) ||
                strchr(json_string_value(s), ':')) {
                *err = xasprintf("skills[%zu]: must be a skill name (letters, digits, _ - .)", i);
                goto fail;
            }
            if (i)
                strcat(buf, " ");
            strcat(buf, json_string_value(s));
        }
        ix->skills = xstrdup(buf);
    }

    json_t *prio = json_object_get(obj, "priority");
    if (prio && !json_is_null(prio)) {
        if (!json_is_integer(prio) || json_integer_value(prio) < 0 ||
            json_integer_value(prio) > 100) {
            *err = xstrdup("priority: must be an integer 0-100");
            goto fail;
        }
        ix->priority = (int)json_integer_value(prio);
    }

    json_t *meta = json_object_get(obj, "metadata");
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta)) {
            *err = xstrdup("metadata: must be an object");
            goto fail;
        }
        json_t *intent = json_object_get(meta, "intent");
        if (intent && (!json_is_string(intent) || !name_is_valid(json_string_value(intent), 64))) {
            *err = xstrdup("metadata.intent: a name (letters, digits, _ - . :)");
            goto fail;
        }
        if (intent)
            ix->intent = xstrdup(json_string_value(intent));
        ix->metadata = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
        if (!ix->metadata || strlen(ix->metadata) > IX_MAX_METADATA) {
            *err = xasprintf("metadata: larger than %d bytes", IX_MAX_METADATA);
            goto fail;
        }
    }
    return 0;
fail:
    ix_free(ix);
    return -1;
}
