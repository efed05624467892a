/* static.c - the web pages: /chat/ (customer web chat, also the embeddable widget),
 * /agent/ (agent desktop), /supervisor/ and /common/ (their shared script). Each URL maps to
 * one fixed directory of the web root and one file name of at most one path segment, checked
 * character by character (no '/', no leading dot, no ".."), opened without following a
 * symlink, regular files only, with a content type from a fixed table of extensions.
 * Pages carry a Content-Security-Policy: scripts and styles from this origin only. */
#include "omnicc/static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/util.h"

#ifndef OMNICC_WEB_ROOT_SRC
#define OMNICC_WEB_ROOT_SRC "web"
#endif
#ifndef OMNICC_WEB_ROOT_INSTALLED
#define OMNICC_WEB_ROOT_INSTALLED "/usr/local/share/omnicc/web"
#endif
#ifndef OMNICC_PREFIX
#define OMNICC_PREFIX "/usr/local"
#endif

#define STATIC_MAX_FILE (4 << 20)
#define STATIC_MAX_NAME 100

static const struct {
    const char *ext, *type;
} content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"ico", "image/x-icon"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
};

const char *static_web_root(void)
{
    const struct config *cfg = api_config();
    if (cfg && cfg->web_root)
        return cfg->web_root;
    static int installed = -1;
    if (installed < 0) {
        /* run from the installed sbin: the installed copy; from a build tree: the sources */
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        size_t plen = strlen(OMNICC_PREFIX);
        installed = 0;
        if (n > 0) {
            exe[n] = '\0';
            installed = strncmp(exe, OMNICC_PREFIX, plen) == 0 && (exe[plen] == '/' || plen == 1);
        }
        struct stat st;
        if (!installed && stat(OMNICC_WEB_ROOT_SRC, &st) < 0)
            installed = 1; /* the source tree is gone: only the installed copy can serve */
    }
    return installed ? OMNICC_WEB_ROOT_INSTALLED : OMNICC_WEB_ROOT_SRC;
}

/* [A-Za-z0-9][A-Za-z0-9._-]* without "..", with a known extension: its content type. */
static const char *file_type(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > STATIC_MAX_NAME || strstr(name, ".."))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return NULL;
    }
    const char *dot = strrchr(name, '.');
    if (!dot)
        return NULL;
    for (size_t i = 0; i < ARRAY_SIZE(content_types); i++)
        if (strcmp(dot + 1, content_types[i].ext) == 0)
            return content_types[i].type;
    return NULL;
}

static void not_found(struct http_req *r)
{
    http_reply_error(r, 404, "not_found", "no such page");
}

static void add_header(struct http_req *r, const char *k, const char *v)
{
    if (r->req)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), k, v);
}

static void page_headers(struct http_req *r, const char *dir)
{
    const struct config *cfg = api_config();
    char csp[4600];
    /* the customer chat page may be framed by the insurer's site; staff pages never */
    const char *ancestors = "'none'";
    char chat_ancestors[4200];
    if (strcmp(dir, "chat") == 0) {
        snprintf(chat_ancestors, sizeof(chat_ancestors), "'self' %s",
                 cfg && cfg->webchat_allowed_origins ? cfg->webchat_allowed_origins : "");
        ancestors = chat_ancestors;
    } else {
        add_header(r, "X-Frame-Options", "DENY");
    }
    /* the agent desktop shows attachments it fetched with its bearer token as blob: URLs
     * (an <img> cannot send the Authorization header) */
    snprintf(csp, sizeof(csp),
             "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:%s; "
             "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors %s",
             strcmp(dir, "agent") == 0 ? " blob:" : "", ancestors);
    add_header(r, "Content-Security-Policy", csp);
    add_header(r, "Referrer-Policy", "no-referrer");
}

static void serve(struct http_req *r, const char *dir, const char *file)
{
    const char *type = file_type(file);
    if (!type) {
        not_found(r);
        return;
    }
    char *path = xasprintf("%s/%s/%s", static_web_root(), dir, file);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    free(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATIC_MAX_FILE) {
        if (fd >= 0)
            close(fd);
        not_found(r);
        return;
    }
    size_t len = (size_t)st.st_size, got = 0;
    char *data = xmalloc(len + 1);
    while (got < len) {
        ssize_t n = read(fd, data + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (strncmp(type, "text/html", 9) == 0)
        page_headers(r, dir);
    http_reply_raw(r, 200, type, data, got);
    free(data);
}

static void redirect(struct http_req *r, const char *to)
{
    add_header(r, "Location", to);
    http_reply_raw(r, 301, "text/plain; charset=utf-8", "", 0);
}

static void chat_index(struct http_req *r)
{
    serve(r, "chat", "index.html");
}
static void chat_file(struct http_req *r)
{
    serve(r, "chat", r->params[0]);
}
static void chat_redirect(struct http_req *r)
{
    redirect(r, "/chat/");
}
static void agent_index(struct http_req *r)
{
    serve(r, "agent", "index.html");
}
static void agent_file(struct http_req *r)
{
    serve(r, "agent", r->params[0]);
}
static void agent_redirect(struct http_req *r)
{
    redirect(r, "/agent/");
}
static void supervisor_index(struct http_req *r)
{
    serve(r, "supervisor", "index.html");
}
static void supervisor_file(struct http_req *r)
{
    serve(r, "supervisor", r->params[0]);
}
static void supervisor_redirect(struct http_req *r)
{
    redirect(r, "/supervisor/");
}
static void reports_index(struct http_req *r)
{
    serve(r, "reports", "index.html");
}
static void reports_file(struct http_req *r)
{
    serve(r, "reports", r->params[0]);
}
static void reports_redirect(struct http_req *r)
{
    redirect(r, "/reports/");
}
static void common_file(struct http_req *r)
{
    serve(r, "common", r->params[0]);
}

const struct http_route static_routes[] = {
    {EVHTTP_REQ_GET, "/chat", HTTP_AUTH_NONE, chat_redirect, NULL, "static", false},
    {EVHTTP_REQ_GET, "/chat/", HTTP_AUTH_NONE, chat_index, NULL, "static", false},
    {EVHTTP_REQ_GET, "/chat/{file}", HTTP_AUTH_NONE, chat_file, NULL, "static", false},
    {EVHTTP_REQ_GET, "/agent", HTTP_AUTH_NONE, agent_redirect, NULL, "static", false},
    {EVHTTP_REQ_GET, "/agent/", HTTP_AUTH_NONE, agent_index, NULL, "static", false},
    {EVHTTP_REQ_GET, "/agent/{file}", HTTP_AUTH_NONE, agent_file, NULL, "static", false},
    {EVHTTP_REQ_GET, "/supervisor", HTTP_AUTH_NONE, supervisor_redirect, NULL, "static", false},
    {EVHTTP_REQ_GET, "/supervisor/", HTTP_AUTH_NONE, supervisor_index, NULL, "static", false},
    {EVHTTP_REQ_GET, "/supervisor/{file}", HTTP_AUTH_NONE, supervisor_file, NULL, "static", false},
    {EVHTTP_REQ_GET, "/reports", HTTP_AUTH_NONE, reports_redirect, NULL, "static", false},
    {EVHTTP_REQ_GET, "/reports/", HTTP_AUTH_NONE, reports_index, NULL, "static", false},
    {EVHTTP_REQ_GET, "/reports/{file}", HTTP_AUTH_NONE, reports_file, NULL, "static", false},
    {EVHTTP_REQ_GET, "/common/{file}", HTTP_AUTH_NONE, common_file, NULL, "static", false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
