/* config.c - the INI reader and the one table of keys. Each key has a type, a default,
 * bounds, whether SIGHUP may change it, and a line of documentation from which
 * `omniccd --print-config` writes the sample file. Sections named "[queue NAME]" repeat. */
#include "omnicc/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <regex.h>
#include <string.h>

#include "omnicc/identity.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

enum cfg_type { CFG_STR, CFG_WORDS, CFG_INT, CFG_SIZE, CFG_DOUBLE, CFG_LEVEL, CFG_LISTEN, CFG_CHOICE, CFG_RULE };

struct cfg_key {
    const char *section; /* "queue" for [queue NAME] sections */
    const char *key;
    enum cfg_type type;
    size_t offset;       /* into struct config, or struct queue_conf for "queue" */
    long long min, max;
    const char *def;     /* NULL: no default */
    const char *choices; /* CFG_CHOICE: "|a|b|c|" */
    const char *doc;
};

#define C(f) offsetof(struct config, f)
#define Q(f) offsetof(struct queue_conf, f)
#define M(f) offsetof(struct mailbox_conf, f)
#define B(f) offsetof(struct branch_conf, f)

static const struct cfg_key cfg_keys[] = {
    {"daemon", "state_dir", CFG_STR, C(state_dir), 1, 200, "/var/lib/omnicc", NULL,
     "Directory for attachments, the embedded Redis and its AOF."},
    {"daemon", "log_level", CFG_LEVEL, C(log_level), 0, 0, "info", NULL,
     "error, warn, info or debug."},
    {"http", "listen", CFG_LISTEN, C(listen), 0, 0, "127.0.0.1:8080", NULL,
     "host:port to serve the API on; repeat the key for several addresses."},
    {"http", "max_body", CFG_SIZE, C(max_body), 1024, 64LL << 20, "1048576", NULL,
     "Largest request body in bytes; larger requests get 413."},
    {"http", "import_max_body", CFG_SIZE, C(import_max_body), 1024, 1LL << 30, "67108864", NULL,
     "Largest policyholder import (NDJSON) accepted by POST /v1/customers/import."},
    {"http", "read_timeout", CFG_INT, C(read_timeout), 1, 3600, "30", NULL,
     "Seconds a client may take to send a request."},
    {"http", "web_root", CFG_STR, C(web_root), 1, 1024, NULL, NULL,
     "Directory of the web pages (/chat/, /agent/, /supervisor/). Default: the source tree's "
     "web/ when built from source, else the installed datadir/omnicc/web."},
    {"redis", "url", CFG_STR, C(redis_url), 1, 1024, NULL, NULL,
     "redis://host:port/db or unix:///path. Empty: omniccd runs its own redis-server."},
    {"redis", "user", CFG_STR, C(redis_user), 1, 128, NULL, NULL, "ACL user name (AUTH user pass; config/redis-acl.conf has its rules)."},
    {"redis", "password_file", CFG_STR, C(redis_password_file), 1, 1024, NULL, NULL,
     "File holding the Redis password (first line)."},
    {"redis", "prefix", CFG_STR, C(redis_prefix), 1, 64, "omnicc", NULL,
     "Prefix of every key, so several deployments can share one Redis."},
    {"redis", "command_timeout", CFG_INT, C(redis_command_timeout), 50, 60000, "2000", NULL,
     "Milliseconds to wait for a Redis reply before reconnecting (requests get 503)."},
    {"redis", "sentinels", CFG_WORDS, C(redis_sentinels), 1, 4096, NULL, NULL,
     "host:port of each Redis Sentinel (space-separated or the key repeated); replaces url: "
     "the primary is asked of the sentinels and followed through failovers."},
    {"redis", "master_name", CFG_STR, C(redis_master_name), 1, 128, NULL, NULL,
     "Name the sentinels monitor the primary under (required with sentinels)."},
    {"redis", "sentinel_user", CFG_STR, C(redis_sentinel_user), 1, 128, NULL, NULL,
     "User name for the sentinels' ACL (AUTH user pass), with sentinel_password_file."},
    {"redis", "sentinel_password_file", CFG_STR, C(redis_sentinel_password_file), 1, 1024, NULL,
     NULL, "File holding the sentinels' password (first line; their requirepass): omniccd "
     "authenticates before asking for the primary and before subscribing to failovers."},
    {"redis", "ack_replicas", CFG_INT, C(redis_ack_replicas), 0, 16, "0", NULL,
     "Replicas that must have each state change (WAIT) before it is acknowledged; fewer in "
     "time: 503 + Retry-After. 0: acknowledge once the primary has it."},
    {"redis", "ack_timeout", CFG_INT, C(redis_ack_timeout), 10, 60000, "1000", NULL,
     "Milliseconds the replicas have to confirm a state change (ack_replicas > 0)."},
    {"redis", "server", CFG_STR, C(redis_server), 1, 1024, "redis-server", NULL,
     "Embedded mode only: the redis-server binary to run."},
    {"redis", "appendfsync", CFG_CHOICE, C(redis_appendfsync), 0, 0, "everysec",
     "|everysec|always|", "Embedded mode only: AOF fsync policy (always loses nothing acknowledged)."},
    {"api", "token", CFG_STR, C(api_token), 16, 512, NULL, NULL,
     "Admin bearer token (at least 16 characters). Prefer token_file."},
    {"api", "token_file", CFG_STR, C(api_token_file), 1, 1024, NULL, NULL,
     "File holding the admin bearer token; re-read on SIGHUP."},
    {"identity", "default_country_code", CFG_STR, C(default_country_code), 1, 3, "34", NULL,
     "Country calling code for phone numbers written without one (digits only)."},
    {"identity", "policy_pattern", CFG_STR, C(policy_pattern), 1, 512, "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}",
     NULL, "POSIX extended regex a policy number must match in full (after upper-casing)."},
    {"segments", "premium_high", CFG_DOUBLE, C(premium_high), 0, 100000000, "2000", NULL,
     "Annual premium from which a policyholder is high value."},
    {"segments", "premium_medium", CFG_DOUBLE, C(premium_medium), 0, 100000000, "600", NULL,
     "Annual premium from which a policyholder is medium value."},
    {"segments", "tenure_loyal", CFG_INT, C(tenure_loyal), 0, 100, "5", NULL,
     "Years as a customer from which a policyholder counts as loyal..."},
    {"segments", "claims_loyal_max", CFG_INT, C(claims_loyal_max), 0, 100, "2", NULL,
     "...provided they made at most this many claims in the last 3 years."},
    {"segments", "boost_platinum", CFG_INT, C(boost_platinum), 0, 86400, "600", NULL,
     "Seconds of queue head start for high value and loyal policyholders."},
    {"segments", "boost_gold", CFG_INT, C(boost_gold), 0, 86400, "300", NULL,
     "Seconds of head start for high value, or medium value and loyal."},
    {"segments", "boost_silver", CFG_INT, C(boost_silver), 0, 86400, "120", NULL,
     "Seconds of head start for medium value, or loyal."},
    {"routing", "default_queue", CFG_STR, C(default_queue), 1, 64, "default", NULL,
     "Queue for interactions that name none and match no rule."},
    {"routing", "rule", CFG_RULE, C(rules), 0, 0, NULL, NULL,
     "Repeatable: channel=voice intent=claims skill=lang_es -> QUEUE (first match wins)."},
    {"routing", "priority_step", CFG_INT, C(priority_step), 0, 3600, "60", NULL,
     "Seconds of head start per point of an interaction's explicit priority (0-100)."},
    {"routing", "boost_voice", CFG_INT, C(boost_voice), 0, 86400, "120", NULL,
     "Channel base priority in seconds: a caller on the line waits least."},
    {"routing", "boost_webchat", CFG_INT, C(boost_webchat), 0, 86400, "90", NULL,
     "Channel base priority for web chat."},
    {"routing", "boost_branch", CFG_INT, C(boost_branch), 0, 86400, "90", NULL,
     "Channel base priority for branch work."},
    {"routing", "boost_email", CFG_INT, C(boost_email), 0, 86400, "0", NULL,
     "Channel base priority for email."},
    {"routing", "boost_fax", CFG_INT, C(boost_fax), 0, 86400, "0", NULL,
     "Channel base priority for fax."},
    {"routing", "offer_timeout_voice", CFG_INT, C(offer_timeout_voice), 3, 3600, "15", NULL,
     "Seconds an agent has to accept a voice offer before it moves on (a no-answer)."},
    {"routing", "offer_timeout_webchat", CFG_INT, C(offer_timeout_webchat), 3, 3600, "30", NULL,
     "Seconds to accept a web chat offer."},
    {"routing", "offer_timeout_branch", CFG_INT, C(offer_timeout_branch), 3, 3600, "60", NULL,
     "Seconds to accept branch work."},
    {"routing", "offer_timeout_email", CFG_INT, C(offer_timeout_email), 3, 86400, "120", NULL,
     "Seconds to accept an email offer."},
    {"routing", "offer_timeout_fax", CFG_INT, C(offer_timeout_fax), 3, 86400, "120", NULL,
     "Seconds to accept a fax offer."},
    {"routing", "reject_block", CFG_INT, C(reject_block), 0, 86400, "300", NULL,
     "Seconds during which an agent who rejected (or missed) an offer is not offered it again."},
    {"routing", "max_no_answer", CFG_INT, C(max_no_answer), 1, 100, "3", NULL,
     "Consecutive offer timeouts after which an agent is set away (reason no-answer)."},
    {"routing", "stats_window", CFG_INT, C(stats_window), 1, 120, "15", NULL,
     "Minutes of the sliding window for queue statistics."},
    {"analytics", "rollups", CFG_CHOICE, C(analytics_rollups), 0, 0, "yes", "|yes|no|",
     "yes: the state-changing scripts keep hour-bucket report counters (docs/ANALYTICS.md)."},
    {"analytics", "timezone", CFG_STR, C(analytics_timezone), 1, 64, "UTC", NULL,
     "The insurer's time zone (tz name, e.g. Europe/Madrid) for report days and weeks."},
    {"analytics", "export_maxlen", CFG_INT, C(analytics_export_maxlen), 1000, 2000000000, "10000000", NULL,
     "Entries kept in the warehouse export stream (docs/EXPORT.md); older ones are trimmed."},
    {"analytics", "report_max_days", CFG_INT, C(analytics_report_max_days), 1, 3660, "400", NULL,
     "Longest period one service report may cover."},
    {"analytics", "report_max_fields", CFG_INT, C(analytics_report_max_fields), 100, 100000000, "200000", NULL,
     "Most hour-counter fields one service report may read; a larger one is refused (400) rather than hold Redis."},
    {"analytics", "retention_voice", CFG_DOUBLE, C(retention_days[0]), 0, 36500, "0", NULL,
     "Days voice interactions keep their content (texts, transcript, attachments); 0: forever."},
    {"analytics", "retention_email", CFG_DOUBLE, C(retention_days[1]), 0, 36500, "0", NULL,
     "Days email interactions keep their content (texts, transcript, attachments); 0: forever."},
    {"analytics", "retention_fax", CFG_DOUBLE, C(retention_days[2]), 0, 36500, "0", NULL,
     "Days fax interactions keep their content (texts, transcript, attachments); 0: forever."},
    {"analytics", "retention_branch", CFG_DOUBLE, C(retention_days[3]), 0, 36500, "0", NULL,
     "Days branch interactions keep their content (texts, transcript, attachments); 0: forever."},
    {"analytics", "retention_webchat", CFG_DOUBLE, C(retention_days[4]), 0, 36500, "0", NULL,
     "Days webchat interactions keep their content (texts, transcript, attachments); 0: forever."},
    {"analytics", "retention_interval", CFG_INT, C(retention_interval), 1, 86400, "60", NULL,
     "Seconds between two runs of the retention job (each run is bounded, docs/ANALYTICS.md)."},
    {"webchat", "allowed_origins", CFG_STR, C(webchat_allowed_origins), 0, 4096, "", NULL,
     "Origins (https://www.insurer.example ...) whose pages may embed the chat widget (CORS)."},
    {"webchat", "topics", CFG_STR, C(webchat_topics), 1, 4096, "general", NULL,
     "Topics of the pre-chat form, each topic or topic:queue (default queue when omitted)."},
    {"webchat", "visitor_key_file", CFG_STR, C(webchat_visitor_key_file), 1, 1024, NULL, NULL,
     "HMAC key of visitor tokens; default state_dir/webchat.key (created). Share it between instances."},
    {"webchat", "identity_secret_file", CFG_STR, C(webchat_identity_secret_file), 1, 1024, NULL, NULL,
     "Secret shared with the insurer's site backend for identity hashes (unset: no logged-in identity)."},
    {"webchat", "max_message", CFG_INT, C(webchat_max_message), 16, 65536, "2000", NULL,
     "Largest chat message in bytes (413 above)."},
    {"webchat", "visitor_rate", CFG_INT, C(webchat_visitor_rate), 1, 100000, "30", NULL,
     "Messages one visitor may send per minute (429 above)."},
    {"webchat", "ip_rate", CFG_INT, C(webchat_ip_rate), 1, 1000000, "600", NULL,
     "Chat API requests per client IP address per minute, per instance (429 above)."},
    {"webchat", "ip_session_rate", CFG_INT, C(webchat_ip_session_rate), 1, 1000000, "30", NULL,
     "New chat sessions per client IP address per hour (429 above)."},
    {"webchat", "visitor_ttl", CFG_INT, C(webchat_visitor_ttl), 60, 31536000, "2592000", NULL,
     "Seconds a visitor token (cookie) stays valid."},
    {"webchat", "leave_grace", CFG_INT, C(webchat_leave_grace), 1, 3600, "60", NULL,
     "Seconds a waiting visitor may stay disconnected before the chat is abandoned."},
    {"webchat", "cookie_secure", CFG_CHOICE, C(webchat_cookie_secure), 0, 0, "no", "|no|yes|",
     "yes: the visitor cookie is Secure; SameSite=None; Partitioned (HTTPS, embedded cross-site)."},
    {"branch", "listen", CFG_STR, C(branch_listen), 1, 256, NULL, NULL,
     "host:port of the branch terminal bridge (TLS, client certificates required); unset: off."},
    {"branch", "ca", CFG_STR, C(branch_ca), 1, 1024, NULL, NULL,
     "PEM file of the CA that issues branch terminal certificates (only it is trusted)."},
    {"branch", "cert", CFG_STR, C(branch_cert), 1, 1024, NULL, NULL,
     "PEM certificate chain the bridge presents to terminals."},
    {"branch", "key", CFG_STR, C(branch_key), 1, 1024, NULL, NULL,
     "PEM private key of that certificate."},
    {"branch", "crl", CFG_STR, C(branch_crl), 1, 1024, NULL, NULL,
     "PEM CRL of the terminal CA (required with listen); re-read on SIGHUP."},
    {"branch", "serial_map", CFG_STR, C(branch_serial_map), 1, 1024, NULL, NULL,
     "Optional file of lines \"SERIAL_HEX BRANCH TERMINAL\" naming certificates without names."},
    {"branch", "max_frame", CFG_SIZE, C(branch_max_frame), 1024, 16LL << 20, "65536", NULL,
     "Largest frame in bytes; a larger length prefix closes the connection at once."},
    {"branch", "rate", CFG_INT, C(branch_rate), 1, 1000000, "50", NULL,
     "Requests per second one branch may send (token bucket, per instance)."},
    {"branch", "burst", CFG_INT, C(branch_burst), 1, 1000000, "200", NULL,
     "Requests a branch may send at once above its rate."},
    {"branch", "result_ttl", CFG_INT, C(branch_result_ttl), 60, 86400 * 90, "1209600", NULL,
     "Seconds a request's result is kept for resends of the same msg_id (spooled work)."},
    {"branch", "purposes", CFG_STR, C(branch_purposes), 1, 1024,
     "service claim sale complaint documents verification", NULL,
     "Purpose codes a teller must give for a customer lookup (recorded in the access log)."},
    {"branch", "hello_timeout", CFG_INT, C(branch_hello_timeout), 1, 600, "10", NULL,
     "Seconds a terminal has to complete TLS and send HELLO."},
    {"branch", "idle_timeout", CFG_INT, C(branch_idle_timeout), 5, 86400, "120", NULL,
     "Seconds without any frame after which a terminal is disconnected (terminals PING)."},
    {"branch", "max_connections", CFG_INT, C(branch_max_connections), 1, 1000000, "10000", NULL,
     "Terminal connections accepted at once by this instance."},
    {"branch", "event_poll_ms", CFG_INT, C(branch_event_poll_ms), 10, 5000, "100", NULL,
     "How often the event stream is read for connected terminals (ms)."},
    {"voice", "auth_token_file", CFG_STR, C(voice_auth_token_file), 1, 1024, NULL, NULL,
     "File holding the Twilio auth token (first line; re-read on SIGHUP); unset: the Twilio "
     "webhooks answer 404."},
    {"voice", "account_sid", CFG_STR, C(voice_account_sid), 1, 64, NULL, NULL,
     "Twilio account SID; when set, webhooks of any other account are refused (403)."},
    {"voice", "public_url", CFG_STR, C(voice_public_url), 1, 512, NULL, NULL,
     "Base URL Twilio reaches omniccd at (https://cc.example.com, no trailing slash): "
     "signatures are checked over it, TwiML links to it. Required with auth_token_file."},
    {"voice", "api_base", CFG_STR, C(voice_api_base), 1, 512, "https://api.twilio.com", NULL,
     "The provider's REST API, used to place callback calls."},
    {"voice", "caller_id", CFG_STR, C(voice_caller_id), 1, 64, NULL, NULL,
     "Number callbacks are placed from; default: the number the customer called."},
    {"voice", "menu", CFG_STR, C(voice_menu), 0, 2048, "", NULL,
     "IVR menu, KEY=intent[@queue][(speech words)] ...: "
     "\"1=claims@claims(accident,damage) 2=policies@sales\". Empty: no menu."},
    {"voice", "welcome", CFG_STR, C(voice_welcome), 0, 1000, "Thank you for calling.", NULL,
     "Said once when a call arrives (empty: nothing)."},
    {"voice", "menu_prompt", CFG_STR, C(voice_menu_prompt), 1, 1000, NULL, NULL,
     "What the menu says; default \"For claims, press 1. ...\" built from menu."},
    {"voice", "ask_policy", CFG_CHOICE, C(voice_ask_policy), 0, 0, "no", "|no|yes|",
     "yes: after the menu, ask for the policy number (keypad or speech) to identify the caller."},
    {"voice", "policy_prompt", CFG_STR, C(voice_policy_prompt), 1, 1000,
     "Please enter your policy number, then press the hash key.", NULL, "Asks for the policy number."},
    {"voice", "policy_format", CFG_STR, C(voice_policy_format), 0, 64, "", NULL,
     "Where keypad digits go in a policy number, # per digit (\"PL-####-######\"); empty: as typed."},
    {"voice", "language", CFG_STR, C(voice_language), 2, 16, "en-US", NULL,
     "Language of <Say> and speech recognition."},
    {"voice", "say_voice", CFG_STR, C(voice_say_voice), 1, 64, NULL, NULL,
     "Text-to-speech voice (<Say voice>, e.g. Polly.Lucia); default: the provider's."},
    {"voice", "wait_message", CFG_STR, C(voice_wait_message), 0, 1000,
     "All our agents are busy. Please stay on the line.", NULL, "Said when the caller starts waiting."},
    {"voice", "position_message", CFG_STR, C(voice_position_message), 0, 1000,
     "You are number {position} in the queue.", NULL,
     "Said when the caller's place changes ({position}); empty: never."},
    {"voice", "estimate_message", CFG_STR, C(voice_estimate_message), 0, 1000,
     "Your estimated wait is {minutes} minutes.", NULL,
     "Said with the position when an estimate exists (average handling time x place / agents)."},
    {"voice", "hold_seconds", CFG_INT, C(voice_hold_seconds), 2, 600, "20", NULL,
     "Seconds of hold music or silence between two checks of the caller's place (CTI retry_after)."},
    {"voice", "hold_music_url", CFG_STR, C(voice_hold_music_url), 1, 1024, NULL, NULL,
     "Audio played while holding (<Play>); default: silence."},
    {"voice", "callback_prompt", CFG_STR, C(voice_callback_prompt), 1, 1000,
     "Sorry for the wait. To be called back as soon as an agent is free, press 1. "
     "To keep holding, stay on the line.", NULL,
     "Offered at the queue's max_wait when its on_max_wait is callback."},
    {"voice", "callback_confirm", CFG_STR, C(voice_callback_confirm), 1, 1000,
     "Thank you. We will call you back. Goodbye.", NULL, "Said after a callback was requested."},
    {"voice", "connect_message", CFG_STR, C(voice_connect_message), 0, 1000,
     "Connecting you to an agent.", NULL, "Said before the call is put through (empty: nothing)."},
    {"voice", "goodbye_message", CFG_STR, C(voice_goodbye_message), 1, 1000,
     "We cannot take your call right now. Please call again later. Goodbye.", NULL,
     "Said when the call cannot be queued or its queue closed it at max_wait."},
    {"voice", "dial_timeout", CFG_INT, C(voice_dial_timeout), 5, 120, "20", NULL,
     "Seconds an agent's phone rings before the caller goes back in line."},
    {"voice", "record", CFG_CHOICE, C(voice_record), 0, 0, "no", "|no|yes|",
     "yes: record agent calls; the recording URL lands in the case history."},
    {"voice", "cti_secret_file", CFG_STR, C(voice_cti_secret_file), 1, 1024, NULL, NULL,
     "File holding the CTI webhook's HMAC-SHA256 secret (docs/CTI.md; re-read on SIGHUP); "
     "unset: it answers 404."},
    {"voice", "cti_window", CFG_INT, C(voice_cti_window), 10, 3600, "300", NULL,
     "Seconds a CTI request's timestamp may be off from now (replay window)."},
    {"email", "smtp_url", CFG_STR, C(email_smtp_url), 1, 512, NULL, NULL,
     "SMTP relay for replies: smtp://host:port (submission port 587; TLS by STARTTLS, see "
     "smtp_starttls); unset: nothing is sent."},
    {"email", "smtp_user", CFG_STR, C(email_smtp_user), 1, 256, NULL, NULL,
     "SMTP AUTH user name (PLAIN or LOGIN, only over TLS)."},
    {"email", "smtp_password_file", CFG_STR, C(email_smtp_password_file), 1, 1024, NULL, NULL,
     "File holding the SMTP password (first line)."},
    {"email", "smtp_starttls", CFG_CHOICE, C(email_smtp_starttls), 0, 0, "required",
     "|required|try|no|", "STARTTLS on smtp://: required refuses to send in clear text."},
    {"email", "smtp_ca_file", CFG_STR, C(email_smtp_ca_file), 1, 1024, NULL, NULL,
     "PEM CA bundle the relay's certificate must chain to; default: the system's."},
    {"email", "smtp_workers", CFG_INT, C(email_smtp_workers), 1, 64, "2", NULL,
     "Sending threads (each holds one SMTP session at a time)."},
    {"email", "smtp_timeout", CFG_INT, C(email_smtp_timeout), 5, 600, "60", NULL,
     "Seconds the relay may take to answer any one SMTP command."},
    {"email", "retry_base", CFG_INT, C(email_retry_base), 1, 86400, "60", NULL,
     "Seconds before the first retry after a temporary (4xx) failure; doubles each time."},
    {"email", "retry_max", CFG_INT, C(email_retry_max), 1, 86400, "3600", NULL,
     "Longest wait between two retries, in seconds."},
    {"email", "max_attempts", CFG_INT, C(email_max_attempts), 1, 1000, "12", NULL,
     "Attempts after which a temporarily failing message fails for good."},
    {"email", "claim_idle", CFG_INT, C(email_claim_idle), 1, 86400, "120", NULL,
     "Seconds after which a message another daemon took but never finished (it died) is sent "
     "by this one."},
    {"email", "outbox_poll_ms", CFG_INT, C(email_outbox_poll_ms), 50, 60000, "1000", NULL,
     "How often the outbox is read for work queued by other daemons (ms)."},
    {"email", "max_message", CFG_SIZE, C(email_max_message), 1024, 1LL << 30, "26214400", NULL,
     "Largest inbound message in bytes (POST /v1/email/inbound answers 413 above; IMAP skips it)."},
    {"email", "max_attachment", CFG_SIZE, C(email_max_attachment), 0, 1LL << 30, "10485760", NULL,
     "Largest attachment stored, in bytes; larger ones are named in the text but not kept."},
    {"email", "max_attachments_total", CFG_SIZE, C(email_max_attachments_total), 0, 1LL << 30,
     "26214400", NULL, "Attachments stored per message, in bytes all together."},
    {"email", "max_attachments", CFG_INT, C(email_max_attachments), 0, 1000, "20", NULL,
     "Attachments stored per message."},
    {"email", "inbound_token_file", CFG_STR, C(email_inbound_token_file), 1, 1024, NULL, NULL,
     "Bearer token of POST /v1/email/inbound (for an MTA pipe); unset: the admin token only."},
    {"email", "from_address", CFG_STR, C(email_from_address), 3, 320, NULL, NULL,
     "From of replies to mail that came in through no configured mailbox."},
    {"email", "from_name", CFG_STR, C(email_from_name), 1, 200, NULL, NULL,
     "Display name with from_address."},
    {"email", "msgid_domain", CFG_STR, C(email_msgid_domain), 1, 253, NULL, NULL,
     "Domain of the Message-IDs omnicc writes; default: the From address's domain."},
    {"fax", "phaxio_token_file", CFG_STR, C(fax_phaxio_token_file), 1, 1024, NULL, NULL,
     "File holding the Phaxio/Sinch callback token (X-Phaxio-Signature; re-read on SIGHUP); "
     "unset: POST /v1/fax/phaxio answers 404."},
    {"fax", "phaxio_callback_url", CFG_STR, C(fax_phaxio_callback_url), 1, 1024, NULL, NULL,
     "The callback URL exactly as configured at Phaxio (the signature covers it)."},
    {"fax", "telnyx_public_key", CFG_STR, C(fax_telnyx_public_key), 1, 1024, NULL, NULL,
     "Telnyx account's Ed25519 public key (base64, from the portal); unset: POST "
     "/v1/fax/telnyx answers 404."},
    {"fax", "telnyx_window", CFG_INT, C(fax_telnyx_window), 10, 3600, "300", NULL,
     "Seconds a Telnyx webhook's timestamp may be off from now."},
    {"fax", "gateway_secret_file", CFG_STR, C(fax_gateway_secret_file), 1, 1024, NULL, NULL,
     "File holding the HMAC-SHA256 secret of on-premises fax gateways (POST /v1/fax/inbound, "
     "docs/FAX.md; re-read on SIGHUP); unset: it answers 404."},
    {"fax", "gateway_window", CFG_INT, C(fax_gateway_window), 10, 3600, "300", NULL,
     "Seconds a gateway request's timestamp may be off from now."},
    {"fax", "max_document", CFG_SIZE, C(fax_max_document), 1024, 1LL << 30, "52428800", NULL,
     "Largest fax document kept, in bytes (raise [http] import_max_body with it)."},
    {"fax", "max_pages", CFG_INT, C(fax_max_pages), 1, 10000, "350", NULL,
     "Most pages in one fax, counted from the document itself."},
    {"fax", "media_timeout", CFG_INT, C(fax_media_timeout), 1, 3600, "60", NULL,
     "Seconds one download of a provider's media_url may take."},
    {"fax", "media_attempts", CFG_INT, C(fax_media_attempts), 1, 10, "3", NULL,
     "Download attempts before the webhook is answered 502 (the provider retries it)."},
    {"fax", "ocr", CFG_CHOICE, C(fax_ocr), 0, 0, "yes", "|yes|no|",
     "yes: read the first page with tesseract to find policy numbers, cases and phones."},
    {"fax", "ocr_workers", CFG_INT, C(fax_ocr_workers), 1, 64, "1", NULL,
     "OCR and page-image threads (each single-threaded; up to about 1 s of CPU per page)."},
    {"fax", "ocr_queue", CFG_INT, C(fax_ocr_queue), 1, 100000, "256", NULL,
     "Faxes waiting for OCR; beyond, a fax is routed without it."},
    {"fax", "ocr_languages", CFG_STR, C(fax_ocr_languages), 3, 64, "spa+eng", NULL,
     "Tesseract languages (packages tesseract-ocr-spa, tesseract-ocr-eng ...)."},
    {"fax", "outbound", CFG_CHOICE, C(fax_outbound), 0, 0, "none", "|none|phaxio|telnyx|hylafax|",
     "Provider that sends faxes (POST /v1/interactions/{id}/fax); none: that answers 404."},
    {"fax", "hylafax_host", CFG_STR, C(fax_hylafax_host), 1, 256, "localhost:4559", NULL,
     "HylaFAX server (hfaxd) faxes are sent through with sendfax (outbound = hylafax): host[:port]."},
    {"fax", "hylafax_poll", CFG_INT, C(fax_hylafax_poll), 1, 3600, "30", NULL,
     "Seconds between faxstat runs that follow HylaFAX jobs to their final status."},
    {"fax", "hylafax_timeout", CFG_INT, C(fax_hylafax_timeout), 5, 3600, "120", NULL,
     "Seconds sendfax or faxstat may run before it is killed (the fax is tried again)."},
    {"fax", "phaxio_api_base", CFG_STR, C(fax_phaxio_api_base), 1, 512, "https://api.phaxio.com",
     NULL, "Phaxio REST API base URL."},
    {"fax", "phaxio_api_key", CFG_STR, C(fax_phaxio_api_key), 1, 256, NULL, NULL,
     "Phaxio API key (with outbound = phaxio)."},
    {"fax", "phaxio_api_secret_file", CFG_STR, C(fax_phaxio_api_secret_file), 1, 1024, NULL, NULL,
     "File holding the Phaxio API secret (re-read on SIGHUP)."},
    {"fax", "telnyx_api_base", CFG_STR, C(fax_telnyx_api_base), 1, 512, "https://api.telnyx.com",
     NULL, "Telnyx REST API base URL."},
    {"fax", "telnyx_api_key_file", CFG_STR, C(fax_telnyx_api_key_file), 1, 1024, NULL, NULL,
     "File holding the Telnyx API key (with outbound = telnyx; re-read on SIGHUP)."},
    {"fax", "telnyx_connection_id", CFG_STR, C(fax_telnyx_connection_id), 1, 128, NULL, NULL,
     "The Telnyx fax application (connection) faxes are sent with."},
    {"fax", "telnyx_from", CFG_STR, C(fax_telnyx_from), 3, 32, NULL, NULL,
     "The insurer's fax number faxes are sent from (E.164, a number of that connection)."},
    {"fax", "public_url", CFG_STR, C(fax_public_url), 8, 512, NULL, NULL,
     "Base URL at which the provider reaches this daemon (https://cc.insurer.example): Telnyx "
     "fetches each document from a signed, expiring link under it."},
    {"fax", "media_secret_file", CFG_STR, C(fax_media_secret_file), 1, 1024, NULL, NULL,
     "File holding the key the document links are signed with (HMAC-SHA256; the same on "
     "every daemon)."},
    {"fax", "media_link_ttl", CFG_INT, C(fax_media_link_ttl), 60, 86400, "3600", NULL,
     "Seconds a document link given to the provider stays valid."},
    {"fax", "send_attempts", CFG_INT, C(fax_send_attempts), 1, 100, "5", NULL,
     "Attempts to hand a fax to the provider before it is recorded as failed."},
    {"fax", "claim_idle", CFG_INT, C(fax_claim_idle), 1, 86400, "60", NULL,
     "Seconds before a fax whose hand-over failed, or that a stopped daemon took, is tried again."},
    {"fax", "outbox_poll_ms", CFG_INT, C(fax_outbox_poll_ms), 50, 60000, "1000", NULL,
     "How often the fax outbox is read (ms)."},
    {"fax", "send_concurrency", CFG_INT, C(fax_send_concurrency), 1, 64, "2", NULL,
     "Faxes handed to the provider at once by this daemon."},
    {"fax", "stuck_after", CFG_INT, C(fax_stuck_after), 0, 30 * 86400, "3600", NULL,
     "Seconds after which a sent fax without a final status (delivered or failed) is flagged "
     "as stuck (0: never)."},
    {"queue", "channels", CFG_STR, Q(channels), 1, 256, "voice email fax branch webchat", NULL,
     "Channels this queue serves."},
    {"queue", "skills", CFG_STR, Q(skills), 0, 1024, "", NULL,
     "Required skills with minimum level 1-5: \"claims:2 lang_es:1\"."},
    {"queue", "sla_seconds", CFG_INT, Q(sla_seconds), 1, 86400, "20", NULL,
     "Service-level target: answered within this many seconds."},
    {"queue", "strategy", CFG_CHOICE, Q(strategy), 0, 0, "longest-idle",
     "|longest-idle|least-occupied|round-robin|", "Which eligible agent gets the next offer."},
    {"queue", "sticky_seconds", CFG_INT, Q(sticky_seconds), 0, 86400 * 30, "0", NULL,
     "Prefer the case's last agent for this long after their last contact, if available."},
    {"queue", "overflow_after", CFG_INT, Q(overflow_after), 0, 86400, "0", NULL,
     "Seconds of waiting after which overflow applies (0: never)."},
    {"queue", "overflow_skills", CFG_STR, Q(overflow_skills), 0, 1024, NULL, NULL,
     "Relaxed skill requirements after overflow_after."},
    {"queue", "overflow_queue", CFG_STR, Q(overflow_queue), 1, 64, NULL, NULL,
     "Queue to move waiting work to after overflow_after."},
    {"queue", "max_wait", CFG_INT, Q(max_wait), 0, 86400 * 7, "0", NULL,
     "Seconds after which on_max_wait applies (0: never)."},
    {"queue", "on_max_wait", CFG_CHOICE, Q(on_max_wait), 0, 0, "close",
     "|close|callback|voicemail|auto-reply|", "What happens at max_wait."},
    {"branch ID", "name", CFG_STR, B(name), 1, 200, NULL, NULL, "The branch's name as shown to tellers."},
    {"branch ID", "bank", CFG_STR, B(bank), 1, 200, NULL, NULL, "The bank the branch belongs to."},
    {"branch ID", "region", CFG_STR, B(region), 1, 200, NULL, NULL, "Region, for reports."},
    {"branch ID", "services", CFG_STR, B(services), 1, 2048, NULL, NULL,
     "Services offered, each SERVICE:QUEUE (policy_inquiry claim_fnol new_policy documents)."},
    {"branch ID", "counters", CFG_INT, B(counters), 1, 999, "1", NULL, "Number of counters."},
    {"mailbox", "url", CFG_STR, M(url), 8, 1024, NULL, NULL,
     "imap://host:port/FOLDER or imaps://host:port/FOLDER (required)."},
    {"mailbox", "user", CFG_STR, M(user), 1, 256, NULL, NULL, "IMAP login (required)."},
    {"mailbox", "password_file", CFG_STR, M(password_file), 1, 1024, NULL, NULL,
     "File holding the IMAP password (first line; required)."},
    {"mailbox", "starttls", CFG_CHOICE, M(starttls), 0, 0, "required", "|required|try|no|",
     "STARTTLS on imap:// URLs: required refuses to log in over clear text."},
    {"mailbox", "tls_verify", CFG_CHOICE, M(tls_verify), 0, 0, "yes", "|yes|no|",
     "Verify the server's certificate (no: only for tests)."},
    {"mailbox", "ca_file", CFG_STR, M(ca_file), 1, 1024, NULL, NULL,
     "PEM CA bundle for the server's certificate; default: the system's."},
    {"mailbox", "poll_interval", CFG_INT, M(poll_interval), 1, 86400, "30", NULL,
     "Seconds between two looks at the folder when it was found empty."},
    {"mailbox", "batch", CFG_INT, M(batch), 1, 1000, "50", NULL,
     "Messages fetched and ingested per round."},
    {"mailbox", "queue", CFG_STR, M(queue), 1, 64, NULL, NULL,
     "Queue for this mailbox's mail; default: the routing rules and default queue."},
    {"mailbox", "processed", CFG_CHOICE, M(processed), 0, 0, "flag", "|flag|move|",
     "What is done to a message once omnicc has stored it: flag (\\Seen) or move (to move_to)."},
    {"mailbox", "move_to", CFG_STR, M(move_to), 1, 256, "Processed", NULL,
     "Folder processed mail is moved to (created if missing) with processed = move."},
    {"mailbox", "address", CFG_STR, M(address), 3, 320, NULL, NULL,
     "From of replies to this mailbox's mail; default: user, when it is an address."},
    {"mailbox", "name", CFG_STR, M(display_name), 1, 200, NULL, NULL,
     "Display name with address (\"Acme Claims\")."},
    {"mailbox", "ack_reply", CFG_CHOICE, M(ack_reply), 0, 0, "no", "|no|yes|",
     "yes: answer mail that opens a new case with its case number (never to automatic mail)."},
    {"mailbox", "ack_rate_seconds", CFG_INT, M(ack_rate_seconds), 60, 86400 * 30, "86400", NULL,
     "At most one acknowledgement per sender in this many seconds."},
    {"mailbox", "ack_text", CFG_STR, M(ack_text), 1, 4000,
     "Thank you for your message. We have opened case {case} and will answer soon. Please keep "
     "[#{case}] in the subject of any reply.", NULL,
     "Text of the acknowledgement; {case} becomes the case id."},
    {"mailbox", "channel", CFG_CHOICE, M(channel), 0, 0, "email", "|email|fax|",
     "fax: a fax-to-email mailbox: each message is a fax interaction, its TIFF/PDF attachment "
     "the document (docs/FAX.md)."},
    {"mailbox", "fax_number_regex", CFG_STR, M(fax_number_regex), 1, 512, NULL, NULL,
     "channel = fax: POSIX extended regex (case-insensitive) over the subject, a newline and "
     "the From (Name <address>); its first group is the sending number. Tried before the "
     "built-in patterns."},
};

