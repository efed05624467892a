/* fuzz_interaction.c - libFuzzer target for the one interaction model (daemon/interaction.c):
 * a POST /v1/interactions body parsed as the HTTP layer parses it (jansson, duplicates
 * refused), validated and normalised by ix_from_json, then the queue picked for it
 * (router_pick_queue) and the document the ingest script would get (ingest_document), as
 * every channel adapter's interaction takes that same way after its own parsing.
 * Whatever validation accepts must be well formed: an external id, a direction, clean
 * single-line text, identifiers that fit, a priority 0-100, metadata that is a JSON object,
 * and a document that encodes to JSON (jansson refuses invalid UTF-8); checked here, so the
 * fuzzer reports a violation as a crash.
 * Built with -Dfuzzing=true as a libFuzzer binary (tests/fuzz/meson.build); with any
 * compiler the corpus (corpus/interaction/) is replayed by driver.c in 'fuzz-smoke'. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/ingest.h"
#include "omnicc/interaction.h"
#include "omnicc/router.h"
#include "omnicc/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Queues with channels and skills, rules and a small body limit, so the queue checks and
 * the length bounds are reachable. */
static const char CONFIG[] = "[api]\n"
                             "token = fuzz-admin-token-0123456789\n"
                             "[http]\n"
                             "max_body = 4096\n"
                             "[routing]\n"
                             "default_queue = general\n"
                             "rule = channel=voice intent=claims -> claims\n"
                             "rule = skill=lang_en -> english\n"
                             "[queue general]\n"
                             "channels = voice email fax webchat\n"
                             "[queue claims]\n"
                             "channels = voice email\n"
                             "skills = claims:2 lang_es:1\n"
                             "[queue english]\n"
                             "channels = voice webchat email\n"
                             "skills = lang_en:1\n"
                             "[queue branch]\n"
                             "channels = branch\n";

static const struct config *config(void)
{
    static struct config *cfg;
    if (!cfg) {
        FILE *f = fmemopen((void *)CONFIG, sizeof(CONFIG) - 1, "r");
        char *err = NULL;
        cfg = f ? config_read(f, "fuzz.conf", &err) : NULL;
        if (f)
            fclose(f);
        if (!cfg)
            abort();
    }
    return cfg;
}

static void check_line(const char *s, size_t max)
{
    if (s && (strlen(s) > max || !text_is_clean_utf8(s, strlen(s)) || strchr(s, '\n') ||
              strchr(s, '\r')))
        abort();
}

static void check_accepted(const struct config *cfg, const struct interaction *ix)
{
    if (ix->channel >= CH__COUNT || !ix->external_id || !*ix->external_id || !ix->direction ||
        (strcmp(ix->direction, "inbound") != 0 && strcmp(ix->direction, "outbound") != 0))
        abort();
    check_line(ix->external_id, IX_MAX_EXTERNAL_ID);
    check_line(ix->from, IX_MAX_ADDRESS);
    check_line(ix->to, IX_MAX_ADDRESS);
    check_line(ix->subject, IX_MAX_SUBJECT);
    check_line(ix->customer_name, IX_MAX_NAME);
    if (ix->body && (strlen(ix->body) > (size_t)cfg->max_body ||
                     !text_is_clean_utf8(ix->body, strlen(ix->body))))
        abort();
    for (int k = 0; k < IDENT__COUNT; k++)
        if (ix->ident[k] && (!*ix->ident[k] || strlen(ix->ident[k]) >= IDENT_MAX))
            abort();
    if (ix->case_id && !id_is_valid(ix->case_id, 'C'))
        abort();
    if (ix->queue && !config_queue(cfg, ix->queue))
        abort();
    if (ix->priority < 0 || ix->priority > 100)
        abort();
    if (ix->metadata) {
        json_t *m = json_loads(ix->metadata, 0, NULL);
        if (!json_is_object(m))
            abort();
        json_decref(m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct config *cfg = config();
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return 0;
    }
    struct interaction ix;
    char *err = NULL;
    if (ix_from_json(cfg, obj, &ix, &err) == 0) {
        check_accepted(cfg, &ix);
        const char *queue = router_pick_queue(cfg, &ix);
        if (queue) {
            if (!router_queue_serves(cfg, queue, channel_name(ix.channel)))
                abort();
            json_t *doc = ingest_document(cfg, &ix, queue);
            char *text = json_dumps(doc, JSON_COMPACT);
            if (!text)
                abort(); /* a string the validation let through that is not UTF-8 */
            free(text);
            json_decref(doc);
        }
        ix_free(&ix);
    } else {
        /* refused: a message naming the field, and nothing kept */
        if (!err || !*err || ix.external_id || ix.metadata)
            abort();
        free(err);
    }
    json_decref(obj);
    return 0;
}
