/* identity.h - normalisation of customer identifiers, so that the same person written
 * differently by different channels maps to one index entry: phones to E.164, emails
 * trimmed and lower-cased, policy numbers checked against the configured pattern. */
#ifndef OMNICC_IDENTITY_H
#define OMNICC_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

enum ident_kind {
    IDENT_PHONE,
    IDENT_EMAIL,
    IDENT_POLICY,
    IDENT_BRANCH,   /* branch customer id */
    IDENT_NATIONAL, /* national id */
    IDENT__COUNT
};

#define IDENT_MAX 256

/* "phone", "email", "policy", "branch", "national": the names used in Redis keys. */
const char *ident_kind_name(enum ident_kind kind);
int ident_kind_from_name(const char *name); /* -1 if unknown */

/* Compile the policy pattern (POSIX ERE, anchored). 0 or -1 with *err set. */
int identity_init(const char *default_country_code, const char *policy_pattern, char **err);
void identity_shutdown(void);

/* Each returns 0 and writes the normalised form into out, or -1 with a reason in why. */
int identity_phone(const char *in, char *out, size_t outsize, const char **why);
int identity_email(const char *in, char *out, size_t outsize, const char **why);
int identity_policy(const char *in, char *out, size_t outsize, const char **why);
int identity_plain_id(const char *in, char *out, size_t outsize, const char **why);
int identity_normalize(enum ident_kind kind, const char *in, char *out, size_t outsize,
                       const char **why);

#endif