/* Line each key of the unnamed sections was last set on, for errors found after parsing. */
static int key_line[ARRAY_SIZE(cfg_keys)];

static int line_of(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].key, key) == 0 && strcmp(cfg_keys[i].section, "queue") != 0 &&
            key_line[i])
            return key_line[i];
    return 0;
}

static const char *section_doc(const char *section)
{
    static const char *docs[][2] = {
        {"daemon", "Process-wide settings."},
        {"http", "The REST API and webhook listener."},
        {"redis", "Where state lives. Without url, omniccd starts its own redis-server."},
        {"api", "Admin authentication (bearer token)."},
        {"identity", "How customer identifiers are normalised."},
        {"segments", "Policyholder segments from the import, and the priority each earns."},
        {"routing", "Priority bases and the default queue."},
        {"analytics", "Service reports, warehouse export (docs/ANALYTICS.md, docs/EXPORT.md)."},
        {"webchat", "Customer web chat (widget at /chat/, API under /v1/chat/)."},
        {"voice", "The phone channel: Twilio webhooks and the CTI webhook for PBXs (docs/CTI.md)."},
        {"queue", "One [queue NAME] section per queue."},
        {"email", "The email channel: SMTP relay for replies, limits (docs/API.md, README)."},
        {"mailbox", "One [mailbox NAME] section per IMAP mailbox polled."},
        {"fax", "The fax channel: Phaxio/Sinch, Telnyx and on-premises gateways (docs/FAX.md)."},
        {"branch", "The branch terminal bridge (bancassurance tellers); see docs/BRANCH.md."},
        {"branch ID", "One [branch ID] section per bank branch (or POST /v1/branches)."},
    };
    for (size_t i = 0; i < ARRAY_SIZE(docs); i++)
        if (strcmp(docs[i][0], section) == 0)
            return docs[i][1];
    return "";
}

