/* branch_tls.c - the TLS context of the terminal bridge. Only certificates issued by the
 * configured CA are accepted, a client certificate is required, and the CA's CRL is checked
 * on every handshake. The certificate names the branch and terminal: a line of the serial
 * map, else a SAN URI urn:omnicc:terminal:BRANCH:TERMINAL, else a CN TERMINAL@BRANCH.
 *
 * A reload builds a whole new context (CA, our certificate, CRL, serial map); connections
 * made before keep the context they were made with (OpenSSL counts references), new ones
 * get the new one, and a failed reload keeps the old. */
#include <ctype.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branch.h"
#include "omnicc/config.h"
#include "omnicc/log.h"
#include "omnicc/util.h"

#define SERIAL_MAP_MAX 100000

struct serial_entry {
    char serial[80]; /* upper-case hex, no leading zeros */
    char branch[BRANCH_ID_MAX + 1];
    char terminal[BRANCH_TERMINAL_MAX + 1];
};

struct branch_tls {
    SSL_CTX *ctx;
    STACK_OF(X509_CRL) * crls;
    struct serial_entry *map;
    size_t n_map;
};

static char *ssl_errors(const char *what, const char *path)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return xasprintf("%s %s: %s", what, path, *buf ? buf : "unreadable");
}

static int load_crls(struct branch_tls *t, X509_STORE *store, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *err = xasprintf("cannot open CRL %s", path);
        return -1;
    }
    t->crls = sk_X509_CRL_new_null();
    X509_CRL *crl;
    while ((crl = PEM_read_X509_CRL(f, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_crl(store, crl);
        sk_X509_CRL_push(t->crls, crl);
    }
    fclose(f);
    ERR_clear_error(); /* the end of the file reads as an error */
    if (sk_X509_CRL_num(t->crls) == 0) {
        *err = xasprintf("no CRL in %s", path);
        return -1;
    }
    return 0;
}

static int load_serial_map(struct branch_tls *t, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *err = xasprintf("cannot open serial map %s", path);
        return -1;
    }
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char serial[100], branch[100], terminal[100];
        if (line[0] == '#' || strspn(line, " \t\r\n") == strlen(line))
            continue;
        if (sscanf(line, "%99s %99s %99s", serial, branch, terminal) != 3 ||
            !branch_id_valid(branch) || !branch_terminal_valid(terminal) ||
            strspn(serial, "0123456789abcdefABCDEF:") != strlen(serial) ||
            t->n_map >= SERIAL_MAP_MAX) {
            *err = xasprintf("%s:%d: expected SERIAL_HEX BRANCH TERMINAL", path, lineno);
            fclose(f);
            return -1;
        }
        t->map = xrealloc(t->map, (t->n_map + 1) * sizeof(*t->map));
        struct serial_entry *e = &t->map[t->n_map++];
        size_t o = 0;
        for (const char *p = serial; *p && o + 1 < sizeof(e->serial); p++)
            if (*p != ':' && !(o == 0 && *p == '0' && p[1]))
                e->serial[o++] = (char)toupper((unsigned char)*p);
        e->serial[o] = '\0';
        memcpy(e->branch, branch, strlen(branch) + 1); /* lengths checked above */
        memcpy(e->terminal, terminal, strlen(terminal) + 1);
    }
    fclose(f);
    return 0;
}

struct branch_tls *branch_tls_new(const struct config *cfg, char **err)
{
    struct branch_tls *t = xcalloc(1, sizeof(*t));
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (!t->ctx) {
        *err = ssl_errors("cannot create a TLS context", "");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(t->ctx, 0);
    /* thousands of mostly idle terminals: no read/write buffers held between frames */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->branch_cert) != 1) {
        *err = ssl_errors("cannot load certificate", cfg->branch_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->branch_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
        *err = ssl_errors("cannot load key", cfg->branch_key);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(t->ctx, cfg->branch_ca, NULL) != 1) {
        *err = ssl_errors("cannot load CA", cfg->branch_ca);
        goto fail;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->branch_ca);
    if (names)
        SSL_CTX_set_client_CA_list(t->ctx, names);
    X509_STORE *store = SSL_CTX_get_cert_store(t->ctx);
    if (load_crls(t, store, cfg->branch_crl, err) < 0)
        goto fail;
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(t->ctx, 4);
    if (cfg->branch_serial_map && load_serial_map(t, cfg->branch_serial_map, err) < 0)
        goto fail;
    return t;
fail:
    branch_tls_free(t);
    return NULL;
}

void branch_tls_free(struct branch_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    if (t->crls)
        sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
    free(t->map);
    free(t);
}

SSL_CTX *branch_tls_ctx(struct branch_tls *t)
{
    return t->ctx;
}

static void serial_hex(X509 *cert, char *out, size_t size)
{
    out[0] = '\0';
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    if (hex)
        snprintf(out, size, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
}

int branch_tls_identity(struct branch_tls *t, X509 *cert, char branch[BRANCH_ID_MAX + 1],
                        char terminal[BRANCH_TERMINAL_MAX + 1], char **err)
{
    char serial[100];
    serial_hex(cert, serial, sizeof(serial));
    for (size_t i = 0; i < t->n_map; i++) {
        if (strcmp(t->map[i].serial, serial) == 0) {
            memcpy(branch, t->map[i].branch, strlen(t->map[i].branch) + 1);
            memcpy(terminal, t->map[i].terminal, strlen(t->map[i].terminal) + 1);
            return 0;
        }
    }
    int found = -1;
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && found < 0 && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *u = g->d.uniformResourceIdentifier;
        char uri[256];
        if (u->length <= 0 || u->length >= (int)sizeof(uri) ||
            memchr(u->data, '\0', (size_t)u->length))
            continue;
        memcpy(uri, u->data, (size_t)u->length);
        uri[u->length] = '\0';
        found = branch_identity_parse(uri, branch, terminal);
    }
    GENERAL_NAMES_free(sans);
    if (found == 0)
        return 0;
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) >
            0 &&
        branch_identity_parse(cn, branch, terminal) == 0)
        return 0;
    *err = xasprintf("certificate serial %s names no branch terminal (serial map, SAN "
                     "urn:omnicc:terminal:BRANCH:TERMINAL or CN TERMINAL@BRANCH)",
                     serial);
    return -1;
}

bool branch_tls_revoked(struct branch_tls *t, X509 *cert)
{
    for (int i = 0; t->crls && i < sk_X509_CRL_num(t->crls); i++) {
        X509_REVOKED *rev = NULL;
        if (X509_CRL_get0_by_cert(sk_X509_CRL_value(t->crls, i), &rev, cert) == 1)
            return true;
    }
    return false;
}
