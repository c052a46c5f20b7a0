/*  =========================================================================
    nx_readonly - the broker's read-only mode. nx_readonly.h is the
    contract.
    =========================================================================
*/

#include <string.h>

#include "nx_auth.h"
#include "nx_broker.h"
#include "nx_log.h"
#include "nx_readonly.h"

#define S_MSGPACK_DEPTH 32
#define S_CHECK_US      1000000ull

int nx_readonly_enter(nx_broker_t *self, char *err_buf, size_t err_size)
{
    /*  What recovery has to write: the log above the checkpoint.          */
    uint64_t lag =
        self->recovery.end > self->recovery.from ? self->recovery.end - self->recovery.from : 0;
    if (!self->wal)
        return -1; /* no log at all: nothing read-only could serve it from */
    uint64_t segment = nx_wal_segment_size(self->wal);
    nx_disk_init(&self->disk, self->cfg.data_dir, self->cfg.disk_reserve, segment,
                 self->cfg.batch_bytes);
    uint64_t free = nx_disk_free(self->cfg.data_dir);
    uint64_t need = nx_disk_need(&self->disk, lag);
    if (free >= need)
        return -1;
    char text[1024];
    snprintf(text, sizeof text,
             "read-only: the store cannot take the write-ahead log (%s): %" PRIu64
             " bytes free on %s, recovery needs %" PRIu64
             "; history up to the last checkpoint is served, writes are refused until space "
             "is freed on that disk",
             err_buf, free, self->cfg.data_dir, need);
    self->readonly = strdup(text);
    self->auth = nx_auth_new(self->cfg.token, self->cfg.tokens_file, err_buf, err_size);
    if (!self->readonly || !self->auth)
        return -1;
    self->lag = lag;
    return 0;
}

/*  Sends the routing frames, then the reply bytes (what ZeroMQ cannot
    take now is dropped: the loop never blocks).                           */
static void s_send(nx_broker_t *self, nx_envelope_t *env, const void *data, size_t len)
{
    int k = 0;
    for (; k < env->n; k++)
        if (zmq_msg_send(&env->frames[k], self->h_router, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1)
            break;
    if (k == env->n)
        zmq_send(self->h_router, data, len, ZMQ_DONTWAIT);
    for (; k < env->n; k++)
        zmq_msg_close(&env->frames[k]);
    env->n = 0;
}

static void s_error(nx_broker_t *self, nx_envelope_t *env, msgpack_sbuffer *id, nexus_err_t err,
                    const char *message)
{
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    nx_pack_reply_head(&pk, id->data, id->size, false, 2);
    nx_pack_kv_str(&pk, "error", nexus_err_name(err));
    nx_pack_kv_str(&pk, "message", message);
    self->count.request_errors++;
    s_send(self, env, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

/*  Runs ping or health (handlers of nx_ops.c) and sends the reply.        */
static void s_run(nx_broker_t *self, nx_envelope_t *env, msgpack_sbuffer *id, const nx_op_t *op,
                  const msgpack_object *req)
{
    msgpack_sbuffer body, out;
    msgpack_sbuffer_init(&body);
    msgpack_sbuffer_init(&out);
    nx_request_t rq = {.fields = req};
    nx_dmap_init(&rq.reply, &body);
    if (op->fn(self, &rq) < 0) {
        s_error(self, env, id, rq.err ? rq.err : NEXUS_ERR_INTERNAL, rq.err_msg);
    } else {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
        nx_pack_reply_head(&pk, id->data, id->size, true, nx_dmap_pairs(&rq.reply));
        msgpack_sbuffer_write(&out, body.data ? body.data : "", body.size);
        s_send(self, env, out.data, out.size);
    }
    msgpack_sbuffer_destroy(&body);
    msgpack_sbuffer_destroy(&out);
}

/*  history goes to the reader thread as in the loop (nx_broker.c,
    s_to_reader): [descriptor][routing frames][body].                     */
static void s_to_reader(nx_broker_t *self, nx_envelope_t *env, msgpack_sbuffer *id, zmq_msg_t *body)
{
    zmsg_t *msg = zmsg_new();
    int32_t fd = zmq_msg_get(body, ZMQ_SRCFD);
    zmsg_addmem(msg, &fd, sizeof fd);
    for (int k = 0; k < env->n; k++)
        zmsg_addmem(msg, zmq_msg_data(&env->frames[k]), zmq_msg_size(&env->frames[k]));
    zmsg_addmem(msg, zmq_msg_data(body), zmq_msg_size(body));
    if (zmsg_send(&msg, zactor_sock(self->reader)) == -1) {
        zmsg_destroy(&msg);
        s_error(self, env, id, NEXUS_ERR_BUSY, "history reader busy, try again");
        return;
    }
    for (int k = 0; k < env->n; k++)
        zmq_msg_close(&env->frames[k]);
    env->n = 0;
}

/*  Reads and answers one request; -1 when none is ready.                  */
static int s_request(nx_broker_t *self)
{
    nx_envelope_t env = {.n = 0};
    zmq_msg_t body;
    zmq_msg_init(&body);
    if (zmq_msg_recv(&body, self->h_router, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&body);
        return -1;
    }
    while (zmq_msg_more(&body)) {
        if (env.n < NX_ENVELOPE_MAX) {
            zmq_msg_init(&env.frames[env.n]);
            zmq_msg_move(&env.frames[env.n++], &body);
        }
        zmq_msg_close(&body);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, self->h_router, 0) == -1)
            break;
    }
    self->count.requests++;
    msgpack_sbuffer id;
    msgpack_sbuffer_init(&id);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object req;
    size_t size = zmq_msg_size(&body), off = 0;
    const char *name = NULL;
    size_t name_len = 0;
    char err_msg[NX_ERRMSG_MAX] = "";
    const nx_op_t *op = NULL;
    if (env.n == 0)
        ;
    else if (size > self->cfg.max_request)
        s_error(self, &env, &id, NEXUS_ERR_TOO_LARGE, "request over max_request");
    else if (nx_msgpack_check(zmq_msg_data(&body), size, S_MSGPACK_DEPTH) != NX_MSGPACK_OK ||
             msgpack_unpack((const char *)zmq_msg_data(&body), size, &off, &zone, &req) !=
                 MSGPACK_UNPACK_SUCCESS ||
             req.type != MSGPACK_OBJECT_MAP)
        s_error(self, &env, &id, NEXUS_ERR_BAD_MSGPACK, "request must be one msgpack map");
    else {
        const msgpack_object *idobj = nx_map_get(&req, "id");
        if (idobj) {
            msgpack_packer ipk;
            msgpack_packer_init(&ipk, &id, msgpack_sbuffer_write);
            msgpack_pack_object(&ipk, *idobj);
        }
        if (nx_map_str_req(&req, "op", &name, &name_len, err_msg) != NEXUS_OK)
            s_error(self, &env, &id, NEXUS_ERR_BAD_REQUEST, err_msg);
        else if (!(op = nx_ops_find(name, name_len)))
            s_error(self, &env, &id, NEXUS_ERR_UNKNOWN_OP, "unknown op");
        else {
            const char *token = NULL;
            size_t token_len = 0;
            const void *handle = NULL;
            nx_map_str(&req, "auth", &token, &token_len, NULL);
            bool open = !nx_auth_enabled(self->auth) || (op->def->flags & NX_OF_OPEN);
            nexus_err_t bad = nx_optab_check(op->def, &req, err_msg);
            if (!open && nx_auth_check(self->auth, token, token_len, &handle) != NEXUS_OK)
                s_error(self, &env, &id, NEXUS_ERR_UNAUTHORIZED,
                        token ? "wrong token" : "this fabric requires a token");
            else if (bad)
                s_error(self, &env, &id, bad, err_msg);
            else if (!op->fn)
                s_to_reader(self, &env, &id, &body);
            else if (!strcmp(op->def->name, "ping") || !strcmp(op->def->name, "health"))
                s_run(self, &env, &id, op, &req);
            else
                s_error(self, &env, &id, NEXUS_ERR_STORE_FULL, self->readonly);
        }
    }
    for (int k = 0; k < env.n; k++)
        zmq_msg_close(&env.frames[k]);
    zmq_msg_close(&body);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&id);
    return 0;
}