void config_print_sample(FILE *out)
{
    const char *cur = NULL;
    fprintf(out, "# omniccd configuration. Every key with its default; generated by\n"
                 "# `omniccd --print-config`. Lines starting with # or ; are comments.\n");
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!cur || strcmp(cur, k->section) != 0) {
            cur = k->section;
            if (strcmp(cur, "branch ID") == 0) /* [branch ID] sections: an example, commented */
                fprintf(out, "\n# %s\n;[branch ID]\n", section_doc(cur));
            else if (strcmp(cur, "mailbox") == 0)
                fprintf(out, "\n# %s\n;[mailbox claims]\n", section_doc(cur));
            else
                fprintf(out, "\n# %s\n[%s%s]\n", section_doc(cur), cur,
                        strcmp(cur, "queue") == 0 ? " default" : "");
        }
        fprintf(out, "# %s\n", k->doc);
        if (k->def)
            fprintf(out, "%s%s = %s\n", strcmp(k->key, "state_dir") == 0 ? "" : ";", k->key,
                    k->def);
        else
            fprintf(out, ";%s =\n", k->key);
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static char **str_field(void *base, size_t off)
{
    return (char **)((char *)base + off);
}

/* Set one key. Returns NULL or an error message (without the file:line prefix). */
static char *cfg_set(const struct cfg_key *k, void *base, const char *val)
{
    char *end;
    switch (k->type) {
    case CFG_STR: {
        size_t n = strlen(val);
        if ((long long)n < k->min || (long long)n > k->max)
            return xasprintf("length must be %lld-%lld characters", k->min, k->max);
        char **f = str_field(base, k->offset);
        free(*f);
        *f = xstrdup(val);
        return NULL;
    }
    case CFG_WORDS: { /* repeatable: each occurrence adds its words */
        char **f = str_field(base, k->offset);
        char *joined = *f ? xasprintf("%s %s", *f, val) : xstrdup(val);
        size_t n = strlen(joined);
        if (!*val || (long long)n > k->max) {
            free(joined);
            return xasprintf("give 1-%lld characters in all", k->max);
        }
        free(*f);
        *f = joined;
        return NULL;
    }
    case CFG_CHOICE: {
        char probe[128];
        snprintf(probe, sizeof(probe), "|%s|", val);
        if (!*val || strchr(val, '|') || !strstr(k->choices, probe))
            return xasprintf("must be one of %s", k->choices);
        char **f = str_field(base, k->offset);
        free(*f);
        *f = xstrdup(val);
        return NULL;
    }
    case CFG_INT:
    case CFG_SIZE: {
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end)
            return xasprintf("not an integer: \"%s\"", val);
        if (v < k->min || v > k->max)
            return xasprintf("must be between %lld and %lld", k->min, k->max);
        if (k->type == CFG_INT)
            *(int *)((char *)base + k->offset) = (int)v;
        else
            *(long long *)((char *)base + k->offset) = v;
        return NULL;
    }
    case CFG_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || isnan(v)) /* strtod reads "nan" too */
            return xasprintf("not a number: \"%s\"", val);
        if (v < (double)k->min || v > (double)k->max)
            return xasprintf("must be between %lld and %lld", k->min, k->max);
        *(double *)((char *)base + k->offset) = v;
        return NULL;
    }
    case CFG_LEVEL: {
        int lvl = log_level_parse(val);
        if (lvl < 0)
            return xasprintf("must be error, warn, info or debug");
        *(int *)((char *)base + k->offset) = lvl;
        return NULL;
    }
    case CFG_RULE: {
        struct config *cfg = base;
        if (cfg->n_rules >= CONFIG_MAX_RULES)
            return xasprintf("at most %d rules", CONFIG_MAX_RULES);
        const char *arrow = strstr(val, "->");
        if (!arrow)
            return xasprintf("expected conditions -> queue");
        struct routing_rule *r = &cfg->rules[cfg->n_rules];
        memset(r, 0, sizeof(*r));
        char *tail = xstrdup(arrow + 2);
        r->queue = xstrdup(trim(tail));
        free(tail);
        char *conds = xstrndup(val, (size_t)(arrow - val)), *save = NULL, *err = NULL;
        for (char *t = strtok_r(conds, " \t", &save); t && !err; t = strtok_r(NULL, " \t", &save)) {
            char *eq = strchr(t, '=');
            char **slot = NULL;
            if (eq && strncmp(t, "channel=", 8) == 0)
                slot = &r->channel;
            else if (eq && strncmp(t, "intent=", 7) == 0)
                slot = &r->intent;
            else if (eq && strncmp(t, "skill=", 6) == 0)
                slot = &r->skill;
            if (!slot || !eq[1] || *slot)
                err = xasprintf("bad condition \"%s\" (channel=, intent=, skill=, once each)", t);
            else
                *slot = xstrdup(eq + 1);
        }
        free(conds);
        if (!err && !*r->queue)
            err = xasprintf("no queue after ->");
        if (err) {
            free(r->channel);
            free(r->intent);
            free(r->skill);
            free(r->queue);
            memset(r, 0, sizeof(*r));
            return err;
        }
        cfg->n_rules++;
        return NULL;
    }
    case CFG_LISTEN: {
        struct config *cfg = base;
        const char *colon = strrchr(val, ':');
        if (!colon || colon == val || !colon[1])
            return xasprintf("expected host:port, got \"%s\"", val);
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 0 || port > 65535)
            return xasprintf("bad port in \"%s\"", val);
        if (cfg->n_listen >= CONFIG_MAX_LISTEN)
            return xasprintf("at most %d listen addresses", CONFIG_MAX_LISTEN);
        cfg->listen[cfg->n_listen++] = xstrdup(val);
        return NULL;
    }
    }
    return xstrdup("unknown key type");
}

