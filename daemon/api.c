/* api.c - what the REST resource files share: the live configuration, mapping of script
 * errors to HTTP statuses, and passing a script's JSON answer through. */
#include "omnicc/api.h"

#include <string.h>

#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/store.h"

static const struct config *live_cfg;

const struct config *api_config(void)
{
    return live_cfg;
}

void api_set_config(const struct config *cfg)
{
    live_cfg = cfg;
    api_queues_free(); /* its pages are made from the configuration */
}

/* Scripts fail with "ERR_<KIND> message"; anything else from Redis is our fault or its. */
bool api_reply_script_error(struct http_req *r, const char *err)
{
    static const struct {
        const char *prefix;
        int status;
        const char *code;
    } map[] = {
        {"ERR_NOT_FOUND ", 404, "not_found"},
        {"ERR_CONFLICT ", 409, "conflict"},
        {"ERR_INVALID ", 400, "invalid"},
        {"ERR_FORBIDDEN ", 403, "forbidden"},
    };
    if (!err)
        return false;
    if (store_error_is_transient(err)) {
        http_reply_unavailable(r, err);
        return true;
    }
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t n = strlen(map[i].prefix);
        if (strncmp(err, map[i].prefix, n) == 0) {
            http_reply_error(r, map[i].status, map[i].code, "%s", err + n);
            return true;
        }
    }
    log_error("api: unexpected storage error: %s", err);
    http_reply_error(r, 500, "internal", "storage error");
    return true;
}
