/*  =========================================================================
    nx_ha - the broker in a primary/standby pair. nx_ha.h is the contract;
    docs/architecture.md, "Replication and failover", the story.

    A promotion, in order (s_promote): the copy of the log stops; a turn
    cut short is forgotten; the store takes the whole copy (the
    checkpointer); seqs and fencing tokens continue above what the old
    primary may have handed out (its reservations are in the copied log,
    sent to the sync standby before anything above them went out); the
    sessions and claims are loaded from the store; the new epoch, a run
    record and a seq reservation are logged and flushed; then writes are
    taken. Without etcd the promoted broker then tells its old primary,
    if it still runs, that a newer epoch leads (`fence`).
    =========================================================================
*/

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_auth.h"
#include "nx_coord.h"
#include "nx_elector.h"
#include "nx_ha.h"
#include "nx_log.h"
#include "nx_repl_receiver.h"
#include "nx_repl_sender.h"
#include "nx_role.h"

#define S_META_EPOCH        "epoch"
#define S_META_SEQ_RESERVED "seq_reserved"
#define S_META_FENCE_BLOCK  "fence_block"
#define S_TICK_MS           100    /* timers run at least this often         */
#define S_STATS_US          200000 /* a standby's last seq is read this often */
#define S_WINDOW            (16u << 20)
#define S_PROMOTE_SYNC_MS   30000

struct _nx_ha_t {
    nx_role_state_t role;                   /* who this broker is                        */
    bool etcd;                              /* etcd decides (else the operator)          */
    char name[NX_REPL_NAME_MAX + 1];        /* this broker's name                    */
    char advertise[NX_ROLE_ENDPOINT_MAX];   /* its control endpoint for clients */
    char peer[NX_ROLE_ENDPOINT_MAX];        /* ... and for a standby's copy     */
    char follow_peer[NX_ROLE_ENDPOINT_MAX]; /* the primary's, for our copy    */
    nx_repl_sender_t *tx;                   /* ships the log to standbys                 */
    nx_repl_receiver_t *rx;                 /* copies the primary's log (a standby)      */
    nx_elector_t *elector;                  /* etcd's election, NULL without etcd        */
    uint64_t reserve_gate;                  /* end of the last reservation turn          */
    bool drop_asked;                        /* etcd is asked to name no sync standby     */
    char refusal[600];                      /* why writes are refused now                */
    char problem[200];                      /* what etcd said last, "" when fine         */
    bool restart;                           /* the broker must restart                   */
    bool fatal;                             /* the log failed                            */
    uint64_t stats_at;                      /* mono us the standby's counters were read  */
    uint64_t lease_warned;                  /* mono us a lost lease was logged           */
    /*  The primary this one was promoted over (without etcd): fenced
        every second until it says it takes no writes, then every
        S_WATCH_SLOW_US: a fence sent once is lost when it is paused, and
        a restart of it with its old settings would take writes beside
        this one.                                                          */
    char watch_ep[NX_ROLE_ENDPOINT_MAX]; /* its control endpoint, "" none          */
    zsock_t *watch;                      /* DEALER to it                           */
    uint64_t watch_next;                 /* mono us of the next fence              */
    bool watch_follows;                  /* it said it takes no writes             */
    bool watch_split;                    /* it said it is a primary too (logged)   */
    bool watch_refused;                  /* it refused otherwise (logged)          */
};

/*  ---- Helpers ------------------------------------------------------------ */

static uint64_t s_meta_u64(nx_broker_t *b, const char *key)
{
    void *v = NULL;
    size_t len = 0;
    uint64_t out = 0;
    if (nx_store_get(b->store, NX_DB_META, key, strlen(key), &v, &len) == NEXUS_OK && len == 8)
        out = nx_get_u64(v);
    free(v);
    return out;
}

static int s_log_meta(nx_broker_t *b, const char *key, uint64_t value)
{
    uint8_t v[8];
    nx_put_u64(v, value);
    return nx_wal_put(b->wal, NX_DB_META, key, strlen(key), v, sizeof v);
}

static bool s_writable(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    if (!self)
        return true;
    if (self->role.role != NX_ROLE_PRIMARY)
        return false;
    if (!self->elector)
        return true;
    return nx_mono_us() < nx_elector_lease_until(self->elector);
}

/*  The token a standby presents (and puts in its requests), or NULL.     */
static const char *s_token(nx_broker_t *b)
{
    if (b->cfg.replica_token && *b->cfg.replica_token)
        return b->cfg.replica_token;
    return b->cfg.token && *b->cfg.token ? b->cfg.token : NULL;
}

/*  The standby's socket to its primary is secured as every client's:
    CURVE with the pair's certificate, else PLAIN with the token.         */
static void s_secure(zsock_t *sock, void *arg)
{
    nx_broker_t *b = arg;
    if (b->curve)
        nx_curve_client(b->curve, sock);
    else if (s_token(b)) {
        zsock_set_plain_username(sock, "nexus");
        zsock_set_plain_password(sock, s_token(b));
    }
}

/*  Replication hands out everything (every event, every session's secret)
    and promotion and fencing change who serves: only a token with every
    right may ask.                                                         */
static bool s_full_rights(nx_broker_t *b, nx_request_t *rq)
{
    if (!nx_auth_enabled(b->auth) || !rq->auth)
        return true; /* an open fabric, or the shared token */
    return nx_auth_allows(b->auth, rq->auth, "\x01any", 4) &&
           !nx_auth_sub_restricted(b->auth, rq->auth) &&
           nx_auth_may_publish(b->auth, rq->auth, "x", 1) &&
           nx_auth_may_publish(b->auth, rq->auth, "work.claimed", 12);
}

static int s_forbidden(nx_request_t *rq, const char *op)
{
    return nx_request_fail(rq, NEXUS_ERR_FORBIDDEN,
                           "%s needs a token with every right (sessions=* pub=> sub=>), as it "
                           "hands out or changes the whole fabric",
                           op);
}

static void s_follow(nx_broker_t *b, const char *endpoint)
{
    nx_ha_t *self = b->ha;
    if (!self->rx) {
        nx_repl_receiver_config_t rcfg = {
            .primary = endpoint,
            .name = self->name,
            .wal = b->wal,
            .store_id = nx_store_id(b->store),
            .epoch = self->role.epoch,
            .data_dir = b->cfg.data_dir,
            .timeout_us = b->cfg.replication_timeout * 1000,
            .auth = s_token(b),
            .secure = s_secure,
            .secure_arg = b,
        };
        self->rx = nx_repl_receiver_new(&rcfg);
        if (!self->rx)
            nx_error("replication: out of memory for the receiver");
        else if (endpoint && *endpoint)
            nx_info("replication: this broker is a standby of %s", endpoint);
    } else
        nx_repl_receiver_follow(self->rx, endpoint && *endpoint ? endpoint : NULL);
}

