/* import.c - policyholder import: NDJSON validated line by line, segments computed from the
 * configured thresholds, valid records sent in batches (one script call per batch). */
#include "omnicc/import.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/interaction.h"
#include "omnicc/log.h"
#include "omnicc/segments.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define IMPORT_WINDOW 4 /* batches in flight: each waits behind at most 3 others in Redis */

struct import_job {
    const struct config *cfg;
    json_t *batches;  /* array of arrays of records */
    size_t next_batch;
    json_t *rejects;  /* [{line, reason}] (listed up to a bound) */
    long lines, rejected, valid;
    long created, updated, conflicts;
    int outstanding, failed;
    char *storage_error;
    import_done_fn *done;
    void *done_arg;
};

static int add_idents(json_t *rec, json_t *ids, const char *field, enum ident_kind kind,
                      char **err)
{
    json_t *arr = json_object_get(rec, field);
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 32) {
        *err = xasprintf("%s: must be an array of at most 32 strings", field);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        char norm[IDENT_MAX];
        const char *why = NULL;
        if (!json_is_string(v) || json_string_length(v) >= IDENT_MAX) {
            *err = xasprintf("%s[%zu]: must be a string", field, i);
            return -1;
        }
        if (identity_normalize(kind, json_string_value(v), norm, sizeof(norm), &why) < 0) {
            *err = xasprintf("%s[%zu]: %s", field, i, why);
            return -1;
        }
        json_array_append_new(ids, json_pack("[ss]", ident_kind_name(kind), norm));
    }
    return 0;
}