static const struct cfg_key *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].section, section) == 0 && strcmp(cfg_keys[i].key, key) == 0)
            return &cfg_keys[i];
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].section, section) == 0)
            return true;
    return false;
}

static void apply_defaults(const char *section, void *base)
{
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (strcmp(k->section, section) != 0 || !k->def || k->type == CFG_LISTEN)
            continue;
        char *e = cfg_set(k, base, k->def);
        if (e) {
            log_error("config: default of %s.%s invalid: %s", section, k->key, e);
            abort();
        }
    }
}

/* "claims:2 lang_es" -> skill requirements (level defaults to 1). */
static char *parse_skills(const char *text, struct skill_req *out, int *n_out)
{
    char *copy = xstrdup(text), *save = NULL;
    int n = 0;
    char *err = NULL;
    for (char *tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        if (n >= CONFIG_MAX_QUEUE_SKILLS) {
            err = xasprintf("at most %d skills", CONFIG_MAX_QUEUE_SKILLS);
            break;
        }
        char *colon = strchr(tok, ':');
        int level = 1;
        if (colon) {
            *colon = '\0';
            char *end;
            long v = strtol(colon + 1, &end, 10);
            if (*end || v < 1 || v > 5) {
                err = xasprintf("skill \"%s\": level must be 1-5", tok);
                break;
            }
            level = (int)v;
        }
        size_t len = strlen(tok);
        bool ok = len > 0 && len <= 64;
        for (size_t i = 0; ok && i < len; i++)
            ok = isalnum((unsigned char)tok[i]) || tok[i] == '_' || tok[i] == '-';
        if (!ok) {
            err = xasprintf("bad skill name \"%s\"", tok);
            break;
        }
        out[n].name = xstrdup(tok);
        out[n].level = level;
        n++;
    }
    free(copy);
    if (err) {
        for (int i = 0; i < n; i++)
            xfree(out[i].name);
        return err;
    }
    *n_out = n;
    return NULL;
}

