/* events.h - real-time events to agents and supervisors over SSE. Every state change
 * script appends to one Redis stream ("events", and the agent's own stream with the same
 * entry id); each daemon instance reads it (XREAD BLOCK on its reader connection) and
 * writes each entry to its local SSE clients, so whichever instance made a decision, the
 * instance holding the agent's connection delivers it. Entry ids are the SSE ids:
 * reconnecting with Last-Event-ID replays what was missed from the stream. */
#ifndef OMNICC_EVENTS_H
#define OMNICC_EVENTS_H

struct event_base;
struct http_req;

void events_start(struct event_base *base);
void events_stop(void);
/* Take over r as an SSE stream: agent_id NULL for every event (supervisor). */
void events_subscribe(struct http_req *r, const char *agent_id);
int events_client_count(void);

/* Web chat visitors (channels/webchat.c): take over r as the SSE stream of one chat
 * session. It gets the entries of the 'events' stream that carry a 'session' field equal
 * to session (agent ids blanked), and replays from the session's own stream
 * 'chat:<session>:events' (same entry ids) on Last-Event-ID. on_gone (may be NULL) runs
 * when that stream closes, with the session id. */
void events_subscribe_session(struct http_req *r, const char *session,
                              void (*on_gone)(const char *session));
/* One observer of every entry read from the stream, on every instance (NULL to remove):
 * type, agent, session ("" when absent), data (JSON text), entry id. */
typedef void events_tap_fn(const char *type, const char *agent, const char *session,
                           const char *data, const char *id);
void events_set_tap(events_tap_fn *tap);

#endif
