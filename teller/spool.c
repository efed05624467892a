/* spool.c - the teller's durable store-and-forward journal (SPOOL/journal).
 *
 * One JSON object per line, appended and fsync'd before the call returns:
 *   {"op":"add","msg_id":...,"type":...,"agent":...,"summary":...,"at":...,"frame":{...}}
 *   {"op":"mark","msg_id":...,"state":"sent"|"failed","result":...}
 * A request is added before it is first sent, and marked once the server answered, so a
 * crash or a cut link at any point leaves it pending and it is sent again later: the server
 * keeps each result under its msg_id, so the resend returns the first result and changes
 * nothing. Entries done are dropped when the journal is compacted (at start, and when it
 * grows while nothing is pending). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "teller.h"

#define COMPACT_AT (256 * 1024)

static int write_line(int fd, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    if (!text)
        return -1;
    size_t n = strlen(text);
    char *line = malloc(n + 1);
    int rc = -1;
    if (line) {
        memcpy(line, text, n);
        line[n] = '\n'; /* one write: a crash leaves at worst a torn last line, skipped */
        rc = write(fd, line, n + 1) == (ssize_t)(n + 1) && fsync(fd) == 0 ? 0 : -1;
        free(line);
    }
    free(text);
    return rc;
}

static struct spool_entry *entry_new(struct spool *s, json_t *rec)
{
    json_t *frame = json_object_get(rec, "frame");
    const char *mid = json_string_value(json_object_get(rec, "msg_id"));
    if (!json_is_object(frame) || !mid || strlen(mid) > TELLER_MSG_ID_MAX)
        return NULL;
    struct spool_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    snprintf(e->msg_id, sizeof(e->msg_id), "%s", mid);
    snprintf(e->type, sizeof(e->type), "%s", json_string_value(json_object_get(rec, "type")) ?: "");
    snprintf(e->agent, sizeof(e->agent), "%s",
             json_string_value(json_object_get(rec, "agent")) ?: "");
    snprintf(e->summary, sizeof(e->summary), "%s",
             json_string_value(json_object_get(rec, "summary")) ?: "");
    e->at = json_integer_value(json_object_get(rec, "at"));
    e->frame = json_dumps(frame, JSON_COMPACT);
    e->state = SPOOL_PENDING;
    if (s->tail)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    s->pending++;
    return e;
}

struct spool_entry *spool_find(struct spool *s, const char *msg_id)
{
    for (struct spool_entry *e = s->head; e; e = e->next)
        if (strcmp(e->msg_id, msg_id) == 0)
            return e;
    return NULL;
}

static void set_state(struct spool *s, struct spool_entry *e, enum spool_state st,
                      const char *result)
{
    if (e->state == SPOOL_PENDING)
        s->pending--;
    else if (e->state == SPOOL_SENT)
        s->sent--;
    else
        s->failed--;
    e->state = st;
    if (st == SPOOL_PENDING)
        s->pending++;
    else if (st == SPOOL_SENT)
        s->sent++;
    else
        s->failed++;
    snprintf(e->result, sizeof(e->result), "%s", result ? result : "");
}

static void replay(struct spool *s, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *rec = json_loads(line, 0, NULL); /* a torn last line is skipped */
        const char *op = json_string_value(json_object_get(rec, "op"));
        if (op && strcmp(op, "add") == 0) {
            if (!spool_find(s, json_string_value(json_object_get(rec, "msg_id")) ?: ""))
                entry_new(s, rec);
        } else if (op && strcmp(op, "mark") == 0) {
            struct spool_entry *e =
                spool_find(s, json_string_value(json_object_get(rec, "msg_id")) ?: "");
            const char *st = json_string_value(json_object_get(rec, "state"));
            if (e && st)
                set_state(s, e, strcmp(st, "sent") == 0 ? SPOOL_SENT : SPOOL_FAILED,
                          json_string_value(json_object_get(rec, "result")));
        }
        json_decref(rec);
    }
    free(line);
}

/* Rewrite the journal with only what is still pending (failed ones stay, to be seen). */
static int compact(struct spool *s)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    struct spool_entry **pp = &s->head;
    s->tail = NULL;
    while (*pp) {
        struct spool_entry *e = *pp;
        if (e->state == SPOOL_SENT) {
            *pp = e->next;
            s->sent--;
            free(e->frame);
            free(e);
            continue;
        }
        json_t *frame = json_loads(e->frame, 0, NULL);
        json_t *rec = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:o}", "op", "add", "msg_id", e->msg_id,
                                "type", e->type, "agent", e->agent, "summary", e->summary, "at",
                                (json_int_t)e->at, "frame", frame ? frame : json_object());
        int rc = write_line(fd, rec);
        json_decref(rec);
        if (rc == 0 && e->state == SPOOL_FAILED) {
            rec = json_pack("{s:s,s:s,s:s,s:s}", "op", "mark", "msg_id", e->msg_id, "state",
                            "failed", "result", e->result);
            rc = write_line(fd, rec);
            json_decref(rec);
        }
        if (rc < 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        s->tail = e;
        pp = &e->next;
    }
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, s->path) < 0)
        return -1;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = open(s->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", s->path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return s->fd < 0 ? -1 : 0;
}

int spool_open(struct spool *s, const char *dir, char **err)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        if (asprintf(err, "cannot create the spool directory %s: %s", dir, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    snprintf(s->path, sizeof(s->path), "%s/journal", dir);
    FILE *f = fopen(s->path, "r");
    if (f) {
        replay(s, f);
        fclose(f);
    }
    if (compact(s) < 0) {
        if (asprintf(err, "cannot write the spool %s: %s", s->path, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    return 0;
}

void spool_close(struct spool *s)
{
    while (s->head) {
        struct spool_entry *e = s->head;
        s->head = e->next;
        free(e->frame);
        free(e);
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->tail = NULL;
}

struct spool_entry *spool_add(struct spool *s, json_t *frame, const char *summary)
{
    const char *mid = json_string_value(json_object_get(frame, "msg_id"));
    json_t *rec = json_pack("{s:s,s:s,s:O,s:s,s:s,s:I,s:O}", "op", "add", "msg_id", mid, "type",
                            json_object_get(frame, "type"), "agent",
                            json_string_value(json_object_get(frame, "agent")) ?: "", "summary",
                            summary, "at", (json_int_t)teller_now_ms(), "frame", frame);
    if (!rec)
        return NULL;
    if (write_line(s->fd, rec) < 0) {
        json_decref(rec);
        return NULL;
    }
    struct spool_entry *e = entry_new(s, rec);
    json_decref(rec);
    return e;
}

int spool_mark(struct spool *s, struct spool_entry *e, enum spool_state st, const char *result)
{
    json_t *rec = json_pack("{s:s,s:s,s:s,s:s}", "op", "mark", "msg_id", e->msg_id, "state",
                            st == SPOOL_SENT ? "sent" : "failed", "result", result ? result : "");
    int rc = write_line(s->fd, rec);
    json_decref(rec);
    set_state(s, e, st, result);
    struct stat sb;
    if (s->pending == 0 && fstat(s->fd, &sb) == 0 && sb.st_size > COMPACT_AT)
        compact(s);
    return rc;
}
