/* identity.c - identifier normalisation. The index maps normalised identifiers to customers,
 * so every channel must produce the same form for the same person: an IVR caller id, a phone
 * typed by a teller with spaces, a number read by OCR off a fax cover sheet. */
#include "omnicc/identity.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/util.h"

static char country_code[8] = "34";
static regex_t policy_re;
static bool policy_re_ready;

static const char *kind_names[IDENT__COUNT] = {"phone", "email", "policy", "branch", "national"};

const char *ident_kind_name(enum ident_kind kind)
{
    return kind < IDENT__COUNT ? kind_names[kind] : "?";
}

int ident_kind_from_name(const char *name)
{
    for (int i = 0; i < IDENT__COUNT; i++)
        if (strcmp(kind_names[i], name) == 0)
            return i;
    return -1;
}

int identity_init(const char *default_country_code, const char *policy_pattern, char **err)
{
    regex_t re;
    char *anchored = xasprintf("^(%s)$", policy_pattern);
    int rc = regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB);
    free(anchored);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &re, msg, sizeof(msg));
        *err = xasprintf("invalid regular expression: %s", msg);
        return -1;
    }
    if (policy_re_ready)
        regfree(&policy_re);
    policy_re = re;
    policy_re_ready = true;
    snprintf(country_code, sizeof(country_code), "%s", default_country_code);
    return 0;
}

void identity_shutdown(void)
{
    if (policy_re_ready)
        regfree(&policy_re);
    policy_re_ready = false;
}

static const char *skip_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

/* Countries whose national numbers keep their leading 0 after the country code. */
static bool keeps_trunk_zero(const char *cc)
{
    return strcmp(cc, "39") == 0 || strcmp(cc, "378") == 0 || strcmp(cc, "379") == 0;
}

int identity_phone(const char *in, char *out, size_t outsize, const char **why)
{
    char digits[40];
    size_t nd = 0;
    bool plus = false;
    const char *s = skip_space(in);

    if (strncasecmp(s, "tel:", 4) == 0)
        s += 4;
    else if (strncasecmp(s, "sips:", 5) == 0)
        s += 5;
    else if (strncasecmp(s, "sip:", 4) == 0)
        s += 4;
    s = skip_space(s);
    if (*s == '+') {
        plus = true;
        s++;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isdigit(c)) {
            if (nd >= sizeof(digits) - 1) {
                *why = "too many digits";
                return -1;
            }
            digits[nd++] = (char)c;
        } else if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/' ||
                   c == '\t') {
            continue;
        } else if ((c == '@' || c == ';') && nd > 0) {
            break; /* sip:+34600111222@pbx;user=phone */
        } else {
            *why = "only digits, spaces, + - . ( ) / are allowed";
            return -1;
        }
    }
    digits[nd] = '\0';
    if (nd == 0) {
        *why = "no digits";
        return -1;
    }
    const char *national = digits;
    char e164[48];
    if (plus) {
        snprintf(e164, sizeof(e164), "+%s", digits);
    } else if (nd > 2 && digits[0] == '0' && digits[1] == '0') {
        snprintf(e164, sizeof(e164), "+%s", digits + 2);
    } else {
        size_t cclen = strlen(country_code);
        /* A PBX often sends the international form without '+': 34600111222. */
        if (nd > 10 && nd - cclen >= 9 && strncmp(digits, country_code, cclen) == 0) {
            snprintf(e164, sizeof(e164), "+%s", digits);
        } else {
            if (national[0] == '0' && !keeps_trunk_zero(country_code))
                national++;
            snprintf(e164, sizeof(e164), "+%s%s", country_code, national);
        }
    }
    size_t n = strlen(e164) - 1;
    if (n < 7 || n > 15) {
        *why = "an E.164 number has 7 to 15 digits";
        return -1;
    }
    if (e164[1] == '0') {
        *why = "country code cannot start with 0";
        return -1;
    }
    if (strlen(e164) + 1 > outsize) {
        *why = "too long";
        return -1;
    }
    memcpy(out, e164, strlen(e164) + 1);
    return 0;
}

