/* log.h - one line per event on stderr, with level; syslog <N> prefixes under systemd.
 * The level is checked before anything is formatted. Untrusted bytes go through log_escape(). */
#ifndef OMNICC_LOG_H
#define OMNICC_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_ERROR = 3, LOG_LEVEL_WARN = 4, LOG_LEVEL_INFO = 6, LOG_LEVEL_DEBUG = 7 };

extern int log_max_level;

void log_init(void);
int log_level_parse(const char *name); /* -1 if unknown */
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Escape untrusted bytes for one log line; returns buf. */
const char *log_escape(const char *s, char *buf, size_t bufsize);

#define log_at(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= log_max_level)                                                                \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) log_at(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_at(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_at(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
