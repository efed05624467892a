/* api_customers.c - customers: profile, lookup by any identifier (through the same
 * normalisation as ingest), explicit merge, and the policyholder import. */
#include <stdlib.h>
#include <string.h>

#include "omnicc/api.h"
#include "omnicc/config.h"
#include "omnicc/identity.h"
#include "omnicc/import.h"
#include "omnicc/interaction.h"
#include "omnicc/store.h"
#include "omnicc/util.h"

static const char *const customer_lists[] = {"identifiers", "cases", "conflicts",
                                             "segment_history", NULL};

static void customer_done(const redisReply *reply, const char *err, void *arg)
{
    api_reply_script_json(arg, reply, err, customer_lists);
}

static void get_customer(struct http_req *r)
{
    if (!id_is_valid(r->params[0], 'P')) {
        http_reply_error(r, 404, "not_found", "no customer with that id");
        return;
    }
    const char *argv[2] = {"id", r->params[0]};
    if (store_script(SCRIPT_GET_CUSTOMER, 2, argv, NULL, customer_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

/* GET /v1/customers?phone=... | email= | policy= | branch_customer_id= | national_id= */
static void find_customer(struct http_req *r)
{
    static const struct {
        const char *param;
        enum ident_kind kind;
    } by[] = {{"phone", IDENT_PHONE},
              {"email", IDENT_EMAIL},
              {"policy", IDENT_POLICY},
              {"branch_customer_id", IDENT_BRANCH},
              {"national_id", IDENT_NATIONAL}};
    for (size_t i = 0; i < ARRAY_SIZE(by); i++) {
        const char *v = http_query(r, by[i].param);
        if (!v)
            continue;
        char norm[IDENT_MAX], fixed[IDENT_MAX];
        const char *why = NULL;
        /* A form-encoded query turns an unescaped '+' into a space: "?phone=+44..." arrives
         * as " 44...". A phone number cannot start with a space, so restore the '+'. */
        if (by[i].kind == IDENT_PHONE && v[0] == ' ' && v[1] >= '0' && v[1] <= '9' &&
            strlen(v) < sizeof(fixed)) {
            snprintf(fixed, sizeof(fixed), "+%s", v + 1);
            v = fixed;
        }
        if (strlen(v) >= IDENT_MAX ||
            identity_normalize(by[i].kind, v, norm, sizeof(norm), &why) < 0) {
            http_reply_error(r, 400, "invalid_field", "%s: %s", by[i].param,
                             why ? why : "too long");
            return;
        }
        const char *argv[2] = {ident_kind_name(by[i].kind), norm};
        if (store_script(SCRIPT_GET_CUSTOMER, 2, argv, NULL, customer_done, r) < 0)
            http_reply_unavailable(r, store_status());
        return;
    }
    http_reply_error(r, 400, "invalid_field",
                     "give one of phone, email, policy, branch_customer_id, national_id");
}

static void merge_done(const redisReply *reply, const char *err, void *arg)
{
    struct http_req *r = arg;
    if (err) {
        api_reply_script_error(r, err);
        return;
    }
    http_reply_json(r, 200, json_pack("{s:s,s:s,s:I}", "id", reply->element[0]->str, "merged",
                                      (const char *)r->data, "cases_moved",
                                      (json_int_t)reply->element[1]->integer));
}

static void merge_customer(struct http_req *r)
{
    if (!id_is_valid(r->params[0], 'P')) {
        http_reply_error(r, 404, "not_found", "no customer with that id");
        return;
    }
    json_t *obj = http_body_json_object(r);
    if (!obj)
        return;
    json_t *from = json_object_get(obj, "from");
    if (json_object_size(obj) != 1 || !json_is_string(from) ||
        !id_is_valid(json_string_value(from), 'P')) {
        json_decref(obj);
        http_reply_error(r, 400, "invalid_field", "from: required, a customer id like P-12");
        return;
    }
    /* r->body outlives the request handling: keep the id there for the reply */
    snprintf(r->body, r->body_len + 1, "%s", json_string_value(from));
    r->data = r->body;
    json_decref(obj);
    const char *argv[2] = {r->params[0], r->body};
    if (store_script(SCRIPT_MERGE_CUSTOMERS, 2, argv, NULL, merge_done, r) < 0)
        http_reply_unavailable(r, store_status());
}

static void import_done(struct import_job *job, void *arg)
{
    struct http_req *r = arg;
    json_t *report = import_job_report(job);
    int failed = import_job_failed(job);
    import_job_free(job);
    if (failed) {
        if (r->req)
            evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
        json_object_set_new(report, "error",
                            json_pack("{s:s,s:s}", "code", "unavailable", "message",
                                      "some batches were not stored; the import is safe to "
                                      "repeat"));
        http_reply_json(r, 503, report);
        return;
    }
    http_reply_json(r, 200, report);
}

static void import_customers(struct http_req *r)
{
    struct import_job *job = import_job_new(api_config());
    import_job_feed(job, r->body, r->body_len);
    if (import_job_run(job, import_done, r) < 0) {
        import_job_free(job);
        http_reply_unavailable(r, store_status());
    }
}

const struct http_route api_customers_routes[] = {
    {EVHTTP_REQ_GET, "/v1/customers", HTTP_AUTH_ADMIN, find_customer, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/customers/import", HTTP_AUTH_ADMIN, import_customers,
     "application/x-ndjson", NULL, true},
    {EVHTTP_REQ_GET, "/v1/customers/{id}", HTTP_AUTH_ADMIN, get_customer, NULL, NULL, false},
    {EVHTTP_REQ_POST, "/v1/customers/{id}/merge", HTTP_AUTH_ADMIN, merge_customer,
     "application/json", NULL, false},
    {0, NULL, 0, NULL, NULL, NULL, false},
};
