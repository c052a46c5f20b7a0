/*  =========================================================================
    nx_elector - who is the primary, decided by etcd as Patroni decides it
    for PostgreSQL: a leader key held under a lease. A CZMQ actor (its own
    thread: etcd's HTTP calls never make the loop wait) that talks to etcd
    with nx_etcd and tells the loop what it learns.

    Keys, under the prefix (etcd_prefix):
      leader  {"name","endpoint","peer","epoch"}, put under the leader's
              lease (endpoint: for clients; peer: for the standby's copy).
              Whoever holds it is the primary. Taken only by a transaction
              that finds it absent (create_revision == 0) and the epoch key
              unchanged since read, so two brokers never take it at once
              and every leader has an epoch of its own.
      epoch   the last epoch handed out; each leader takes the next.
      sync    {"leader","standby"}: the standby the leader waits for
              (replication = sync); written by the leader only, by a
              transaction that checks it still holds the leader key.

    The primary renews its lease every third of etcd_lease and checks that
    the leader key is still its own. It takes writes until the time it
    sent the last successful renewal plus the lease, less a margin
    (nx_elector_lease_until): etcd lets the key go no earlier than the
    lease after it received that renewal, so the old primary has stopped
    before anyone can take its place.

    A standby watches the leader key. When it goes, the standby campaigns
    if it may: the sync key names it as the standby (it has every
    acknowledged change) or as the last leader, or there is no sync key
    yet (a new pair). `force` campaigns regardless (the operator's
    choice: it may lose acknowledged changes).
    =========================================================================
*/

#ifndef NX_ELECTOR_H_INCLUDED
#define NX_ELECTOR_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _nx_elector_t nx_elector_t;

typedef struct {
    const char *endpoints; /* etcd client URLs, comma-separated            */
    const char *prefix;    /* keys live under it                           */
    const char *name;      /* this broker's name                           */
    const char *advertise; /* the control endpoint clients reach it at     */
    const char *peer;      /* ... and a standby, to copy its log           */
    uint64_t lease_ms;     /* the leader's lease                           */
    uint64_t epoch;        /* the newest epoch this broker's store holds:
                              a new one is above it, even when etcd's data
                              was lost                                      */
} nx_elector_config_t;

typedef enum {
    NX_ELECT_LEAD = 1, /* this broker won: epoch                           */
    NX_ELECT_FOLLOW,   /* another leads: name, endpoint, peer, epoch       */
    NX_ELECT_LOST,     /* the lease could not be renewed in time           */
    NX_ELECT_SYNCED,   /* the sync key now names name ("" for none)        */
    NX_ELECT_PROBLEM   /* etcd cannot be reached or said no: text          */
} nx_elect_kind_t;

typedef struct {
    nx_elect_kind_t kind;
    uint64_t epoch;
    char name[65];
    char endpoint[256];
    char peer[256];
    char text[200];
} nx_elect_news_t;

/*  Starts the actor; it campaigns or follows at once. NULL on failure.    */
nx_elector_t *nx_elector_new(const nx_elector_config_t *cfg);

/*  Gives up the leadership if held (the lease is revoked, so the standby
    takes over at once), stops the actor, frees self. Safe on NULL.        */
void nx_elector_destroy(nx_elector_t **self_p);

/*  The actor's socket: readable when there is news (nx_elector_recv).     */
zsock_t *nx_elector_sock(nx_elector_t *self);

/*  Reads one piece of news. 0, or -1 when there is none.                  */
int nx_elector_recv(nx_elector_t *self, nx_elect_news_t *news);

/*  Mono us until which the leader may take writes (0: not the leader, or
    the lease ran out). Any thread.                                         */
uint64_t nx_elector_lease_until(nx_elector_t *self);

/*  Asks for the sync key to name standby ("" or NULL: none). The actor
    answers NX_ELECT_SYNCED once it is written.                            */
void nx_elector_sync(nx_elector_t *self, const char *standby);

/*  The operator asks this standby to take over (force: even when the sync
    key does not name it).                                                 */
void nx_elector_campaign(nx_elector_t *self, bool force);

/*  Gives up the leadership now (the leader key is deleted).               */
void nx_elector_resign(nx_elector_t *self);

#endif
