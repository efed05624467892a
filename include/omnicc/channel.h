/* channel.h - an inbound/outbound channel adapter. Each adapter lives in channels/, knows
 * its wire format and nothing of Redis: it parses and validates, fills a struct interaction
 * and hands it to api_ingest(). Each exports one const struct channel, listed once in
 * channels/channels.c; the core never switches over channel names. */
#ifndef OMNICC_CHANNEL_H
#define OMNICC_CHANNEL_H

struct event_base;
struct config;
struct http_route;

struct channel {
    const char *name;                /* "voice", "email", ... (as in the interaction model) */
    const struct http_route *routes; /* webhooks and channel APIs, or NULL */
    /* Optional: background work (pollers, workers). 0 or -1 with *err. */
    int (*start)(struct event_base *base, const struct config *cfg, char **err);
    void (*stop)(void);
    /* Optional: SIGHUP (re-read certificates, CRLs ...); the running config is passed. */
    void (*reload)(const struct config *cfg);
};

extern const struct channel *const channel_table[];

int channels_start(struct event_base *base, const struct config *cfg, char **err);
void channels_stop(void);
void channels_reload(const struct config *cfg);

#endif
