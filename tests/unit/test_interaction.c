/* Request validation of the generic ingest form: each bad field is named, nothing leaks. */
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
#include "omnicc/import.h"
#include "omnicc/interaction.h"

static struct config *cfg;

static int setup(void **state)
{
    char path[] = "/tmp/omnicc-ix-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("[api]\ntoken = 0123456789abcdef0123\n[queue claims]\n", f);
    fclose(f);
    char *err = NULL;
    cfg = config_load(path, &err);
    unlink(path);
    return cfg ? 0 : -1;
}

static int teardown(void **state)
{
    config_free(cfg);
    identity_shutdown();
    return 0;
}

static void expect_invalid(const char *json, const char *field)
{
    json_t *obj = json_loads(json, 0, NULL);
    assert_non_null(obj);
    struct interaction ix;
    char *err = NULL;
    assert_int_equal(ix_from_json(cfg, obj, &ix, &err), -1);
    if (strncmp(err, field, strlen(field)) != 0)
        fail_msg("for %s: got \"%s\", want it to name %s", json, err, field);
    free(err);
    json_decref(obj);
}

static void test_valid_minimal_and_normalised(void **state)
{
    json_t *obj = json_loads("{\"channel\":\"voice\",\"external_id\":\"CA1\","
                             "\"from\":\"+34 600 111 222\",\"customer\":{\"email\":\"A@B.es\","
                             "\"policy\":\"pl-2024-001234\"},\"priority\":5,"
                             "\"metadata\":{\"b\":1,\"a\":2},\"skills\":[\"claims\"]}",
                             0, NULL);
    struct interaction ix;
    char *err = NULL;
    assert_int_equal(ix_from_json(cfg, obj, &ix, &err), 0);
    assert_int_equal(ix.channel, CH_VOICE);
    assert_string_equal(ix.direction, "inbound");
    assert_string_equal(ix.ident[IDENT_PHONE], "+34600111222"); /* from the caller id */
    assert_string_equal(ix.ident[IDENT_EMAIL], "a@b.es");
    assert_string_equal(ix.ident[IDENT_POLICY], "PL-2024-001234");
    assert_string_equal(ix.metadata, "{\"a\":2,\"b\":1}");
    assert_string_equal(ix.skills, "claims");
    assert_int_equal(ix.priority, 5);
    ix_free(&ix);
    json_decref(obj);
}

static void test_each_bad_field_is_named(void **state)
{
    expect_invalid("{}", "channel");
    expect_invalid("{\"channel\":\"pigeon\",\"external_id\":\"x\"}", "channel");
    expect_invalid("{\"channel\":\"voice\"}", "external_id");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":5}", "external_id");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"direction\":\"up\"}", "direction");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"customer\":{\"phone\":\"abc\"}}",
                   "customer.phone");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"customer\":{\"email\":\"no\"}}",
                   "customer.email");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"customer\":{\"policy\":\"?\"}}",
                   "customer.policy");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"customer\":{\"shoe\":\"9\"}}",
                   "customer.shoe");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"case_id\":\"42\"}", "case_id");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"queue\":\"nope\"}", "queue");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"priority\":101}", "priority");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"priority\":1.5}", "priority");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"skills\":\"claims\"}", "skills");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"skills\":[\"a b\"]}", "skills[0]");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"metadata\":[1]}", "metadata");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"subject\":\"a\\nb\"}", "subject");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"body\":\"ctl\\u0001\"}", "body");
    expect_invalid("{\"channel\":\"voice\",\"external_id\":\"x\",\"colour\":\"red\"}", "colour");
}

static void test_import_line(void **state)
{
    char *err = NULL;
    const char *good = "{\"id\":\"H-1\",\"name\":\"Ana\",\"phones\":[\"600111222\"],"
                       "\"annual_premium\":2500,\"tenure_years\":7,\"claims_last_3y\":0}";
    json_t *rec = import_line(cfg, good, strlen(good), &err);
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "segment")), "platinum");
    json_decref(rec);
    const char *bad[] = {"{\"name\":\"x\"}", "{\"id\":\"H-2\",\"phones\":[\"zz\"]}",
                         "{\"id\":\"H-3\",\"annual_premium\":-1}", "[1]", "{\"id\":\"a b\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rec = import_line(cfg, bad[i], strlen(bad[i]), &err);
        if (rec)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(err);
        free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_minimal_and_normalised),
        cmocka_unit_test(test_each_bad_field_is_named),
        cmocka_unit_test(test_import_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
