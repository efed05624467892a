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

#define CONFIG_MAX_BRANCHES 1000

/* [branch ID]: one bank branch whose tellers use the terminal bridge (channels/branch*.c).
 * services: "SERVICE:QUEUE ..." (policy_inquiry, claim_fnol, new_policy, documents). */
struct branch_conf {
    char *id;
    char *name, *bank, *region;
    char *services;
    int counters;
    int line;
};

#define CONFIG_MAX_MAILBOXES 64
#define CONFIG_MAX_SENTINELS 16

/* [mailbox NAME]: one IMAP(S) mailbox polled by the email channel (channels/email_imap.c). */
struct mailbox_conf {
    char *name;
    char *url;              /* imap://host:port/INBOX or imaps://... */
    char *user, *password_file;
    char *starttls;         /* required | try | no (imap:// only) */
    char *tls_verify;       /* yes | no */
    char *ca_file;
    int poll_interval;      /* seconds */
    int batch;              /* messages fetched per round */
    char *queue;
    char *processed;        /* flag (\Seen) | move */
    char *move_to;          /* folder for processed = move */
    char *address;          /* From of replies and acknowledgements */
    char *display_name;
    char *ack_reply;        /* no | yes: acknowledge new cases automatically */
    int ack_rate_seconds;   /* at most one acknowledgement per sender per this long */
    char *ack_text;         /* {case} is replaced by the case id */
    char *channel;          /* email | fax (fax-to-email: channels/fax_mail.c) */
    char *fax_number_regex; /* channel = fax: the sender's number, first group */
    char *password;         /* derived: from password_file */
    int line;
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
    char *web_root;           /* static pages (web chat, agent desktop, supervisor) */
    /* [redis] */
    char *redis_url;
    char *redis_user;
    char *redis_password_file;
    char *redis_prefix;
    char *redis_server;       /* embedded mode: the redis-server binary */
    char *redis_appendfsync;  /* embedded mode: everysec | always */
    int redis_command_timeout;/* ms */
    char *redis_sentinels;    /* "host:port host:port ...": find the primary through Sentinel */
    char *redis_sentinel_user;          /* AUTH to the sentinels (their requirepass / ACL) */
    char *redis_sentinel_password_file;
    char *redis_master_name;  /* the name the sentinels monitor the primary under */
    int redis_ack_replicas;   /* WAIT for this many replicas after each state change */
    int redis_ack_timeout;    /* ms the WAIT may take */
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
    /* [analytics] (docs/ANALYTICS.md) */
    char *analytics_rollups;        /* yes | no: hour-bucket report counters */
    char *analytics_timezone;       /* the insurer's zone for report periods (tz name) */
    int analytics_export_maxlen;    /* entries kept in the export stream */
    int analytics_report_max_days;  /* longest report period */
    int analytics_report_max_fields; /* most counter fields one report reads */
    double retention_days[5];       /* per channel (voice email fax branch webchat); 0: keep */
    int retention_interval;         /* seconds between retention runs */

    struct routing_rule rules[CONFIG_MAX_RULES];
    int n_rules;

    /* [webchat] (channels/webchat.c) */
    char *webchat_allowed_origins;   /* space-separated origins allowed by CORS */
    char *webchat_topics;            /* "topic[:queue] ..." offered by the pre-chat form */
    char *webchat_visitor_key_file;  /* HMAC key of visitor tokens */
    char *webchat_identity_secret_file; /* HMAC key shared with the insurer's site */
    int webchat_max_message;         /* bytes */
    int webchat_visitor_rate;        /* messages per visitor per minute */
    int webchat_ip_rate;             /* chat API requests per IP per minute */
    int webchat_ip_session_rate;     /* new chat sessions per IP per hour */
    int webchat_visitor_ttl;         /* seconds a visitor token (cookie) lasts */
    int webchat_leave_grace;         /* seconds a waiting visitor may be disconnected */
    char *webchat_cookie_secure;     /* no | yes: Secure; SameSite=None; Partitioned */

    /* [branch] (channels/branch*.c): the terminal bridge, and the [branch ID] sections */
    char *branch_listen;
    char *branch_ca, *branch_cert, *branch_key, *branch_crl, *branch_serial_map;
    long long branch_max_frame;
    int branch_rate, branch_burst;
    int branch_result_ttl;
    char *branch_purposes;
    int branch_hello_timeout, branch_idle_timeout;
    int branch_max_connections;
    int branch_event_poll_ms;
    struct branch_conf *branches[CONFIG_MAX_BRANCHES];
    int n_branches;