static void queue_free(struct queue_conf *q)
{
    if (!q)
        return;
    free(q->name);
    free(q->channels);
    free(q->skills);
    free(q->strategy);
    free(q->overflow_skills);
    free(q->overflow_queue);
    free(q->on_max_wait);
    for (int i = 0; i < q->n_skills; i++)
        free(q->skill[i].name);
    free(q);
}

static void branch_conf_free(struct branch_conf *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].section, "branch ID") == 0 && cfg_keys[i].type == CFG_STR)
            free(*str_field(b, cfg_keys[i].offset));
    free(b->id);
    free(b);
}

static void mailbox_conf_free(struct mailbox_conf *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].section, "mailbox") == 0 &&
            (cfg_keys[i].type == CFG_STR || cfg_keys[i].type == CFG_CHOICE))
            free(*str_field(m, cfg_keys[i].offset));
    free(m->name);
    free(m->password);
    free(m);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (strcmp(k->section, "queue") != 0 && strcmp(k->section, "branch ID") != 0 &&
            strcmp(k->section, "mailbox") != 0 &&
            (k->type == CFG_STR || k->type == CFG_CHOICE || k->type == CFG_WORDS))
            free(*str_field(cfg, k->offset));
    }
    for (int i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i]);
    for (int i = 0; i < cfg->n_queues; i++)
        queue_free(cfg->queues[i]);
    for (int i = 0; i < cfg->n_rules; i++) {
        free(cfg->rules[i].channel);
        free(cfg->rules[i].intent);
        free(cfg->rules[i].skill);
        free(cfg->rules[i].queue);
    }
    free(cfg->api_token_value);
    free(cfg->redis_password);
    free(cfg->redis_sentinel_password);
    for (int i = 0; i < cfg->n_branches; i++)
        branch_conf_free(cfg->branches[i]);
    for (int i = 0; i < cfg->n_mailboxes; i++)
        mailbox_conf_free(cfg->mailboxes[i]);
    free(cfg->email_smtp_password);
    free(cfg->email_inbound_token);
    free(cfg->path);
    free(cfg);
}

