/* teller.h - omnicc-teller, the bank teller's terminal for the branch bridge of omniccd.
 *
 *   conf.c   the configuration file (server, certificates, spool, counter)
 *   spool.c  the durable store-and-forward journal: every action that changes something is
 *            written (and fsync'd) here before it is sent, and marked once acknowledged;
 *            msg_ids make resends after a broken link harmless
 *   link.c   the connection: TCP + TLS with the terminal's certificate, 4-byte length +
 *            JSON frames, HELLO with the event cursor, reconnect with backoff, heartbeats
 *   app.c    what the teller does: requests in one ordered queue, replies, pushed events
 *   ui.c     the ncurses screens (80x24, function-key bar, forms, '?' for help)
 *   main.c   the loop: poll() on the keyboard and the link */
#ifndef OMNICC_TELLER_H
#define OMNICC_TELLER_H

#include <jansson.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TELLER_MSG_ID_MAX 64

int64_t teller_now_ms(void);  /* wall clock */
int64_t teller_mono_ms(void); /* for timeouts */
void teller_msg_id(char out[TELLER_MSG_ID_MAX + 1]);

/* ---- conf.c ---- */

struct teller_conf {
    char *server;         /* host:port of [branch] listen */
    char *server_name;    /* name the server certificate must carry (unset: chain only) */
    char *ca;             /* CA of the server certificate */
    char *cert, *key;     /* this terminal's certificate and key */
    char *spool;          /* directory of the journal, the event cursor and the branch cache */
    char *counter;        /* this desk's counter name */
    char *handover_queue; /* default queue of the contact centre for handovers */
    int timeout_s;        /* a request unanswered this long means the link is broken */
};

int teller_conf_load(const char *path, struct teller_conf *c, char **err);
void teller_conf_free(struct teller_conf *c);

/* ---- spool.c ---- */

enum spool_state { SPOOL_PENDING, SPOOL_SENT, SPOOL_FAILED };

struct spool_entry {
    struct spool_entry *next;
    char msg_id[TELLER_MSG_ID_MAX + 1];
    char type[32];
    char agent[65];
    char summary[120];
    char *frame; /* the request exactly as it is (re)sent */
    int64_t at;
    enum spool_state state;
    char result[160]; /* ACK summary or NACK code: message */
};

struct spool {
    char path[1024];
    int fd;
    struct spool_entry *head, *tail;
    int pending, sent, failed;
};

int spool_open(struct spool *s, const char *dir, char **err);
void spool_close(struct spool *s);
/* Durably record a request before it is sent. NULL when the disk refused (errno). */
struct spool_entry *spool_add(struct spool *s, json_t *frame, const char *summary);
int spool_mark(struct spool *s, struct spool_entry *e, enum spool_state st, const char *result);
struct spool_entry *spool_find(struct spool *s, const char *msg_id);

/* ---- link.c ---- */

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_TLS, LINK_HELLO, LINK_UP };

struct link {
    enum link_state state;
    const struct teller_conf *conf;
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    bool want_write; /* the TLS engine waits for the socket to be writable */
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_len, out_cap;
    int64_t deadline_ms;     /* connect/handshake/hello must be done by then */
    int64_t next_attempt_ms; /* DOWN: when to try again */
    int backoff_ms;
    int64_t last_rx_ms, last_tx_ms;
    int heartbeat_s;
    char hello_id[TELLER_MSG_ID_MAX + 1];
    char why[400]; /* why the link is down */
    void (*on_frame)(json_t *frame, void *arg);
    void (*on_state)(enum link_state st, void *arg);
    void *arg;
};

int link_init(struct link *l, const struct teller_conf *c, char **err);
void link_free(struct link *l);
/* Fill pfd for poll() (fd -1 when idle) and return the poll timeout in ms. */
int link_prepare(struct link *l, struct pollfd *pfd, int64_t now);
void link_service(struct link *l, short revents, int64_t now);
int link_send(struct link *l, json_t *frame); /* steals frame; -1 when not up */
void link_drop(struct link *l, const char *why);
/* Start the next attempt now (a key pressed, or the spool has work). */
void link_retry_now(struct link *l);
void link_welcomed(struct link *l, int heartbeat_s);

/* ---- app.c ---- */

struct offer {
    char reservation[32];
    char interaction[32];
    char summary[100];
    int64_t expires_at;
};

struct visit {
    char id[32];                     /* "" while created offline */
    char ref[TELLER_MSG_ID_MAX + 1]; /* msg_id of the VISIT_CREATE, for offline follow-ups */
    char ticket[16];
    char customer[120];
    char case_id[32];
    char service[40];
    char state[20];
    int64_t since;
};

#define APP_MAX_OFFERS 8
#define APP_MAX_LINES 400

struct app {
    struct teller_conf conf;
    struct link link;
    struct spool spool;
    char agent[65];
    char token[257];
    bool have_teller; /* an agent and token were entered */
    bool verified;    /* the server accepted them on this link */
    bool signin_sent;
    char agent_name[120];
    char branch[40], terminal[80], branch_name[120];
    json_t *services; /* {SERVICE: QUEUE}, cached in the spool directory */
    uint64_t cursor;  /* last event seq seen */
    struct visit cur;
    json_t *customer; /* the last lookup / screen pop */
    char case_hint[32];
    struct offer offers[APP_MAX_OFFERS];
    int n_offers;
    char status[200]; /* the message line */
    bool status_error;
    /* the request in flight (one at a time keeps spooled work in order) */
    char inflight_id[TELLER_MSG_ID_MAX + 1];
    char inflight_type[32];
    struct spool_entry *inflight_spool;
    json_t *inflight_frame; /* a volatile request (not spooled) */
    int64_t inflight_deadline;
    int64_t retry_at;      /* a spooled entry refused for now (rate, storage) waits */
    json_t *volatile_next; /* a volatile request waiting for the spool to drain */
    int waiting;           /* visits waiting at the branch, from events */
    char last_event[160];
    bool quit;
};

void app_init(struct app *a);
void app_tick(struct app *a, int64_t now);
/* Actions from the UI. Each returns false and sets the status line when refused. */
bool app_signin(struct app *a, const char *agent, const char *token);
void app_signout(struct app *a);
bool app_lookup(struct app *a, const char *by, const char *value, const char *purpose);
bool app_visit_create(struct app *a, const char *service, json_t *customer, const char *note,
                      bool serve_now);
bool app_call_next(struct app *a);
bool app_visit_end(struct app *a, const char *outcome, const char *note);
bool app_note(struct app *a, const char *text);
bool app_consent(struct app *a, const char *kind, bool granted, const char *text);
bool app_fnol(struct app *a, int64_t loss_at, const char *kind, const char *description,
              const char *location);
bool app_handover(struct app *a, const char *queue, const char *channel, const char *note);
bool app_offer(struct app *a, int i, bool accept);
void app_status(struct app *a, bool error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool app_online(const struct app *a);

/* ---- ui.c ---- */

void ui_init(void);
void ui_end(void);
void ui_draw(struct app *a);
void ui_key(struct app *a); /* read and act on the keys waiting */

#endif