/*  ---- Setup --------------------------------------------------------------- */

int nx_ha_install(const nx_broker_config_t *cfg, char *err, size_t err_size)
{
    return nx_repl_receiver_install(cfg->data_dir, err, err_size);
}

/*  Asks the broker at endpoint for its role and epoch (`ping`, at most
    S_PEER_ASK_MS). Returns 0 with role ("primary", "standby", "fenced")
    and *epoch, or -1 when it did not answer.                             */
#define S_PEER_ASK_MS 2000

static int s_peer_ask(nx_broker_t *b, const char *endpoint, char *role, size_t role_size,
                      uint64_t *epoch)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s)
        return -1;
    zsock_set_linger(s, 0);
    s_secure(s, b);
    int result = -1;
    if (zsock_connect(s, "%s", endpoint) == 0) {
        static const uint8_t ping[] = {0x82, 0xa2, 'o',  'p', 0xa4, 'p', 'i',
                                       'n',  'g',  0xa2, 'i', 'd',  0x01};
        zmq_send(zsock_resolve(s), ping, sizeof ping, ZMQ_DONTWAIT);
        zmq_pollitem_t item = {zsock_resolve(s), 0, ZMQ_POLLIN, 0};
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (zmq_poll(&item, 1, S_PEER_ASK_MS) == 1 && zmq_msg_recv(&msg, item.socket, 0) >= 0 &&
            msgpack_unpack_next(&u, zmq_msg_data(&msg), zmq_msg_size(&msg), NULL) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_MAP) {
            const char *r = NULL;
            size_t r_len = 0;
            if (nx_map_str(&u.data, "role", &r, &r_len, NULL) == NEXUS_OK && r &&
                nx_map_u64(&u.data, "epoch", epoch, NULL) == NEXUS_OK) {
                snprintf(role, role_size, "%.*s", (int)r_len, r);
                result = 0;
            }
        }
        msgpack_unpacked_destroy(&u);
        zmq_msg_close(&msg);
    }
    zsock_destroy(&s);
    return result;
}

nx_ha_t *nx_ha_new(nx_broker_t *b, char *err, size_t err_size)
{
    nx_broker_config_t *cfg = &b->cfg;
    bool etcd = cfg->etcd && *cfg->etcd;
    bool replica = cfg->replica_of && *cfg->replica_of;
    if (etcd && replica) {
        snprintf(err, err_size,
                 "replica_of and etcd exclude each other: with etcd, etcd says "
                 "which broker is the primary");
        return NULL;
    }
    nx_ha_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    self->etcd = etcd;
    if (cfg->name && *cfg->name)
        snprintf(self->name, sizeof self->name, "%s", cfg->name);
    else if (gethostname(self->name, sizeof self->name - 1) != 0 || !self->name[0])
        snprintf(self->name, sizeof self->name, "nexusd");
    if (cfg->advertise && *cfg->advertise)
        snprintf(self->advertise, sizeof self->advertise, "%s", cfg->advertise);
    else {
        snprintf(self->advertise, sizeof self->advertise, "%s",
                 cfg->control_endpoints ? cfg->control_endpoints : "");
        self->advertise[strcspn(self->advertise, ", ")] = 0;
    }
    snprintf(self->peer, sizeof self->peer, "%s",
             cfg->peer_advertise && *cfg->peer_advertise ? cfg->peer_advertise : self->advertise);
    uint64_t epoch = s_meta_u64(b, S_META_EPOCH);
    nx_role_t role = NX_ROLE_PRIMARY;
    char primary[NX_ROLE_ENDPOINT_MAX] = "";
    if (etcd)
        role = NX_ROLE_STANDBY; /* until etcd says */
    else {
        nx_role_t frole;
        uint64_t fepoch = 0;
        char fprimary[NX_ROLE_ENDPOINT_MAX] = "";
        int rc = nx_role_file_read(cfg->data_dir, &frole, &fepoch, fprimary, sizeof fprimary, err,
                                   err_size);
        if (rc < 0) {
            free(self);
            return NULL;
        }
        char peer_role[16] = "";
        uint64_t peer_epoch = 0;
        if (rc == 1 && frole == NX_ROLE_PRIMARY && replica) {
            /*  The primary a role file names may have been promoted past
                while this broker was down (an old primary restarted with
                replica_of set to the new one, as the guide says): a primary
                of a newer epoch at replica_of wins, and this broker follows
                it. Unanswered, the role file decides, as before.          */
            if (s_peer_ask(b, cfg->replica_of, peer_role, sizeof peer_role, &peer_epoch) != 0)
                nx_warn("%s/role says this broker is the primary (epoch %" PRIu64
                        "), and replica_of (%s) did not answer within %d ms: it starts as the "
                        "primary. If %s was promoted meanwhile, stop this broker and remove "
                        "%s/role, or it takes writes beside it",
                        cfg->data_dir, fepoch > epoch ? fepoch : epoch, cfg->replica_of,
                        S_PEER_ASK_MS, cfg->replica_of, cfg->data_dir);
            else if (!strcmp(peer_role, "primary") &&
                     peer_epoch > (fepoch > epoch ? fepoch : epoch)) {
                nx_warn("%s/role says this broker is the primary (epoch %" PRIu64
                        "), but replica_of (%s) is the primary of epoch %" PRIu64
                        ": this broker starts as its standby",
                        cfg->data_dir, fepoch > epoch ? fepoch : epoch, cfg->replica_of,
                        peer_epoch);
                if (nx_role_file_write(cfg->data_dir, NX_ROLE_STANDBY, peer_epoch, cfg->replica_of))
                    nx_warn("cannot write %s/role: %s", cfg->data_dir, strerror(errno));
                rc = 0; /* as without a role file: replica_of decides */
                if (peer_epoch > epoch)
                    epoch = peer_epoch; /* what ping says from the start  */
            }
        }
        if (rc == 1) {
            role = frole;
            if (fepoch > epoch)
                epoch = fepoch;
            snprintf(primary, sizeof primary, "%s", strcmp(fprimary, "-") ? fprimary : "");
            /*  A warning only when the file says other than the settings;
                when they agree, one line of information.                  */
            bool agrees = role == NX_ROLE_PRIMARY
                              ? !replica
                              : replica && strcmp(primary, cfg->replica_of) == 0;
            if (agrees)
                nx_info("%s/role says this broker is %s%s, as its settings do", cfg->data_dir,
                        role == NX_ROLE_PRIMARY ? "the primary" : "a standby of ", primary);
            else
                nx_warn("%s/role says this broker is %s%s (a promotion or a fence decided it; "
                        "it overrides %s: remove the file to take the role the settings give)",
                        cfg->data_dir, role == NX_ROLE_PRIMARY ? "the primary" : "a standby of ",
                        primary, replica ? "replica_of" : "the settings, which make it a primary");
        } else if (replica) {
            role = NX_ROLE_STANDBY;
            snprintf(primary, sizeof primary, "%s", cfg->replica_of);
        }
    }
    nx_role_init(&self->role, role, epoch, etcd, primary);
    /*  A primary by its role file whose settings name another primary:
        that one is the primary it was promoted over, fenced as after the
        promotion (s_watch), also when this broker restarted since.        */
    if (role == NX_ROLE_PRIMARY && !etcd && cfg->replica_of && *cfg->replica_of)
        snprintf(self->watch_ep, sizeof self->watch_ep, "%s", cfg->replica_of);
    return self;
}

