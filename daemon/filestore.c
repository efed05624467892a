/* filestore.c - durable content-addressed writes on a small pool of worker threads (see
 * filestore.h). Jobs wait in a bounded in-memory list; finished jobs go back on a second
 * list and one byte down a pipe wakes the loop, which runs the done callbacks. The workers
 * touch only the file system and their own job: no Redis, no libevent. */
#include "omnicc/filestore.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnicc/attachments.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

struct job {
    struct job *next;
    char *root, *meta;
    const void *data; /* borrowed from the caller until done runs */
    size_t len;
    char sha[65];
    bool have_sha;
    char *err;
    filestore_done_fn *done;
    filestore_work_fn *work; /* a job of filestore_run: work, then after */
    filestore_after_fn *after;
    bool ran;
    void *arg;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail, *done_head, *done_tail;
    int queued, queue_max, n_threads;
    pthread_t *threads;
    bool stop, running;
    int pipe_fd[2];
    struct event *ev;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .pipe_fd = {-1, -1}};

static atomic_ulong tmp_seq;

static int mkdir_p(const char *path)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0750) < 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0750) < 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* temporary file, (fsync), rename; the directory is fsynced by the caller */
static int write_one(const char *path, const void *data, size_t len, bool durable, char **err)
{
    char *tmp = xasprintf("%s.tmp.%d.%lu", path, (int)getpid(),
                          (unsigned long)atomic_fetch_add(&tmp_seq, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        *err = xasprintf("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err = xasprintf("cannot write %s: %s", tmp, n < 0 ? strerror(errno) : "short write");
            close(fd);
            unlink(tmp);
            free(tmp);
            return -1;
        }
        p += n;
        left -= (size_t)n;
    }
    if ((durable && fsync(fd) < 0) || close(fd) < 0 || rename(tmp, path) < 0) {
        *err = xasprintf("cannot store %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

int filestore_write(const char *root, const void *data, size_t len, const char *sha_hex,
                    const char *meta, bool durable, char sha_out[65], char **err)
{
    char sha[65];
    if (sha_hex && attachment_sha_valid(sha_hex))
        memcpy(sha, sha_hex, 65);
    else
        attachment_sha256(data, len, sha);
    if (sha_out)
        memcpy(sha_out, sha, 65);
    char *dir = xasprintf("%s/%.2s", root, sha);
    char *path = xasprintf("%s/%s", dir, sha);
    int rc = 0;
    struct stat st;
    bool new_dir = stat(dir, &st) < 0; /* its entry in root needs an fsync of root too */
    if (mkdir_p(dir) < 0) {
        *err = xasprintf("cannot create %s: %s", dir, strerror(errno));
        rc = -1;
    } else if (stat(path, &st) == 0 && (size_t)st.st_size == len) {
        /* already stored under its name, perhaps by a non-durable write (tests) or by a
         * writer that crashed before its directory fsync: both fsyncs are repeated */
        int fd = durable ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        if (durable && (fd < 0 || fsync(fd) < 0)) {
            *err = xasprintf("cannot fsync %s: %s", path, strerror(errno));
            rc = -1;
        }
        if (fd >= 0)
            close(fd);
    } else {
        rc = write_one(path, data, len, durable, err);
    }
    if (rc == 0 && meta) {
        char *meta_path = xasprintf("%s/%s.meta", dir, sha);
        char *e = NULL;
        if (stat(meta_path, &st) < 0 && write_one(meta_path, meta, strlen(meta), durable, &e) < 0) {
            log_warn("filestore: %s", e); /* the bytes are stored; only the name is lost */
            free(e);
        }
        free(meta_path);
    }
    if (rc == 0 && durable &&
        (fsync_dir(dir) < 0 || (new_dir && fsync_dir(root) < 0))) {
        *err = xasprintf("cannot fsync %s: %s", dir, strerror(errno));
        rc = -1;
    }
    free(path);
    free(dir);
    return rc;
}

static void job_free(struct job *j)
{
    free(j->root);
    free(j->meta);
    free(j->err);
    free(j);
}

static void *worker(void *unused)
{
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        while (!pool.stop && !pool.head)
            pthread_cond_wait(&pool.cv, &pool.mu);
        if (pool.stop) {
            pthread_mutex_unlock(&pool.mu);
            break;
        }
        struct job *j = pool.head;
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.mu);
        j->next = NULL;
        if (j->work) {
            j->work(j->arg);
            j->ran = true;
        } else {
            filestore_write(j->root, j->data, j->len, j->have_sha ? j->sha : NULL, j->meta,
                            true, j->sha, &j->err);
        }
        pthread_mutex_lock(&pool.mu);
        if (pool.done_tail)
            pool.done_tail->next = j;
        else
            pool.done_head = j;
        pool.done_tail = j;
        pthread_mutex_unlock(&pool.mu);
        char b = 1;
        while (write(pool.pipe_fd[1], &b, 1) < 0 && errno == EINTR) {
        }
    }
    return NULL;
}

/* the finished jobs' callbacks, on the loop thread */
static void run_done(void)
{
    pthread_mutex_lock(&pool.mu);
    struct job *list = pool.done_head;
    pool.done_head = pool.done_tail = NULL;
    pthread_mutex_unlock(&pool.mu);
    while (list) {
        struct job *j = list;
        list = j->next;
        pthread_mutex_lock(&pool.mu);
        pool.queued--;
        pthread_mutex_unlock(&pool.mu);
        if (j->work)
            j->after(j->arg, j->ran);
        else
            j->done(j->arg, j->sha, j->err);
        job_free(j);
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    run_done();
}

int filestore_start(struct event_base *base, int workers, int queue_max, char **err)
{
    if (pool.running)
        return 0;
    if (pipe2(pool.pipe_fd, O_CLOEXEC | O_NONBLOCK) < 0) {
        *err = xasprintf("filestore: pipe: %s", strerror(errno));
        return -1;
    }
    pool.ev = event_new(base, pool.pipe_fd[0], EV_READ | EV_PERSIST, on_done, NULL);
    event_add(pool.ev, NULL);
    pool.queue_max = queue_max > 0 ? queue_max : 1;
    pool.stop = false;
    if (workers < 1)
        workers = 1;
    pool.threads = xcalloc((size_t)workers, sizeof(pthread_t));
    pool.running = true;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&pool.threads[i], NULL, worker, NULL) != 0) {
            *err = xstrdup("filestore: cannot start the worker threads");
            pool.n_threads = i;
            filestore_stop();
            return -1;
        }
        pool.n_threads = i + 1;
    }
    return 0;
}

