/* router.h - routing as the daemon sees it. The decisions themselves are Lua scripts (see
 * daemon/scripts/lib.lua and docs/ROUTING.md), made where their trigger happens: an
 * ingest, an agent becoming available or freeing capacity, an offer ending, a deadline.
 * This module keeps what is not a decision: the configuration written to Redis on connect,
 * the deadline timer that runs the sweep, agent eligibility, and queue selection. */
#ifndef OMNICC_ROUTER_H
#define OMNICC_ROUTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct config;
struct interaction;

void router_start(struct event_base *base, const struct config *cfg);
void router_stop(void);
/* A deadline is known to fall at due_ms (epoch ms): make sure the sweep runs by then. */
void router_deadline_at(int64_t due_ms);

/* The queue an interaction waits in: its explicit queue, else the default queue when it
 * serves the channel, else the first queue that does. NULL when none serves it. */
const char *router_pick_queue(const struct config *cfg, const struct interaction *ix);
bool router_queue_serves(const struct config *cfg, const char *queue, const char *channel);

/* Validate an agent document (POST: full; PATCH: partial merged onto current by the
 * caller) into the JSON the agent_upsert script takes, with the eligible queues computed
 * from skills. NULL and *err (naming the field) on invalid input. */
json_t *router_agent_doc(const struct config *cfg, json_t *body, char **err);

/* The routing pool of a queue (or of its virtual NAME~overflow queue): queues with the same
 * requirements and strategy share their agent indexes (docs/ROUTING.md). Caller frees. */
struct queue_conf;
char *router_queue_pool(const struct queue_conf *q, bool overflow);

/* The configuration documents for the sync_config script, NULL-terminated (caller frees
 * the array and each): the routing keys and the report days, then a document per page of
 * queues (router.c: SYNC_QUEUES_PER_PAGE). */
char **router_sync_documents(void);

#endif