int nx_ha_start(nx_broker_t *b, char *err, size_t err_size)
{
    nx_ha_t *self = b->ha;
    nx_repl_sender_config_t scfg = {
        .wal = b->wal,
        .wal_dir = b->wal_dir,
        .store = b->store,
        .data_dir = b->cfg.data_dir,
        .store_id = nx_store_id(b->store),
        .router = b->h_router,
        .window = S_WINDOW,
        .keep = b->cfg.wal_max,
        .timeout_us = b->cfg.replication_timeout * 1000,
    };
    self->tx = nx_repl_sender_new(&scfg);
    if (!self->tx) {
        snprintf(err, err_size, "out of memory for replication");
        return -1;
    }
    if (self->role.role == NX_ROLE_STANDBY && !self->etcd)
        s_follow(b, self->role.primary);
    if (self->etcd) {
        nx_elector_config_t ecfg = {
            .endpoints = b->cfg.etcd,
            .prefix = b->cfg.etcd_prefix,
            .name = self->name,
            .advertise = self->advertise,
            .peer = self->peer,
            .lease_ms = b->cfg.etcd_lease,
            .epoch = self->role.epoch,
        };
        self->elector = nx_elector_new(&ecfg);
        if (!self->elector) {
            snprintf(err, err_size, "cannot start the etcd elector");
            return -1;
        }
        nx_info("failover by etcd (%s, keys under %s): this broker (%s, %s) is a standby until "
                "etcd says otherwise",
                b->cfg.etcd, b->cfg.etcd_prefix, self->name, self->advertise);
    }
    return 0;
}

void nx_ha_destroy(nx_ha_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_ha_t *self = *self_p;
    nx_elector_destroy(&self->elector);
    zsock_destroy(&self->watch);
    nx_repl_receiver_destroy(&self->rx);
    nx_repl_sender_destroy(&self->tx);
    free(self);
    *self_p = NULL;
}

bool nx_ha_starts_primary(nx_ha_t *self)
{
    return !self || self->role.role == NX_ROLE_PRIMARY;
}

bool nx_ha_keeps_segment(nx_ha_t *self)
{
    return self && (self->etcd || self->role.role == NX_ROLE_STANDBY);
}

/*  ---- What the loop asks ------------------------------------------------- */

const char *nx_ha_primary(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    if (!self)
        return NULL;
    if (self->role.role == NX_ROLE_PRIMARY)
        return self->advertise;
    return self->role.primary[0] ? self->role.primary : NULL;
}

const char *nx_ha_refusal(nx_broker_t *b, nexus_err_t *err)
{
    nx_ha_t *self = b->ha;
    if (s_writable(b))
        return NULL;
    *err = NEXUS_ERR_NOT_PRIMARY;
    const char *primary = self->role.primary[0] ? self->role.primary : NULL;
    if (self->role.role == NX_ROLE_STANDBY)
        snprintf(self->refusal, sizeof self->refusal,
                 "this broker (%s) is a standby: nothing was written; %s%s", self->name,
                 primary ? "the primary is " : "no primary is known yet",
                 primary ? primary : (self->etcd ? " (etcd is electing one)" : ""));
    else if (self->role.role == NX_ROLE_FENCED)
        snprintf(self->refusal, sizeof self->refusal,
                 "this broker (%s) is no longer the primary: nothing was written; %s%s", self->name,
                 primary ? "the primary is " : "the new primary is not known yet",
                 primary ? primary : "");
    else
        snprintf(self->refusal, sizeof self->refusal,
                 "this broker (%s) cannot renew its lease in etcd: nothing was written (it takes "
                 "writes again once it does; meanwhile the standby may take over)",
                 self->name);
    return self->refusal;
}

bool nx_ha_serves(nx_broker_t *b, const struct nx_op *op)
{
    return !b->ha || (op->def->flags & NX_OF_STANDBY) || s_writable(b);
}

uint64_t nx_ha_released(nx_broker_t *b)
{
    uint64_t r = nx_wal_durable(b->wal);
    nx_ha_t *self = b->ha;
    if (!self || !self->tx)
        return r;
    uint64_t s = nx_repl_sender_synced(self->tx);
    if (s != UINT64_MAX && (b->cfg.replication == NX_REPL_SYNC || s < self->reserve_gate) && s < r)
        r = s;
    return r;
}

void nx_ha_reserved(nx_broker_t *b, uint64_t lsn)
{
    if (b->ha && lsn > b->ha->reserve_gate)
        b->ha->reserve_gate = lsn;
}

/*  The sync standby: taken once it caught up, let go once it kept a change
    waiting for replication_timeout (with etcd, only after the sync key no
    longer names it: until then it may be promoted, so it must have
    everything acknowledged).                                              */
