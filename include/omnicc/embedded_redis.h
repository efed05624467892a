/* embedded_redis.h - with no [redis] url, omniccd runs its own redis-server on a unix socket
 * in state_dir (AOF on), restarts it if it dies and stops it on exit. */
#ifndef OMNICC_EMBEDDED_REDIS_H
#define OMNICC_EMBEDDED_REDIS_H

struct event_base;
struct config;

/* Starts redis-server; *url_out receives "unix:///state_dir/redis.sock". */
int embedded_redis_start(struct event_base *base, const struct config *cfg, char **url_out,
                         char **err);
void embedded_redis_stop(void);

#endif
