/* filestore.h - durable content-addressed file writes off the loop thread: a small bounded
 * pool of worker threads writes each document to a temporary file, fsyncs it, renames it to
 * its sha256 name under root/<first two hex digits>/, and fsyncs the directory; the result
 * goes back to the loop thread through a pipe (the pattern of fax_ocr.c). A caller answers
 * its provider (HTTP 2xx, IMAP flag, branch ACK) only from the done callback, so nothing
 * acknowledged is ever lost and the loop never waits for a disk. */
#ifndef OMNICC_FILESTORE_H
#define OMNICC_FILESTORE_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

/* Called exactly once, on the loop thread: sha_hex (the file's name, 64 lower-case hex
 * digits) and err NULL when the document is durably stored; err set (sha_hex still the name
 * it would have) when it is not (disk error, or the pool stopped before writing it). */
typedef void filestore_done_fn(void *arg, const char *sha_hex, const char *err);

/* Start workers threads and a queue of at most queue_max documents. 0, or -1 with *err. */
int filestore_start(struct event_base *base, int workers, int queue_max, char **err);
/* Join the workers (each finishes the document it is writing); documents never written are
 * reported with err "shutting down". Every pending done callback runs before this returns. */
void filestore_stop(void);
bool filestore_running(void);

/* Queue root/<sha[0..1]>/<sha> (and, when meta is not NULL and no sidecar exists yet,
 * root/<sha[0..1]>/<sha>.meta holding meta). sha_hex may be NULL: the worker computes it.
 * Ownership: data is BORROWED - it must stay valid and unchanged until done runs (the
 * caller frees it there or later); root, sha_hex and meta are copied. 0, or -1 (nothing
 * queued, done never called) when the pool is not running or its queue is full: answer the
 * provider "unavailable, retry". */
int filestore_put(const char *root, const void *data, size_t len, const char *sha_hex,
                  const char *meta, filestore_done_fn *done, void *arg);

/* Any other file-system work on the same workers and under the same queue bound (an agent's
 * reply attachments: several documents checked and written as one job). work(arg) runs on a
 * worker thread and may touch only the file system and arg; after(arg, ran) then runs
 * exactly once on the loop thread, ran false when the pool stopped before work ran. 0, or
 * -1 (neither called) when the pool is not running or its queue is full. */
typedef void filestore_work_fn(void *arg);
typedef void filestore_after_fn(void *arg, bool ran);
int filestore_run(filestore_work_fn *work, filestore_after_fn *after, void *arg);

/* The same write, synchronously, on the calling thread. durable: fsync the file and the
 * directory (workers, tests, tools: never on the loop thread); not durable: temporary file
 * and rename only (tests). 0, or -1 with *err. sha_out (may be NULL)
 * gets the name. */
int filestore_write(const char *root, const void *data, size_t len, const char *sha_hex,
                    const char *meta, bool durable, char sha_out[65], char **err);

#endif
