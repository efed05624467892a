/* config.h - the daemon's configuration: an INI file read through one table of typed keys
 * (type, default, bounds, reload flag, one line of documentation). Errors read
 * "file:line: key: what is wrong"; a failed reload keeps the old config. */
#ifndef OMNICC_CONFIG_H
#define OMNICC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CONFIG_MAX_LISTEN 8
#define CONFIG_MAX_QUEUES 5000
#define CONFIG_MAX_QUEUE_SKILLS 16

struct skill_req {
    char *name;
    int level; /* 1-5 */
};

#define CONFIG_MAX_RULES 256

/* [routing] rule = channel=voice intent=claims skill=lang_es -> claims
 * Every condition given must hold; the first matching rule names the queue. */
struct routing_rule {
    char *channel;  /* NULL: any */
    char *intent;   /* NULL: any */
    char *skill;    /* NULL: any; else one of the interaction's skills */
    char *queue;
    int line;
};

struct queue_conf {
    char *name;
    char *channels;         /* space-separated channel names this queue serves */
    char *skills;           /* "claims:2 lang_es:1" as written */
    struct skill_req skill[CONFIG_MAX_QUEUE_SKILLS];
    int n_skills;
    int sla_seconds;
    char *strategy;         /* longest-idle | least-occupied | round-robin */
    int sticky_seconds;
    int overflow_after;
    char *overflow_skills;  /* relaxed requirements once overflow_after has passed */
    char *overflow_queue;
    int max_wait;
    char *on_max_wait;      /* close | callback | voicemail | auto-reply */
    int line;               /* where the section starts, for errors */
};

struct config {
    char *path;
    /* [daemon] */
    char *state_dir;
    int log_level;
    /* [http] */
    char *listen[CONFIG_MAX_LISTEN];
    int n_listen;
    long long max_body;
    long long import_max_body;
    int read_timeout;
    /* [redis] */
    char *redis_url;
    char *redis_user;
    char *redis_password_file;
    char *redis_prefix;
    char *redis_server;       /* embedded mode: the redis-server binary */
    char *redis_appendfsync;  /* embedded mode: everysec | always */
    int redis_command_timeout;/* ms */
    /* [api] */
    char *api_token;
    char *api_token_file;
    /* [identity] */
    char *default_country_code;
    char *policy_pattern;
    /* [segments] */
    double premium_high;
    double premium_medium;
    int tenure_loyal;
    int claims_loyal_max;
    int boost_platinum;
    int boost_gold;
    int boost_silver;
    /* [routing] */
    char *default_queue;
    int priority_step;
    int boost_voice, boost_webchat, boost_branch, boost_email, boost_fax;
    int offer_timeout_voice, offer_timeout_webchat, offer_timeout_branch, offer_timeout_email,
        offer_timeout_fax;
    int reject_block;
    int max_no_answer;
    int stats_window;

    struct routing_rule rules[CONFIG_MAX_RULES];
    int n_rules;

    struct queue_conf *queues[CONFIG_MAX_QUEUES];
    int n_queues;

    /* derived at load time */
    char *api_token_value;     /* from api_token or api_token_file */
    char *redis_password;      /* from redis_password_file */
};

/* Load and validate; on error returns NULL and *err = "file:line: key: problem". */
struct config *config_load(const char *path, char **err);
void config_free(struct config *cfg);
/* Print a sample configuration generated from the key table (every key documented). */
void config_print_sample(FILE *out);
const struct queue_conf *config_queue(const struct config *cfg, const char *name);
/* Channel priority base (seconds) for a channel name; 0 when unknown. */
int config_channel_boost(const struct config *cfg, const char *channel);

#endif
