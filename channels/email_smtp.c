/* email_smtp.c - the outbox: replies and acknowledgements queued by email_reply.lua on the
 * stream outbox:email (consumer group "senders") are sent through the configured SMTP relay.
 *
 *   loop thread                       worker threads ([email] smtp_workers)
 *   ───────────                       ──────────────
 *   outbox_claim.lua (timer, kick)
 *     -> job: QUEUED ───────────────> compose, one libesmtp session (STARTTLS, AUTH)
 *   pipe readable  <─────────────────  DONE: 250 / 4xx / 5xx / no connection
 *   outbox_result.lua: XACK + history
 *     -> ACKING -> freed
 *
 * hiredis is used from the loop thread only; a worker touches nothing but its job and the
 * attachment files. An entry is acknowledged in Redis only after the server's 250 (sent),
 * after a retry was scheduled (4xx, or no answer: backoff doubling from retry_base up to
 * retry_max), or after a permanent failure (5xx, or max_attempts) that the case history
 * records. While a job is ours, a heartbeat re-claims it (XCLAIM ... JUSTID), so only entries
 * of a daemon that died reach claim_idle and are taken over (XAUTOCLAIM) by another one. A
 * daemon killed after the 250 but before XACK has its message sent again by the next one:
 * delivery is at least once, with the same Message-ID. */
#include <auth-client.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/ssl.h> /* before libesmtp.h: declares smtp_starttls_set_ctx */
#include <libesmtp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "email.h"
#include "omnicc/attachments.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define HEARTBEAT_IDS 200
#define STOP_GRACE_MS 3000

/* Changed by the loop thread only (job_set_state). While a worker holds a job it stays
 * QUEUED; the loop learns the result from ob.done. */
enum job_state {
    JOB_QUEUED, /* handed to the workers: on ob.queue, or being sent */
    JOB_DONE,   /* result back from a worker, waiting for Redis to take it */
    JOB_ACKING, /* outbox_result.lua running */
};

enum job_result { RES_SENT, RES_TEMP, RES_PERM };

struct job {
    struct job *next;              /* ob.queue or ob.done, under ob.mu */
    struct job *all_prev, *all_next; /* ob.all: every job of this daemon (loop thread) */
    enum job_state state;
    char *entry_id, *json;
    /* what the worker reads (set before queueing, never changed after) */
    char *from, *from_name, *to, *subject, *body, *message_id, *in_reply_to;
    char **refs; /* NULL-terminated */
    char **cc;   /* NULL-terminated */
    char **att_sha, **att_name, **att_type;
    size_t n_att;
    bool auto_reply;
    int attempt;
    /* what the worker writes (read by the loop once the job is on ob.done) */
    enum job_result result;
    int code;
    char text[400];
};

static struct {
    struct event_base *base;
    const struct config *cfg;
    bool running;
    bool stopping;
    char hostport[300];
    char consumer[160];
    enum starttls_option tls;
    SSL_CTX *tls_ctx; /* trust for STARTTLS: [email] smtp_ca_file or the system's */
    pthread_t threads[64];
    bool joined[64];
    int n_threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *queue, *queue_tail, *done; /* under mu */
    int pipe[2];
    struct event *pipe_ev, *poll_ev, *beat_ev;
    struct job *all;
    int n_jobs;
    bool claiming;
    bool threads_gone; /* every worker joined: jobs may be freed */
} ob = {.pipe = {-1, -1}};

static const char *const state_names[] = {"queued", "done", "acking"};

static void job_set_state(struct job *j, enum job_state s)
{
    log_debug("email: outbox %s (%s): %s -> %s", j->entry_id, j->message_id ? j->message_id : "?",
              state_names[j->state], state_names[s]);
    j->state = s;
}

static void strv_free(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    free(j->entry_id);
    free(j->json);
    free(j->from);
    free(j->from_name);
    free(j->to);
    free(j->subject);
    free(j->body);
    free(j->message_id);
    free(j->in_reply_to);
    strv_free(j->refs);
    strv_free(j->cc);
    strv_free(j->att_sha);
    strv_free(j->att_name);
    strv_free(j->att_type);
    free(j);
}