static bool valid_queue_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

#define FAIL(line, key, ...)                                                                       \
    do {                                                                                           \
        char *m_ = xasprintf(__VA_ARGS__);                                                         \
        *err = xasprintf("%s:%d: %s: %s", path, (line), (key), m_);                                \
        free(m_);                                                                                  \
        goto fail;                                                                                 \
    } while (0)

/* [branch ID]: services are SERVICE:QUEUE pairs; each queue must exist and serve branch. */
static int check_branch(const char *path, struct config *cfg, const struct branch_conf *b,
                        char **err)
{
    if (!b->services) {
        *err = xasprintf("%s:%d: services: required (SERVICE:QUEUE ...)", path, b->line);
        return -1;
    }
    char *copy = xstrdup(b->services), *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save), n++) {
        char *colon = strchr(t, ':');
        const struct queue_conf *q = colon ? config_queue(cfg, colon + 1) : NULL;
        if (colon)
            *colon = '\0';
        if (!colon || !valid_queue_name(t) || strlen(t) > 32) {
            *err = xasprintf("%s:%d: services: \"%s\" is not SERVICE:QUEUE", path, b->line, t);
        } else if (!q) {
            *err = xasprintf("%s:%d: services: no queue named \"%s\"", path, b->line, colon + 1);
        } else if (!strstr(q->channels, "branch")) {
            *err = xasprintf("%s:%d: services: queue \"%s\" does not serve the branch channel",
                             path, b->line, q->name);
        } else {
            continue;
        }
        free(copy);
        return -1;
    }
    free(copy);
    if (n == 0 || n > 16) {
        *err = xasprintf("%s:%d: services: give 1-16 SERVICE:QUEUE pairs", path, b->line);
        return -1;
    }
    return 0;
}

/* *out = the first line of the secret file named by key (when set); else the error names
 * the key's line. */
static int load_secret(const char *path, const char *file, const char *key, char **out,
                       char **err)
{
    if (!file)
        return 0;
    char *e = NULL;
    *out = read_secret_file(file, &e);
    if (*out)
        return 0;
    *err = xasprintf("%s:%d: %s: %s", path, line_of(key), key, e);
    free(e);
    return -1;
}

