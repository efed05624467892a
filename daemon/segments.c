/* segments.c - value (annual premium) x loyalty (tenure, few claims) -> segment -> boost.
 * The boost is seconds of head start in the waiting order (see docs/ROUTING.md). */
#include "omnicc/segments.h"

#include <stdbool.h>
#include <string.h>

#include "omnicc/config.h"

const char *segment_compute(const struct config *cfg, const struct segment_input *in)
{
    bool high = in->annual_premium >= cfg->premium_high;
    bool medium = !high && in->annual_premium >= cfg->premium_medium;
    bool loyal = in->tenure_years >= cfg->tenure_loyal && in->claims_last_3y <= cfg->claims_loyal_max;
    if (high && loyal)
        return "platinum";
    if (high || (medium && loyal))
        return "gold";
    if (medium || loyal)
        return "silver";
    return "standard";
}

int segment_boost(const struct config *cfg, const char *segment)
{
    if (!segment)
        return 0;
    if (strcmp(segment, "platinum") == 0)
        return cfg->boost_platinum;
    if (strcmp(segment, "gold") == 0)
        return cfg->boost_gold;
    if (strcmp(segment, "silver") == 0)
        return cfg->boost_silver;
    return 0;
}