static int number_field(json_t *rec, const char *field, double lo, double hi, double *out,
                        char **err)
{
    json_t *v = json_object_get(rec, field);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi ||
        isnan(json_number_value(v))) {
        *err = xasprintf("%s: must be a number between %g and %g", field, lo, hi);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

json_t *import_line(const struct config *cfg, const char *line, size_t len, char **err)
{
    static const char *const allowed[] = {"id", "name", "phones", "emails", "policies",
                                          "annual_premium", "tenure_years", "claims_last_3y",
                                          "language", "national_id", "branch_customer_id", NULL};
    json_error_t jerr;
    json_t *rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *out = NULL, *ids = NULL;
    *err = NULL;
    if (!rec) {
        *err = xasprintf("not valid JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(rec)) {
        *err = xstrdup("not a JSON object");
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(rec, key, val)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, key) == 0;
        if (!ok) {
            *err = xasprintf("unknown field \"%.40s\"", key);
            goto fail;
        }
    }
    json_t *id = json_object_get(rec, "id");
    if (!json_is_string(id) || !name_is_valid(json_string_value(id), 64)) {
        *err = xstrdup("id: required, 1-64 letters, digits, _ - . :");
        goto fail;
    }
    ids = json_array();
    if (add_idents(rec, ids, "policies", IDENT_POLICY, err) < 0 ||
        add_idents(rec, ids, "emails", IDENT_EMAIL, err) < 0 ||
        add_idents(rec, ids, "phones", IDENT_PHONE, err) < 0)
        goto fail;
    static const struct {
        const char *field;
        enum ident_kind kind;
    } single[] = {{"national_id", IDENT_NATIONAL}, {"branch_customer_id", IDENT_BRANCH}};
    for (size_t i = 0; i < ARRAY_SIZE(single); i++) {
        json_t *v = json_object_get(rec, single[i].field);
        if (!v || json_is_null(v))
            continue;
        char norm[IDENT_MAX];
        const char *why = NULL;
        if (!json_is_string(v) || json_string_length(v) >= IDENT_MAX ||
            identity_normalize(single[i].kind, json_string_value(v), norm, sizeof(norm), &why) < 0) {
            *err = xasprintf("%s: %s", single[i].field, why ? why : "must be a string");
            goto fail;
        }
        json_array_insert_new(ids, 0, json_pack("[ss]", ident_kind_name(single[i].kind), norm));
    }
    double premium, tenure, claims;
    if (number_field(rec, "annual_premium", 0, 1e9, &premium, err) < 0 ||
        number_field(rec, "tenure_years", 0, 150, &tenure, err) < 0 ||
        number_field(rec, "claims_last_3y", 0, 10000, &claims, err) < 0)
        goto fail;
    struct segment_input si = {premium, (int)tenure, (int)claims};
    out = json_pack("{s:O,s:O,s:s,s:f,s:i,s:i}", "id", id, "ids", ids, "segment",
                    segment_compute(cfg, &si), "annual_premium", premium, "tenure_years",
                    (int)tenure, "claims_last_3y", (int)claims);
    json_t *name = json_object_get(rec, "name");
    if (name && !json_is_null(name)) {
        if (!json_is_string(name) || json_string_length(name) > IX_MAX_NAME ||
            !text_is_clean_utf8(json_string_value(name), json_string_length(name))) {
            *err = xasprintf("name: must be a string of at most %d bytes", IX_MAX_NAME);
            goto fail;
        }
        json_object_set(out, "name", name);
    }
    json_t *lang = json_object_get(rec, "language");
    if (lang && !json_is_null(lang)) {
        if (!json_is_string(lang) || !name_is_valid(json_string_value(lang), 16)) {
            *err = xstrdup("language: must be a language tag such as es or es-ES");
            goto fail;
        }
        json_object_set(out, "language", lang);
    }
    json_decref(ids);
    json_decref(rec);
    return out;
fail:
    json_decref(out);
    json_decref(ids);
    json_decref(rec);
    return NULL;
}

struct import_job *import_job_new(const struct config *cfg)
{
    struct import_job *job = xcalloc(1, sizeof(*job));
    job->cfg = cfg;
    job->batches = json_array();
    job->rejects = json_array();
    return job;
}

void import_job_free(struct import_job *job)
{
    if (!job)
        return;
    json_decref(job->batches);
    json_decref(job->rejects);
    free(job->storage_error);
    free(job);
}

static void reject(struct import_job *job, long line, const char *why)
{
    job->rejected++;
    if (json_array_size(job->rejects) < IMPORT_MAX_REJECTS_LISTED) {
        json_t *o = json_pack("{s:i,s:s}", "line", (json_int_t)line, "reason", why);
        if (!o)
            o = json_pack("{s:i,s:s}", "line", (json_int_t)line, "reason", "invalid text");
        json_array_append_new(job->rejects, o);
    }
}

void import_job_feed(struct import_job *job, const char *data, size_t len)
{
    json_t *batch = NULL;
    size_t pos = 0;
    while (pos < len) {
        const char *start = data + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        job->lines++;
        while (n > 0 && (start[n - 1] == '\r' || start[n - 1] == ' ' || start[n - 1] == '\t'))
            n--;
        if (n == 0)
            continue; /* blank lines are allowed and not counted as rejects */
        if (n > IMPORT_MAX_LINE) {
            reject(job, job->lines, "line longer than 65536 bytes");
            continue;
        }
        char *err = NULL;
        json_t *rec = import_line(job->cfg, start, n, &err);
        if (!rec) {
            reject(job, job->lines, err);
            free(err);
            continue;
        }
        if (!batch || json_array_size(batch) >= IMPORT_BATCH) {
            batch = json_array();
            json_array_append_new(job->batches, batch);
        }
        json_array_append_new(batch, rec);
        job->valid++;
    }
}

static void batch_done(const redisReply *reply, const char *err, void *arg);

/* Send batches until IMPORT_WINDOW are in flight. Sending them all at once would queue a
 * large import behind itself in Redis past every command deadline. */
static void send_more(struct import_job *job)
{
    while (job->outstanding < IMPORT_WINDOW && job->next_batch < json_array_size(job->batches)) {
        json_t *batch = json_array_get(job->batches, job->next_batch++);
        if (job->failed) {
            job->failed++; /* after a failure the rest is not attempted: repeat the import */
            continue;
        }
        char *text = json_dumps(batch, JSON_COMPACT);
        const char *argv[1] = {text};
        if (store_script(SCRIPT_IMPORT_CUSTOMERS, 1, argv, NULL, batch_done, job) == 0) {
            job->outstanding++;
        } else {
            job->failed++;
            if (!job->storage_error)
                job->storage_error = xstrdup("unavailable");
        }
        free(text);
    }
}

static void release(struct import_job *job)
{
    send_more(job);
    if (--job->outstanding == 0)
        job->done(job, job->done_arg);
}

static void batch_done(const redisReply *reply, const char *err, void *arg)
{
    struct import_job *job = arg;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        job->failed++;
        if (!job->storage_error)
            job->storage_error = xstrdup(err ? err : "unexpected reply");
    } else {
        job->created += reply->element[0]->integer;
        job->updated += reply->element[1]->integer;
        job->conflicts += reply->element[2]->integer;
    }
    release(job);
}

int import_job_run(struct import_job *job, import_done_fn *done, void *arg)
{
    if (!store_ready())
        return -1;
    job->done = done;
    job->done_arg = arg;
    job->outstanding = 1; /* our own hold, released below */
    send_more(job);
    release(job); /* fires done now if no batch could be sent */
    return 0;
}

int import_job_failed(const struct import_job *job)
{
    return job->failed;
}

json_t *import_job_report(const struct import_job *job)
{
    json_t *r = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:O}", "lines", (json_int_t)job->lines,
                          "imported", (json_int_t)(job->created + job->updated), "created",
                          (json_int_t)job->created, "updated", (json_int_t)job->updated,
                          "conflicts", (json_int_t)job->conflicts, "rejected",
                          (json_int_t)job->rejected, "rejects", job->rejects);
    if (job->storage_error)
        json_object_set_new(r, "storage_error", json_string(job->storage_error));
    return r;
}
