/*  =========================================================================
    nx_role - who this broker is in a pair: the primary (takes writes), a
    standby (copies the primary's log, serves history, refuses writes) or
    fenced (was the primary, may no longer take writes, and waits to learn
    who is). A table of states and events, with no I/O, so that every
    transition is tested alone (test_role). Who decides: etcd (nx_elector:
    a leader key under a lease, an epoch that only grows), or, without
    etcd, the operator (`nexus promote`) and the settings.

    The rules that keep two primaries from taking writes at once:
      - a primary takes writes only while its lease runs (etcd; without
        etcd there is no lease: the operator is the judge);
      - a newer epoch, however learnt (etcd names another leader, a
        standby or a promoted broker says so), fences a primary at once;
      - a fenced broker never takes writes again in this process: it
        becomes a standby of the new primary by restarting, except when it
        wins the election itself (nothing was written meanwhile).

    data_dir/role (without etcd): what `nexus promote` and a fence decided
    outlives a restart: "primary EPOCH", or "standby ENDPOINT EPOCH". At
    start it overrides replica_of, so a promoted standby does not follow
    its old primary again, and a fenced primary does not come back as one.
    =========================================================================
*/

#ifndef NX_ROLE_H_INCLUDED
#define NX_ROLE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NX_ROLE_ENDPOINT_MAX 256 /* bytes in an endpoint                  */

typedef enum {
    NX_ROLE_PRIMARY = 0, /* takes writes (while its lease runs)            */
    NX_ROLE_STANDBY,     /* follows a primary (or waits for one)           */
    NX_ROLE_FENCED       /* was the primary; takes no writes               */
} nx_role_t;

typedef enum {
    NX_RE_LEAD = 0, /* won the election (etcd) with epoch                  */
    NX_RE_FOLLOW,   /* another broker leads: endpoint, epoch               */
    NX_RE_LEASE,    /* the lease was renewed: until (mono us)              */
    NX_RE_LOST,     /* the lease ran out or could not be renewed           */
    NX_RE_PROMOTE,  /* the operator promotes this standby (no etcd)        */
    NX_RE_FENCE     /* a broker with a newer epoch says it is the primary  */
} nx_role_event_t;

typedef enum {
    NX_RA_NONE = 0, /* nothing to do                                       */
    NX_RA_PROMOTE,  /* become the primary now (from a standby's store)     */
    NX_RA_RESUME,   /* take writes again with the new epoch (was fenced)   */
    NX_RA_FOLLOW,   /* follow the new primary's endpoint                   */
    NX_RA_FENCE,    /* stop taking writes now                              */
    NX_RA_RESTART,  /* restart, to come back as the new primary's standby  */
    NX_RA_REFUSE    /* the event makes no sense in this state: refused     */
} nx_role_action_t;

typedef struct {
    nx_role_t role;                     /* who this broker is            */
    uint64_t epoch;                     /* the newest epoch it knows     */
    uint64_t lease_until;               /* mono us: a primary's writes end
                                           then; UINT64_MAX: no lease     */
    bool leased;                        /* there is a lease (etcd)       */
    char primary[NX_ROLE_ENDPOINT_MAX]; /* the primary's endpoint, "" when
                                           unknown (or this broker)      */
} nx_role_state_t;

/*  Starts in role with epoch; leased: an etcd lease rules its writes
    (then a primary has none until NX_RE_LEASE).                            */
void nx_role_init(nx_role_state_t *st, nx_role_t role, uint64_t epoch, bool leased,
                  const char *primary);

/*  Applies an event: epoch for LEAD, FOLLOW and FENCE; endpoint for
    FOLLOW and FENCE (may be NULL); until for LEASE. Returns what the
    broker must do.                                                        */
nx_role_action_t nx_role_apply(nx_role_state_t *st, nx_role_event_t ev, uint64_t epoch,
                               const char *endpoint, uint64_t until);

/*  Whether writes are taken now (now: mono us).                           */
bool nx_role_writable(const nx_role_state_t *st, uint64_t now);

const char *nx_role_name(nx_role_t role);

/*  ---- data_dir/role ------------------------------------------------------- */

/*  Reads the role file of data_dir: 1 with *role, *epoch and primary
    filled (size bytes), 0 when there is none, -1 when it does not parse
    (err says why).                                                         */
int nx_role_file_read(const char *data_dir, nx_role_t *role, uint64_t *epoch, char *primary,
                      size_t size, char *err, size_t err_size);

/*  Writes it (a temporary file, flushed, renamed, the directory flushed).
    primary is the endpoint a standby follows (ignored for a primary).
    Returns 0, or -1 with errno set.                                        */
int nx_role_file_write(const char *data_dir, nx_role_t role, uint64_t epoch, const char *primary);

#endif