static void s_sync_policy(nx_broker_t *b, uint64_t now)
{
    nx_ha_t *self = b->ha;
    char name[NX_REPL_NAME_MAX + 1] = "";
    nx_repl_want_t want = nx_repl_sender_want(self->tx, now, name, sizeof name);
    if (want == NX_REPL_WANT_ADD) {
        nx_repl_sender_set_sync(self->tx, name);
        nx_info("replication: standby %s has caught up: %s", name,
                b->cfg.replication == NX_REPL_SYNC
                    ? "changes are acknowledged once it has them durable too"
                    : "it is the standby a failover promotes (replication is async)");
        if (self->elector)
            nx_elector_sync(self->elector, name);
    } else if (want == NX_REPL_WANT_DROP && !self->drop_asked) {
        if (self->elector) {
            self->drop_asked = true;
            nx_elector_sync(self->elector, "");
            nx_warn("replication: standby %s left a change unacknowledged for %" PRIu64
                    " ms: asking etcd to stop naming it before changes go on without it",
                    name, b->cfg.replication_timeout);
        } else {
            nx_repl_sender_set_sync(self->tx, NULL);
            nx_warn("replication: standby %s left a change unacknowledged for %" PRIu64
                    " ms: changes are acknowledged without it from now on (promoting it now "
                    "could lose them) until it catches up",
                    name, b->cfg.replication_timeout);
        }
    }
}

void nx_ha_shipped(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    if (self && self->tx && self->role.role == NX_ROLE_PRIMARY)
        nx_repl_sender_pump(self->tx, self->role.epoch, nx_mono_us());
}

void nx_ha_after_turn(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    if (!self || !self->tx || self->role.role != NX_ROLE_PRIMARY)
        return;
    uint64_t now = nx_mono_us();
    nx_repl_sender_pump(self->tx, self->role.epoch, now);
    s_sync_policy(b, now);
}

void nx_ha_flushed(nx_broker_t *b)
{
    if (b->ha && b->ha->rx)
        nx_repl_receiver_flushed(b->ha->rx);
}

int nx_ha_poll(nx_broker_t *b, nx_poll_item_t *items, int max)
{
    nx_ha_t *self = b->ha;
    int n = 0;
    if (!self)
        return 0;
    void *rs = self->rx ? nx_repl_receiver_socket(self->rx) : NULL;
    if (rs && n < max)
        items[n++] = (nx_poll_item_t){.socket = rs, .fd = -1, .events = ZMQ_POLLIN};
    if (self->elector && n < max)
        items[n++] = (nx_poll_item_t){.socket = zsock_resolve(nx_elector_sock(self->elector)),
                                      .fd = -1,
                                      .events = ZMQ_POLLIN};
    return n;
}

long nx_ha_timeout(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    if (!self)
        return 1000;
    return S_TICK_MS;
}

/*  ---- The old primary ---------------------------------------------------- */

#define S_WATCH_FAST_US 1000000 /* until it says it follows                  */
#define S_WATCH_SLOW_US 5000000 /* after: a restart of it is seen this soon  */

/*  Connects the DEALER to watch_ep (watch_ep "" when it cannot).         */
static void s_watch_start(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    self->watch = zsock_new(ZMQ_DEALER);
    if (self->watch) {
        zsock_set_linger(self->watch, 0);
        /*  Nothing queued for a broker that is not there (or paused
            before its handshake): the next round asks afresh.            */
        zsock_set_immediate(self->watch, 1);
        zsock_set_sndhwm(self->watch, 4);
        zsock_set_rcvhwm(self->watch, 16);
        s_secure(self->watch, b);
        if (zsock_connect(self->watch, "%s", self->watch_ep) != 0)
            zsock_destroy(&self->watch);
    }
    if (!self->watch)
        nx_warn("cannot connect to the old primary at %s: it is not fenced", self->watch_ep);
    if (!self->watch) {
        self->watch_ep[0] = 0;
        return;
    }
    self->watch_next = 0;
    self->watch_follows = false;
}

/*  Sends fence with this broker's epoch; false when it could not go yet
    (no connection: ZMQ_IMMEDIATE). Not a ping first: a primary that
    waits for its standby holds every reply, a ping's too, until the
    standby answers or replication_timeout lets it go; a fence acts as
    soon as it is read, before that wait ends and acknowledges anything.
    A broker at this epoch or newer refuses it (conflict), changing
    nothing.                                                               */
static bool s_watch_send(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    bool auth = s_token(b) != NULL;
    msgpack_pack_map(&pk, 5 + (auth ? 1 : 0));
    nx_pack_kv_str(&pk, "op", "fence");
    nx_pack_kv_u64(&pk, "id", 2);
    nx_pack_kv_u64(&pk, "epoch", self->role.epoch);
    nx_pack_kv_str(&pk, "primary", self->advertise);
    nx_pack_kv_str(&pk, "peer", self->peer);
    if (auth)
        nx_pack_kv_str(&pk, "auth", s_token(b));
    int rc = zmq_send(zsock_resolve(self->watch), buf.data, buf.size, ZMQ_DONTWAIT);
    msgpack_sbuffer_destroy(&buf);
    return rc >= 0;
}

/*  Reads the old primary's answers; fences it again when due (loop
    thread).                                                               */