static void all_link(struct job *j)
{
    j->all_next = ob.all;
    if (ob.all)
        ob.all->all_prev = j;
    ob.all = j;
    ob.n_jobs++;
}

static void all_unlink(struct job *j)
{
    if (j->all_prev)
        j->all_prev->all_next = j->all_next;
    else
        ob.all = j->all_next;
    if (j->all_next)
        j->all_next->all_prev = j->all_prev;
    j->all_prev = j->all_next = NULL;
    ob.n_jobs--;
}

static struct job *job_find(const char *entry_id)
{
    for (struct job *j = ob.all; j; j = j->all_next)
        if (strcmp(j->entry_id, entry_id) == 0)
            return j;
    return NULL;
}

static char *str_field(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return xstrdup(v ? v : "");
}

static char **strv_of(json_t *arr, const char *key_in_obj)
{
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    char **v = xcalloc(n + 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        const char *s = key_in_obj ? json_string_value(json_object_get(e, key_in_obj))
                                   : json_string_value(e);
        v[k++] = xstrdup(s ? s : "");
    }
    return v;
}

/* The job as email_reply.lua wrote it; NULL when unreadable. */
static struct job *job_new(const char *entry_id, const char *text)
{
    json_t *d = json_loads(text, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        return NULL;
    }
    struct job *j = xcalloc(1, sizeof(*j));
    j->entry_id = xstrdup(entry_id);
    j->json = xstrdup(text);
    j->from = str_field(d, "from");
    j->from_name = str_field(d, "from_name");
    j->to = str_field(d, "to");
    j->subject = str_field(d, "subject");
    j->body = str_field(d, "body");
    j->message_id = str_field(d, "id");
    j->in_reply_to = str_field(d, "in_reply_to");
    j->refs = strv_of(json_object_get(d, "references"), NULL);
    j->cc = strv_of(json_object_get(d, "cc"), NULL);
    json_t *att = json_object_get(d, "attachments");
    j->att_sha = strv_of(att, "sha256");
    j->att_name = strv_of(att, "filename");
    j->att_type = strv_of(att, "content_type");
    j->n_att = json_is_array(att) ? json_array_size(att) : 0;
    const char *kind = json_string_value(json_object_get(d, "kind"));
    j->auto_reply = kind && strcmp(kind, "ack") == 0;
    j->attempt = (int)json_integer_value(json_object_get(d, "attempt"));
    if (j->attempt < 1)
        j->attempt = 1;
    json_decref(d);
    return j;
}

/* ---- worker threads ---- */

struct msgsrc {
    const char *data;
    size_t len, pos;
};

static const char *message_cb(void **ctx, int *len, void *arg)
{
    struct msgsrc *m = arg;
    (void)ctx;
    if (!len) { /* rewind */
        m->pos = 0;
        return NULL;
    }
    if (m->pos >= m->len) {
        *len = 0;
        return NULL;
    }
    size_t n = m->len - m->pos > 65536 ? 65536 : m->len - m->pos;
    const char *p = m->data + m->pos;
    m->pos += n;
    *len = (int)n;
    return p;
}

static int auth_interact(auth_client_request_t request, char **result, int fields, void *arg)
{
    for (int i = 0; i < fields; i++) {
        if (request[i].flags & AUTH_USER)
            result[i] = ob.cfg->email_smtp_user;
        else if (request[i].flags & AUTH_PASS)
            result[i] = ob.cfg->email_smtp_password;
        else
            return 0;
    }
    return 1;
}