/*  Reads and drops what sock has (events, subscriptions, monitor events);
    counted in *dropped when given.                                       */
static void s_drain(void *sock, uint64_t *dropped)
{
    for (int i = 0; sock && i < 10000; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close(&msg);
            return;
        }
        bool more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        if (dropped && !more)
            (*dropped)++;
    }
}

int nx_readonly_run(nx_broker_t *self)
{
    nx_error("%s", self->readonly);
    nx_broker_problem(self, "%s", self->readonly);
    void *reader = zsock_resolve(zactor_sock(self->reader));
    void *mons[3] = {self->mon_xpub ? zsock_resolve(self->mon_xpub) : NULL,
                     self->mon_xsub ? zsock_resolve(self->mon_xsub) : NULL,
                     self->mon_router ? zsock_resolve(self->mon_router) : NULL};
    uint64_t next_check = nx_mono_us() + S_CHECK_US;
    while (!self->stop && !zsys_interrupted) {
        zmq_pollitem_t items[7] = {
            {self->h_router, 0, ZMQ_POLLIN, 0},
            {self->h_xsub, 0, ZMQ_POLLIN, 0},
            {self->h_xpub, 0, ZMQ_POLLIN, 0},
            {reader, 0, ZMQ_POLLIN, 0},
        };
        int n = 4;
        for (int i = 0; i < 3; i++)
            if (mons[i])
                items[n++] = (zmq_pollitem_t){mons[i], 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, n, 250) == -1 && zmq_errno() != EINTR)
            return -1;
        if (items[0].revents & ZMQ_POLLIN)
            for (int i = 0; i < 1000 && s_request(self) == 0; i++)
                ;
        if (items[1].revents & ZMQ_POLLIN)
            s_drain(self->h_xsub, &self->count.drop_store);
        if (items[2].revents & ZMQ_POLLIN)
            s_drain(self->h_xpub, NULL);
        if (items[3].revents & ZMQ_POLLIN)
            for (int i = 0; i < 1000 && (zsock_events(zactor_sock(self->reader)) & ZMQ_POLLIN);
                 i++) {
                zmsg_t *m = zmsg_recv(zactor_sock(self->reader));
                if (!m)
                    break;
                zframe_t *fd = zmsg_pop(m);
                zframe_destroy(&fd);
                if (zmsg_send(&m, self->router) == -1)
                    zmsg_destroy(&m);
            }
        for (int i = 4; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN)
                s_drain(items[i].socket, NULL);
        uint64_t now = nx_mono_us();
        if (now >= next_check) {
            next_check = now + S_CHECK_US;
            nx_broker_problem(self, "%s", self->readonly);
            uint64_t free = nx_disk_free(self->cfg.data_dir);
            uint64_t need = nx_disk_need(&self->disk, self->lag);
            if (free >= need) {
                nx_warn("the data disk has room again (%" PRIu64 " bytes free on %s, recovery "
                        "needs %" PRIu64 "): starting again to recover the log",
                        free, self->cfg.data_dir, need);
                return NX_BROKER_RESTART;
            }
        }
    }
    return 0;
}
