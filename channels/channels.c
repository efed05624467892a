/* channels.c - the one table of channel adapters. Adding a channel: a new file exporting a
 * const struct channel, and one line here. */
#include "omnicc/channel.h"

#include <stddef.h>

#include "branch.h"
#include "email.h"
#include "fax.h"
#include "voice.h"
#include "webchat.h"

const struct channel *const channel_table[] = {
    &webchat_channel,
    &voice_channel,
    &branch_channel,
    &email_channel,
    &fax_channel,
    NULL,
};

int channels_start(struct event_base *base, const struct config *cfg, char **err)
{
    for (const struct channel *const *c = channel_table; *c; c++)
        if ((*c)->start && (*c)->start(base, cfg, err) < 0)
            return -1;
    return 0;
}

void channels_reload(const struct config *cfg)
{
    for (const struct channel *const *c = channel_table; *c; c++)
        if ((*c)->reload)
            (*c)->reload(cfg);
}

void channels_stop(void)
{
    for (const struct channel *const *c = channel_table; *c; c++)
        if ((*c)->stop)
            (*c)->stop();
}
