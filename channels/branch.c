/* branch.c - the branch channel: bancassurance tellers at bank branches, through the terminal
 * bridge (a TLS listener for the branches' teller terminals, [branch] listen) and the admin
 * routes for branches, their figures and the lookup access log. A walk-in is an interaction
 * of channel "branch"; see docs/BRANCH.md for the protocol and channels/branch.h for the
 * files. */
#include "omnicc/channel.h"
#include "omnicc/config.h"

#include "branch.h"

static int branch_start(struct event_base *base, const struct config *cfg, char **err)
{
    branch_api_start(base, cfg);
    if (!cfg->branch_listen)
        return 0;
    branch_ops_init(cfg);
    if (branch_conn_start(base, cfg, err) < 0)
        return -1;
    branch_events_start(base, cfg);
    return 0;
}

static void branch_stop(void)
{
    branch_events_stop();
    branch_conn_stop();
    branch_api_stop();
}

/* SIGHUP: the CRL (and CA, certificate, serial map) are re-read; terminals stay connected
 * unless the new CRL revokes their certificate. */
static void branch_reload(const struct config *cfg)
{
    branch_conn_reload(cfg);
}

const struct channel branch_channel = {
    .name = "branch",
    .routes = branch_api_routes,
    .start = branch_start,
    .stop = branch_stop,
    .reload = branch_reload,
};
