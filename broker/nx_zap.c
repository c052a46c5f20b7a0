/*  =========================================================================
    nx_zap - the broker's ZAP handler (RFC 27/ZAP). nx_zap.h is the
    contract.
    =========================================================================
*/

#include <string.h>

#include "nx_codec.h"
#include "nx_log.h"
#include "nx_zap.h"

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"

/*  What the actor works with, owned by nx_zap_t for the actor's life.    */
typedef struct {
    nx_auth_t *auth;         /* tokens (read-only; the broker owns it)      */
    char *clients;           /* curve_clients, NULL without CURVE           */
    nx_zap_counts_t *counts; /* refusals                                    */
    char *err;               /* where the actor says why it cannot start
                                (only until it signals)                     */
    size_t err_size;
} s_args_t;

struct _nx_zap_t {
    zactor_t *actor; /* runs s_actor                                       */
    s_args_t args;   /* its arguments                                      */
};

/*  ---- The handler -------------------------------------------------------- */

/*  Text of a frame, cut to what fits, non-printable bytes as '?'.        */
static void s_text(zframe_t *f, char *out, size_t size)
{
    size_t n = f ? zframe_size(f) : 0;
    if (n >= size)
        n = size - 1;
    const unsigned char *d = f ? zframe_data(f) : NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = d[i] >= 0x20 && d[i] < 0x7f ? (char)d[i] : '?';
    out[n] = 0;
}

static void s_reply(zsock_t *rep, zframe_t *version, zframe_t *request_id, const char *code,
                    const char *text, const char *user_id)
{
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, zframe_data(version), zframe_size(version));
    zmsg_addmem(m, zframe_data(request_id), zframe_size(request_id));
    zmsg_addstr(m, code);
    zmsg_addstr(m, text);
    zmsg_addstr(m, user_id);
    zmsg_addmem(m, "", 0); /* metadata: none                          */
    if (zmsg_send(&m, rep) == -1)
        zmsg_destroy(&m);
}

/*  Decides one request. Returns the reason for a refusal, NULL to accept
    (with *user_id set).                                                  */
static const char *s_decide(s_args_t *args, zcertstore_t *certs, const char *mech, zmsg_t *req,
                            char *user_id, size_t size, uint64_t **counter)
{
    user_id[0] = 0;
    if (strcmp(mech, "PLAIN") == 0) {
        *counter = &args->counts->plain;
        zframe_t *user = zmsg_next(req), *pass = zmsg_next(req);
        (void)user;
        const void *handle = NULL;
        if (!pass || args->clients || !nx_auth_enabled(args->auth))
            return "PLAIN is not what this broker uses";
        if (zframe_size(pass) == 0)
            return "no token (an empty password)";
        if (nx_auth_check(args->auth, (const char *)zframe_data(pass), zframe_size(pass),
                          &handle) != NEXUS_OK)
            return "no such token";
        snprintf(user_id, size, "%s", nx_auth_name(args->auth, handle));
        return NULL;
    }
    if (strcmp(mech, "CURVE") == 0) {
        *counter = &args->counts->curve;
        zframe_t *key = zmsg_next(req);
        char z85[41];
        if (!key || zframe_size(key) != 32 || !args->clients ||
            !zmq_z85_encode(z85, zframe_data(key), 32))
            return "CURVE is not what this broker uses";
        if (certs && !zcertstore_lookup(certs, z85)) {
            snprintf(user_id, size, "key %s is not in curve_clients", z85);
            return user_id; /* the caller copies it before the reply      */
        }
        const void *handle = NULL;
        if (nx_auth_by_key(args->auth, z85, &handle))
            snprintf(user_id, size, "%s", nx_auth_name(args->auth, handle));
        else
            snprintf(user_id, size, "%s", z85);
        return NULL;
    }
    *counter = &args->counts->mechanism;
    return "no security mechanism (this broker wants a token or a CURVE key)";
}