static void set_result(struct job *j, enum job_result r, int code, const char *text)
{
    j->result = r;
    j->code = code;
    snprintf(j->text, sizeof(j->text), "%s", text ? text : "");
    for (char *p = j->text; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
}

static void send_job(struct job *j)
{
    const struct config *cfg = ob.cfg;
    struct email_out_attachment *att = xcalloc(j->n_att + 1, sizeof(*att));
    size_t n_att = 0;
    for (size_t i = 0; i < j->n_att; i++) {
        size_t len = 0;
        unsigned char *data = attachment_get(cfg->state_dir, j->att_sha[i],
                                             (size_t)cfg->email_max_attachments_total, &len, NULL, NULL);
        if (!data) {
            set_result(j, RES_PERM, 0, "attachment missing from the store");
            goto out;
        }
        att[n_att++] = (struct email_out_attachment){j->att_name[i], j->att_type[i], data, len};
    }
    struct email_out m = {.from = j->from, .from_name = j->from_name, .to = j->to,
                          .subject = j->subject, .body = j->body, .message_id = j->message_id,
                          .in_reply_to = j->in_reply_to, .references = (const char *const *)j->refs,
                          .cc = (const char *const *)j->cc,
                          .auto_reply = j->auto_reply, .att = att, .n_att = n_att,
                          .date = now_ms() / 1000};
    size_t len;
    char *text = email_compose(&m, &len);
    struct msgsrc src = {text, len, 0};

    smtp_session_t s = smtp_create_session();
    auth_context_t actx = NULL;
    smtp_set_server(s, ob.hostport);
    for (int w = Timeout_GREETING; w <= Timeout_DATA2; w++)
        smtp_set_timeout(s, w | Timeout_OVERRIDE_RFC2822_MINIMUM, cfg->email_smtp_timeout);
    smtp_starttls_enable(s, ob.tls);
    if (ob.tls != Starttls_DISABLED)
        smtp_starttls_set_ctx(s, ob.tls_ctx); /* libesmtp checks the chain and the name */
    if (cfg->email_smtp_user) {
        actx = auth_create_context();
        auth_set_mechanism_flags(actx, AUTH_PLUGIN_PLAIN, 0);
        auth_set_interact_cb(actx, auth_interact, NULL);
        smtp_auth_set_context(s, actx);
    }
    smtp_message_t msg = smtp_add_message(s);
    smtp_set_reverse_path(msg, j->from);
    smtp_recipient_t rcpt = smtp_add_recipient(msg, j->to);
    /* copies go along; what the To address's server said decides the outcome */
    for (char **c = j->cc; c && *c; c++)
        if (**c)
            smtp_add_recipient(msg, *c);
    smtp_set_messagecb(msg, message_cb, &src);
    if (!smtp_start_session(s)) {
        char buf[256];
        set_result(j, RES_TEMP, 0, smtp_strerror(smtp_errno(), buf, sizeof(buf)));
    } else {
        const smtp_status_t *st = smtp_message_transfer_status(msg);
        const smtp_status_t *rs = rcpt ? smtp_recipient_status(rcpt) : NULL;
        const smtp_status_t *mf = smtp_reverse_path_status(msg);
        const smtp_status_t *use = st;
        /* the first command the server refused says why nothing was sent */
        if (mf && mf->code && mf->code / 100 != 2)
            use = mf;
        else if (rs && rs->code && rs->code / 100 != 2)
            use = rs;
        int code = use ? use->code : 0;
        const char *why = use && use->text ? use->text : "no answer";
        if (code / 100 == 2)
            set_result(j, RES_SENT, code, why);
        else if (code / 100 == 5)
            set_result(j, RES_PERM, code, why);
        else if (code == 0)
            set_result(j, RES_TEMP, 0, "session ended before the message was accepted "
                                       "(STARTTLS or AUTH refused?)");
        else
            set_result(j, RES_TEMP, code, why);
    }
    smtp_destroy_session(s);
    if (actx)
        auth_destroy_context(actx);
    free(text);
out:
    for (size_t i = 0; i < n_att; i++)
        free(att[i].data);
    free(att);
}

static void *worker(void *arg)
{
    for (;;) {
        pthread_mutex_lock(&ob.mu);
        while (!ob.queue && !ob.stopping)
            pthread_cond_wait(&ob.cv, &ob.mu);
        if (ob.stopping) {
            pthread_mutex_unlock(&ob.mu);
            return NULL;
        }
        struct job *j = ob.queue;
        ob.queue = j->next;
        if (!ob.queue)
            ob.queue_tail = NULL;
        j->next = NULL;
        pthread_mutex_unlock(&ob.mu);
        /* j->state belongs to the loop thread: it reads QUEUED until the result is back */

        send_job(j);

        pthread_mutex_lock(&ob.mu);
        j->next = ob.done;
        ob.done = j;
        pthread_mutex_unlock(&ob.mu);
        ssize_t rc;
        do
            rc = write(ob.pipe[1], "x", 1);
        while (rc < 0 && errno == EINTR); /* EAGAIN: a wake-up is already pending */
    }
}

/* ---- loop thread: claim, hand out, acknowledge ---- */

static void claim(void);

static long long backoff_ms(int attempt)
{
    long long d = (long long)ob.cfg->email_retry_base * 1000;
    for (int i = 1; i < attempt && d < (long long)ob.cfg->email_retry_max * 1000; i++)
        d *= 2;
    if (d > (long long)ob.cfg->email_retry_max * 1000)
        d = (long long)ob.cfg->email_retry_max * 1000;
    return d - d / 10 + (long long)(random() % (d / 5 + 1)); /* +-10%: no herd of retries */
}

static void result_applied(const redisReply *reply, const char *err, void *arg);

static void apply_result(struct job *j)
{
    const char *outcome = j->result == RES_SENT ? "sent" : j->result == RES_PERM ? "failed" : "retry";
    if (j->result == RES_TEMP && j->attempt >= ob.cfg->email_max_attempts)
        outcome = "failed";
    char code[16], delay[24];
    snprintf(code, sizeof(code), "%d", j->code);
    snprintf(delay, sizeof(delay), "%lld", backoff_ms(j->attempt));
    const char *argv[6] = {j->entry_id, outcome, j->json, code, j->text, delay};
    job_set_state(j, JOB_ACKING);
    if (store_script(SCRIPT_OUTBOX_RESULT, 6, argv, NULL, result_applied, j) < 0)
        job_set_state(j, JOB_DONE); /* Redis away: the poll timer tries again */
    else
        log_info("email: %s %s to %s: %s (%d %s)", j->message_id, outcome, j->to,
                 j->result == RES_SENT ? "accepted" : "not accepted", j->code, j->text);
}

static void result_applied(const redisReply *reply, const char *err, void *arg)
{
    struct job *j = arg;
    if (err) {
        log_warn("email: outbox %s: result not recorded (%s), will retry", j->entry_id, err);
        job_set_state(j, JOB_DONE);
        if (ob.stopping) {
            all_unlink(j);
            job_free(j);
        }
        return;
    }
    all_unlink(j);
    job_free(j);
    if (!ob.stopping)
        claim();
}

static void on_pipe(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    pthread_mutex_lock(&ob.mu);
    struct job *done = ob.done;
    ob.done = NULL;
    pthread_mutex_unlock(&ob.mu);
    while (done) {
        struct job *j = done;
        done = j->next;
        j->next = NULL;
        job_set_state(j, JOB_DONE);
        apply_result(j);
    }
}

static void hand_out(struct job *j)
{
    job_set_state(j, JOB_QUEUED);
    pthread_mutex_lock(&ob.mu);
    if (ob.queue_tail)
        ob.queue_tail->next = j;
    else
        ob.queue = j;
    ob.queue_tail = j;
    pthread_cond_signal(&ob.cv);
    pthread_mutex_unlock(&ob.mu);
}

static void claimed(const redisReply *reply, const char *err, void *arg)
{
    ob.claiming = false;
    if (err) {
        if (strcmp(err, "unavailable") != 0 && strcmp(err, "timeout") != 0 && !ob.stopping)
            log_warn("email: outbox claim failed: %s", err);
        return;
    }
    if (ob.stopping || !reply || reply->type != REDIS_REPLY_ARRAY)
        return; /* what was claimed stays pending: claimed again after claim_idle */
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2)
            continue;
        const char *id = e->element[0]->str, *text = e->element[1]->str;
        if (job_find(id))
            continue; /* ours already (a late heartbeat let XAUTOCLAIM hand it back) */
        struct job *j = job_new(id, text);
        if (!j) {
            log_error("email: outbox entry %s is not a job; dropping it", id);
            j = xcalloc(1, sizeof(*j));
            j->entry_id = xstrdup(id);
            j->json = xstrdup("{\"id\":\"\",\"case\":\"\"}");
            all_link(j);
            set_result(j, RES_PERM, 0, "unreadable outbox entry");
            apply_result(j);
            continue;
        }
        all_link(j);
        hand_out(j);
    }
}

