/*  =========================================================================
    nx_reader - runs history queries off the event loop (see nx_reader.h).
    =========================================================================
*/

#include <string.h>

#include "nx_log.h"
#include "nx_reader.h"

#define S_MSGPACK_DEPTH 32
#define S_KEEP_MAX      (32u << 20) /* larger buffers are not kept for the next page */

/*  The buffers a page is built in, kept from one query to the next: a page
    is up to history_bytes (16 MiB by default), and buffers that size made
    afresh for every page were given back to the kernel by the allocator
    after each one (madvise) and faulted in again by the next: 20-30 ms per
    page of 10 000 events in a broker that had just written a million,
    3.5 ms with the buffers kept.                                           */
typedef struct {
    msgpack_sbuffer out;    /* the reply                                    */
    msgpack_sbuffer fields; /* its fields, counted                          */
    msgpack_sbuffer id;     /* the request's id, packed                     */
    msgpack_sbuffer events; /* the page's events (nx_history_query)         */
} s_bufs_t;

static void s_bufs_trim(msgpack_sbuffer *b)
{
    if (b->alloc > S_KEEP_MAX) {
        msgpack_sbuffer_destroy(b);
        msgpack_sbuffer_init(b);
    }
}

/*  Answers one request body; returns the packed reply.                     */
static zframe_t *s_answer(const nx_reader_args_t *args, s_bufs_t *b, zframe_t *body)
{
    msgpack_sbuffer_clear(&b->out);
    msgpack_sbuffer_clear(&b->fields);
    msgpack_sbuffer_clear(&b->id);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->out, msgpack_sbuffer_write);
    nx_dmap_t fields_map;
    nx_dmap_init(&fields_map, &b->fields);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object req;
    size_t off = 0;
    nexus_err_t err = NEXUS_OK;
    char err_msg[NX_ERRMSG_MAX] = "";
    int n = -1;
    /*  The loop already checked the bytes; parse again here since only
        bytes cross between the threads.                                    */
    if (msgpack_unpack((const char *)zframe_data(body), zframe_size(body), &off, &zone, &req) !=
            MSGPACK_UNPACK_SUCCESS ||
        req.type != MSGPACK_OBJECT_MAP) {
        err = NEXUS_ERR_BAD_MSGPACK;
        snprintf(err_msg, sizeof err_msg, "request must be a msgpack map");
    } else {
        const msgpack_object *idobj = nx_map_get(&req, "id");
        if (idobj) {
            msgpack_packer ipk;
            msgpack_packer_init(&ipk, &b->id, msgpack_sbuffer_write);
            msgpack_pack_object(&ipk, *idobj);
        }
        /*  The loop checked the token already; its handle tells what it
            may read.                                                       */
        const char *token = NULL;
        size_t token_len = 0;
        const void *handle = NULL;
        nx_map_str(&req, "auth", &token, &token_len, NULL);
        nx_auth_check(args->auth, token, token_len, &handle);
        n = nx_history_query(args->store, &args->limits, args->auth, handle, &req, &fields_map,
                             &b->events, &err, err_msg);
    }
    if (n >= 0) {
        nx_pack_reply_head(&pk, b->id.data, b->id.size, true, nx_dmap_pairs(&fields_map));
        msgpack_sbuffer_write(&b->out, b->fields.data, b->fields.size);
    } else {
        __atomic_add_fetch(args->errors, 1, __ATOMIC_RELAXED);
        nx_pack_reply_head(&pk, b->id.data, b->id.size, false, 2);
        nx_pack_kv_str(&pk, "error", nexus_err_name(err));
        nx_pack_kv_str(&pk, "message", err_msg[0] ? err_msg : nexus_strerror(err));
    }
    zframe_t *reply = zframe_new(b->out.data, b->out.size);
    s_bufs_trim(&b->out);
    s_bufs_trim(&b->fields);
    s_bufs_trim(&b->events);
    msgpack_zone_destroy(&zone);
    return reply;
}

void nx_reader_actor(zsock_t *pipe, void *argp)
{
    nx_reader_args_t args = *(nx_reader_args_t *)argp;
    s_bufs_t bufs;
    msgpack_sbuffer_init(&bufs.out);
    msgpack_sbuffer_init(&bufs.fields);
    msgpack_sbuffer_init(&bufs.id);
    msgpack_sbuffer_init(&bufs.events);
    zsock_signal(pipe, 0);
    while (true) {
        zmsg_t *msg = zmsg_recv(pipe);
        if (!msg)
            break; /* interrupted */
        if (zmsg_size(msg) == 1) {
            char *command = zmsg_popstr(msg);
            bool term = command && strcmp(command, "$TERM") == 0;
            zstr_free(&command);
            zmsg_destroy(&msg);
            if (term)
                break;
            continue;
        }
        zframe_t *body = zmsg_last(msg);
        zmsg_remove(msg, body);
        zframe_t *reply = s_answer(&args, &bufs, body);
        zframe_destroy(&body);
        zmsg_append(msg, &reply);
        if (zmsg_send(&msg, pipe) == -1)
            zmsg_destroy(&msg);
    }
    msgpack_sbuffer_destroy(&bufs.out);
    msgpack_sbuffer_destroy(&bufs.fields);
    msgpack_sbuffer_destroy(&bufs.id);
    msgpack_sbuffer_destroy(&bufs.events);
}
