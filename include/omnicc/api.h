/* api.h - the route tables of the REST API, one per resource file, listed by http.c. */
#ifndef OMNICC_API_H
#define OMNICC_API_H

#include "http.h"

struct config;

extern const struct http_route api_system_routes[];       /* daemon/api_system.c */
extern const struct http_route api_interactions_routes[]; /* daemon/api_interactions.c */
extern const struct http_route api_customers_routes[];    /* daemon/api_customers.c */
extern const struct http_route api_cases_routes[];        /* daemon/api_cases.c */
extern const struct http_route api_agents_routes[];       /* daemon/api_agents.c */
extern const struct http_route api_queues_routes[];       /* daemon/api_queues.c */

/* The configuration handlers read (swapped on reload). */
const struct config *api_config(void);
void api_set_config(const struct config *cfg);
/* Frees what GET /v1/queues made once from the configuration (api_queues.c). */
void api_queues_free(void);

struct interaction;
struct redisReply;

/* Store one normalised interaction (one script call) and answer r once Redis has it:
 * 202 new, 200 duplicate, 503 when Redis did not confirm. Used by every channel adapter. */
void api_ingest(struct http_req *r, const struct interaction *ix);

/* Answer r with the JSON text a read script returned; list_keys (NULL-terminated) are
 * fields that must be arrays even when empty. */
void api_reply_script_json(struct http_req *r, const struct redisReply *reply, const char *err,
                           const char *const *list_keys);

void api_reply_script_json_status(struct http_req *r, int status, const struct redisReply *reply,
                                  const char *err, const char *const *list_keys);

/* Map a script error reply ("ERR_NOT_FOUND ...") to an HTTP error; true if it was one. */
bool api_reply_script_error(struct http_req *r, const char *err);

#endif