static void claim(void)
{
    if (!ob.running || ob.stopping || ob.claiming || !store_ready())
        return;
    int room = ob.n_threads * 2 - ob.n_jobs;
    if (room <= 0)
        return;
    char count[16], idle[24];
    snprintf(count, sizeof(count), "%d", room);
    snprintf(idle, sizeof(idle), "%lld", (long long)ob.cfg->email_claim_idle * 1000);
    const char *argv[3] = {ob.consumer, count, idle};
    if (store_script(SCRIPT_OUTBOX_CLAIM, 3, argv, NULL, claimed, NULL) == 0)
        ob.claiming = true;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    /* results Redis did not take yet */
    for (struct job *j = ob.all; j && store_ready(); j = j->all_next)
        if (j->state == JOB_DONE)
            apply_result(j);
    claim();
}

static void beat_done(const redisReply *reply, const char *err, void *arg)
{
    if (err && strcmp(err, "unavailable") != 0 && strcmp(err, "timeout") != 0)
        log_warn("email: outbox heartbeat failed: %s", err);
}

/* Refresh the idle time of every entry this daemon holds, so no other daemon takes them. */
static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    if (!ob.all || !store_ready())
        return;
    const char *argv[6 + HEARTBEAT_IDS + 1];
    char key[256];
    snprintf(key, sizeof(key), "%soutbox:email", store_key_base());
    int n = 0;
    argv[n++] = "XCLAIM";
    argv[n++] = key;
    argv[n++] = "senders";
    argv[n++] = ob.consumer;
    argv[n++] = "0";
    int first = n;
    for (struct job *j = ob.all; j && n < first + HEARTBEAT_IDS; j = j->all_next)
        argv[n++] = j->entry_id;
    argv[n++] = "JUSTID";
    if (store_command(n, argv, NULL, beat_done, NULL) < 0)
        return;
}

