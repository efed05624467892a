/* attachments.h - content-addressed file store for message attachments: a file's name is
 * the sha256 of its bytes, under [daemon] state_dir/attachments/, so the same document sent
 * twice is kept once and a name can never point at other content. Redis holds only the
 * hashes (in the interaction's metadata); agents fetch the bytes with
 * GET /v1/attachments/{sha256}. Plain file I/O with no shared state: safe from any thread
 * (the SMTP workers read attachments to send). */
#ifndef OMNICC_ATTACHMENTS_H
#define OMNICC_ATTACHMENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

/* Store data under its sha256 (hex, computed by the caller or NULL to compute it here, then
 * written to sha_out if given). A sidecar keeps the first content type and filename seen
 * (none when both are NULL: one file per message is what an inbox of raw messages costs).
 * Durably (temporary file, fsync, rename, directory fsync) on the calling thread: for worker
 * threads only (filestore_run), never the loop. 0, or -1 with *err. */
int attachment_put(const char *state_dir, const void *data, size_t len, const char *sha_hex,
                   const char *content_type, const char *filename, char sha_out[65], char **err);

/* The same store, durably (temporary file, fsync, rename, directory fsync) and off the loop
 * thread (filestore.h's worker pool). done(arg, sha_hex, err) runs exactly once on the loop
 * thread, err NULL when the document is on disk. data is BORROWED: it must stay valid and
 * unchanged until done runs (free it there or later); the strings are copied. 0, or -1
 * (done never called) when the pool is not running or is full: answer "unavailable". */
int attachment_put_async(const char *state_dir, const void *data, size_t len,
                         const char *sha_hex, const char *content_type, const char *filename,
                         void (*done)(void *arg, const char *sha_hex, const char *err),
                         void *arg);

/* The bytes of a stored attachment (malloc'd), at most max_len; NULL when absent, unreadable
 * or larger. content_type and filename (malloc'd, may be NULL) from the sidecar. */
unsigned char *attachment_get(const char *state_dir, const char *sha_hex, size_t max_len,
                              size_t *len, char **content_type, char **filename);

bool attachment_sha_valid(const char *s); /* 64 lower-case hex digits */
/* The name data is stored under: its sha256 in lower-case hex. */
void attachment_sha256(const void *data, size_t len, char out[65]);

extern const struct http_route attachments_routes[]; /* GET /v1/attachments/{sha256} */

#endif
