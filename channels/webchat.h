/* webchat.h - the customer web chat channel (channels/webchat.c): chat sessions for the
 * widget at /chat/ (API under /v1/chat/), agents' replies, and the desktop's timeline. */
#ifndef OMNICC_CHANNEL_WEBCHAT_H
#define OMNICC_CHANNEL_WEBCHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "omnicc/channel.h"

extern const struct channel webchat_channel;

/* Visitor tokens: "v1.<visitor id, 32 hex>.<expiry, unix s>.<HMAC-SHA256 hex>". Exposed for
 * tests and tools. webchat_token_mint returns a malloc'd token; webchat_token_check fills
 * visitor (33 bytes) and returns true when the token is well-formed, signed with key and
 * not expired at now_s. */
char *webchat_token_mint(const unsigned char *key, size_t key_len, const char *visitor,
                         long long expires_s);
bool webchat_token_check(const unsigned char *key, size_t key_len, const char *token,
                         long long now_s, char *visitor);
/* The identity hash the insurer's backend computes: hex HMAC-SHA256(secret, type ":" id). */
void webchat_identity_hash(const unsigned char *secret, size_t secret_len, const char *type,
                           const char *id, char out[65]);

#endif
