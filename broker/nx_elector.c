/*  =========================================================================
    nx_elector - the election in etcd. nx_elector.h is the contract.

    The actor alternates between etcd calls (each bounded by a timeout)
    and its pipe (commands from the loop), so a command waits at most one
    call. The loop never waits for etcd: it reads the lease's end
    (lease_until, atomic) on every turn, and news comes over the pipe.

    Leader:   renew every third of the lease; after each renewal, check the
              leader key is still ours. The lease's end moves to the time
              the renewal was *sent* plus the TTL, less a margin.
    Follower: read the leader key; tell the loop who leads when it
              changes; watch it (a third of the lease at a time); when it
              is gone, campaign if the sync key allows.
    =========================================================================
*/

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_elector.h"
#include "nx_etcd.h"
#include "nx_log.h"

struct _nx_elector_t {
    zactor_t *actor; /* the thread                                  */
    char *endpoints; /* copies of the settings                      */
    char *prefix;
    char *name;
    char *advertise;
    char *peer;
    uint64_t lease_ms;    /* the lease asked for                         */
    uint64_t epoch_floor; /* the store's newest epoch                    */
    uint64_t lease_until; /* atomic: mono us the leader's writes end     */
};

/*  The actor's own state.                                                  */
typedef struct {
    nx_elector_t *el;
    zsock_t *pipe;
    nx_etcd_t *etcd;
    char k_leader[300], k_epoch[300], k_sync[300]; /* the keys             */
    bool leader;                                   /* we hold the leader key                      */
    int64_t lease;                                 /* its lease id                                */
    int64_t granted;                               /* the TTL etcd gave, s                        */
    uint64_t epoch;                                /* ours while leader; the newest seen          */
    char my_value[1024];                           /* the leader key's value while we lead        */
    char followed[1024];                           /* the leader value last told to the loop      */
    uint64_t next_renew;                           /* mono us                                     */
    char sync_want[65];                            /* the sync standby the loop asked for         */
    bool sync_pending;                             /* not written yet                             */
    bool force;                                    /* campaign whatever the sync key says         */
    bool resign;                                   /* give up the leadership                      */
    bool stopping;                                 /* $TERM                                       */
    uint64_t quiet_until; /* mono us: after resigning, no campaign (the standby's
                             turn) unless forced                             */
    char problem[200];    /* the last problem told                       */
} s_actor_t;

static void s_news_peer(s_actor_t *a, nx_elect_kind_t kind, uint64_t epoch, const char *name,
                        const char *endpoint, const char *peer, const char *text)
{
    nx_elect_news_t n;
    memset(&n, 0, sizeof n);
    n.kind = kind;
    n.epoch = epoch;
    snprintf(n.name, sizeof n.name, "%s", name ? name : "");
    snprintf(n.endpoint, sizeof n.endpoint, "%s", endpoint ? endpoint : "");
    snprintf(n.peer, sizeof n.peer, "%s", peer ? peer : "");
    snprintf(n.text, sizeof n.text, "%s", text ? text : "");
    zmq_send(zsock_resolve(a->pipe), &n, sizeof n, ZMQ_DONTWAIT);
}

static void s_news(s_actor_t *a, nx_elect_kind_t kind, uint64_t epoch, const char *name,
                   const char *endpoint, const char *text)
{
    s_news_peer(a, kind, epoch, name, endpoint, NULL, text);
}

