/* embedded_redis.c - the zero-setup default: with no [redis] url omniccd runs redis-server
 * itself on a unix socket in state_dir (no TCP port), AOF on, restarts it if it dies and
 * stops it on exit. Production deployments point [redis] url at a managed Redis. */
#include "omnicc/embedded_redis.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

extern char **environ;

static struct {
    const struct config *cfg;
    pid_t pid;
    struct event *sigchld_ev, *restart_ev;
    char sock[256];
    char dir[256];
    bool stopping;
    int restarts;
} er;

static int spawn_redis(void)
{
    char logpath[300];
    snprintf(logpath, sizeof(logpath), "%s/redis.log", er.dir);
    const char *argv[] = {er.cfg->redis_server, "--port", "0", "--unixsocket", er.sock,
                          "--unixsocketperm", "700", "--dir", er.dir, "--appendonly", "yes",
                          "--appendfsync", er.cfg->redis_appendfsync, "--save", "",
                          "--daemonize", "no", "--protected-mode", "yes", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawnp(&er.pid, er.cfg->redis_server, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        log_error("embedded redis: cannot run %s: %s", er.cfg->redis_server, strerror(rc));
        er.pid = 0;
        return -1;
    }
    log_info("embedded redis: started %s (pid %d) on %s", er.cfg->redis_server, (int)er.pid, er.sock);
    return 0;
}

static void on_restart(evutil_socket_t fd, short what, void *arg)
{
    if (!er.stopping && er.pid == 0)
        spawn_redis();
}

static void on_sigchld(evutil_socket_t fd, short what, void *arg)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != er.pid)
            continue;
        er.pid = 0;
        if (er.stopping)
            continue;
        log_error("embedded redis: exited (%s %d); restarting",
                  WIFSIGNALED(status) ? "signal" : "status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        int delay_ms = er.restarts < 5 ? 200 : 2000;
        er.restarts++;
        struct timeval tv = {0, delay_ms * 1000};
        if (delay_ms >= 1000) {
            tv.tv_sec = delay_ms / 1000;
            tv.tv_usec = 0;
        }
        evtimer_add(er.restart_ev, &tv);
    }
}

static int mkdir_p(const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0750) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0750) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

int embedded_redis_start(struct event_base *base, const struct config *cfg, char **url_out,
                         char **err)
{
    memset(&er, 0, sizeof(er));
    er.cfg = cfg;
    if (cfg->state_dir[0] != '/') {
        char cwd[200];
        if (!getcwd(cwd, sizeof(cwd))) {
            *err = xasprintf("cannot resolve state_dir");
            return -1;
        }
        snprintf(er.dir, sizeof(er.dir), "%s/%s", cwd, cfg->state_dir);
    } else {
        snprintf(er.dir, sizeof(er.dir), "%s", cfg->state_dir);
    }
    if (mkdir_p(er.dir) < 0) {
        *err = xasprintf("cannot create state_dir %s: %s", er.dir, strerror(errno));
        return -1;
    }
    int n = snprintf(er.sock, sizeof(er.sock), "%s/redis.sock", er.dir);
    if (n >= 100) {
        *err = xasprintf("state_dir path too long for a unix socket (max ~90 characters)");
        return -1;
    }
    er.sigchld_ev = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
    event_add(er.sigchld_ev, NULL);
    er.restart_ev = evtimer_new(base, on_restart, NULL);
    if (spawn_redis() < 0) {
        *err = xasprintf("cannot start %s (install redis-server or set [redis] url)",
                         cfg->redis_server);
        return -1;
    }
    *url_out = xasprintf("unix://%s", er.sock);
    return 0;
}

void embedded_redis_stop(void)
{
    er.stopping = true;
    if (er.pid > 0) {
        kill(er.pid, SIGTERM);
        /* The loop has stopped: waiting here blocks nobody. Redis flushes its AOF on TERM. */
        for (int i = 0; i < 100; i++) {
            if (waitpid(er.pid, NULL, WNOHANG) == er.pid) {
                er.pid = 0;
                break;
            }
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (er.pid > 0) {
            kill(er.pid, SIGKILL);
            waitpid(er.pid, NULL, 0);
            er.pid = 0;
        }
        log_info("embedded redis: stopped");
    }
    if (er.sigchld_ev)
        event_free(er.sigchld_ev);
    if (er.restart_ev)
        event_free(er.restart_ev);
    er.sigchld_ev = er.restart_ev = NULL;
}
