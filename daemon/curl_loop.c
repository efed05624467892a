/* curl_loop.c - libcurl multi on libevent (the socket and timer callbacks of
 * curl_multi_socket_action). Each transfer's completion callback runs from the loop, never
 * from inside a curl callback, so it may start new transfers. */
#include "omnicc/curl_loop.h"

#include <event2/event.h>
#include <stdlib.h>

#include "omnicc/log.h"
#include "omnicc/util.h"

struct transfer {
    struct transfer *prev, *next; /* all running transfers, to abort them at shutdown */
    CURL *easy;
    curl_loop_done_fn *done;
    void *arg;
};

struct sock_ctx {
    struct event *ev;
};

static struct {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    int running;
    struct transfer *all;
} cl;

static void transfer_unlink(struct transfer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        cl.all = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

static void check_done(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(cl.multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct transfer *t = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(cl.multi, easy);
        if (t)
            transfer_unlink(t);
        if (t && t->done)
            t->done(easy, rc, t->arg);
        free(t);
        curl_easy_cleanup(easy);
    }
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(cl.multi, fd, flags, &cl.running);
    check_done();
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    curl_multi_socket_action(cl.multi, CURL_SOCKET_TIMEOUT, 0, &cl.running);
    check_done();
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct sock_ctx *ctx = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (ctx) {
            event_free(ctx->ev);
            free(ctx);
            curl_multi_assign(cl.multi, s, NULL);
        }
        return 0;
    }
    short kind = EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!ctx) {
        ctx = xcalloc(1, sizeof(*ctx));
        curl_multi_assign(cl.multi, s, ctx);
    } else {
        event_free(ctx->ev);
    }
    ctx->ev = event_new(cl.base, s, kind, on_socket_event, NULL);
    event_add(ctx->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    if (timeout_ms < 0) {
        evtimer_del(cl.timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(cl.timer, &tv);
    return 0;
}

int curl_loop_init(struct event_base *base)
{
    if (cl.multi)
        return 0;
    cl.base = base;
    cl.multi = curl_multi_init();
    if (!cl.multi)
        return -1;
    cl.timer = evtimer_new(base, on_timeout, NULL);
    curl_multi_setopt(cl.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(cl.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    return 0;
}

int curl_loop_add(CURL *easy, curl_loop_done_fn *done, void *arg)
{
    if (!cl.multi)
        return -1;
    struct transfer *t = xcalloc(1, sizeof(*t));
    t->done = done;
    t->arg = arg;
    t->easy = easy;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (curl_multi_add_handle(cl.multi, easy) != CURLM_OK) {
        free(t);
        return -1;
    }
    t->next = cl.all;
    if (cl.all)
        cl.all->prev = t;
    cl.all = t;
    return 0;
}

int curl_loop_running(void)
{
    return cl.running;
}

void curl_loop_shutdown(void)
{
    if (!cl.multi)
        return;
    while (cl.all) {
        struct transfer *t = cl.all;
        transfer_unlink(t);
        curl_multi_remove_handle(cl.multi, t->easy);
        if (t->done)
            t->done(t->easy, CURLE_ABORTED_BY_CALLBACK, t->arg);
        curl_easy_cleanup(t->easy);
        free(t);
    }
    curl_multi_cleanup(cl.multi);
    event_free(cl.timer);
    cl.multi = NULL;
    cl.timer = NULL;
}
