/* fuzz_config.c - libFuzzer target for the configuration parser (daemon/config.c): the input
 * is a whole omniccd.conf, read through config_read from memory (fmemopen) as config_load
 * reads the file. A configuration that loads must hold together: a listen address, the
 * default queue, every rule's and overflow's queue, bounded tables; a refused one names
 * "file:line: key: problem". Checked here, so the fuzzer reports a violation as a crash.
 * Keys naming files (token_file, password_file ...) are read if they exist: run the
 * fuzzer as a user who may read nothing secret.
 * Built with -Dfuzzing=true as a libFuzzer binary (tests/fuzz/meson.build); with any
 * compiler the corpus (corpus/config/) is replayed by driver.c in 'fuzz-smoke'. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_loaded(const struct config *cfg)
{
    if (cfg->n_listen < 1 || cfg->n_listen > CONFIG_MAX_LISTEN || !cfg->api_token_value)
        abort();
    if (cfg->n_queues < 1 || cfg->n_queues > CONFIG_MAX_QUEUES ||
        !config_queue(cfg, cfg->default_queue))
        abort();
    if (cfg->n_rules > CONFIG_MAX_RULES || cfg->n_branches > CONFIG_MAX_BRANCHES ||
        cfg->n_mailboxes > CONFIG_MAX_MAILBOXES)
        abort();
    for (int i = 0; i < cfg->n_rules; i++)
        if (!config_queue(cfg, cfg->rules[i].queue))
            abort();
    for (int i = 0; i < cfg->n_queues; i++) {
        const struct queue_conf *q = cfg->queues[i];
        if (q->n_skills < 0 || q->n_skills > CONFIG_MAX_QUEUE_SKILLS)
            abort();
        for (int s = 0; s < q->n_skills; s++)
            if (!q->skill[s].name || q->skill[s].level < 1 || q->skill[s].level > 5)
                abort();
        if (q->overflow_queue && !config_queue(cfg, q->overflow_queue))
            abort();
    }
    for (int i = 0; i < cfg->n_mailboxes; i++)
        if (config_mailbox(cfg, cfg->mailboxes[i]->name) != cfg->mailboxes[i])
            abort();
    /* numbers are within their bounds (a comparison with NaN is false) */
    if (!(cfg->premium_high >= 0 && cfg->premium_high <= 1e8) ||
        !(cfg->premium_medium >= 0 && cfg->premium_medium <= cfg->premium_high))
        abort();
    for (int i = 0; i < 5; i++)
        if (!(cfg->retention_days[i] >= 0 && cfg->retention_days[i] <= 36500))
            abort();
    (void)config_channel_boost(cfg, "voice");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536)
        return 0;
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f)
        abort();
    char *err = NULL;
    struct config *cfg = config_read(f, "fuzz.conf", &err);
    fclose(f);
    if (cfg) {
        check_loaded(cfg);
        config_free(cfg);
    } else if (!err || strncmp(err, "fuzz.conf:", 10) != 0) {
        abort(); /* refused: "file:line: key: problem" */
    } else {
        free(err);
    }
    return 0;
}

__attribute__((destructor)) static void fuzz_config_done(void)
{
    identity_shutdown();
}
