/* curl_loop.h - libcurl's multi interface driven by the libevent loop: outbound HTTP
 * (webhooks, provider APIs, media downloads) and IMAP without ever blocking the loop.
 * DNS goes through curl's threaded resolver (Debian's libcurl), never the loop thread. */
#ifndef OMNICC_CURL_LOOP_H
#define OMNICC_CURL_LOOP_H

#include <curl/curl.h>

struct event_base;

/* Called once when the transfer ends: result is CURLE_OK or the error; the easy handle is
 * still valid inside the callback (read CURLINFO_*), and is cleaned up after it returns. */
typedef void curl_loop_done_fn(CURL *easy, CURLcode result, void *arg);

int curl_loop_init(struct event_base *base);
void curl_loop_shutdown(void); /* aborts transfers still running (callbacks fire) */
/* Start a configured easy handle; ownership passes to the loop. 0 or -1. */
int curl_loop_add(CURL *easy, curl_loop_done_fn *done, void *arg);
int curl_loop_running(void);

#endif
