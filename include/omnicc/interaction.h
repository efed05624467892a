/* interaction.h - the one interaction model every channel normalises into, and its
 * validation. Adapters (channels/) fill a struct interaction; the store writes it with one
 * script call. Nothing here knows Redis or any wire format but the generic JSON form. */
#ifndef OMNICC_INTERACTION_H
#define OMNICC_INTERACTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "identity.h"

struct config;

enum channel_kind { CH_VOICE, CH_EMAIL, CH_FAX, CH_BRANCH, CH_WEBCHAT, CH__COUNT };

#define IX_MAX_EXTERNAL_ID 200
#define IX_MAX_ADDRESS 320
#define IX_MAX_SUBJECT 998
#define IX_MAX_NAME 200
#define IX_MAX_SKILLS 16
#define IX_MAX_METADATA 16384

struct interaction {
    enum channel_kind channel;
    char *direction;        /* inbound | outbound */
    char *external_id;      /* the provider's id: the idempotency key */
    char *from, *to;
    char *subject;
    char *body;
    char *customer_name;
    char *ident[IDENT__COUNT]; /* normalised identifiers found (NULL when absent) */
    char *case_id;          /* explicit case reference */
    char *queue;
    char *skills;           /* space-separated */
    char *intent;           /* what the customer wants (IVR choice, chat topic, metadata.intent) */
    int priority;           /* 0-100, explicit boost in steps of [routing] priority_step */
    char *metadata;         /* compact JSON object text */
};

const char *channel_name(enum channel_kind ch);
int channel_from_name(const char *name); /* -1 if unknown */

void ix_free(struct interaction *ix);

/* Validate and normalise the generic JSON form. 0, or -1 with a message naming the field
 * (caller frees *err). Nothing is written anywhere on failure. */
int ix_from_json(const struct config *cfg, json_t *obj, struct interaction *ix, char **err);

/* Identifier/id syntax checks shared by the API modules. */
bool id_is_valid(const char *id, char prefix); /* "C-123" with prefix 'C' */
bool name_is_valid(const char *s, size_t maxlen); /* [A-Za-z0-9_.:-] */

#endif