static void s_problem(s_actor_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_problem(s_actor_t *a, const char *fmt, ...)
{
    char text[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (strcmp(text, a->problem) != 0) {
        nx_warn("etcd: %s", text);
        snprintf(a->problem, sizeof a->problem, "%s", text);
        s_news(a, NX_ELECT_PROBLEM, 0, NULL, NULL, text);
    }
}

static void s_fine(s_actor_t *a)
{
    /*  Only a problem of reaching etcd is over when etcd answers.         */
    if (a->problem[0] && strncmp(a->problem, "cannot", 6) == 0) {
        nx_info("etcd: reachable again (%s)", nx_etcd_endpoint(a->etcd));
        a->problem[0] = 0;
        s_news(a, NX_ELECT_PROBLEM, 0, NULL, NULL, "");
    }
}

/*  The leader key's fields.                                               */
static bool s_parse_leader(const char *value, char *name, size_t nsize, char *endpoint, char *peer,
                           size_t esize, uint64_t *epoch)
{
    json_error_t je;
    json_t *o = json_loads(value, 0, &je);
    const char *n = json_string_value(json_object_get(o, "name"));
    const char *e = json_string_value(json_object_get(o, "endpoint"));
    const char *p = json_string_value(json_object_get(o, "peer"));
    json_t *ep = json_object_get(o, "epoch");
    bool ok = n && e && json_is_integer(ep);
    if (ok) {
        snprintf(name, nsize, "%s", n);
        snprintf(endpoint, esize, "%s", e);
        snprintf(peer, esize, "%s", p && *p ? p : e);
        *epoch = (uint64_t)json_integer_value(ep);
    }
    json_decref(o);
    return ok;
}

static uint64_t s_margin(s_actor_t *a)
{
    /*  A fifth of the lease, at least 300 ms: the leader stops that long
        before etcd may let its key go.                                    */
    uint64_t lease = (uint64_t)a->granted * 1000000;
    uint64_t m = lease / 5;
    return m < 300000 ? 300000 : m;
}

static void s_lose(s_actor_t *a, const char *why)
{
    bool was = a->leader;
    a->leader = false;
    __atomic_store_n(&a->el->lease_until, 0, __ATOMIC_SEQ_CST);
    a->followed[0] = 0;
    if (was) {
        nx_error("etcd: this broker lost the leadership: %s", why);
        s_news(a, NX_ELECT_LOST, a->epoch, NULL, NULL, why);
    }
}

/*  ---- Leader ------------------------------------------------------------------ */

static void s_write_sync(s_actor_t *a)
{
    json_t *o = json_pack("{s:s,s:s}", "leader", a->el->name, "standby", a->sync_want);
    char *v = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    nx_etcd_cmp_t cmp = {a->k_leader, NX_ETCD_VALUE, 0, a->my_value};
    nx_etcd_op_t op = {false, a->k_sync, v, 0};
    bool ok = false;
    int rc = v ? nx_etcd_txn(a->etcd, &cmp, 1, &op, 1, &ok) : -1;
    free(v);
    if (rc) {
        s_problem(a, "cannot write the sync key: %s", nx_etcd_error(a->etcd));
        return;
    }
    if (!ok) {
        s_lose(a, "the leader key is no longer this broker's");
        return;
    }
    a->sync_pending = false;
    nx_info("etcd: the sync standby is now %s", a->sync_want[0] ? a->sync_want : "none");
    s_news(a, NX_ELECT_SYNCED, a->epoch, a->sync_want, NULL, NULL);
}

static void s_renew(s_actor_t *a)
{
    uint64_t sent = nx_mono_us();
    int64_t ttl = 0;
    if (nx_etcd_keepalive(a->etcd, a->lease, &ttl)) {
        s_problem(a, "cannot renew the lease: %s", nx_etcd_error(a->etcd));
        if (nx_mono_us() >= __atomic_load_n(&a->el->lease_until, __ATOMIC_SEQ_CST))
            s_lose(a, "the lease ran out before it could be renewed");
        a->next_renew = nx_mono_us() + 100000;
        return;
    }
    if (ttl <= 0) {
        s_lose(a, "etcd says the lease is gone");
        return;
    }
    nx_etcd_kv_t kv;
    if (nx_etcd_get(a->etcd, a->k_leader, &kv, NULL)) {
        s_problem(a, "cannot read the leader key: %s", nx_etcd_error(a->etcd));
        a->next_renew = nx_mono_us() + 100000;
        return;
    }
    if (!kv.found || strcmp(kv.value, a->my_value) != 0) {
        s_lose(a, "the leader key is no longer this broker's");
        return;
    }
    s_fine(a);
    uint64_t until = sent + (uint64_t)a->granted * 1000000 - s_margin(a);
    __atomic_store_n(&a->el->lease_until, until, __ATOMIC_SEQ_CST);
    a->next_renew = sent + (uint64_t)a->granted * 1000000 / 3;
}

static void s_do_resign(s_actor_t *a)
{
    a->resign = false;
    if (!a->leader)
        return;
    __atomic_store_n(&a->el->lease_until, 0, __ATOMIC_SEQ_CST);
    nx_etcd_cmp_t cmp = {a->k_leader, NX_ETCD_VALUE, 0, a->my_value};
    nx_etcd_op_t op = {true, a->k_leader, NULL, 0};
    bool ok = false;
    nx_etcd_txn(a->etcd, &cmp, 1, &op, 1, &ok);
    nx_etcd_revoke(a->etcd, a->lease);
    a->leader = false;
    a->quiet_until = nx_mono_us() + a->el->lease_ms * 1000;
    nx_info("etcd: this broker gave up the leadership");
}

/*  ---- Follower ---------------------------------------------------------------- */

/*  Tries to take the free leader key. Returns true when won.              */
static bool s_campaign(s_actor_t *a)
{
    nx_etcd_kv_t sync, ep;
    if (nx_etcd_get(a->etcd, a->k_sync, &sync, NULL) ||
        nx_etcd_get(a->etcd, a->k_epoch, &ep, NULL)) {
        s_problem(a, "cannot read the election's keys: %s", nx_etcd_error(a->etcd));
        return false;
    }
    if (sync.found && !a->force) {
        json_error_t je;
        json_t *o = json_loads(sync.value, 0, &je);
        const char *leader = json_string_value(json_object_get(o, "leader"));
        const char *standby = json_string_value(json_object_get(o, "standby"));
        bool may = (leader && strcmp(leader, a->el->name) == 0) ||
                   (standby && strcmp(standby, a->el->name) == 0);
        if (!may)
            s_problem(a,
                      "the primary is gone, but this broker may lack acknowledged changes "
                      "(etcd names %s as the broker that has them): it waits (nexus promote "
                      "--force takes over anyway)",
                      standby && *standby ? standby : (leader ? leader : "another"));
        json_decref(o);
        if (!may)
            return false;
    }
    uint64_t epoch = ep.found ? strtoull(ep.value, NULL, 10) : 0;
    if (a->epoch > epoch)
        epoch = a->epoch;
    epoch++;
    int64_t lease = 0, granted = 0;
    int64_t ttl = (int64_t)((a->el->lease_ms + 999) / 1000);
    uint64_t sent = nx_mono_us();
    if (nx_etcd_grant(a->etcd, ttl < 2 ? 2 : ttl, &lease, &granted)) {
        s_problem(a, "cannot get a lease: %s", nx_etcd_error(a->etcd));
        return false;
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "name", a->el->name, "endpoint", a->el->advertise,
                          "peer", a->el->peer, "epoch", (json_int_t)epoch);
    char *value = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    o = json_pack("{s:s,s:s}", "leader", a->el->name, "standby", "");
    char *sv = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char es[32];
    snprintf(es, sizeof es, "%" PRIu64, epoch);
    nx_etcd_cmp_t cmps[2] = {
        {a->k_leader, NX_ETCD_CREATE, 0, NULL},
        {a->k_epoch, ep.found ? NX_ETCD_MOD : NX_ETCD_CREATE, ep.found ? ep.mod_rev : 0, NULL}};
    nx_etcd_op_t ops[3] = {
        {false, a->k_leader, value, lease}, {false, a->k_epoch, es, 0}, {false, a->k_sync, sv, 0}};
    bool won = false;
    int rc = value && sv ? nx_etcd_txn(a->etcd, cmps, 2, ops, 3, &won) : -1;
    free(sv);
    if (rc || !won) {
        if (rc)
            s_problem(a, "cannot campaign: %s", nx_etcd_error(a->etcd));
        nx_etcd_revoke(a->etcd, lease);
        free(value);
        return false;
    }
    a->problem[0] = 0;
    a->leader = true;
    a->lease = lease;
    a->granted = granted;
    a->epoch = epoch;
    a->force = false;
    snprintf(a->my_value, sizeof a->my_value, "%s", value);
    free(value);
    __atomic_store_n(&a->el->lease_until, sent + (uint64_t)granted * 1000000 - s_margin(a),
                     __ATOMIC_SEQ_CST);
    a->next_renew = sent + (uint64_t)granted * 1000000 / 3;
    nx_info("etcd: this broker (%s) leads, epoch %" PRIu64 " (lease %" PRId64 " s)", a->el->name,
            epoch, granted);
    s_news(a, NX_ELECT_LEAD, epoch, a->el->name, a->el->advertise, NULL);
    return true;
}

static void s_follow(s_actor_t *a)
{
    nx_etcd_kv_t kv;
    int64_t rev = 0;
    if (nx_etcd_get(a->etcd, a->k_leader, &kv, &rev)) {
        s_problem(a, "cannot read the leader key: %s", nx_etcd_error(a->etcd));
        zclock_sleep(100);
        return;
    }
    s_fine(a);
    if (!kv.found) {
        if ((a->force || nx_mono_us() >= a->quiet_until) && s_campaign(a))
            return;
    } else {
        char name[65] = "", endpoint[256] = "", peer[256] = "";
        uint64_t epoch = 0;
        if (!s_parse_leader(kv.value, name, sizeof name, endpoint, peer, sizeof endpoint, &epoch))
            s_problem(a, "the leader key holds something else: %.100s", kv.value);
        else if (strcmp(name, a->el->name) == 0) {
            /*  Our own key, from a run before this one: its lease runs out
                and the election goes on then.                            */
        } else if (strcmp(kv.value, a->followed) != 0) {
            snprintf(a->followed, sizeof a->followed, "%s", kv.value);
            if (epoch > a->epoch)
                a->epoch = epoch;
            nx_info("etcd: %s leads (%s), epoch %" PRIu64, name, endpoint, epoch);
            s_news_peer(a, NX_ELECT_FOLLOW, epoch, name, endpoint, peer, NULL);
        }
    }
    /*  Wait for a change, a third of the lease at a time (commands and a
        stop are looked at in between).                                    */
    nx_etcd_event_t ev;
    long wait = (long)(a->el->lease_ms / 3);
    int rc = nx_etcd_watch(a->etcd, a->k_leader, rev + 1, wait < 200 ? 200 : wait, &ev);
    if (rc < 0) {
        s_problem(a, "cannot watch the leader key: %s", nx_etcd_error(a->etcd));
        zclock_sleep(100);
    }
}

/*  ---- The actor ------------------------------------------------------------------ */

static void s_commands(s_actor_t *a)
{
    for (int i = 0; i < 100; i++) {
        if (!(zsock_events(a->pipe) & ZMQ_POLLIN))
            return;
        zmsg_t *m = zmsg_recv(a->pipe);
        if (!m)
            return;
        char *cmd = zmsg_popstr(m);
        char *arg = zmsg_popstr(m);
        if (cmd && strcmp(cmd, "$TERM") == 0)
            a->stopping = true;
        else if (cmd && strcmp(cmd, "SYNC") == 0) {
            snprintf(a->sync_want, sizeof a->sync_want, "%s", arg ? arg : "");
            a->sync_pending = true;
        } else if (cmd && strcmp(cmd, "CAMPAIGN") == 0) {
            a->force = arg && strcmp(arg, "1") == 0;
        } else if (cmd && strcmp(cmd, "RESIGN") == 0)
            a->resign = true;
        zstr_free(&cmd);
        zstr_free(&arg);
        zmsg_destroy(&m);
    }
}

static void s_actor(zsock_t *pipe, void *arg)
{
    nx_elector_t *el = arg;
    s_actor_t a;
    memset(&a, 0, sizeof a);
    a.el = el;
    a.pipe = pipe;
    a.epoch = el->epoch_floor;
    snprintf(a.k_leader, sizeof a.k_leader, "%s/leader", el->prefix);
    snprintf(a.k_epoch, sizeof a.k_epoch, "%s/epoch", el->prefix);
    snprintf(a.k_sync, sizeof a.k_sync, "%s/sync", el->prefix);
    long timeout = (long)(el->lease_ms / 6);
    a.etcd = nx_etcd_new(el->endpoints, timeout < 200 ? 200 : timeout > 2000 ? 2000 : timeout);
    zsock_signal(pipe, a.etcd ? 0 : 1);
    if (!a.etcd)
        return;
    while (!a.stopping) {
        s_commands(&a);
        if (a.stopping)
            break;
        if (a.resign)
            s_do_resign(&a);
        if (a.leader) {
            if (a.sync_pending)
                s_write_sync(&a);
            uint64_t now = nx_mono_us();
            if (a.leader && now >= a.next_renew)
                s_renew(&a);
            else if (a.leader) {
                long ms = (long)((a.next_renew - now) / 1000) + 1;
                zmq_pollitem_t item = {zsock_resolve(pipe), 0, ZMQ_POLLIN, 0};
                zmq_poll(&item, 1, ms > 100 ? 100 : ms);
            }
        } else
            s_follow(&a);
    }
    s_do_resign(&a);
    a.resign = false;
    nx_etcd_destroy(&a.etcd);
}

/*  ---- The loop's side ------------------------------------------------------------ */

nx_elector_t *nx_elector_new(const nx_elector_config_t *cfg)
{
    nx_elector_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->endpoints = strdup(cfg->endpoints ? cfg->endpoints : "");
    self->prefix = strdup(cfg->prefix ? cfg->prefix : "/nexus");
    self->name = strdup(cfg->name ? cfg->name : "");
    self->advertise = strdup(cfg->advertise ? cfg->advertise : "");
    self->peer = strdup(cfg->peer && *cfg->peer ? cfg->peer
                        : self->advertise       ? self->advertise
                                                : "");
    self->lease_ms = cfg->lease_ms ? cfg->lease_ms : 5000;
    self->epoch_floor = cfg->epoch;
    if (self->endpoints && self->prefix && self->name && self->advertise && self->peer) {
        size_t n = strlen(self->prefix);
        while (n > 1 && self->prefix[n - 1] == '/')
            self->prefix[--n] = 0;
        self->actor = zactor_new(s_actor, self);
    }
    if (!self->actor) {
        nx_elector_destroy(&self);
        return NULL;
    }
    zsock_set_sndtimeo(zactor_sock(self->actor), 0);
    return self;
}

void nx_elector_destroy(nx_elector_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_elector_t *self = *self_p;
    if (self->actor) {
        zsock_set_sndtimeo(zactor_sock(self->actor), -1);
        zactor_destroy(&self->actor);
    }
    free(self->endpoints);
    free(self->prefix);
    free(self->name);
    free(self->advertise);
    free(self->peer);
    free(self);
    *self_p = NULL;
}

zsock_t *nx_elector_sock(nx_elector_t *self)
{
    return zactor_sock(self->actor);
}

int nx_elector_recv(nx_elector_t *self, nx_elect_news_t *news)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    int rc = -1;
    if (zmq_msg_recv(&m, zsock_resolve(zactor_sock(self->actor)), ZMQ_DONTWAIT) >= 0 &&
        zmq_msg_size(&m) == sizeof *news) {
        memcpy(news, zmq_msg_data(&m), sizeof *news);
        rc = 0;
    }
    zmq_msg_close(&m);
    return rc;
}

uint64_t nx_elector_lease_until(nx_elector_t *self)
{
    return __atomic_load_n(&self->lease_until, __ATOMIC_SEQ_CST);
}

void nx_elector_sync(nx_elector_t *self, const char *standby)
{
    zstr_sendx(zactor_sock(self->actor), "SYNC", standby ? standby : "", NULL);
}

void nx_elector_campaign(nx_elector_t *self, bool force)
{
    zstr_sendx(zactor_sock(self->actor), "CAMPAIGN", force ? "1" : "0", NULL);
}

void nx_elector_resign(nx_elector_t *self)
{
    zstr_sendx(zactor_sock(self->actor), "RESIGN", "", NULL);
}
