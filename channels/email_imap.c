/* email_imap.c - one poller per [mailbox NAME], all on the event loop through curl_loop
 * (libcurl multi; connections are reused between commands). Each round:
 *
 *   IDLE --timer--> SEARCH (UID SEARCH: what is not processed yet)
 *     -> MARK (+FLAGS \Seen on the batch, with $OmniccPending when processed = flag)
 *     -> FETCH (a few messages at once; each, once fetched, goes to email_ingest_raw)
 *     -> COMMIT (the acknowledged ones only: -$OmniccPending, or MOVE to move_to)
 *     -> the next batch, or SEARCH again, or IDLE for poll_interval when nothing moved.
 *
 * A message is marked processed only after Redis acknowledged its ingest. Fetching sets
 * \Seen on the server by itself (libcurl fetches BODY[], not BODY.PEEK[]), so with
 * processed = flag the batch first gets the keyword $OmniccPending: a message is processed
 * when it is \Seen without it. A daemon killed between ingest and commit finds the message
 * again (UNSEEN or $OmniccPending), re-reads it, and the Message-ID makes the second ingest
 * a duplicate. With processed = move, everything still in the folder is unprocessed. */
#include <curl/curl.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "email.h"
#include "omnicc/config.h"
#include "omnicc/curl_loop.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

/* Fetches in flight per mailbox: one, so one IMAP connection does all the work. Parallel
 * sessions on one mailbox make the server reconcile each other's flag changes (Dovecot's
 * maildir rescans the whole folder every time), which costs far more than it gains; the
 * ingests of fetched messages overlap freely (Redis pipelines them). */
#define FETCH_PARALLEL 1
#define MAX_BATCH 1000
#define PENDING_KEYWORD "$OmniccPending"

enum imap_state {
    IMAP_IDLE,   /* waiting for the timer */
    IMAP_SEARCH, /* UID SEARCH running */
    IMAP_MARK,   /* flag mode: the batch gets $OmniccPending */
    IMAP_FETCH,  /* fetching and ingesting the batch */
    IMAP_COMMIT, /* marking the acknowledged messages processed */
    IMAP_STOPPED,
};

static const char *const state_names[] = {"idle", "search", "mark", "fetch", "commit", "stopped"};

struct poller {
    const struct config *cfg;
    const struct mailbox_conf *mb;
    enum imap_state state;
    struct event *timer;
    char *url; /* the mailbox URL, no trailing slash */
    int refs;  /* transfers and ingests in flight: freed at stop when none is left */
    /* the last search */
    uint32_t *uids;
    size_t n_uids, next_uid;
    bool progress; /* something was committed since the last search */
    /* the batch */
    uint32_t batch[MAX_BATCH];
    int n_batch, next_fetch;
    int fetching, ingesting; /* transfers and ingests of the batch in flight */
    uint32_t done[MAX_BATCH];
    int n_done;
    /* commit: a short list of commands run in order */
    char *cmds[4];
    int n_cmds, next_cmd;
    /* messages that can never be stored (too large, unreadable): not fetched again */
    uint32_t *skip;
    size_t n_skip;
    bool keywords_ok;
    bool move_fallback; /* the server has no MOVE: COPY, \Deleted, UID EXPUNGE */
    int errors;         /* consecutive failed rounds, for backoff */
};

struct transfer {
    struct poller *p;
    char *data;
    size_t len, cap, max;
    uint32_t uid;
    bool too_large;
};

static struct {
    struct poller *pollers[CONFIG_MAX_MAILBOXES];
    int n;
    int commit_delay_ms; /* tests only: widen the window between ingest and commit */
} im;

static void poller_free(struct poller *p)
{
    if (!p)
        return;
    if (p->timer)
        event_free(p->timer);
    free(p->url);
    free(p->uids);
    free(p->skip);
    for (int i = 0; i < p->n_cmds; i++)
        free(p->cmds[i]);
    free(p);
}

static void set_state(struct poller *p, enum imap_state s)
{
    log_debug("email: mailbox %s: %s -> %s", p->mb->name, state_names[p->state], state_names[s]);
    p->state = s;
}

