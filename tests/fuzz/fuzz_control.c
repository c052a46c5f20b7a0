/*  =========================================================================
    fuzz_control - the control plane, whole: envelope frames and a msgpack
    request in, through the ROUTER, the checks, the op table and the
    handlers, against a real store (nx_broker in this process, fuzz_broker.h).

    Input: up to 8 requests separated by the bytes C1 C1 (never msgpack).
    A request's first byte says how it is framed: bits 0-2, routing frames
    before the body (0: a DEALER's one frame; 1 and an empty frame: REQ's;
    more than 3 is more than the broker keeps), each taking one length byte
    (bits 0-5) and that many bytes; bit 7, which broker: one open, one with
    a tokens file (tokens "fz-all" with every right, "fz-s1" acting as
    s1/s2 with pub=work.>,a.> sub=a.>,session.s1.>, shared "fz-shared").
    The rest is the body. Both brokers keep their state from one input to
    the next: sessions, claims, events and history build up as in a broker
    that has run for a while.

    Promises checked (docs/protocol.md 4-5), each a crash when broken:
      - every request gets exactly one reply, within 30 s, on the same
        routing frames (on the connection alone when it sent more than
        the broker keeps);
      - a reply is one msgpack map that passes nx_msgpack_check, with "id"
        and a boolean "ok"; an error has a known "error" code and a
        "message", and is never `internal` or `store` (a bug, or a store
        that failed under a request: both are findings);
      - the reply's id is the request's id (its first "id" key) whenever
        the request parsed, and nil otherwise;
      - ok only for a request that is a msgpack map naming an op;
    and ASan, UBSan and LeakSanitizer see nothing.
    =========================================================================
*/

#include <czmq.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_broker.h"
#include "fuzz_util.h"
#include "nexus.h"
#include "nx_codec.h"

#define S_REQUESTS   8
#define S_ENVELOPE   7
#define S_TIMEOUT_MS 30000

static const char *const s_tokens =
    "fz-all name=all sessions=* pub=> sub=>\n"
    "fz-s1 name=one sessions=s1,s2 pub=work.>,a.> sub=a.>,session.s1.>\n";

static zsock_t *s_socks[2]; /* kept for the process's life */
static void *s_dealer[2];

static void s_close(void)
{
    for (int i = 0; i < 2; i++)
        zsock_destroy(&s_socks[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fz_tmpdir("control");
    /*  Small bounds so that the fuzzer reaches them: retention, the
        tables, history pages; the rest as a default broker. Gone sessions
        and finished work are forgotten after 2 s: kept for the default
        hour and week, every list grew to the tables' bounds and packing
        it took most of the target's time.                                 */
    const char *const common[] = {
        "max_request",    "64k", "max_payload",   "16k", "retain_events", "20000",
        "sessions_max",   "300", "claims_max",    "300", "history_limit", "200",
        "session_retain", "2s",  "claims_retain", "2s",  NULL};
    const char *with_tokens[sizeof common / sizeof common[0] + 4];
    size_t n = 0;
    for (; common[n]; n++)
        with_tokens[n] = common[n];
    with_tokens[n++] = "tokens_file";
    with_tokens[n++] = s_tokens;
    with_tokens[n++] = "token";
    with_tokens[n++] = "fz-shared";
    with_tokens[n] = NULL;
    fz_broker_t *brokers[2] = {fz_broker_start("open", dir, false, common),
                               fz_broker_start("tokens", dir, false, with_tokens)};
    for (int i = 0; i < 2; i++) {
        zsock_t *d = zsock_new(ZMQ_DEALER);
        FZ_CHECK(d && zsock_connect(d, "%s", fz_broker_control(brokers[i])) == 0, "connect");
        zsock_set_rcvtimeo(d, S_TIMEOUT_MS);
        zsock_set_sndtimeo(d, S_TIMEOUT_MS);
        s_socks[i] = d;
        s_dealer[i] = zsock_resolve(d);
    }
    atexit(s_close); /* before the brokers stop (atexit runs in reverse) */
    return 0;
}

/*  The request's "id", packed, when it parses as the broker parses it.   */
static bool s_request_id(const uint8_t *body, size_t size, msgpack_sbuffer *id, bool *is_map)
{
    *is_map = false;
    if (nx_msgpack_check(body, size, 32) != NX_MSGPACK_OK)
        return false;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object req;
    size_t off = 0;
    bool parsed =
        msgpack_unpack((const char *)body, size, &off, &zone, &req) == MSGPACK_UNPACK_SUCCESS;
    if (parsed && req.type == MSGPACK_OBJECT_MAP) {
        *is_map = true;
        const msgpack_object *v = nx_map_get(&req, "id");
        if (v) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, id, msgpack_sbuffer_write);
            msgpack_pack_object(&pk, *v);
        }
    }
    msgpack_zone_destroy(&zone);
    return parsed;
}

/*  parse: whether the broker parses the body at all (not when it came
    with more routing frames than it keeps: that is refused first).       */
