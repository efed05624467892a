/* main.c - omniccd: startup, signals, graceful shutdown, and the command-line modes
 * (--check, --print-config, import PATH).
 *
 * Flow of a request: http.c -> an api_*.c handler (or a channel adapter) -> store.c
 * (one EVALSHA) -> reply. SIGTERM/SIGINT: stop accepting, let in-flight requests finish,
 * close Redis. SIGHUP: re-read the admin token and log level. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "omnicc/api.h"
#include "omnicc/channel.h"
#include "omnicc/config.h"
#include "omnicc/curl_loop.h"
#include "omnicc/embedded_redis.h"
#include "omnicc/events.h"
#include "omnicc/filestore.h"
#include "omnicc/http.h"
#include "omnicc/identity.h"
#include "omnicc/import.h"
#include "omnicc/analytics.h"
#include "omnicc/log.h"
#include "omnicc/metrics.h"
#include "omnicc/router.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

#define SHUTDOWN_GRACE_MS 10000
/* Exit status for a Redis layout this omniccd cannot read (sysexits.h EX_CONFIG): the unit
 * has RestartPreventExitStatus=78, restarting would only refuse again. */
#define EXIT_LAYOUT 78

static struct {
    struct event_base *base;
    struct config *cfg;
    struct event *sigterm_ev, *sigint_ev, *sighup_ev, *drain_ev, *ready_ev, *watchdog_ev;
    int64_t drain_deadline;
    bool embedded;
    bool announced_ready;
    int exit_code;
} d;

static void usage(FILE *out)
{
    fprintf(out, "usage: omniccd -c FILE [--check]\n"
                 "       omniccd -c FILE import PATH    import policyholders (NDJSON)\n"
                 "       omniccd -c FILE export [--since T] [--format ndjson|csv] [--table events|facts]\n"
                 "       omniccd -c FILE reports rebuild [--from-export]  recompute report counters\n"
                 "       omniccd -c FILE reports fold   fold ended hours into the day counters\n"
                 "       omniccd --print-config         print a sample configuration\n");
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    if (http_inflight() == 0 || monotonic_ms() > d.drain_deadline) {
        if (http_inflight())
            log_warn("shutdown: %d requests still in flight, stopping anyway", http_inflight());
        event_base_loopexit(d.base, NULL);
    }
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    if (d.drain_ev)
        return;
    log_info("shutdown: signal %d, finishing %d in-flight requests", (int)sig, http_inflight());
    sd_notify(0, "STOPPING=1");
    http_stop_accepting();
    d.drain_deadline = monotonic_ms() + SHUTDOWN_GRACE_MS;
    d.drain_ev = event_new(d.base, -1, EV_PERSIST, on_drain, NULL);
    struct timeval tv = {0, 20 * 1000};
    event_add(d.drain_ev, &tv);
    on_drain(-1, 0, NULL);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    char *err = NULL;
    sd_notify(0, "RELOADING=1");
    struct config *fresh = config_load(d.cfg->path, &err);
    if (!fresh) {
        log_error("reload: keeping the running configuration: %s", err);
        free(err);
        /* config_load may have replaced the identity pattern before failing: restore it */
        char *e2 = NULL;
        if (identity_init(d.cfg->default_country_code, d.cfg->policy_pattern, &e2) < 0)
            free(e2);
    } else {
        /* Only what is safe to change live: the admin token and the log level. */
        free(d.cfg->api_token_value);
        d.cfg->api_token_value = fresh->api_token_value;
        fresh->api_token_value = NULL;
        d.cfg->log_level = fresh->log_level;
        log_max_level = d.cfg->log_level;
        config_free(fresh);
        char *e2 = NULL;
        if (identity_init(d.cfg->default_country_code, d.cfg->policy_pattern, &e2) < 0)
            free(e2);
        log_info("reload: token and log level re-read");
    }
    channels_reload(d.cfg); /* certificates and CRLs of channel listeners */
    sd_notify(0, "READY=1");
}