    /* [voice] (channels/voice*.c) */
    char *voice_auth_token_file, *voice_account_sid, *voice_public_url, *voice_api_base;
    char *voice_caller_id;
    char *voice_menu, *voice_welcome, *voice_menu_prompt;
    char *voice_ask_policy, *voice_policy_prompt, *voice_policy_format; /* ask_policy: no|yes */
    char *voice_language, *voice_say_voice;
    char *voice_wait_message, *voice_position_message, *voice_estimate_message;
    int voice_hold_seconds;
    char *voice_hold_music_url;
    char *voice_callback_prompt, *voice_callback_confirm, *voice_connect_message;
    char *voice_goodbye_message;
    int voice_dial_timeout;
    char *voice_record;                 /* no | yes */
    char *voice_cti_secret_file;
    int voice_cti_window;

    /* [email] (channels/email_*.c): the SMTP relay, limits, and the [mailbox NAME] sections */
    char *email_smtp_url;               /* smtp://host:port or smtps://host:port; unset: no sending */
    char *email_smtp_user, *email_smtp_password_file;
    char *email_smtp_starttls;          /* required | try | no */
    char *email_smtp_ca_file;           /* CA bundle for the relay's certificate */
    int email_smtp_workers;
    int email_smtp_timeout;             /* seconds */
    int email_retry_base, email_retry_max, email_max_attempts;
    int email_claim_idle;               /* seconds before another daemon claims a pending send */
    int email_outbox_poll_ms;
    long long email_max_message, email_max_attachment, email_max_attachments_total;
    int email_max_attachments;
    char *email_inbound_token_file;
    char *email_from_address, *email_from_name;
    char *email_msgid_domain;
    char *email_smtp_password;          /* derived */
    char *email_inbound_token;          /* derived */
    struct mailbox_conf *mailboxes[CONFIG_MAX_MAILBOXES];
    int n_mailboxes;

    /* [fax] (channels/fax*.c, docs/FAX.md) */
    char *fax_phaxio_token_file, *fax_phaxio_callback_url;
    char *fax_telnyx_public_key;
    int fax_telnyx_window;
    char *fax_gateway_secret_file;
    int fax_gateway_window;
    long long fax_max_document;
    int fax_max_pages;
    int fax_media_timeout, fax_media_attempts;
    char *fax_ocr;                      /* yes | no */
    int fax_ocr_workers, fax_ocr_queue;
    char *fax_ocr_languages;
    char *fax_outbound;                 /* none | phaxio | telnyx | hylafax */
    char *fax_hylafax_host;             /* host[:port] of hfaxd */
    int fax_hylafax_poll, fax_hylafax_timeout;
    char *fax_telnyx_api_base, *fax_telnyx_api_key_file, *fax_telnyx_connection_id;
    char *fax_telnyx_from, *fax_public_url, *fax_media_secret_file;
    int fax_media_link_ttl;
    char *fax_phaxio_api_base, *fax_phaxio_api_key, *fax_phaxio_api_secret_file;
    int fax_send_attempts, fax_claim_idle, fax_outbox_poll_ms, fax_send_concurrency;
    int fax_stuck_after;

    struct queue_conf *queues[CONFIG_MAX_QUEUES];
    int n_queues;

    /* derived at load time */
    char *api_token_value;     /* from api_token or api_token_file */
    char *redis_password;      /* from redis_password_file */
    char *redis_sentinel_password; /* from redis_sentinel_password_file */
};

/* Load and validate; on error returns NULL and *err = "file:line: key: problem". */
struct config *config_load(const char *path, char **err);
/* "host:port" or "[v6]:port" -> host, port; -1 when malformed. */
int config_host_port(const char *s, char *host, size_t hostsz, int *port);
/* The same from an open stream (a test's or fuzzer's buffer through fmemopen); path names
 * it in errors. The caller closes f. */
struct config *config_read(FILE *f, const char *path, char **err);
void config_free(struct config *cfg);
/* Print a sample configuration generated from the key table (every key documented). */
void config_print_sample(FILE *out);
const struct queue_conf *config_queue(const struct config *cfg, const char *name);
const struct mailbox_conf *config_mailbox(const struct config *cfg, const char *name);
/* Channel priority base (seconds) for a channel name; 0 when unknown. */
int config_channel_boost(const struct config *cfg, const char *channel);

#endif