static void s_check_reply(const uint8_t *body, size_t size, bool parse, const uint8_t *reply,
                          size_t len)
{
    FZ_CHECK(nx_msgpack_check(reply, len, 40) == NX_MSGPACK_OK, "a reply that is not msgpack");
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object rep;
    size_t off = 0;
    FZ_CHECK(msgpack_unpack((const char *)reply, len, &off, &zone, &rep) == MSGPACK_UNPACK_SUCCESS,
             "a reply msgpack-c cannot read");
    FZ_CHECK(rep.type == MSGPACK_OBJECT_MAP, "a reply that is not a map");
    const msgpack_object *ok = nx_map_get(&rep, "ok");
    const msgpack_object *id = nx_map_get(&rep, "id");
    FZ_CHECK(ok && ok->type == MSGPACK_OBJECT_BOOLEAN, "a reply without a boolean ok");
    FZ_CHECK(id, "a reply without id");
    char code[64] = "";
    if (!ok->via.boolean) {
        const msgpack_object *e = nx_map_get(&rep, "error");
        const msgpack_object *m = nx_map_get(&rep, "message");
        FZ_CHECK(e && e->type == MSGPACK_OBJECT_STR && e->via.str.size < sizeof code,
                 "an error reply without an error code");
        memcpy(code, e->via.str.ptr, e->via.str.size);
        FZ_CHECK(m && m->type == MSGPACK_OBJECT_STR && m->via.str.size > 0,
                 "error %s without a message", code);
        nexus_err_t err = nexus_err_from_name(code);
        FZ_CHECK(strcmp(nexus_err_name(err), code) == 0, "unknown error code '%s'", code);
        FZ_CHECK(err != NEXUS_ERR_INTERNAL && err != NEXUS_ERR_STORE, "error %s: %.*s", code,
                 (int)m->via.str.size, m->via.str.ptr);
    }
    msgpack_sbuffer want;
    msgpack_sbuffer_init(&want);
    bool is_map = false;
    bool parsed = parse && s_request_id(body, size, &want, &is_map);
    msgpack_sbuffer got;
    msgpack_sbuffer_init(&got);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &got, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *id);
    if (parsed && is_map && want.size)
        FZ_CHECK(got.size == want.size && memcmp(got.data, want.data, got.size) == 0,
                 "the reply's id is not the request's");
    else
        FZ_CHECK(id->type == MSGPACK_OBJECT_NIL, "a reply with an id the request did not have");
    FZ_CHECK(!ok->via.boolean || is_map, "ok for a request that is not a map");
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&got);
    msgpack_zone_destroy(&zone);
}

static void s_request(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    uint8_t how = data[0];
    void *dealer = s_dealer[how >> 7];
    size_t at = 1;
    fz_part_t env[S_ENVELOPE];
    size_t n_env = how & 7;
    for (size_t i = 0; i < n_env; i++) {
        size_t len = at < size ? data[at++] & 63 : 0;
        if (len > size - at)
            len = size - at;
        env[i] = (fz_part_t){data + at, len};
        at += len;
    }
    for (size_t i = 0; i < n_env; i++)
        FZ_CHECK(fz_send(dealer, env[i].data, env[i].size, ZMQ_SNDMORE) >= 0, "send: %s",
                 zmq_strerror(zmq_errno()));
    const uint8_t *body = data + at;
    size_t body_len = size - at;
    FZ_CHECK(fz_send(dealer, body, body_len, 0) >= 0, "send: %s", zmq_strerror(zmq_errno()));

    /*  The reply: the routing frames back (all of them, or none when
        there were more than the broker keeps), then the body.           */
    zmq_msg_t frames[S_ENVELOPE + 2];
    size_t n = 0;
    bool more = true;
    while (more) {
        FZ_CHECK(n < S_ENVELOPE + 2, "a reply of more frames than the request");
        zmq_msg_init(&frames[n]);
        FZ_CHECK(fz_msg_recv(dealer, &frames[n], S_TIMEOUT_MS) >= 0, "no reply within %d ms: %s",
                 S_TIMEOUT_MS, zmq_strerror(zmq_errno()));
        more = zmq_msg_more(&frames[n]);
        n++;
    }
    size_t want = n_env <= 3 ? n_env : 0;
    FZ_CHECK(n == want + 1, "a reply of %zu frames to %zu routing frames", n, n_env);
    for (size_t i = 0; i < want; i++)
        FZ_CHECK(zmq_msg_size(&frames[i]) == env[i].size &&
                     (env[i].size == 0 ||
                      memcmp(zmq_msg_data(&frames[i]), env[i].data, env[i].size) == 0),
                 "routing frame %zu changed", i);
    s_check_reply(body, body_len, n_env <= 3, zmq_msg_data(&frames[n - 1]),
                  zmq_msg_size(&frames[n - 1]));
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_part_t parts[S_REQUESTS];
    size_t n = fz_split(data, size, "\xc1\xc1", 2, parts, S_REQUESTS);
    for (size_t i = 0; i < n; i++)
        s_request(parts[i].data, parts[i].size);
    return 0;
}
