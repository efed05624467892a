/* log.c - one line per event on stderr. Under systemd (JOURNAL_STREAM set) each line starts
 * with the syslog priority "<N>" so journald records the level. */
#include "omnicc/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int log_max_level = LOG_LEVEL_INFO;
static int under_journald;

void log_init(void)
{
    under_journald = getenv("JOURNAL_STREAM") != NULL;
}

int log_level_parse(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", LOG_LEVEL_ERROR},
                  {"warn", LOG_LEVEL_WARN},
                  {"warning", LOG_LEVEL_WARN},
                  {"info", LOG_LEVEL_INFO},
                  {"debug", LOG_LEVEL_DEBUG}};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcasecmp(name, levels[i].name) == 0)
            return levels[i].level;
    return -1;
}

static const char *level_name(int level)
{
    switch (level) {
    case LOG_LEVEL_ERROR:
        return "error";
    case LOG_LEVEL_WARN:
        return "warn";
    case LOG_LEVEL_INFO:
        return "info";
    default:
        return "debug";
    }
}

void log_write(int level, const char *fmt, ...)
{
    char line[2048];
    size_t off = 0;
    if (under_journald) {
        off = (size_t)snprintf(line, sizeof(line), "<%d>%s: ", level, level_name(level));
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        off = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        off += (size_t)snprintf(line + off, sizeof(line) - off, ".%03ldZ %s: ",
                                ts.tv_nsec / 1000000, level_name(level));
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    off += (size_t)n < sizeof(line) - off - 1 ? (size_t)n : sizeof(line) - off - 2;
    line[off++] = '\n';
    fwrite(line, 1, off, stderr);
}

const char *log_escape(const char *s, char *buf, size_t bufsize)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (!s)
        s = "(null)";
    for (; *s && o + 5 < bufsize; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    if (*s && o + 3 < bufsize) {
        buf[o++] = '.';
        buf[o++] = '.';
    }
    buf[o] = '\0';
    return buf;
}