/* Drop one reference; true when the poller is gone (stopped and nothing in flight). */
static bool unref(struct poller *p)
{
    p->refs--;
    if (p->state == IMAP_STOPPED && p->refs == 0) {
        poller_free(p);
        return true;
    }
    return p->state == IMAP_STOPPED;
}

static void schedule(struct poller *p, int ms)
{
    set_state(p, IMAP_IDLE);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

static void round_failed(struct poller *p, const char *what, const char *why)
{
    p->errors++;
    int ms = p->mb->poll_interval * 1000;
    int backoff = 1000 << (p->errors < 6 ? p->errors : 6);
    if (backoff < ms)
        ms = backoff;
    log_warn("email: mailbox %s: %s failed: %s (retry in %d ms)", p->mb->name, what, why, ms);
    schedule(p, ms);
}

/* ---- libcurl ---- */

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct transfer *t = arg;
    size_t n = size * nmemb;
    if (t->len + n > t->max) {
        t->too_large = true;
        return 0; /* aborts the transfer */
    }
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 16384;
        while (cap < t->len + n + 1)
            cap *= 2;
        t->data = xrealloc(t->data, cap);
        t->cap = cap;
    }
    memcpy(t->data + t->len, ptr, n);
    t->len += n;
    t->data[t->len] = '\0';
    return n;
}

static void transfer_free(struct transfer *t)
{
    free(t->data);
    free(t);
}

/* Start one IMAP command (custom) or fetch (url_suffix ";UID=n") on the loop. */
static int start(struct poller *p, const char *url_suffix, const char *command, size_t max,
                 uint32_t uid, curl_loop_done_fn *done)
{
    const struct mailbox_conf *mb = p->mb;
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    struct transfer *t = xcalloc(1, sizeof(*t));
    t->p = p;
    t->uid = uid;
    t->max = max;
    char *url = url_suffix ? xasprintf("%s/%s", p->url, url_suffix) : xstrdup(p->url);
    curl_easy_setopt(e, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(e, CURLOPT_USERNAME, mb->user);
    curl_easy_setopt(e, CURLOPT_PASSWORD, mb->password);
    if (strncmp(p->url, "imap://", 7) == 0)
        curl_easy_setopt(e, CURLOPT_USE_SSL, strcmp(mb->starttls, "required") == 0 ? CURLUSESSL_ALL
                                             : strcmp(mb->starttls, "try") == 0    ? CURLUSESSL_TRY
                                                                                   : CURLUSESSL_NONE);
    if (strcmp(mb->tls_verify, "no") == 0) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (mb->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, mb->ca_file);
    if (command)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, command);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 20L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    if (curl_loop_add(e, done, t) < 0) {
        curl_easy_cleanup(e);
        transfer_free(t);
        return -1;
    }
    p->refs++;
    return 0;
}

static const char *curl_why(CURL *e, CURLcode rc)
{
    (void)e;
    return curl_easy_strerror(rc);
}

/* "1,2,5" for a UID STORE / MOVE */
static char *uid_set(const uint32_t *uids, int n)
{
    size_t cap = (size_t)n * 11 + 1, len = 0;
    char *s = xmalloc(cap);
    s[0] = '\0';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%u", i ? "," : "", uids[i]);
    return s;
}

static bool skipped(const struct poller *p, uint32_t uid)
{
    for (size_t i = 0; i < p->n_skip; i++)
        if (p->skip[i] == uid)
            return true;
    return false;
}

/* ---- one round ---- */

static void search(struct poller *p);
static void next_batch(struct poller *p);
static void fetch_more(struct poller *p);
static void commit(struct poller *p);

static void command_done(CURL *e, CURLcode rc, void *arg);

static void run_commands(struct poller *p)
{
    if (p->next_cmd >= p->n_cmds) {
        for (int i = 0; i < p->n_cmds; i++)
            xfree(p->cmds[i]);
        p->n_cmds = p->next_cmd = 0;
        if (p->n_done)
            p->progress = true;
        p->errors = 0;
        next_batch(p);
        return;
    }
    if (start(p, NULL, p->cmds[p->next_cmd], 1 << 20, 0, command_done) < 0)
        round_failed(p, "commit", "cannot start a transfer");
}