bool filestore_running(void)
{
    return pool.running;
}

/* Queue j, or free it and return -1 when the pool is stopped or full. */
static int enqueue(struct job *j)
{
    if (!pool.running) {
        job_free(j);
        return -1;
    }
    pthread_mutex_lock(&pool.mu);
    if (pool.queued >= pool.queue_max) {
        pthread_mutex_unlock(&pool.mu);
        job_free(j);
        return -1;
    }
    if (pool.tail)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    pool.queued++;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return 0;
}

int filestore_put(const char *root, const void *data, size_t len, const char *sha_hex,
                  const char *meta, filestore_done_fn *done, void *arg)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->root = xstrdup(root);
    j->meta = meta ? xstrdup(meta) : NULL;
    j->data = data;
    j->len = len;
    if (sha_hex && attachment_sha_valid(sha_hex)) {
        memcpy(j->sha, sha_hex, 65);
        j->have_sha = true;
    }
    j->done = done;
    j->arg = arg;
    return enqueue(j);
}

int filestore_run(filestore_work_fn *work, filestore_after_fn *after, void *arg)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->work = work;
    j->after = after;
    j->arg = arg;
    return enqueue(j);
}

void filestore_stop(void)
{
    if (!pool.running && !pool.threads)
        return;
    pthread_mutex_lock(&pool.mu);
    pool.stop = true;
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.n_threads; i++)
        pthread_join(pool.threads[i], NULL);
    pool.running = false; /* no new jobs from the callbacks below */
    /* never written: reported as failed, so the caller answers "retry" */
    pthread_mutex_lock(&pool.mu);
    struct job *unwritten = pool.head;
    pool.head = pool.tail = NULL;
    pthread_mutex_unlock(&pool.mu);
    for (struct job *j = unwritten, *n; j; j = n) {
        n = j->next;
        j->next = NULL;
        j->err = xstrdup("shutting down");
        if (!j->have_sha)
            memset(j->sha, 0, sizeof(j->sha));
        pthread_mutex_lock(&pool.mu);
        if (pool.done_tail)
            pool.done_tail->next = j;
        else
            pool.done_head = j;
        pool.done_tail = j;
        pthread_mutex_unlock(&pool.mu);
    }
    run_done();
    if (pool.ev)
        event_free(pool.ev);
    for (int i = 0; i < 2; i++)
        if (pool.pipe_fd[i] >= 0)
            close(pool.pipe_fd[i]);
    free(pool.threads);
    pool.ev = NULL;
    pool.pipe_fd[0] = pool.pipe_fd[1] = -1;
    pool.threads = NULL;
    pool.n_threads = pool.queued = 0;
    pool.stop = false;
}
