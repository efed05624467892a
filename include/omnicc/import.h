/* import.h - the policyholder import (NDJSON: id, name, phones, emails, policies,
 * annual_premium, tenure_years, claims_last_3y, language). Each line is validated and its
 * identifiers normalised here, its segment computed, then batches of valid records go to
 * the import script. Shared by POST /v1/customers/import and `omniccd import PATH`.
 * Re-importing is harmless: records are upserted by the insurer's own id. */
#ifndef OMNICC_IMPORT_H
#define OMNICC_IMPORT_H

#include <jansson.h>
#include <stddef.h>

struct config;
struct import_job;

#define IMPORT_BATCH 100
#define IMPORT_MAX_REJECTS_LISTED 1000
#define IMPORT_MAX_LINE 65536

typedef void import_done_fn(struct import_job *job, void *arg);

struct import_job *import_job_new(const struct config *cfg);
void import_job_free(struct import_job *job);
/* Validate every line of data (a whole NDJSON document). */
void import_job_feed(struct import_job *job, const char *data, size_t len);
/* Send the valid records; done fires once every batch was answered. -1 if Redis is not
 * ready (done is not called). */
int import_job_run(struct import_job *job, import_done_fn *done, void *arg);
/* {lines, imported, created, updated, conflicts, rejected, rejects: [{line, reason}],
 * storage_error?}: caller owns the result. */
json_t *import_job_report(const struct import_job *job);
int import_job_failed(const struct import_job *job); /* batches Redis did not confirm */

/* One line -> the record the script expects, or NULL with *err (exposed for tests). */
json_t *import_line(const struct config *cfg, const char *line, size_t len, char **err);

#endif