static void command_done(CURL *e, CURLcode rc, void *arg)
{
    struct transfer *t = arg;
    struct poller *p = t->p;
    transfer_free(t);
    if (unref(p))
        return;
    if (rc != CURLE_OK) {
        const char *cmd = p->cmds[p->next_cmd];
        if (p->state == IMAP_COMMIT && strncmp(cmd, "UID MOVE", 8) == 0 && !p->move_fallback) {
            /* no MOVE (RFC 6851) on this server: copy, flag deleted, expunge those */
            log_info("email: mailbox %s: no UID MOVE (%s); using COPY and EXPUNGE", p->mb->name,
                     curl_why(e, rc));
            p->move_fallback = true;
            commit(p);
            return;
        }
        if (p->state == IMAP_MARK) {
            /* flag mode: no keywords here, go on without the crash marker */
            if (p->keywords_ok && strcmp(p->mb->processed, "flag") == 0) {
                log_warn("email: mailbox %s: cannot set %s (%s): a crash between ingest and "
                         "commit may lose a message", p->mb->name, PENDING_KEYWORD, curl_why(e, rc));
                p->keywords_ok = false;
            }
            set_state(p, IMAP_FETCH);
            fetch_more(p);
            return;
        }
        round_failed(p, p->cmds[p->next_cmd], curl_why(e, rc));
        return;
    }
    if (p->state == IMAP_MARK) {
        set_state(p, IMAP_FETCH);
        fetch_more(p);
        return;
    }
    p->next_cmd++;
    run_commands(p);
}

static void on_commit_timer(evutil_socket_t fd, short what, void *arg);

static void commit(struct poller *p)
{
    set_state(p, IMAP_COMMIT);
    for (int i = 0; i < p->n_cmds; i++)
        xfree(p->cmds[i]);
    p->n_cmds = p->next_cmd = 0;
    if (p->n_done == 0) {
        next_batch(p);
        return;
    }
    char *set = uid_set(p->done, p->n_done);
    if (strcmp(p->mb->processed, "flag") == 0) {
        /* \Seen was set with the marker, before the fetch */
        if (p->keywords_ok)
            p->cmds[p->n_cmds++] = xasprintf("UID STORE %s -FLAGS.SILENT (" PENDING_KEYWORD ")", set);
        else
            p->cmds[p->n_cmds++] = xasprintf("UID STORE %s +FLAGS.SILENT (\\Seen)", set);
    } else if (!p->move_fallback) {
        p->cmds[p->n_cmds++] = xasprintf("UID MOVE %s \"%s\"", set, p->mb->move_to);
    } else {
        p->cmds[p->n_cmds++] = xasprintf("UID COPY %s \"%s\"", set, p->mb->move_to);
        p->cmds[p->n_cmds++] = xasprintf("UID STORE %s +FLAGS.SILENT (\\Deleted)", set);
        p->cmds[p->n_cmds++] = xasprintf("UID EXPUNGE %s", set);
    }
    free(set);
    if (im.commit_delay_ms > 0) {
        p->refs++;
        struct timeval tv = {im.commit_delay_ms / 1000, (im.commit_delay_ms % 1000) * 1000};
        event_base_once(event_get_base(p->timer), -1, EV_TIMEOUT, on_commit_timer, p, &tv);
        return;
    }
    run_commands(p);
}

static void on_commit_timer(evutil_socket_t fd, short what, void *arg)
{
    struct poller *p = arg;
    if (unref(p))
        return;
    run_commands(p);
}