/* [email] and each [mailbox NAME]: required keys, URL schemes, the secrets they name. */
static int check_email(const char *path, struct config *cfg, char **err)
{
    struct {
        const char *file, *key;
        char **out;
    } secrets[] = {{cfg->email_smtp_password_file, "smtp_password_file", &cfg->email_smtp_password},
                   {cfg->email_inbound_token_file, "inbound_token_file", &cfg->email_inbound_token}};
    for (size_t i = 0; i < ARRAY_SIZE(secrets); i++)
        if (load_secret(path, secrets[i].file, secrets[i].key, secrets[i].out, err) < 0)
            return -1;
    const char *u = cfg->email_smtp_url;
    if (u && strncmp(u, "smtp://", 7) != 0) {
        /* libesmtp speaks STARTTLS (RFC 3207), not TLS from the first byte */
        *err = xasprintf("%s:%d: smtp_url: must be smtp://host:port (TLS by STARTTLS, see "
                         "smtp_starttls)", path, line_of("smtp_url"));
        return -1;
    }
    if (cfg->email_smtp_user && !cfg->email_smtp_password) {
        *err = xasprintf("%s:%d: smtp_user: needs smtp_password_file", path, line_of("smtp_user"));
        return -1;
    }
    for (int i = 0; i < cfg->n_mailboxes; i++) {
        struct mailbox_conf *m = cfg->mailboxes[i];
        const char *missing = !m->url ? "url" : !m->user ? "user" : !m->password_file ? "password_file" : NULL;
        if (missing) {
            *err = xasprintf("%s:%d: %s: required in [mailbox %s]", path, m->line, missing, m->name);
            return -1;
        }
        if (strncmp(m->url, "imap://", 7) != 0 && strncmp(m->url, "imaps://", 8) != 0) {
            *err = xasprintf("%s:%d: url: must start with imap:// or imaps://", path, m->line);
            return -1;
        }
        if (strpbrk(m->move_to, "\"\\\r\n")) {
            *err = xasprintf("%s:%d: move_to: no quotes or backslashes in a folder name", path,
                             m->line);
            return -1;
        }
        if (m->queue && !config_queue(cfg, m->queue)) {
            *err = xasprintf("%s:%d: queue: no queue named \"%s\"", path, m->line, m->queue);
            return -1;
        }
        char *e = NULL;
        m->password = read_secret_file(m->password_file, &e);
        if (!m->password) {
            *err = xasprintf("%s:%d: password_file: %s", path, m->line, e);
            free(e);
            return -1;
        }
        if (!m->address && strchr(m->user, '@'))
            m->address = xstrdup(m->user);
        regex_t re;
        if (m->fax_number_regex) {
            if (regcomp(&re, m->fax_number_regex, REG_EXTENDED | REG_ICASE) != 0) {
                *err = xasprintf("%s:%d: fax_number_regex: not a POSIX extended regex", path,
                                 m->line);
                return -1;
            }
            size_t groups = re.re_nsub;
            regfree(&re);
            if (groups < 1) {
                *err = xasprintf("%s:%d: fax_number_regex: needs a (group) around the number",
                                 path, m->line);
                return -1;
            }
        }
    }
    return 0;
}

static int check_queue(const char *path, struct config *cfg, struct queue_conf *q, char **err)
{
    char *e = parse_skills(q->skills ? q->skills : "", q->skill, &q->n_skills);
    if (e) {
        *err = xasprintf("%s:%d: skills: %s", path, q->line, e);
        free(e);
        return -1;
    }
    char *copy = xstrdup(q->channels), *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save), n++) {
        static const char *known = "|voice|email|fax|branch|webchat|";
        char probe[80];
        snprintf(probe, sizeof(probe), "|%s|", t);
        if (!strstr(known, probe)) {
            *err = xasprintf("%s:%d: channels: unknown channel \"%s\"", path, q->line, t);
            free(copy);
            return -1;
        }
    }
    free(copy);
    if (n == 0) {
        *err = xasprintf("%s:%d: channels: no channel", path, q->line);
        return -1;
    }
    if (q->overflow_skills) {
        struct skill_req tmp[CONFIG_MAX_QUEUE_SKILLS];
        int nt = 0;
        e = parse_skills(q->overflow_skills, tmp, &nt);
        if (e) {
            *err = xasprintf("%s:%d: overflow_skills: %s", path, q->line, e);
            free(e);
            return -1;
        }
        for (int i = 0; i < nt; i++)
            free(tmp[i].name);
    }
    (void)cfg;
    return 0;
}

/* [redis] sentinels, master_name, ack_replicas: Sentinel replaces url, each address is
 * host:port, and replicas to wait for only exist outside the embedded mode. */
static int check_sentinels(const char *path, struct config *cfg, char **err)
{
    if (cfg->redis_master_name && !cfg->redis_sentinels) {
        *err = xasprintf("%s:%d: master_name: needs sentinels", path, line_of("master_name"));
        return -1;
    }
    if (cfg->redis_sentinel_password_file && !cfg->redis_sentinels) {
        *err = xasprintf("%s:%d: sentinel_password_file: needs sentinels", path,
                         line_of("sentinel_password_file"));
        return -1;
    }
    if (cfg->redis_sentinel_user && !cfg->redis_sentinel_password_file) {
        *err = xasprintf("%s:%d: sentinel_user: needs sentinel_password_file (AUTH user "
                         "password)", path, line_of("sentinel_user"));
        return -1;
    }
    if (load_secret(path, cfg->redis_sentinel_password_file, "sentinel_password_file",
                    &cfg->redis_sentinel_password, err) < 0)
        return -1;
    if (!cfg->redis_sentinels) {
        if (cfg->redis_ack_replicas > 0 && !cfg->redis_url) {
            *err = xasprintf("%s:%d: ack_replicas: the embedded redis-server has no replicas "
                             "(set url or sentinels)", path, line_of("ack_replicas"));
            return -1;
        }
        return 0;
    }
    int line = line_of("sentinels");
    if (cfg->redis_url) {
        *err = xasprintf("%s:%d: sentinels: set url or sentinels, not both", path, line);
        return -1;
    }
    if (!cfg->redis_master_name) {
        *err = xasprintf("%s:%d: sentinels: needs master_name", path, line);
        return -1;
    }
    for (const char *p = cfg->redis_master_name; *p; p++)
        if (isspace((unsigned char)*p) || !isprint((unsigned char)*p)) {
            *err = xasprintf("%s:%d: master_name: no spaces or control characters", path,
                             line_of("master_name"));
            return -1;
        }
    char *copy = xstrdup(cfg->redis_sentinels), *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save), n++) {
        char host[256];
        int port;
        if (n >= CONFIG_MAX_SENTINELS || config_host_port(t, host, sizeof(host), &port) < 0) {
            *err = n >= CONFIG_MAX_SENTINELS
                       ? xasprintf("%s:%d: sentinels: at most %d", path, line, CONFIG_MAX_SENTINELS)
                       : xasprintf("%s:%d: sentinels: \"%s\" is not host:port", path, line, t);
            free(copy);
            return -1;
        }
    }
    free(copy);
    return 0;
}

