/* fax_hylafax.c - sending faxes through the insurer's own HylaFAX server ([fax] outbound =
 * hylafax, docs/FAX.md "HylaFAX"): HylaFAX's own clients from Debian's hylafax-client,
 * `sendfax` to submit a stored document (the job id it prints is the provider id) and
 * `faxstat -s -d` to follow the jobs until HylaFAX calls them done or failed. Each client is
 * a child process started with posix_spawnp and an argv (never a shell), its output read by
 * the loop from a non-blocking pipe as it comes and the child reaped without waiting (the
 * way tmux runs its jobs), killed when it overruns its time. Nothing here waits for
 * hfaxd on the loop thread. The clients read their settings from a .hylarc that omniccd
 * writes under [daemon] state_dir/hylafax/ at start: passive data connections (hfaxd does
 * not connect back to the daemon) and the job listing format parsed here. */
#include "fax.h"

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
#include <unistd.h>

#include "omnicc/log.h"
#include "omnicc/util.h"

extern char **environ;

#define PROC_OUT_MAX 65536

struct fax_proc {
    pid_t pid;
    int fd;
    struct event *rd, *tick;
    char *out;
    size_t len;
    long long deadline_ms;
    bool eof, killed;
    fax_proc_done_fn *done;
    void *arg;
};

static struct event_base *proc_base;
static char *proc_home; /* HOME of the clients: holds .hylarc */

static void proc_finish(struct fax_proc *p, int code)
{
    if (p->rd)
        event_free(p->rd);
    if (p->tick)
        event_free(p->tick);
    close(p->fd);
    p->done(p->arg, p->killed ? -1 : code, p->out ? p->out : "");
    free(p->out);
    free(p);
}

/* Every 50 ms: reap the child once its output is closed; kill it past its deadline. */
static void proc_tick(evutil_socket_t fd, short what, void *arg)
{
    struct fax_proc *p = arg;
    if (!p->killed && now_ms() > p->deadline_ms) {
        kill(p->pid, SIGKILL);
        p->killed = true;
    }
    if (!p->eof && !p->killed)
        return;
    int status = 0;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == 0)
        return;
    proc_finish(p, r == p->pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void proc_read(evutil_socket_t fd, short what, void *arg)
{
    struct fax_proc *p = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            size_t keep = p->len + (size_t)n > PROC_OUT_MAX ? PROC_OUT_MAX - p->len : (size_t)n;
            p->out = xrealloc(p->out, p->len + keep + 1);
            memcpy(p->out + p->len, buf, keep);
            p->len += keep;
            p->out[p->len] = '\0';
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        p->eof = true; /* closed (or failed): the tick reaps the child */
        event_del(p->rd);
        return;
    }
}

int fax_proc_run(const char *const argv[], int timeout_s, fax_proc_done_fn *done, void *arg)
{
    if (!proc_base || !proc_home)
        return -1;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    /* the clients' environment: this process's, with HOME pointing at omniccd's .hylarc */
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = xcalloc(n + 2, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "HOME=", 5) != 0)
            envp[k++] = environ[i];
    char *home = xasprintf("HOME=%s", proc_home);
    envp[k++] = home;
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(home);
    free(envp);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        errno = rc;
        return -1;
    }
    fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);
    struct fax_proc *p = xcalloc(1, sizeof(*p));
    p->pid = pid;
    p->fd = pfd[0];
    p->deadline_ms = now_ms() + (long long)timeout_s * 1000;
    p->done = done;
    p->arg = arg;
    p->rd = event_new(proc_base, p->fd, EV_READ | EV_PERSIST, proc_read, p);
    p->tick = event_new(proc_base, -1, EV_PERSIST, proc_tick, p);
    struct timeval tv = {0, 50000};
    event_add(p->rd, NULL);
    event_add(p->tick, &tv);
    return 0;
}

/* The clients' settings: passive data connections (the server never connects back to this
 * host, which firewalls and sandboxes refuse) and the job list as "id|state|status". At
 * start, before the loop runs. */
int fax_hylafax_init(struct event_base *base, const char *state_dir, char **err)
{
    proc_base = base;
    free(proc_home);
    proc_home = xasprintf("%s/hylafax", state_dir);
    if (mkdir(proc_home, 0750) < 0 && errno != EEXIST) {
        *err =
            xasprintf("[fax] outbound = hylafax: cannot make %s: %s", proc_home, strerror(errno));
        return -1;
    }
    char *path = xasprintf("%s/.hylarc", proc_home);
    FILE *f = fopen(path, "w");
    bool ok = f && fputs("# written by omniccd at start: its sendfax and faxstat settings\n"
                         "PassiveMode: yes\n"
                         "JobFmt: \"%j|%a|%s\"\n",
                         f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        *err = xasprintf("[fax] outbound = hylafax: cannot write %s: %s", path, strerror(errno));
    free(path);
    return ok ? 0 : -1;
}

void fax_hylafax_stop(void)
{
    free(proc_home);
    proc_home = NULL;
    proc_base = NULL;
}

bool fax_hylafax_number_ok(const char *to)
{
    size_t n = strlen(to), digits = 0;
    for (size_t i = 0; i < n; i++) {
        if (to[i] == '+' && i == 0)
            continue;
        if (to[i] < '0' || to[i] > '9')
            return false;
        digits++;
    }
    return digits >= 3 && digits <= 20;
}

long fax_hylafax_job_id(const char *out)
{
    const char *p = strstr(out, "request id is ");
    if (!p)
        return -1;
    char *end = NULL;
    long id = strtol(p + 14, &end, 10);
    return end != p + 14 && id > 0 ? id : -1;
}

int fax_hylafax_parse_status(const char *out, fax_hylafax_job_fn *fn, void *arg)
{
    int n = 0;
    const char *line = out;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[512];
        if (len < sizeof(buf)) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            char *bar = strchr(buf, '|');
            char *bar2 = bar ? strchr(bar + 1, '|') : NULL;
            if (bar && bar2 && bar2 == bar + 2) {
                *bar = '\0';
                char *end = NULL;
                long id = strtol(buf, &end, 10);
                while (end && *end == ' ')
                    end++;
                char *status = bar2 + 1;
                size_t sl = strlen(status);
                while (sl > 0 && (status[sl - 1] == '\r' || status[sl - 1] == ' '))
                    status[--sl] = '\0';
                if (end && !*end && id > 0) {
                    fn(arg, id, bar[1], status);
                    n++;
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return n;
}