static void ingested(const struct email_ingest_result *res, void *arg)
{
    struct transfer *t = arg;
    struct poller *p = t->p;
    uint32_t uid = t->uid;
    transfer_free(t);
    p->ingesting--;
    if (unref(p))
        return;
    switch (res->outcome) {
    case EMAIL_STORED:
    case EMAIL_DUPLICATE:
    case EMAIL_DSN:
        p->done[p->n_done++] = uid;
        break;
    case EMAIL_REJECTED:
        log_warn("email: mailbox %s: UID %u cannot be stored (%s); left in the mailbox",
                 p->mb->name, uid, res->error ? res->error : "?");
        p->skip = xrealloc(p->skip, (p->n_skip + 1) * sizeof(*p->skip));
        p->skip[p->n_skip++] = uid;
        break;
    case EMAIL_FAILED:
        log_warn("email: mailbox %s: UID %u not stored now (%s); it will be read again",
                 p->mb->name, uid, res->error ? res->error : "?");
        break;
    }
    fetch_more(p);
}

static void fetched(CURL *e, CURLcode rc, void *arg)
{
    struct transfer *t = arg;
    struct poller *p = t->p;
    p->fetching--;
    if (p->state == IMAP_STOPPED) {
        transfer_free(t);
        unref(p);
        return;
    }
    if (rc != CURLE_OK || !t->len) {
        if (t->too_large) {
            log_warn("email: mailbox %s: UID %u is larger than [email] max_message; left in the "
                     "mailbox", p->mb->name, t->uid);
            p->skip = xrealloc(p->skip, (p->n_skip + 1) * sizeof(*p->skip));
            p->skip[p->n_skip++] = t->uid;
        } else {
            log_warn("email: mailbox %s: fetching UID %u failed: %s", p->mb->name, t->uid,
                     rc != CURLE_OK ? curl_why(e, rc) : "empty message");
        }
        transfer_free(t);
        if (!unref(p))
            fetch_more(p);
        return;
    }
    /* the transfer's reference passes to the ingest; the next fetch starts meanwhile */
    p->ingesting++;
    fetch_more(p);
    email_ingest_raw(p->cfg, p->mb, t->data, t->len, ingested, t);
}

static void fetch_more(struct poller *p)
{
    while (p->next_fetch < p->n_batch && p->fetching < FETCH_PARALLEL) {
        uint32_t uid = p->batch[p->next_fetch++];
        char suffix[32];
        snprintf(suffix, sizeof(suffix), ";UID=%u", uid);
        if (start(p, suffix, NULL, (size_t)p->cfg->email_max_message, uid, fetched) < 0)
            break;
        p->fetching++;
    }
    if (p->fetching == 0 && p->ingesting == 0 && p->state == IMAP_FETCH)
        commit(p);
}

static void next_batch(struct poller *p)
{
    p->n_batch = p->next_fetch = p->n_done = 0;
    int max = p->mb->batch < MAX_BATCH ? p->mb->batch : MAX_BATCH;
    while (p->next_uid < p->n_uids && p->n_batch < max) {
        uint32_t uid = p->uids[p->next_uid++];
        if (!skipped(p, uid))
            p->batch[p->n_batch++] = uid;
    }
    if (p->n_batch == 0) {
        /* the search is used up: look again at once if it moved anything, else wait */
        if (p->progress)
            search(p);
        else
            schedule(p, p->mb->poll_interval * 1000);
        return;
    }
    bool flag = strcmp(p->mb->processed, "flag") == 0;
    if (!flag || p->keywords_ok) {
        /* \Seen for the whole batch in one command: the fetches then change no flag, and
         * each flag change costs the server (Dovecot's maildir renames the file) */
        set_state(p, IMAP_MARK);
        char *set = uid_set(p->batch, p->n_batch);
        for (int i = 0; i < p->n_cmds; i++)
            xfree(p->cmds[i]);
        p->cmds[0] = xasprintf("UID STORE %s +FLAGS.SILENT (\\Seen%s)", set,
                               flag ? " " PENDING_KEYWORD : "");
        p->n_cmds = 1;
        p->next_cmd = 0;
        free(set);
        if (start(p, NULL, p->cmds[0], 1 << 20, 0, command_done) < 0)
            round_failed(p, "mark", "cannot start a transfer");
        return;
    }
    set_state(p, IMAP_FETCH);
    fetch_more(p);
}