static void s_watch(nx_broker_t *b, uint64_t now)
{
    nx_ha_t *self = b->ha;
    if (!self->watch_ep[0] || self->etcd)
        return;
    if (self->role.role != NX_ROLE_PRIMARY || !s_writable(b)) {
        zsock_destroy(&self->watch); /* no longer the one who leads */
        self->watch_ep[0] = 0;
        return;
    }
    if (!self->watch)
        s_watch_start(b);
    if (!self->watch)
        return;
    for (int i = 0; i < 16; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, zsock_resolve(self->watch), ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            break;
        }
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        const char *role = NULL, *text = NULL, *code = NULL;
        size_t role_len = 0, text_len = 0, code_len = 0;
        bool ok = false;
        if (msgpack_unpack_next(&u, zmq_msg_data(&msg), zmq_msg_size(&msg), NULL) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_MAP) {
            const msgpack_object *okv = nx_map_get(&u.data, "ok");
            ok = okv && okv->type == MSGPACK_OBJECT_BOOLEAN && okv->via.boolean;
            nx_map_str(&u.data, "role", &role, &role_len, NULL);
            nx_map_str(&u.data, "error", &code, &code_len, NULL);
            nx_map_str(&u.data, "message", &text, &text_len, NULL);
        }
        bool newer_or_same = code && code_len == 8 && memcmp(code, "conflict", 8) == 0;
        bool primary = role && role_len == 7 && memcmp(role, "primary", 7) == 0;
        if (newer_or_same && primary) {
            /*  A primary at this epoch (or newer) does not step down for
                it: two primaries that fencing cannot part.                */
            if (!self->watch_split)
                nx_error("the old primary at %s runs as a primary too and refuses to be fenced "
                         "(%.*s): two brokers take writes; stop it, and start it with replica_of "
                         "naming this broker (was its role file removed?)",
                         self->watch_ep, (int)text_len, text ? text : "");
            self->watch_split = true;
            self->watch_follows = true; /* said; asked again every 5 s */
        } else if (ok) {
            /*  It was a primary of an older epoch: paused through the
                promotion, or started again with its old settings.       */
            if (self->watch_follows)
                nx_warn("the old primary at %s took writes again (started with its old "
                        "settings?): fenced it, epoch %" PRIu64 "; it is %.*s now",
                        self->watch_ep, self->role.epoch, (int)role_len, role ? role : "?");
            else
                nx_info("the old primary at %s took epoch %" PRIu64 ": it is %.*s now, and "
                        "takes no writes",
                        self->watch_ep, self->role.epoch, (int)role_len, role ? role : "?");
            self->watch_follows = true;
        } else if (newer_or_same && self->watch_split) {
            nx_info("the old primary at %s takes no writes now: %.*s", self->watch_ep,
                    (int)text_len, text ? text : "");
            self->watch_split = false;
        } else if (newer_or_same && !self->watch_follows) {
            nx_info("the old primary at %s takes no writes: %.*s", self->watch_ep, (int)text_len,
                    text ? text : "");
            self->watch_follows = true;
        } else if (!newer_or_same && !self->watch_refused) {
            /*  Once: it is asked again every second (its token rights?). */
            nx_warn("the old primary at %s refused to be fenced: %.*s", self->watch_ep,
                    (int)text_len, text ? text : "no reason");
            self->watch_refused = true;
        }
        msgpack_unpacked_destroy(&u);
        zmq_msg_close(&msg);
    }
    /*  Not sent (no connection yet): again at the next tick (S_TICK_MS),
        so that an old primary that is reachable has it at once.           */
    if (now >= self->watch_next && s_watch_send(b))
        self->watch_next = now + (self->watch_follows ? S_WATCH_SLOW_US : S_WATCH_FAST_US);
}

/*  ---- Promotion ------------------------------------------------------------ */

static int s_promote(nx_broker_t *b, uint64_t epoch)
{
    nx_ha_t *self = b->ha;
    uint64_t t0 = nx_mono_us();
    nx_repl_rx_stats_t rs;
    memset(&rs, 0, sizeof rs);
    char old[NX_ROLE_ENDPOINT_MAX] = "";
    if (self->rx) {
        nx_repl_receiver_stats(self->rx, &rs, t0);
        snprintf(old, sizeof old, "%s", rs.primary ? rs.primary : "");
        if (nx_repl_receiver_epoch(self->rx) >= epoch && !self->etcd)
            epoch = nx_repl_receiver_epoch(self->rx) + 1;
    }
    nx_repl_receiver_destroy(&self->rx);
    /*  A turn whose last frame never came was never acknowledged.         */
    nx_wal_copy_rewind(b->wal);
    if (nx_wal_flush(b->wal)) {
        nx_error("promotion: cannot flush the log: %s", strerror(errno));
        self->fatal = true;
        return -1;
    }
    nx_checkpointer_wake(b->ckpt);
    /*  Sessions and claims are loaded from the store: from one behind the
        log, a grant the old primary acknowledged would be missing (granted
        again). The broker stops instead; a restart replays the log into
        the store before it serves, and the promotion can be asked again. */
    if (nx_checkpointer_sync(b->ckpt, nx_wal_durable(b->wal), S_PROMOTE_SYNC_MS)) {
        nx_error("promotion: the store did not take the whole log within %d s: stopping (a "
                 "restart replays the log; then promote again)",
                 S_PROMOTE_SYNC_MS / 1000);
        self->fatal = true;
        return -1;
    }
    nx_store_stats_t st;
    nx_store_stats(b->store, &st);
    b->last_seq = st.last_seq;
    b->last_ts = st.last_ts;
    /*  Seqs the old primary reserved may have reached subscribers (events
        go out before their flush): never handed out again.               */
    uint64_t reserved = s_meta_u64(b, S_META_SEQ_RESERVED);
    if (reserved > b->last_seq) {
        nx_info("promotion: seqs %" PRIu64 "..%" PRIu64 " may have been handed out by the old "
                "primary and are skipped",
                b->last_seq + 1, reserved);
        b->last_seq = reserved;
    }
    if (nx_coord_promote(b)) {
        nx_error("promotion: cannot load sessions and claims: %s", nx_store_errmsg(b->store));
        self->fatal = true;
        return -1;
    }
    uint64_t block = s_meta_u64(b, S_META_FENCE_BLOCK);
    if (block > nx_claims_fence(b))
        nx_claims_fence_floor(b, block);
    b->fence_block = 0; /* the next turn reserves a block above        */
    self->role.epoch = epoch;
    if (s_log_meta(b, S_META_EPOCH, epoch) || nx_broker_log_start(b)) {
        nx_error("promotion: cannot write the log: %s", strerror(errno));
        self->fatal = true;
        return -1;
    }
    /*  Timers that ran while this broker was a standby apply from now.    */
    nx_coord_rearm(b);
    nx_info("promoted: this broker (%s) is the primary, epoch %" PRIu64 "; seqs continue at "
            "%" PRIu64 ", fencing tokens above %" PRIu64 " (%" PRIu64 " ms)",
            self->name, epoch, b->last_seq + 1, nx_claims_fence(b), (nx_mono_us() - t0) / 1000);
    if (!self->etcd) {
        if (nx_role_file_write(b->cfg.data_dir, NX_ROLE_PRIMARY, epoch, NULL))
            nx_warn("promotion: cannot write %s/role (%s): a restart would take the role the "
                    "settings give",
                    b->cfg.data_dir, strerror(errno));
        /*  The old primary, if it still runs (or runs again), stops
            taking writes: s_watch fences it.                              */
        if (old[0]) {
            zsock_destroy(&self->watch);
            snprintf(self->watch_ep, sizeof self->watch_ep, "%s", old);
            self->watch_follows = self->watch_split = self->watch_refused = false;
        }
    }
    return 0;
}

/*  A fenced broker that won the election again: nothing was written since
    it was fenced, so it goes on with a new epoch.                        */
static int s_resume(nx_broker_t *b, uint64_t epoch)
{
    if (s_log_meta(b, S_META_EPOCH, epoch) || nx_broker_log_start(b)) {
        b->ha->fatal = true;
        return -1;
    }
    nx_info("this broker (%s) leads again, epoch %" PRIu64, b->ha->name, epoch);
    return 0;
}