/* Fed from the loop itself: if the loop is stuck, systemd stops hearing from us. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    sd_notify(0, "WATCHDOG=1");
}

static void start_watchdog(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return;
    d.watchdog_ev = event_new(d.base, -1, EV_PERSIST, on_watchdog, NULL);
    struct timeval tv = {(time_t)(usec / 2 / 1000000), (suseconds_t)(usec / 2 % 1000000)};
    event_add(d.watchdog_ev, &tv);
    log_info("systemd: watchdog every %llu ms", (unsigned long long)(usec / 2000));
}

/* READY (systemd, and the line a newcomer reads) once Redis answers and listeners are bound. */
static void on_ready_check(evutil_socket_t fd, short what, void *arg)
{
    if (store_fatal() && d.exit_code == 0) {
        log_error("startup: %s", store_fatal());
        sd_notifyf(0, "STATUS=%s", store_fatal());
        d.exit_code = EXIT_LAYOUT;
        event_base_loopexit(d.base, NULL);
        return;
    }
    if (d.announced_ready || !store_ready())
        return;
    d.announced_ready = true;
    sd_notify(0, "READY=1\nSTATUS=serving");
    const char *l = d.cfg->listen[0];
    log_info("omniccd ready: API at http://%s/ (health: http://%s/healthz)", l, l);
}

static int run_daemon(void)
{
    char *err = NULL, *url = NULL;
    signal(SIGPIPE, SIG_IGN);
    d.base = event_base_new();
    if (!d.cfg->redis_url && !d.cfg->redis_sentinels) {
        if (embedded_redis_start(d.base, d.cfg, &url, &err) < 0)
            goto fail;
        d.embedded = true;
    } else {
        /* with sentinels the store asks them for the primary (url only names it in logs) */
        url = d.cfg->redis_url ? xstrdup(d.cfg->redis_url)
                               : xasprintf("sentinel://%s", d.cfg->redis_master_name);
    }
    router_start(d.base, d.cfg); /* before the store connects: it syncs queue config */
    if (store_init(d.base, d.cfg, url, &err) < 0)
        goto fail;
    events_start(d.base);
    api_set_config(d.cfg);
    retention_start(d.base); /* docs/ANALYTICS.md */
    if (http_start(d.base, d.cfg, &err) < 0)
        goto fail;
    if (curl_loop_init(d.base) < 0) {
        err = xstrdup("cannot initialise libcurl");
        goto fail;
    }
    /* durable document writes off the loop (filestore.h): before the channels that use it */
    if (filestore_start(d.base, 2, 256, &err) < 0)
        goto fail;
    if (channels_start(d.base, d.cfg, &err) < 0)
        goto fail;
    d.sigterm_ev = evsignal_new(d.base, SIGTERM, on_stop_signal, NULL);
    d.sigint_ev = evsignal_new(d.base, SIGINT, on_stop_signal, NULL);
    d.sighup_ev = evsignal_new(d.base, SIGHUP, on_reload, NULL);
    event_add(d.sigterm_ev, NULL);
    event_add(d.sigint_ev, NULL);
    event_add(d.sighup_ev, NULL);
    d.ready_ev = event_new(d.base, -1, EV_PERSIST, on_ready_check, NULL);
    struct timeval tv = {0, 20 * 1000};
    event_add(d.ready_ev, &tv);

    start_watchdog();
    event_base_dispatch(d.base);

    log_info("shutdown: closing");
    filestore_stop(); /* pending callbacks run, channels still up: unwritten is "retry" */
    channels_stop();
    curl_loop_shutdown();
    http_free();
    api_queues_free();
    store_close();
    events_stop();
    router_stop();
    retention_stop();
    if (d.embedded)
        embedded_redis_stop();
    free(url);
    event_free(d.sigterm_ev);
    event_free(d.sigint_ev);
    event_free(d.sighup_ev);
    event_free(d.ready_ev);
    if (d.drain_ev)
        event_free(d.drain_ev);
    if (d.watchdog_ev)
        event_free(d.watchdog_ev);
    event_base_free(d.base);
    return d.exit_code;
fail:
    log_error("startup: %s", err);
    free(err);
    free(url);
    filestore_stop(); /* pending callbacks run, channels still up: unwritten is "retry" */
    channels_stop();
    curl_loop_shutdown();
    http_free();
    api_queues_free();
    store_close();
    events_stop();
    router_stop();
    retention_stop();
    if (d.embedded)
        embedded_redis_stop();
    return 1;
}

/* ---- `omniccd -c FILE import PATH` ---- */

