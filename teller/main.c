/* main.c - omnicc-teller: the bank teller's terminal for omniccd's branch bridge.
 *
 *   omnicc-teller -c /etc/omnicc-teller/teller.conf
 *
 * One loop: poll() on the keyboard and the link (every 250 ms at least, for timers), the
 * keys acted on, the link serviced, the screen redrawn. See teller.h for the files. */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "teller.h"

void ui_maybe_signin(struct app *a);

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: omnicc-teller -c FILE\n"
                 "A bank teller's terminal for omniccd's branch bridge (docs/BRANCH.md).\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int c;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (c == 'c') {
            path = optarg;
        } else {
            usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    static struct app a;
    char *err = NULL;
    if (teller_conf_load(path, &a.conf, &err) < 0 || spool_open(&a.spool, a.conf.spool, &err) < 0 ||
        link_init(&a.link, &a.conf, &err) < 0) {
        fprintf(stderr, "omnicc-teller: %s\n", err ? err : "out of memory");
        free(err);
        return 1;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    app_init(&a);
    if (a.spool.pending)
        app_status(&a, false, "%d actions from before wait in the spool; sign in to send them.",
                   a.spool.pending);
    ui_init();
    ui_maybe_signin(&a);
    ui_draw(&a);
    while (!a.quit && !stop) {
        struct pollfd pfd[2] = {{.fd = 0, .events = POLLIN}};
        int64_t now = teller_mono_ms();
        int timeout = link_prepare(&a.link, &pfd[1], now);
        if (poll(pfd, 2, timeout) < 0)
            continue; /* a signal: the loop re-checks */
        if (pfd[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            break; /* the terminal went away */
        bool had_teller = a.have_teller;
        if (pfd[0].revents & POLLIN)
            ui_key(&a);
        now = teller_mono_ms();
        link_service(&a.link, pfd[1].revents, now);
        app_tick(&a, now);
        if (had_teller && !a.have_teller)
            ui_maybe_signin(&a); /* signed out, or the server refused the sign-in */
        ui_draw(&a);
    }
    ui_end();
    if (a.spool.pending)
        printf("omnicc-teller: %d actions are kept in %s and will be sent next time.\n",
               a.spool.pending, a.conf.spool);
    link_free(&a.link);
    spool_close(&a.spool);
    json_decref(a.customer);
    json_decref(a.services);
    json_decref(a.volatile_next);
    json_decref(a.inflight_frame);
    memset(a.token, 0, sizeof(a.token));
    teller_conf_free(&a.conf);
    return 0;
}