void email_outbox_kick(void)
{
    if (ob.running && ob.poll_ev)
        event_active(ob.poll_ev, EV_TIMEOUT, 0);
}

/* smtp://[user@]host[:port] (libevent's URI parser) -> "host:port" for libesmtp (default
 * port: submission, 587). Credentials belong in smtp_user / smtp_password_file. */
static int parse_url(const char *url, char **err)
{
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    int port = u ? evhttp_uri_get_port(u) : -1;
    bool ok = host && *host && strlen(host) < 256;
    if (ok)
        snprintf(ob.hostport, sizeof(ob.hostport), "%s:%d", host, port > 0 ? port : 587);
    else
        *err = xasprintf("[email] smtp_url: no host in %s", url);
    if (u)
        evhttp_uri_free(u);
    return ok ? 0 : -1;
}

int email_outbox_start(struct event_base *base, const struct config *cfg, char **err)
{
    if (!cfg->email_smtp_url)
        return 0; /* replies wait on the stream for a daemon that has a relay */
    memset(&ob, 0, sizeof(ob));
    ob.pipe[0] = ob.pipe[1] = -1;
    ob.base = base;
    ob.cfg = cfg;
    if (parse_url(cfg->email_smtp_url, err) < 0)
        return -1;
    ob.tls = strcmp(cfg->email_smtp_starttls, "required") == 0 ? Starttls_REQUIRED
             : strcmp(cfg->email_smtp_starttls, "try") == 0    ? Starttls_ENABLED
                                                               : Starttls_DISABLED;
    char host[128] = "omniccd";
    gethostname(host, sizeof(host) - 1);
    snprintf(ob.consumer, sizeof(ob.consumer), "%s:%d:%lx", host, (int)getpid(),
             (unsigned long)now_ms());
    ob.tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!ob.tls_ctx || (cfg->email_smtp_ca_file ? SSL_CTX_load_verify_locations(ob.tls_ctx, cfg->email_smtp_ca_file, NULL)
                                                : SSL_CTX_set_default_verify_paths(ob.tls_ctx)) != 1) {
        *err = xasprintf("[email] smtp_ca_file: cannot load %s",
                         cfg->email_smtp_ca_file ? cfg->email_smtp_ca_file : "the system's CAs");
        SSL_CTX_free(ob.tls_ctx);
        ob.tls_ctx = NULL;
        return -1;
    }
    SSL_CTX_set_min_proto_version(ob.tls_ctx, TLS1_2_VERSION);
    if (pipe2(ob.pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        *err = xasprintf("email: pipe: %s", strerror(errno));
        return -1;
    }
    pthread_mutex_init(&ob.mu, NULL);
    pthread_cond_init(&ob.cv, NULL);
    auth_client_init();
    ob.pipe_ev = event_new(base, ob.pipe[0], EV_READ | EV_PERSIST, on_pipe, NULL);
    event_add(ob.pipe_ev, NULL);
    ob.poll_ev = event_new(base, -1, EV_PERSIST, on_poll, NULL);
    struct timeval poll = {cfg->email_outbox_poll_ms / 1000, (cfg->email_outbox_poll_ms % 1000) * 1000};
    event_add(ob.poll_ev, &poll);
    int beat_ms = cfg->email_claim_idle * 1000 / 3;
    if (beat_ms < 200)
        beat_ms = 200;
    ob.beat_ev = event_new(base, -1, EV_PERSIST, on_beat, NULL);
    struct timeval beat = {beat_ms / 1000, (beat_ms % 1000) * 1000};
    event_add(ob.beat_ev, &beat);
    ob.n_threads = cfg->email_smtp_workers;
    for (int i = 0; i < ob.n_threads; i++) {
        if (pthread_create(&ob.threads[i], NULL, worker, NULL) != 0) {
            ob.n_threads = i;
            break;
        }
    }
    ob.running = true;
    log_info("email: outbox: %d SMTP workers via %s (STARTTLS %s), consumer %s", ob.n_threads,
             ob.hostport, cfg->email_smtp_starttls, ob.consumer);
    return 0;
}

