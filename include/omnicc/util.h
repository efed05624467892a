/* util.h - allocation that cannot fail (fatal in one place), time and small string helpers. */
#ifndef OMNICC_UTIL_H
#define OMNICC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OMNICC_WARN_UNUSED __attribute__((warn_unused_result))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* free() and null the caller's pointer, so nothing points at freed memory. */
#define xfree(p)                                                                                   \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

int64_t now_ms(void);      /* wall clock, milliseconds since the epoch */
int64_t monotonic_ms(void); /* for timeouts and latencies */

/* Read a small secret file (token, password): first line, trailing whitespace trimmed. */
char *read_secret_file(const char *path, char **err) OMNICC_WARN_UNUSED;

/* SIGHUP: re-read *secret from path (a rotated token takes effect without a restart); a file
 * that cannot be read keeps the old secret and logs "reload: <what>: ...". Nothing happens
 * when *secret or path is NULL (the secret was never configured). */
void secret_reload(char **secret, const char *path, const char *what);

/* Constant-time comparison of two byte strings (length leaks, content does not). */
bool secure_equals(const char *a, size_t alen, const char *b, size_t blen);

/* True when s is valid UTF-8 without NUL bytes or C0 controls other than \t \r \n. */
bool text_is_clean_utf8(const char *s, size_t len);

#endif