int identity_email(const char *in, char *out, size_t outsize, const char **why)
{
    const char *s = skip_space(in);
    if (strncasecmp(s, "mailto:", 7) == 0)
        s += 7;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0) {
        *why = "empty";
        return -1;
    }
    if (len > 254 || len + 1 > outsize) {
        *why = "longer than 254 characters";
        return -1;
    }
    const char *at = NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' ||
            c == ';' || c == '"' || c == '\\' || c == '[' || c == ']') {
            *why = "contains a character not allowed in an address";
            return -1;
        }
        if (c == '@') {
            if (at) {
                *why = "more than one @";
                return -1;
            }
            at = s + i;
        }
        out[i] = (char)tolower(c);
    }
    out[len] = '\0';
    if (!at || at == s || (size_t)(at - s) == len - 1) {
        *why = "expected local@domain";
        return -1;
    }
    const char *domain = at + 1;
    if (!strchr(domain, '.') || domain[0] == '.' || s[len - 1] == '.' || strstr(domain, "..")) {
        *why = "domain must be a dotted name";
        return -1;
    }
    if ((size_t)(at - s) > 64) {
        *why = "local part longer than 64 characters";
        return -1;
    }
    return 0;
}

/* Upper-case and drop the spaces a teller or OCR may put inside a policy number
 * ("pl-2024-001 234" -> "PL-2024-001234"); then it must match the configured pattern.
 * OCR confusions in the numeric part (O for 0, I/l for 1, S for 5, B for 8) are tried only
 * when the plain form does not match. */
int identity_policy(const char *in, char *out, size_t outsize, const char **why)
{
    char buf[IDENT_MAX];
    size_t n = 0;
    for (const char *s = in; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isspace(c))
            continue;
        if (!isalnum(c) && c != '-' && c != '/' && c != '.' && c != '_') {
            *why = "only letters, digits and - / . _ are allowed";
            return -1;
        }
        if (n >= sizeof(buf) - 1 || n >= outsize - 1) {
            *why = "too long";
            return -1;
        }
        buf[n++] = (char)toupper(c);
    }
    buf[n] = '\0';
    if (n == 0) {
        *why = "empty";
        return -1;
    }
    if (!policy_re_ready || regexec(&policy_re, buf, 0, NULL, 0) == 0) {
        memcpy(out, buf, n + 1);
        return 0;
    }
    /* Try OCR repairs after the first digit: letters that look like digits. */
    char fixed[IDENT_MAX];
    memcpy(fixed, buf, n + 1);
    const char *first_digit = strpbrk(fixed, "0123456789");
    if (first_digit) {
        for (char *p = (char *)first_digit; *p; p++) {
            switch (*p) {
            case 'O':
            case 'Q':
            case 'D':
                *p = '0';
                break;
            case 'I':
            case 'L':
                *p = '1';
                break;
            case 'S':
                *p = '5';
                break;
            case 'B':
                *p = '8';
                break;
            case 'Z':
                *p = '2';
                break;
            default:
                break;
            }
        }
        if (regexec(&policy_re, fixed, 0, NULL, 0) == 0) {
            memcpy(out, fixed, n + 1);
            return 0;
        }
    }
    *why = "does not match the configured policy number pattern";
    return -1;
}

/* Branch customer ids and national ids: upper-cased, separators dropped, [A-Z0-9]. */
int identity_plain_id(const char *in, char *out, size_t outsize, const char **why)
{
    size_t n = 0;
    for (const char *s = in; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == ' ' || c == '-' || c == '.' || c == '\t')
            continue;
        if (!isalnum(c) && c != ':' && c != '_' && c != '/') {
            *why = "only letters, digits and : _ / are allowed";
            return -1;
        }
        if (n >= 64 || n >= outsize - 1) {
            *why = "longer than 64 characters";
            return -1;
        }
        out[n++] = (char)toupper(c);
    }
    out[n] = '\0';
    if (n == 0) {
        *why = "empty";
        return -1;
    }
    return 0;
}

int identity_normalize(enum ident_kind kind, const char *in, char *out, size_t outsize,
                       const char **why)
{
    switch (kind) {
    case IDENT_PHONE:
        return identity_phone(in, out, outsize, why);
    case IDENT_EMAIL:
        return identity_email(in, out, outsize, why);
    case IDENT_POLICY:
        return identity_policy(in, out, outsize, why);
    case IDENT_BRANCH:
    case IDENT_NATIONAL:
        return identity_plain_id(in, out, outsize, why);
    default:
        *why = "unknown identifier kind";
        return -1;
    }
}