static void s_handle(s_args_t *args, zsock_t *rep, zcertstore_t *certs, nx_log_limit_t *limit)
{
    zmsg_t *req = zmsg_recv(rep);
    if (!req)
        return;
    /*  version, request id, domain, address, identity, mechanism, creds  */
    zframe_t *version = zmsg_first(req), *request_id = zmsg_next(req), *domain = zmsg_next(req),
             *address = zmsg_next(req), *identity = zmsg_next(req), *mech_f = zmsg_next(req);
    (void)identity;
    if (!mech_f) {
        /*  Not a ZAP request: libzmq never sends one; nothing to answer.  */
        zmsg_destroy(&req);
        return;
    }
    char mech[16], where[64], from[64], user_id[128];
    s_text(mech_f, mech, sizeof mech);
    s_text(domain, where, sizeof where);
    s_text(address, from, sizeof from);
    uint64_t *counter = NULL;
    const char *why = zframe_streq(version, "1.0")
                          ? s_decide(args, certs, mech, req, user_id, sizeof user_id, &counter)
                          : "not ZAP 1.0";
    if (why) {
        char reason[160];
        snprintf(reason, sizeof reason, "%s", why);
        if (counter)
            __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
        nx_log_limited(limit, NX_LOG_WARN, "refused handshake on %s: %s from %s: %s",
                       where[0] ? where : "?", mech, from[0] ? from : "?", reason);
        s_reply(rep, version, request_id, "400", reason, "");
    } else
        s_reply(rep, version, request_id, "200", "OK", user_id);
    zmsg_destroy(&req);
}

static void s_actor(zsock_t *pipe, void *argp)
{
    s_args_t *args = argp;
    zcertstore_t *certs = NULL;
    zsock_t *rep = zsock_new(ZMQ_REP);
    if (!rep || zsock_bind(rep, "%s", S_ZAP_ENDPOINT) != 0) {
        snprintf(args->err, args->err_size,
                 "cannot bind the ZAP handler at %s (another one in this process?)",
                 S_ZAP_ENDPOINT);
        zsock_destroy(&rep);
        zsock_signal(pipe, 1);
        return;
    }
    if (args->clients && strcmp(args->clients, CURVE_ALLOW_ANY) != 0) {
        certs = zcertstore_new(args->clients);
        if (!certs) {
            snprintf(args->err, args->err_size, "curve_clients %s: cannot read it", args->clients);
            zsock_destroy(&rep);
            zsock_signal(pipe, 1);
            return;
        }
    }
    zsock_signal(pipe, 0);
    nx_log_limit_t limit = {"refused handshakes", NX_ZAP_LOG_PER_SECOND, 0, 0, 0};
    zpoller_t *poller = zpoller_new(pipe, rep, NULL);
    while (poller) {
        zsock_t *which = zpoller_wait(poller, 1000);
        if (which == pipe) {
            zmsg_t *m = zmsg_recv(pipe);
            char *cmd = m ? zmsg_popstr(m) : NULL;
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            zstr_free(&cmd);
            zmsg_destroy(&m);
            if (term)
                break;
        } else if (which == rep)
            s_handle(args, rep, certs, &limit);
        else if (zpoller_terminated(poller))
            break;
        nx_log_limit_flush(&limit);
    }
    zpoller_destroy(&poller);
    zcertstore_destroy(&certs);
    /*  Unbound now: closing a socket frees its inproc endpoint later, on
        libzmq's reaper thread, and a handler made right after this one
        (a broker restarting in this process, unit.test_zap) could not
        bind it.                                                           */
    zsock_unbind(rep, "%s", S_ZAP_ENDPOINT);
    zsock_destroy(&rep);
}

nx_zap_t *nx_zap_new(nx_auth_t *auth, const char *curve_clients, nx_zap_counts_t *counts,
                     char *err_buf, size_t err_size)
{
    nx_zap_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err_buf, err_size, "out of memory");
        return NULL;
    }
    self->args = (s_args_t){auth, NULL, counts, err_buf, err_size};
    if (curve_clients && !(self->args.clients = strdup(curve_clients))) {
        snprintf(err_buf, err_size, "out of memory");
        free(self);
        return NULL;
    }
    err_buf[0] = 0;
    /*  zactor_new returns once the actor signalled (bound, or failed).    */
    self->actor = zactor_new(s_actor, &self->args);
    self->args.err = NULL;
    if (!self->actor || err_buf[0]) {
        if (!err_buf[0])
            snprintf(err_buf, err_size, "cannot start the ZAP handler");
        nx_zap_destroy(&self);
        return NULL;
    }
    return self;
}

void nx_zap_destroy(nx_zap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zactor_destroy(&(*self_p)->actor);
    free((*self_p)->args.clients);
    free(*self_p);
    *self_p = NULL;
}
