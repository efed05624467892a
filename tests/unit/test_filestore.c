/* The file store's worker pool: documents are written under their sha256 (with a sidecar
 * when asked), every done callback runs once on the loop thread, the queue is bounded, and
 * a stopped pool refuses work instead of losing it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <event2/event.h>

#include "omnicc/attachments.h"
#include "omnicc/filestore.h"
#include "omnicc/util.h"

#define N_DOCS 24

static struct event_base *base;
static pthread_t loop_thread;
static int n_done, n_err;
static char shas[N_DOCS][65];

static void done(void *arg, const char *sha, const char *err)
{
    int i = (int)(intptr_t)arg;
    assert_true(pthread_equal(pthread_self(), loop_thread));
    if (err)
        n_err++;
    else
        snprintf(shas[i], sizeof(shas[i]), "%s", sha);
    if (++n_done == N_DOCS)
        event_base_loopbreak(base);
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = xmalloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

static void test_pool_writes_and_calls_back(void **state)
{
    (void)state;
    char dir[] = "/tmp/omnicc-fs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    base = event_base_new();
    loop_thread = pthread_self();
    char *err = NULL;
    assert_int_equal(filestore_start(base, 3, N_DOCS, &err), 0);
    assert_true(filestore_running());
    char *docs[N_DOCS];
    for (int i = 0; i < N_DOCS; i++) {
        docs[i] = xasprintf("document %d %s", i % 12, "x"); /* half are duplicates */
        assert_int_equal(filestore_put(dir, docs[i], strlen(docs[i]), NULL,
                                       i == 0 ? "{\"filename\":\"a.txt\"}" : NULL, done,
                                       (void *)(intptr_t)i),
                         0);
    }
    /* the queue is full: refused, nothing queued */
    assert_int_equal(filestore_put(dir, "y", 1, NULL, NULL, done, NULL), -1);
    event_base_dispatch(base);
    assert_int_equal(n_done, N_DOCS);
    assert_int_equal(n_err, 0);
    for (int i = 0; i < N_DOCS; i++) {
        char want[65];
        attachment_sha256(docs[i], strlen(docs[i]), want);
        assert_string_equal(shas[i], want);
        char *path = xasprintf("%s/%.2s/%s", dir, want, want);
        size_t len = 0;
        char *got = read_whole(path, &len);
        assert_non_null(got);
        assert_int_equal(len, strlen(docs[i]));
        assert_memory_equal(got, docs[i], len);
        free(got);
        free(path);
    }
    char *meta = xasprintf("%s/%.2s/%s.meta", dir, shas[0], shas[0]);
    size_t ml = 0;
    char *m = read_whole(meta, &ml);
    assert_non_null(m);
    assert_int_equal(ml, strlen("{\"filename\":\"a.txt\"}"));
    free(m);
    unlink(meta);
    free(meta);
    /* the synchronous form, the same name */
    char sha[65];
    assert_int_equal(filestore_write(dir, docs[1], strlen(docs[1]), NULL, NULL, true, sha, &err), 0);
    assert_string_equal(sha, shas[1]);
    filestore_stop();
    assert_false(filestore_running());
    for (int i = 0; i < N_DOCS; i++) {
        char *path = xasprintf("%s/%.2s/%s", dir, shas[i], shas[i]);
        unlink(path);
        free(path);
    }
    /* stopped: refused, never lost silently */
    assert_int_equal(filestore_put(dir, "z", 1, NULL, NULL, done, NULL), -1);
    for (int i = 0; i < N_DOCS; i++)
        free(docs[i]);
    char *cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    event_base_free(base);
}

static void test_write_error_is_reported(void **state)
{
    (void)state;
    base = event_base_new();
    loop_thread = pthread_self();
    n_done = n_err = 0;
    char *err = NULL;
    assert_int_equal(filestore_start(base, 1, 4, &err), 0);
    /* a root that cannot be created: the error comes back through done */
    n_done = N_DOCS - 1; /* one job: its callback ends the loop */
    assert_int_equal(filestore_put("/proc/omnicc-no-such-dir", "a", 1, NULL, NULL, done,
                                   (void *)(intptr_t)0),
                     0);
    event_base_dispatch(base);
    assert_int_equal(n_err, 1);
    filestore_stop();
    event_base_free(base);
}

/* filestore_run: the work on a worker thread, its after on the loop thread, once each; work
 * still queued when the pool stops is reported as not run. */
struct run_job {
    pthread_t worker;
    bool worked, ran;
    int afters;
};

static void run_work(void *arg)
{
    struct run_job *j = arg;
    j->worker = pthread_self();
    j->worked = true;
}

static void run_after(void *arg, bool ran)
{
    struct run_job *j = arg;
    assert_true(pthread_equal(pthread_self(), loop_thread));
    j->ran = ran;
    j->afters++;
    event_base_loopbreak(base);
}

static void test_run_on_worker_then_loop(void **state)
{
    (void)state;
    base = event_base_new();
    loop_thread = pthread_self();
    char *err = NULL;
    assert_int_equal(filestore_start(base, 1, 4, &err), 0);
    struct run_job j = {0};
    assert_int_equal(filestore_run(run_work, run_after, &j), 0);
    event_base_dispatch(base);
    assert_true(j.worked && j.ran);
    assert_int_equal(j.afters, 1);
    assert_false(pthread_equal(j.worker, loop_thread));
    filestore_stop();
    /* stopped: refused, neither function called */
    struct run_job k = {0};
    assert_int_equal(filestore_run(run_work, run_after, &k), -1);
    assert_int_equal(k.afters, 0);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_writes_and_calls_back),
        cmocka_unit_test(test_write_error_is_reported),
        cmocka_unit_test(test_run_on_worker_then_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