static void on_import_done(struct import_job *job, void *arg)
{
    json_t *report = import_job_report(job);
    char *text = json_dumps(report, JSON_INDENT(2));
    printf("%s\n", text);
    free(text);
    json_decref(report);
    d.exit_code = import_job_failed(job) ? 3 : 0;
    event_base_loopexit(d.base, NULL);
}

static void on_import_tick(evutil_socket_t fd, short what, void *arg)
{
    struct import_job *job = arg;
    if (!store_ready()) {
        if (store_fatal() || monotonic_ms() > d.drain_deadline) {
            log_error("import: Redis not reachable (%s)", store_status());
            d.exit_code = 2;
            event_base_loopexit(d.base, NULL);
        }
        return;
    }
    event_del(d.ready_ev);
    if (import_job_run(job, on_import_done, NULL) < 0) {
        d.exit_code = 2;
        event_base_loopexit(d.base, NULL);
    }
}

static int run_import(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "import: cannot open %s\n", path);
        return 2;
    }
    size_t cap = 1 << 20, len = 0, n;
    char *data = xmalloc(cap);
    while ((n = fread(data + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap)
            data = xrealloc(data, cap *= 2);
    }
    fclose(f);
    struct import_job *job = import_job_new(d.cfg);
    import_job_feed(job, data, len);
    free(data);

    char *url = d.cfg->redis_url         ? xstrdup(d.cfg->redis_url)
                : d.cfg->redis_sentinels ? xasprintf("sentinel://%s", d.cfg->redis_master_name)
                                         : xasprintf("unix://%s/redis.sock", d.cfg->state_dir);
    char *err = NULL;
    d.base = event_base_new();
    if (store_init(d.base, d.cfg, url, &err) < 0) {
        fprintf(stderr, "import: %s\n", err);
        return 2;
    }
    d.drain_deadline = monotonic_ms() + 10000;
    d.exit_code = 2;
    d.ready_ev = event_new(d.base, -1, EV_PERSIST, on_import_tick, job);
    struct timeval tv = {0, 20 * 1000};
    event_add(d.ready_ev, &tv);
    event_base_dispatch(d.base);
    store_close();
    event_free(d.ready_ev);
    event_base_free(d.base);
    import_job_free(job);
    free(url);
    return d.exit_code;
}

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread starts */
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check", no_argument, NULL, 'k'},
                                         {"print-config", no_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *config_path = NULL;
    bool check_only = false;
    int c;
    log_init();
    while ((c = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'k':
            check_only = true;
            break;
        case 'p':
            config_print_sample(stdout);
            return 0;
        case 'V':
            printf("omniccd 0.1.0\n");
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config_path) {
        usage(stderr);
        return 2;
    }
    char *err = NULL;
    d.cfg = config_load(config_path, &err);
    if (!d.cfg) {
        fprintf(stderr, "%s\n", err);
        free(err);
        return 1;
    }
    log_max_level = d.cfg->log_level;
    if (analytics_set_timezone(d.cfg, &err) < 0) { /* before any thread: sets TZ */
        fprintf(stderr, "%s\n", err);
        free(err);
        config_free(d.cfg);
        return 1;
    }
    int rc;
    if (check_only) {
        printf("%s: ok\n", config_path);
        rc = 0;
    } else if (optind < argc && strcmp(argv[optind], "import") == 0) {
        if (optind + 1 >= argc) {
            usage(stderr);
            rc = 2;
        } else {
            rc = run_import(argv[optind + 1]);
        }
    } else if (optind < argc && strcmp(argv[optind], "export") == 0) {
        rc = cli_export(d.cfg, argc - optind - 1, argv + optind + 1); /* docs/EXPORT.md */
    } else if (optind < argc && strcmp(argv[optind], "reports") == 0) {
        rc = cli_reports(d.cfg, argc - optind - 1, argv + optind + 1); /* docs/ANALYTICS.md */
    } else if (optind < argc) {
        fprintf(stderr, "unknown command: %s\n", argv[optind]);
        usage(stderr);
        rc = 2;
    } else {
        rc = run_daemon();
    }
    identity_shutdown();
    config_free(d.cfg);
    metrics_free();
    curl_global_cleanup();
    return rc;
}
