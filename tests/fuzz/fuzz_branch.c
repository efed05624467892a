/* fuzz_branch.c - libFuzzer target for what the branch terminal bridge reads off the wire
 * (channels/branch_proto.c): the frame decoder and the validation of every request type.
 * The first byte picks the path, the rest is the input:
 *   0  a byte stream cut into frames (4-byte big-endian length, then JSON) as a connection
 *      reads it, each frame validated; a length of 0 or above the limit ends the stream
 *   1  one frame's payload, validated (the shortest way to every request type's rules)
 *   2  a certificate name: "urn:omnicc:terminal:BRANCH:TERMINAL" or "TERMINAL@BRANCH"
 *   3  base64 as a DOCUMENT carries it
 * Whatever validation accepts must be well formed: an operation, a valid msg_id, arguments
 * that are a JSON object which encodes back to clean UTF-8, the required target; checked
 * here, so the fuzzer reports a violation as a crash.
 * Built with clang as a libFuzzer binary (tests/fuzz/meson.build); with any compiler the
 * seed corpus (corpus/branch/) is replayed by driver.c in the 'fuzz-smoke' suite. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "branch.h"
#include "omnicc/identity.h"
#include "omnicc/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAME 65536

static const struct branch_limits limits = {
    .max_frame = MAX_FRAME,
    .purposes = "service claim sale complaint documents verification",
};

static void check_accepted(const struct branch_req *req)
{
    if (!req->op || !branch_msg_id_valid(req->msg_id) || !json_is_object(req->args))
        abort();
    if (branch_op_by_type(req->op->type) != req->op)
        abort();
    char *text = json_dumps(req->args, JSON_COMPACT);
    if (!text || !text_is_clean_utf8(text, strlen(text)))
        abort();
    free(text);
    /* the token and the document's bytes never travel in args */
    if (json_object_get(req->args, "token") || json_object_get(req->args, "content"))
        abort();
    if (req->op->kind == BOP_SIGNIN && (!req->token || !req->agent[0]))
        abort();
    if (req->op->kind == BOP_DOCUMENT && (!req->doc || req->doc_len == 0))
        abort();
    if (req->op->kind == BOP_LOOKUP && (!json_is_string(json_object_get(req->args, "kind")) ||
                                        !json_is_string(json_object_get(req->args, "masked"))))
        abort();
    if (req->branch[0] && !branch_id_valid(req->branch))
        abort();
}

static void one_payload(const char *p, size_t n)
{
    struct branch_req req;
    struct branch_nack nack;
    if (branch_req_parse(p, n, &limits, &req, &nack) == 0) {
        check_accepted(&req);
        branch_req_clear(&req);
    } else {
        if (!nack.code || !nack.message[0] || req.args || req.token || req.doc)
            abort(); /* refused: a reason, and nothing kept */
        if (req.msg_id[0] && !branch_msg_id_valid(req.msg_id))
            abort();
    }
}

static void frame_stream(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (;;) {
        uint32_t len = 0;
        enum branch_frame_status st = branch_frame_peek(data + off, size - off, MAX_FRAME, &len);
        if (st != BRANCH_FRAME_READY) {
            if (st == BRANCH_FRAME_TOO_LARGE && len <= MAX_FRAME)
                abort();
            return;
        }
        if (len == 0 || len > MAX_FRAME || 4 + (size_t)len > size - off)
            abort();
        /* a private copy of exactly the payload, as the connection hands it over */
        char *p = xmalloc(len + 1);
        memcpy(p, data + off + 4, len);
        p[len] = '\0';
        one_payload(p, len);
        free(p);
        off += 4 + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        char *err = NULL;
        if (identity_init("34", "[A-Z]{2,4}-?[0-9]{4}-?[0-9]{3,9}", &err) < 0)
            abort();
        ready = true;
    }
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 4;
    data++;
    size--;
    switch (mode) {
    case 0:
        frame_stream(data, size);
        break;
    case 1: {
        char *p = xmalloc(size + 1);
        memcpy(p, data, size);
        p[size] = '\0';
        one_payload(p, size);
        free(p);
        break;
    }
    case 2: {
        char *s = xstrndup((const char *)data, size);
        char b[BRANCH_ID_MAX + 1], t[BRANCH_TERMINAL_MAX + 1];
        if (branch_identity_parse(s, b, t) == 0 &&
            (!branch_id_valid(b) || !branch_terminal_valid(t)))
            abort();
        free(s);
        break;
    }
    case 3: {
        unsigned char *out = xmalloc(size / 4 * 3 + 3);
        long n = branch_base64_decode((const char *)data, size, out);
        if (n > (long)(size / 4 * 3) || (n >= 0 && size % 4))
            abort();
        free(out);
        break;
    }
    }
    return 0;
}
