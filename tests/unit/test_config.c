/* Config: every error names file, line and key; the sample config is valid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "omnicc/config.h"
#include "omnicc/identity.h"

static char path[64];

static struct config *load_text(const char *text, char **err)
{
    snprintf(path, sizeof(path), "/tmp/omnicc-cfg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    struct config *cfg = config_load(path, err);
    unlink(path);
    return cfg;
}

static void expect_error(const char *text, int line, const char *key, const char *what)
{
    char *err = NULL;
    struct config *cfg = load_text(text, &err);
    assert_null(cfg);
    assert_non_null(err);
    char want[256];
    snprintf(want, sizeof(want), "%s:%d: %s: ", path, line, key);
    if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, what))
        fail_msg("got \"%s\", want prefix \"%s\" and \"%s\"", err, want, what);
    free(err);
}

#define TOKEN "[api]\ntoken = 0123456789abcdef0123\n"

static void test_minimal_defaults(void **state)
{
    char *err = NULL;
    struct config *cfg = load_text(TOKEN, &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_int_equal(cfg->max_body, 1048576);
    assert_null(cfg->redis_url);
    assert_string_equal(cfg->redis_prefix, "omnicc");
    config_free(cfg);
}

/* config_read parses a stream as config_load parses the file (the fuzz target reads from
 * memory): the same result, and errors carry the name it was given. */
static void test_read_from_memory(void **state)
{
    static const char text[] = TOKEN "[queue claims]\nchannels = voice\n[http]\nmax_body = lots\n";
    FILE *f = fmemopen((void *)text, sizeof(text) - 1, "r");
    char *err = NULL;
    assert_null(config_read(f, "memory.conf", &err));
    fclose(f);
    assert_non_null(err);
    assert_string_equal(err, "memory.conf:6: max_body: not an integer: \"lots\"");
    free(err);
    f = fmemopen((void *)text, sizeof(text) - 1 - strlen("max_body = lots\n"), "r");
    struct config *cfg = config_read(f, "memory.conf", &err);
    fclose(f);
    assert_non_null(cfg);
    assert_non_null(config_queue(cfg, "claims"));
    config_free(cfg);
}

static void test_errors_name_line_and_key(void **state)
{
    expect_error(TOKEN "[http]\nmax_body = lots\n", 4, "max_body", "not an integer");
    expect_error(TOKEN "[http]\nmax_body = 10\n", 4, "max_body", "between");
    expect_error(TOKEN "[segments]\npremium_high = nan\n", 4, "premium_high", "not a number");
    expect_error(TOKEN "[http]\nlisten = nowhere\n", 4, "listen", "host:port");
    expect_error(TOKEN "[http]\nbogus = 1\n", 4, "bogus", "unknown key");
    expect_error(TOKEN "[nosuch]\n", 3, "nosuch", "unknown section");
    expect_error(TOKEN "[daemon]\nlog_level = loud\n", 4, "log_level", "error, warn");
    expect_error(TOKEN "[redis]\nurl = http://x\n", 4, "url", "redis://");
    expect_error(TOKEN "[identity]\npolicy_pattern = ([\n", 4, "policy_pattern", "regular");
    expect_error(TOKEN "[queue claims]\nskills = claims:9\n", 3, "skills", "level must be 1-5");
    expect_error(TOKEN "[queue claims]\nstrategy = random\n", 4, "strategy", "one of");
    expect_error(TOKEN "[queue a]\n[queue a]\n", 4, "queue", "defined twice");
    expect_error("[http]\nmax_body = 2048\n", 2, "token", "required");
    expect_error(TOKEN "key without section\n", 3, "key without section", "expected key = value");
}

static void test_queue_sections(void **state)
{
    char *err = NULL;
    struct config *cfg = load_text(TOKEN "[queue claims]\nchannels = voice email\n"
                                         "skills = claims:2 lang_es\nstrategy = least-occupied\n",
                                   &err);
    if (!cfg)
        fail_msg("%s", err);
    const struct queue_conf *q = config_queue(cfg, "claims");
    assert_non_null(q);
    assert_int_equal(q->n_skills, 2);
    assert_string_equal(q->skill[0].name, "claims");
    assert_int_equal(q->skill[0].level, 2);
    assert_int_equal(q->skill[1].level, 1);
    assert_string_equal(q->strategy, "least-occupied");
    assert_null(config_queue(cfg, "other"));
    config_free(cfg);
}

static void test_routing_rules(void **state)
{
    char *err = NULL;
    struct config *cfg = load_text(TOKEN "[routing]\nrule = channel=voice intent=claims -> claims\n"
                                         "rule = skill=lang_en -> english\n"
                                         "[queue claims]\n[queue english]\n",
                                   &err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_rules, 2);
    assert_string_equal(cfg->rules[0].channel, "voice");
    assert_string_equal(cfg->rules[0].intent, "claims");
    assert_null(cfg->rules[0].skill);
    assert_string_equal(cfg->rules[0].queue, "claims");
    assert_string_equal(cfg->rules[1].skill, "lang_en");
    config_free(cfg);
    expect_error(TOKEN "[routing]\nrule = channel=voice\n", 4, "rule", "->");
    expect_error(TOKEN "[routing]\nrule = colour=red -> default\n", 4, "rule", "bad condition");
    expect_error(TOKEN "[routing]\nrule = channel=voice -> nowhere\n", 4, "rule", "no queue");
}

static void test_sample_config_is_valid(void **state)
{
    char *err = NULL;
    struct config *cfg = config_load(SAMPLE_CONFIG, &err);
    if (!cfg)
        fail_msg("%s", err);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_errors_name_line_and_key),
        cmocka_unit_test(test_read_from_memory),
        cmocka_unit_test(test_queue_sections),
        cmocka_unit_test(test_routing_rules),
        cmocka_unit_test(test_sample_config_is_valid),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    identity_shutdown();
    return rc;
}