int config_host_port(const char *s, char *host, size_t hostsz, int *port)
{
    const char *colon = strrchr(s, ':'), *h = s;
    size_t hl = colon ? (size_t)(colon - s) : 0;
    if (hl >= 2 && s[0] == '[' && colon[-1] == ']') { /* [IPv6]:port */
        h = s + 1;
        hl -= 2;
    }
    if (!colon || hl == 0 || hl >= hostsz || !colon[1])
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

struct config *config_load(const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *err = xasprintf("%s:0: -: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct config *cfg = config_read(f, path, err);
    fclose(f);
    return cfg;
}

struct config *config_read(FILE *f, const char *path, char **err)
{
    struct config *cfg = xcalloc(1, sizeof(*cfg));
    struct queue_conf *cur_queue = NULL;
    struct branch_conf *cur_branch = NULL;
    struct mailbox_conf *cur_mailbox = NULL;
    char section[80] = "";
    char line_buf[4096];
    int lineno = 0;

    cfg->path = xstrdup(path);
    *err = NULL;
    memset(key_line, 0, sizeof(key_line));
    for (size_t i = 0; i < ARRAY_SIZE(cfg_keys); i++)
        if (i == 0 || strcmp(cfg_keys[i].section, cfg_keys[i - 1].section) != 0)
            if (strcmp(cfg_keys[i].section, "queue") != 0 &&
                strcmp(cfg_keys[i].section, "branch ID") != 0 &&
                strcmp(cfg_keys[i].section, "mailbox") != 0)
                apply_defaults(cfg_keys[i].section, cfg);

    while (fgets(line_buf, sizeof(line_buf), f)) {
        lineno++;
        if (!strchr(line_buf, '\n') && !feof(f))
            FAIL(lineno, "-", "line longer than %zu bytes", sizeof(line_buf) - 2);
        char *s = trim(line_buf);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1])
                FAIL(lineno, "-", "malformed section header");
            *close = '\0';
            char *name = trim(s + 1);
            char *space = strpbrk(name, " \t");
            char *arg = NULL;
            if (space) {
                *space = '\0';
                arg = trim(space + 1);
            }
            if (!section_known(name))
                FAIL(lineno, name, "unknown section");
            size_t name_len = strlen(name); /* known sections are short: this always fits */
            memcpy(section, name, name_len < sizeof(section) ? name_len + 1 : sizeof(section));
            section[sizeof(section) - 1] = '\0';
            cur_queue = NULL;
            cur_branch = NULL;
            cur_mailbox = NULL;
            if (strcmp(name, "mailbox") == 0) {
                if (!arg || !valid_queue_name(arg))
                    FAIL(lineno, "mailbox", "needs a name of letters, digits, _ or -");
                if (config_mailbox(cfg, arg))
                    FAIL(lineno, "mailbox", "mailbox \"%s\" defined twice", arg);
                if (cfg->n_mailboxes >= CONFIG_MAX_MAILBOXES)
                    FAIL(lineno, "mailbox", "at most %d mailboxes", CONFIG_MAX_MAILBOXES);
                cur_mailbox = xcalloc(1, sizeof(*cur_mailbox));
                cur_mailbox->name = xstrdup(arg);
                cur_mailbox->line = lineno;
                apply_defaults("mailbox", cur_mailbox);
                cfg->mailboxes[cfg->n_mailboxes++] = cur_mailbox;
            } else if (strcmp(name, "queue") == 0) {
                if (!arg || !valid_queue_name(arg))
                    FAIL(lineno, "queue", "needs a name of letters, digits, _ or -");
                if (config_queue(cfg, arg))
                    FAIL(lineno, "queue", "queue \"%s\" defined twice", arg);
                if (cfg->n_queues >= CONFIG_MAX_QUEUES)
                    FAIL(lineno, "queue", "at most %d queues", CONFIG_MAX_QUEUES);
                cur_queue = xcalloc(1, sizeof(*cur_queue));
                cur_queue->name = xstrdup(arg);
                cur_queue->line = lineno;
                apply_defaults("queue", cur_queue);
                cfg->queues[cfg->n_queues++] = cur_queue;
            } else if (strcmp(name, "branch") == 0 && arg) {
                /* [branch ID]: one bank branch; plain [branch] is the bridge itself */
                if (!valid_queue_name(arg) || strlen(arg) > 32)
                    FAIL(lineno, "branch", "id must be 1-32 letters, digits, _ or -");
                for (int i = 0; i < cfg->n_branches; i++)
                    if (strcmp(cfg->branches[i]->id, arg) == 0)
                        FAIL(lineno, "branch", "branch \"%s\" defined twice", arg);
                if (cfg->n_branches >= CONFIG_MAX_BRANCHES)
                    FAIL(lineno, "branch", "at most %d branches", CONFIG_MAX_BRANCHES);
                cur_branch = xcalloc(1, sizeof(*cur_branch));
                cur_branch->id = xstrdup(arg);
                cur_branch->line = lineno;
                apply_defaults("branch ID", cur_branch);
                cfg->branches[cfg->n_branches++] = cur_branch;
                snprintf(section, sizeof(section), "branch ID");
            } else if (arg) {
                FAIL(lineno, name, "section takes no name");
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq)
            FAIL(lineno, s, "expected key = value");
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (!*section)
            FAIL(lineno, key, "key outside any section");
        const struct cfg_key *k = find_key(section, key);
        if (!k)
            FAIL(lineno, key, "unknown key in [%s]", section);
        if (!cur_queue && !cur_branch && !cur_mailbox)
            key_line[k - cfg_keys] = lineno;
        void *target = cur_queue ? (void *)cur_queue : cur_branch ? (void *)cur_branch : (void *)cfg;
        if (cur_mailbox)
            target = cur_mailbox;
        char *e = cfg_set(k, target, val);
        if (!e && k->type == CFG_RULE)
            cfg->rules[cfg->n_rules - 1].line = lineno;
        if (e) {
            *err = xasprintf("%s:%d: %s: %s", path, lineno, key, e);
            free(e);
            goto fail;
        }
    }
    if (cfg->n_listen == 0)
        cfg->listen[cfg->n_listen++] = xstrdup("127.0.0.1:8080");
    if (!config_queue(cfg, cfg->default_queue)) {
        /* The default queue always exists: every channel, no skills required. */
        struct queue_conf *q = xcalloc(1, sizeof(*q));
        q->name = xstrdup(cfg->default_queue);
        apply_defaults("queue", q);
        cfg->queues[cfg->n_queues++] = q;
    }
    for (int i = 0; i < cfg->n_rules; i++) {
        if (!config_queue(cfg, cfg->rules[i].queue)) {
            *err = xasprintf("%s:%d: rule: no queue named \"%s\"", path, cfg->rules[i].line,
                             cfg->rules[i].queue);
            goto fail;
        }
    }
    for (int i = 0; i < cfg->n_queues; i++) {
        const struct queue_conf *q = cfg->queues[i];
        if (q->overflow_queue && !config_queue(cfg, q->overflow_queue)) {
            *err = xasprintf("%s:%d: overflow_queue: no queue named \"%s\"", path, q->line,
                             q->overflow_queue);
            goto fail;
        }
        if (q->overflow_queue) {
            const struct queue_conf *target = config_queue(cfg, q->overflow_queue);
            char *copy = xstrdup(q->channels), *save = NULL;
            for (char *t = strtok_r(copy, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
                size_t tl = strlen(t);
                bool served = false;
                for (const char *p = target->channels; (p = strstr(p, t)) != NULL; p += tl)
                    served = served || ((p == target->channels || strchr(" \t,", p[-1])) &&
                                        (p[tl] == '\0' || strchr(" \t,", p[tl])));
                if (!served) {
                    *err = xasprintf("%s:%d: overflow_queue: \"%s\" does not serve %s", path,
                                     q->line, q->overflow_queue, t);
                    free(copy);
                    goto fail;
                }
            }
            free(copy);
        }
        if (q->overflow_queue && q->overflow_skills) {
            *err = xasprintf("%s:%d: overflow_skills: set overflow_skills or overflow_queue, "
                             "not both", path, q->line);
            goto fail;
        }
    }
    for (int i = 0; i < cfg->n_queues; i++)
        if (check_queue(path, cfg, cfg->queues[i], err) < 0)
            goto fail;
    for (int i = 0; i < cfg->n_branches; i++)
        if (check_branch(path, cfg, cfg->branches[i], err) < 0)
            goto fail;
    if (check_email(path, cfg, err) < 0)
        goto fail;
    if (cfg->branch_listen && (!cfg->branch_ca || !cfg->branch_cert || !cfg->branch_key ||
                               !cfg->branch_crl))
        FAIL(line_of("crl"), "listen", "[branch] listen needs ca, cert, key and crl");
    if (cfg->api_token && cfg->api_token_file)
        FAIL(line_of("token_file"), "token", "set token or token_file, not both");
    if (cfg->api_token_file) {
        char *e = NULL;
        cfg->api_token_value = read_secret_file(cfg->api_token_file, &e);
        if (!cfg->api_token_value) {
            *err = xasprintf("%s:%d: token_file: %s", path, line_of("token_file"), e);
            free(e);
            goto fail;
        }
    } else if (cfg->api_token) {
        cfg->api_token_value = xstrdup(cfg->api_token);
    } else {
        FAIL(lineno, "token", "[api] token or token_file is required");
    }
    if (cfg->redis_user && !cfg->redis_password_file)
        FAIL(line_of("user"), "user", "needs password_file (AUTH user password)");
    if (load_secret(path, cfg->redis_password_file, "password_file", &cfg->redis_password,
                    err) < 0)
        goto fail;
    if (cfg->redis_url && strncmp(cfg->redis_url, "redis://", 8) != 0 &&
        strncmp(cfg->redis_url, "unix://", 7) != 0)
        FAIL(line_of("url"), "url", "must start with redis:// or unix://");
    if (check_sentinels(path, cfg, err) < 0)
        goto fail;
    for (const char *p = cfg->default_country_code; *p; p++)
        if (!isdigit((unsigned char)*p))
            FAIL(line_of("default_country_code"), "default_country_code", "digits only, e.g. 34");
    if (cfg->premium_medium > cfg->premium_high)
        FAIL(line_of("premium_medium"), "premium_medium", "must not exceed premium_high");
    {
        char *e = NULL;
        if (identity_init(cfg->default_country_code, cfg->policy_pattern, &e) < 0) {
            *err = xasprintf("%s:%d: policy_pattern: %s", path, line_of("policy_pattern"), e);
            free(e);
            goto fail;
        }
    }
    return cfg;
fail:
    config_free(cfg);
    return NULL;
}

const struct queue_conf *config_queue(const struct config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_queues; i++)
        if (strcmp(cfg->queues[i]->name, name) == 0)
            return cfg->queues[i];
    return NULL;
}

int config_channel_boost(const struct config *cfg, const char *channel)
{
    if (strcmp(channel, "voice") == 0)
        return cfg->boost_voice;
    if (strcmp(channel, "webchat") == 0)
        return cfg->boost_webchat;
    if (strcmp(channel, "branch") == 0)
        return cfg->boost_branch;
    if (strcmp(channel, "email") == 0)
        return cfg->boost_email;
    if (strcmp(channel, "fax") == 0)
        return cfg->boost_fax;
    return 0;
}

const struct mailbox_conf *config_mailbox(const struct config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_mailboxes; i++)
        if (strcmp(cfg->mailboxes[i]->name, name) == 0)
            return cfg->mailboxes[i];
    return NULL;
}