/*  Runs what the role table said.                                         */
static void s_act(nx_broker_t *b, nx_role_action_t a, const char *why)
{
    nx_ha_t *self = b->ha;
    switch (a) {
    case NX_RA_PROMOTE:
        s_promote(b, self->role.epoch);
        break;
    case NX_RA_RESUME:
        s_resume(b, self->role.epoch);
        break;
    case NX_RA_FOLLOW:
        s_follow(b, self->follow_peer[0] ? self->follow_peer : self->role.primary);
        break;
    case NX_RA_FENCE:
        nx_error("this broker (%s) is fenced: %s; it takes no writes", self->name, why);
        break;
    case NX_RA_RESTART:
        nx_warn("this broker (%s) is fenced: %s; it restarts to follow %s", self->name, why,
                self->role.primary[0] ? self->role.primary : "the new primary");
        if (!self->etcd &&
            nx_role_file_write(b->cfg.data_dir, NX_ROLE_STANDBY, self->role.epoch,
                               self->follow_peer[0] ? self->follow_peer : self->role.primary))
            nx_error("cannot write %s/role: %s", b->cfg.data_dir, strerror(errno));
        self->restart = true;
        break;
    case NX_RA_NONE:
    case NX_RA_REFUSE:
        break;
    }
}

/*  ---- Input ------------------------------------------------------------------ */

static void s_elector_news(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    nx_elect_news_t n;
    for (int i = 0; i < 100 && nx_elector_recv(self->elector, &n) == 0; i++) {
        char why[300];
        switch (n.kind) {
        case NX_ELECT_LEAD:
            self->problem[0] = 0;
            s_act(b, nx_role_apply(&self->role, NX_RE_LEAD, n.epoch, NULL, 0), "");
            break;
        case NX_ELECT_FOLLOW:
            snprintf(why, sizeof why, "%s leads with epoch %" PRIu64, n.name, n.epoch);
            snprintf(self->follow_peer, sizeof self->follow_peer, "%s", n.peer);
            s_act(b, nx_role_apply(&self->role, NX_RE_FOLLOW, n.epoch, n.endpoint, 0), why);
            break;
        case NX_ELECT_LOST:
            s_act(b, nx_role_apply(&self->role, NX_RE_LOST, 0, NULL, 0),
                  "its lease in etcd could not be renewed in time");
            break;
        case NX_ELECT_SYNCED:
            if (self->drop_asked && !n.name[0]) {
                self->drop_asked = false;
                const char *was = nx_repl_sender_sync_name(self->tx);
                nx_repl_sender_set_sync(self->tx, NULL);
                nx_warn("replication: etcd no longer names %s: changes are acknowledged "
                        "without it until it catches up",
                        was ? was : "the standby");
            }
            break;
        case NX_ELECT_PROBLEM:
            snprintf(self->problem, sizeof self->problem, "%s", n.text);
            break;
        }
    }
}

void nx_ha_awake(nx_broker_t *b)
{
    if (b->ha && b->ha->rx)
        nx_repl_receiver_awake(b->ha->rx, nx_mono_us());
}

int nx_ha_handle(nx_broker_t *b)
{
    nx_ha_t *self = b->ha;
    if (!self)
        return 0;
    uint64_t now = nx_mono_us();
    if (self->elector)
        s_elector_news(b);
    if (self->rx) {
        uint64_t before = nx_wal_durable(b->wal);
        nx_repl_rx_t rc = nx_repl_receiver_read(self->rx, now);
        if (rc == NX_REPL_RX_FATAL)
            self->fatal = true;
        else if (rc == NX_REPL_RX_RESTART) {
            nx_info("replication: restarting to start from the base copy");
            self->restart = true;
        }
        if (self->rx)
            nx_repl_receiver_tick(self->rx, now);
        if (nx_wal_durable(b->wal) > before)
            nx_checkpointer_wake(b->ckpt);
    }
    /*  A primary whose lease ran out says so once.                         */
    if (self->role.role == NX_ROLE_PRIMARY && self->elector && !s_writable(b) &&
        now - self->lease_warned > 5000000) {
        self->lease_warned = now;
        nx_warn("this broker (%s) cannot renew its lease in etcd: it takes no writes until it "
                "does",
                self->name);
    }
    /*  A standby's last seq (for health) follows its store.               */
    if (self->role.role != NX_ROLE_PRIMARY && now - self->stats_at > S_STATS_US) {
        nx_store_stats_t st;
        nx_store_stats(b->store, &st);
        b->last_seq = st.last_seq;
        b->last_ts = st.last_ts;
        self->stats_at = now;
    }
    if (self->role.role == NX_ROLE_PRIMARY && self->tx) {
        nx_repl_sender_pump(self->tx, self->role.epoch, now);
        s_sync_policy(b, now);
    }
    s_watch(b, now);
    if (self->fatal)
        return -1;
    return self->restart ? NX_BROKER_RESTART : 0;
}

void nx_ha_stop(nx_broker_t *b)
{
    if (b->ha && b->ha->elector && b->ha->role.role == NX_ROLE_PRIMARY)
        nx_elector_resign(b->ha->elector);
}

/*  ---- Reporting ------------------------------------------------------------- */

void nx_ha_pack_role(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!self)
        return;
    bool writable = s_writable(b);
    nx_pack_kv_str(nx_kv(rq), "role",
                   self->role.role == NX_ROLE_PRIMARY && !writable ? "fenced"
                                                                   : nx_role_name(self->role.role));
    nx_pack_kv_str(nx_kv(rq), "name", self->name);
    nx_pack_kv_u64(nx_kv(rq), "epoch", self->role.epoch);
    const char *primary = nx_ha_primary(b);
    nx_pack_kv_str(nx_kv(rq), "primary", primary);
}