void email_outbox_stop(void)
{
    if (!ob.running)
        return;
    ob.stopping = true;
    pthread_mutex_lock(&ob.mu);
    pthread_cond_broadcast(&ob.cv);
    pthread_mutex_unlock(&ob.mu);
    /* A worker in the middle of a session finishes it, up to the grace; after that it is
     * left behind (the process is exiting): its entry stays pending and is sent again by
     * whichever daemon claims it. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += STOP_GRACE_MS / 1000;
    int left = 0;
    for (int i = 0; i < ob.n_threads; i++) {
        if (pthread_timedjoin_np(ob.threads[i], NULL, &deadline) == 0)
            ob.joined[i] = true;
        else
            left++;
    }
    event_free(ob.pipe_ev);
    event_free(ob.poll_ev);
    event_free(ob.beat_ev);
    ob.pipe_ev = ob.poll_ev = ob.beat_ev = NULL;
    ob.running = false;
    if (left) {
        log_warn("email: outbox: %d workers still sending at shutdown", left);
        return; /* they still use ob: leave it all in place */
    }
    /* jobs waiting on Redis are freed by their callbacks (which fire when the store
     * closes); the rest now */
    for (struct job *j = ob.all, *next; j; j = next) {
        next = j->all_next;
        if (j->state != JOB_ACKING) {
            all_unlink(j);
            job_free(j);
        }
    }
    ob.queue = ob.queue_tail = ob.done = NULL;
    close(ob.pipe[0]);
    close(ob.pipe[1]);
    ob.pipe[0] = ob.pipe[1] = -1;
    pthread_mutex_destroy(&ob.mu);
    pthread_cond_destroy(&ob.cv);
    SSL_CTX_free(ob.tls_ctx);
    ob.tls_ctx = NULL;
    auth_client_exit();
}
