/* segments.h - policyholder segments (value x loyalty) and the routing boost each earns. */
#ifndef OMNICC_SEGMENTS_H
#define OMNICC_SEGMENTS_H

struct config;

struct segment_input {
    double annual_premium;
    int tenure_years;
    int claims_last_3y;
};

/* "platinum" (high value, loyal), "gold", "silver" or "standard". */
const char *segment_compute(const struct config *cfg, const struct segment_input *in);
/* Boost in seconds of queue position for a segment name (0 for unknown/standard). */
int segment_boost(const struct config *cfg, const char *segment);

#endif