void nx_ha_pack_state(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!self)
        return;
    uint64_t now = nx_mono_us();
    nx_dmap_open(&rq->reply, "replication");
    nx_ha_pack_role(b, rq);
    nx_pack_kv_str(nx_kv(rq), "mode", b->cfg.replication == NX_REPL_SYNC ? "sync" : "async");
    nx_pack_kv_str(nx_kv(rq), "failover", self->etcd ? "etcd" : "manual");
    if (self->elector) {
        uint64_t until = nx_elector_lease_until(self->elector);
        nx_pack_kv_u64(nx_kv(rq), "lease_ms", until > now ? (until - now) / 1000 : 0);
        nx_pack_kv_str(nx_kv(rq), "etcd_problem", self->problem[0] ? self->problem : NULL);
    }
    const char *sync = self->tx ? nx_repl_sender_sync_name(self->tx) : NULL;
    nx_pack_kv_str(nx_kv(rq), "sync_standby", sync);
    /*  The standbys this primary streams to.                              */
    size_t count = 0;
    nx_repl_standby_stats_t st;
    while (self->tx && nx_repl_sender_stats(self->tx, count, &st, now) == 0)
        count++;
    nx_pack_str(nx_kv(rq), "standbys");
    msgpack_pack_array(&rq->reply.pk, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        nx_repl_sender_stats(self->tx, i, &st, now);
        msgpack_packer *pk = &rq->reply.pk;
        msgpack_pack_map(pk, 8);
        nx_pack_kv_str(pk, "name", st.name);
        nx_pack_kv_bool(pk, "attached", st.attached);
        nx_pack_kv_bool(pk, "sync", st.sync);
        nx_pack_kv_bool(pk, "base_copy", st.base);
        nx_pack_kv_u64(pk, "sent", st.sent);
        nx_pack_kv_u64(pk, "acked", st.acked);
        nx_pack_kv_u64(pk, "lag_bytes", st.lag);
        nx_pack_kv_u64(pk, "ack_age_ms", st.ack_age_ms);
    }
    /*  What this standby receives.                                        */
    if (self->rx) {
        nx_repl_rx_stats_t rs;
        nx_repl_receiver_stats(self->rx, &rs, now);
        static const char *const states[] = {"idle", "asking", "streaming", "base_copy",
                                             "restarting"};
        nx_dmap_open(&rq->reply, "receiving");
        nx_pack_kv_str(nx_kv(rq), "from", rs.primary);
        nx_pack_kv_str(nx_kv(rq), "state", states[rs.state]);
        nx_pack_kv_u64(nx_kv(rq), "received", rs.received);
        nx_pack_kv_u64(nx_kv(rq), "durable", rs.durable);
        nx_pack_kv_u64(nx_kv(rq), "primary_written", rs.primary_written);
        nx_pack_kv_u64(nx_kv(rq), "lag_bytes", rs.lag);
        nx_pack_kv_u64(nx_kv(rq), "heard_ms", rs.heard_ms);
        nx_pack_kv_bool(nx_kv(rq), "sync", rs.sync);
        nx_pack_kv_u64(nx_kv(rq), "base_received", rs.base_got);
        nx_pack_kv_u64(nx_kv(rq), "base_size", rs.base_size);
        nx_pack_kv_str(nx_kv(rq), "problem", rs.why[0] ? rs.why : NULL);
        nx_dmap_close(&rq->reply);
    }
    nx_dmap_close(&rq->reply);
}

/*  ---- The ops ------------------------------------------------------------------ */

static int s_not_primary(nx_broker_t *b, nx_request_t *rq)
{
    nexus_err_t err = NEXUS_ERR_NOT_PRIMARY;
    const char *why = nx_ha_refusal(b, &err);
    nx_request_fail(rq, NEXUS_ERR_NOT_PRIMARY, "%s", why ? why : "this broker is not the primary");
    const char *primary = nx_ha_primary(b);
    if (primary)
        nx_pack_kv_str(nx_kv(rq), "primary", primary);
    return -1;
}

int nx_op_replicate(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!s_full_rights(b, rq))
        return s_forbidden(rq, "replicate");
    if (!self || !s_writable(b))
        return s_not_primary(b, rq);
    nx_repl_hello_t h;
    memset(&h, 0, sizeof h);
    nx_map_str(rq->fields, "name", &h.name, &h.name_len, NULL);
    nx_map_str(rq->fields, "store_id", &h.store_id, &h.store_id_len, NULL);
    uint64_t crc = 0;
    nx_map_u64(rq->fields, "lsn", &h.lsn, NULL);
    nx_map_u64(rq->fields, "crc", &crc, NULL);
    h.crc = (uint32_t)crc;
    nx_map_u64(rq->fields, "epoch", &h.epoch, NULL);
    nx_map_u64(rq->fields, "segment_size", &h.segment_size, NULL);
    /*  A standby that does not say (an earlier version) had it all.       */
    h.durable = UINT64_MAX;
    nx_map_u64(rq->fields, "durable", &h.durable, NULL);
    if (h.durable > h.lsn)
        h.durable = h.lsn;
    if (h.name_len == strlen(self->name) && memcmp(h.name, self->name, h.name_len) == 0)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT,
                               "a standby may not have this broker's own name (%s): give each "
                               "broker its own `name`",
                               self->name);
    uint64_t from = 0;
    char why[300] = "";
    nx_repl_answer_t a = nx_repl_sender_attach(self->tx, rq->peer, rq->peer_len, &h,
                                               self->role.epoch, &from, why, sizeof why);
    if (a == NX_REPL_NEWER) {
        /*  Someone promoted a standby past us: stop taking writes now.    */
        nx_role_action_t act = nx_role_apply(&self->role, NX_RE_FENCE, h.epoch, NULL, 0);
        if (act == NX_RA_RESTART && !self->etcd)
            nx_error("this broker (%s) is fenced: %s; it takes no writes (point it at the new "
                     "primary with replica_of, remove %s/role, and restart it)",
                     self->name, why, b->cfg.data_dir);
        else
            s_act(b, act, why);
        return s_not_primary(b, rq);
    }
    if (a == NX_REPL_REFUSED)
        return nx_request_fail(rq, NEXUS_ERR_BUSY, "%s", why);
    if (a == NX_REPL_RESYNC)
        nx_warn("replication: %s", why);
    else
        nx_info("replication: standby %.*s streams from log position %" PRIu64, (int)h.name_len,
                h.name, from);
    nx_pack_kv_u64(nx_kv(rq), "from", from);
    nx_pack_kv_u64(nx_kv(rq), "epoch", self->role.epoch);
    nx_pack_kv_str(nx_kv(rq), "store_id", nx_store_id(b->store));
    nx_pack_kv_u64(nx_kv(rq), "segment_size", nx_wal_segment_size(b->wal));
    nx_pack_kv_str(nx_kv(rq), "primary", self->name);
    nx_pack_kv_bool(nx_kv(rq), "resync", a == NX_REPL_RESYNC);
    if (a == NX_REPL_RESYNC)
        nx_pack_kv_str(nx_kv(rq), "reason", why);
    return 0;
}

