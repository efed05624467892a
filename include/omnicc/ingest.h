/* ingest.h - store one normalised interaction: one script call that deduplicates on
 * (channel, external_id), resolves the customer, attaches the case, writes, appends history,
 * enqueues and makes the routing decision. Channel adapters call this and answer their
 * provider in their own format (TwiML, JSON, a branch ACK) from the callback, which fires
 * exactly once and only after Redis has confirmed the write (or failed). */
#ifndef OMNICC_INGEST_H
#define OMNICC_INGEST_H

#include <jansson.h>
#include <stdbool.h>

struct config;
struct interaction;

struct ingest_result {
    int status;              /* 202 stored, 200 duplicate, 400/404 invalid, 503 unavailable */
    const char *error_code;  /* when status >= 400 */
    const char *error;       /* message naming the field, or the storage problem */
    const char *id;          /* interaction, case, customer ids (status 200/202) */
    const char *case_id;
    const char *customer_id;
    const char *reservation; /* offered at once to an agent ("" if it waits) */
    const char *conflicts;   /* JSON array text of conflicting customer ids */
    bool duplicate;
};

/* Borrowed: everything in res is valid only inside the callback. */
typedef void ingest_done_fn(const struct ingest_result *res, void *arg);

/* Never calls cb synchronously... except when Redis is not ready or the interaction has no
 * queue, where cb runs before ingest_submit returns (status 503 / 400). */
void ingest_submit(const struct config *cfg, const struct interaction *ix, ingest_done_fn *cb,
                   void *arg);

/* The document the ingest script takes for ix waiting in queue (caller owns it). Exposed
 * for tests and the fuzz target of the interaction model. */
json_t *ingest_document(const struct config *cfg, const struct interaction *ix,
                        const char *queue);

#endif