static int cmp_uid(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void searched(CURL *e, CURLcode rc, void *arg)
{
    struct transfer *t = arg;
    struct poller *p = t->p;
    if (unref(p)) {
        transfer_free(t);
        return;
    }
    if (rc != CURLE_OK) {
        round_failed(p, "search", curl_why(e, rc));
        transfer_free(t);
        return;
    }
    /* "* SEARCH 4 5 9\r\n" (several lines if the server splits them) */
    free(p->uids);
    p->uids = NULL;
    p->n_uids = p->next_uid = 0;
    size_t cap = 0;
    for (char *line = t->data; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        char *s = strstr(line, "SEARCH");
        for (char *tok = s ? s + 6 : NULL; tok && *tok;) {
            char *end;
            unsigned long v = strtoul(tok, &end, 10);
            if (end == tok) {
                tok++;
                continue;
            }
            if (v > 0 && v <= UINT32_MAX) {
                if (p->n_uids == cap)
                    p->uids = xrealloc(p->uids, (cap = cap ? cap * 2 : 256) * sizeof(uint32_t));
                p->uids[p->n_uids++] = (uint32_t)v;
            }
            tok = end;
        }
        line = eol ? eol + 1 : NULL;
    }
    transfer_free(t);
    if (p->n_uids > 1)
        qsort(p->uids, p->n_uids, sizeof(uint32_t), cmp_uid);
    p->errors = 0;
    p->progress = false;
    if (p->n_uids)
        log_debug("email: mailbox %s: %zu messages to read", p->mb->name, p->n_uids);
    next_batch(p);
}

static void search(struct poller *p)
{
    set_state(p, IMAP_SEARCH);
    const char *q = strcmp(p->mb->processed, "move") == 0 ? "UID SEARCH UNDELETED"
                    : p->keywords_ok ? "UID SEARCH UNDELETED OR UNSEEN KEYWORD " PENDING_KEYWORD
                                     : "UID SEARCH UNDELETED UNSEEN";
    if (start(p, NULL, q, 16 << 20, 0, searched) < 0)
        round_failed(p, "search", "cannot start a transfer");
}

static void created(CURL *e, CURLcode rc, void *arg)
{
    struct transfer *t = arg;
    struct poller *p = t->p;
    transfer_free(t);
    if (unref(p))
        return;
    /* failing is the usual answer: the folder exists already */
    search(p);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    search(arg);
}

int email_imap_start(struct event_base *base, const struct config *cfg, char **err)
{
    const char *delay = getenv("OMNICC_TEST_IMAP_COMMIT_DELAY_MS");
    im.commit_delay_ms = delay ? atoi(delay) : 0;
    for (int i = 0; i < cfg->n_mailboxes; i++) {
        const struct mailbox_conf *mb = cfg->mailboxes[i];
        struct poller *p = xcalloc(1, sizeof(*p));
        p->cfg = cfg;
        p->mb = mb;
        p->keywords_ok = true;
        p->url = xstrdup(mb->url);
        size_t n = strlen(p->url);
        while (n > 0 && p->url[n - 1] == '/')
            p->url[--n] = '\0';
        p->timer = evtimer_new(base, on_timer, p);
        im.pollers[im.n++] = p;
        log_info("email: mailbox %s: polling %s every %d s (processed mail: %s)", mb->name, mb->url,
                 mb->poll_interval, mb->processed);
        set_state(p, IMAP_SEARCH);
        if (strcmp(mb->processed, "move") == 0) {
            char *cmd = xasprintf("CREATE \"%s\"", mb->move_to);
            int rc = start(p, NULL, cmd, 1 << 16, 0, created);
            free(cmd);
            if (rc == 0)
                continue;
        }
        search(p);
    }
    (void)err;
    return 0;
}

void email_imap_stop(void)
{
    for (int i = 0; i < im.n; i++) {
        struct poller *p = im.pollers[i];
        evtimer_del(p->timer);
        set_state(p, IMAP_STOPPED);
        if (p->refs == 0)
            poller_free(p);
        /* else: the last transfer or ingest to finish frees it (curl_loop_shutdown and
         * store_close make them finish) */
        im.pollers[i] = NULL;
    }
    im.n = 0;
}