int nx_op_replicate_ack(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!self || !self->tx || !s_full_rights(b, rq))
        return 0;
    const char *name = NULL;
    size_t len = 0;
    uint64_t lsn = 0, received = 0, base = 0, n = 0;
    nx_map_str(rq->fields, "name", &name, &len, NULL);
    nx_map_u64(rq->fields, "lsn", &lsn, NULL);
    nx_map_u64(rq->fields, "received", &received, NULL);
    nx_map_u64(rq->fields, "base", &base, NULL);
    nx_map_u64(rq->fields, "n", &n, NULL);
    nx_repl_sender_ack(self->tx, name, len, lsn, received, base, n, nx_mono_us());
    return 0;
}

int nx_op_replicate_base(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!s_full_rights(b, rq))
        return s_forbidden(rq, "replicate.base");
    if (!self || !s_writable(b))
        return s_not_primary(b, rq);
    const char *name = NULL;
    size_t len = 0;
    nx_map_str(rq->fields, "name", &name, &len, NULL);
    char why[300] = "";
    if (nx_repl_sender_base(self->tx, name, len, nx_checkpointer_committed(b->ckpt), why,
                            sizeof why))
        return nx_request_fail(rq, NEXUS_ERR_BUSY, "%s", why);
    return 0;
}

int nx_op_promote(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!s_full_rights(b, rq))
        return s_forbidden(rq, "promote");
    if (!self)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT, "this broker is the primary already");
    bool force = false;
    nx_map_bool(rq->fields, "force", &force, NULL);
    if (self->role.role == NX_ROLE_PRIMARY)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT, "this broker (%s) is the primary already",
                               self->name);
    if (self->role.role == NX_ROLE_FENCED)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT,
                               "this broker (%s) was fenced: it restarts as a standby first",
                               self->name);
    if (self->elector) {
        nx_elector_campaign(self->elector, force);
        nx_pack_kv_str(nx_kv(rq), "result",
                       "campaigning: etcd makes this broker the primary once the leader key is "
                       "free (see health's role)");
        return 0;
    }
    nx_repl_rx_stats_t rs;
    memset(&rs, 0, sizeof rs);
    if (self->rx)
        nx_repl_receiver_stats(self->rx, &rs, nx_mono_us());
    /*  A store that never served a primary nor came from one (a standby
        whose base copy never arrived: nothing in its log, nothing in its
        store, no seqs or fencing tokens reserved) would be promoted to
        another, empty store under the pair's name, handing out again the
        seqs and tokens the primary did. Not even with force. (The log
        counts: what a standby streamed reaches its store only at the
        checkpointer's next turn.)                                         */
    if (!rs.sync && nx_wal_written(b->wal) == 0 && b->last_seq == 0 &&
        !s_meta_u64(b, S_META_SEQ_RESERVED) && !s_meta_u64(b, S_META_FENCE_BLOCK))
        return nx_request_fail(
            rq, NEXUS_ERR_CONFLICT,
            "this standby (%s) never received a copy of its primary's store%s%s: "
            "promoted, it would be another, empty store (seqs and fencing "
            "tokens from 1 again); start the primary again, or, if its data "
            "is lost for good, start this broker without replica_of as a new "
            "store",
            self->name, rs.primary ? " from " : "", rs.primary ? rs.primary : "");
    if (!rs.sync && !force)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT,
                               "this standby (%s) is not in sync with its primary%s%s: it may "
                               "lack acknowledged changes; promote it with force (nexus promote "
                               "--force) if the primary is lost for good",
                               self->name, rs.primary ? " " : "", rs.primary ? rs.primary : "");
    nx_role_action_t a = nx_role_apply(&self->role, NX_RE_PROMOTE, 0, NULL, 0);
    if (a != NX_RA_PROMOTE)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT, "this broker cannot be promoted now");
    if (s_promote(b, self->role.epoch))
        return nx_request_fail(rq, NEXUS_ERR_STORE, "the promotion failed: see the log");
    nx_pack_kv_str(nx_kv(rq), "result", "promoted");
    nx_pack_kv_u64(nx_kv(rq), "epoch", self->role.epoch);
    nx_pack_kv_u64(nx_kv(rq), "last_seq", b->last_seq);
    return 0;
}

int nx_op_fence(nx_broker_t *b, nx_request_t *rq)
{
    nx_ha_t *self = b->ha;
    if (!s_full_rights(b, rq))
        return s_forbidden(rq, "fence");
    uint64_t epoch = 0;
    const char *primary = NULL;
    size_t plen = 0;
    const char *peer = NULL;
    size_t peer_len = 0;
    nx_map_u64(rq->fields, "epoch", &epoch, NULL);
    nx_map_str(rq->fields, "primary", &primary, &plen, NULL);
    nx_map_str(rq->fields, "peer", &peer, &peer_len, NULL);
    if (!self)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT, "this broker is not in a pair");
    char ep[NX_ROLE_ENDPOINT_MAX] = "";
    snprintf(ep, sizeof ep, "%.*s", (int)plen, primary ? primary : "");
    snprintf(self->follow_peer, sizeof self->follow_peer, "%.*s", (int)peer_len,
             peer && peer_len ? peer : ep);
    if (epoch <= self->role.epoch) {
        nx_request_fail(rq, NEXUS_ERR_CONFLICT,
                        "epoch %" PRIu64 " is not newer than this broker's %" PRIu64, epoch,
                        self->role.epoch);
        /*  Who it is: the sender tells a standby from a primary that will
            not step down.                                                  */
        nx_pack_kv_str(nx_kv(rq), "role",
                       self->role.role == NX_ROLE_PRIMARY && !s_writable(b)
                           ? "fenced"
                           : nx_role_name(self->role.role));
        nx_pack_kv_u64(nx_kv(rq), "epoch", self->role.epoch);
        return -1;
    }
    char why[300];
    snprintf(why, sizeof why, "%s leads with epoch %" PRIu64, ep[0] ? ep : "another broker", epoch);
    nx_role_t before = self->role.role;
    nx_role_action_t a = nx_role_apply(&self->role, NX_RE_FENCE, epoch, ep[0] ? ep : NULL, 0);
    if (before == NX_ROLE_STANDBY && !self->etcd && ep[0] &&
        nx_role_file_write(b->cfg.data_dir, NX_ROLE_STANDBY, epoch, self->follow_peer))
        nx_warn("cannot write %s/role: %s", b->cfg.data_dir, strerror(errno));
    s_act(b, a, why);
    nx_pack_kv_str(nx_kv(rq), "role", nx_role_name(self->role.role));
    return 0;
}
