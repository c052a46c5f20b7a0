/*  =========================================================================
    nx_ha - a broker in a primary/standby pair: ties the role (nx_role.h),
    the log's sender and receiver (nx_repl_sender.h, nx_repl_receiver.h)
    and etcd's election (nx_elector.h) to the broker's loop, and runs the
    ops of replication and failover (replicate, replicate.ack,
    replicate.base, promote, fence). docs/architecture.md, "Replication
    and failover", tells the whole story.

    What the loop asks of it:
      - whether this turn takes writes (nx_ha_refusal), and which ops a
        broker that is not the primary serves at all (the op table's
        NX_OF_STANDBY);
      - up to where replies and events may go out (nx_ha_released): the
        log must be durable here, and, when they wait for it, at the sync
        standby too;
      - after each turn: the sender ships what was written
        (nx_ha_after_turn); the standby's log is acknowledged once flushed
        (nx_ha_flushed);
      - its sockets in the poll (nx_ha_poll) and what came on them
        (nx_ha_handle), which may promote this broker, fence it, or ask for
        a restart (nx_broker_run returns NX_BROKER_RESTART).

    All on the loop's thread; the elector is a thread of its own that talks
    to the loop over a pipe.
    =========================================================================
*/

#ifndef NX_HA_H_INCLUDED
#define NX_HA_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "nx_broker.h"
#include "nx_poll.h"

typedef struct _nx_ha_t nx_ha_t;

/*  Before the store is opened: a base copy that arrived whole takes the
    store's place. Returns 0, or -1 with a message in err.                 */
int nx_ha_install(const nx_broker_config_t *cfg, char *err, size_t err_size);

/*  Once the store is open: decides the role to start in (the settings,
    data_dir/role, or, with etcd, none yet: a standby until elected).
    Returns NULL with a message in err on failure.                         */
nx_ha_t *nx_ha_new(nx_broker_t *broker, char *err, size_t err_size);

/*  Once the log is open and the sockets are bound: starts the sender, the
    receiver (a standby) and the elector (etcd). 0, or -1 with err.        */
int nx_ha_start(nx_broker_t *broker, char *err, size_t err_size);

void nx_ha_destroy(nx_ha_t **self_p);

/*  True when this broker starts as the primary (it writes its run record
    now); false for a standby or while etcd decides.                       */
bool nx_ha_starts_primary(nx_ha_t *self);

/*  True while this broker's log is a copy of another's (a standby, or
    etcd may make it one): the log keeps the segment size its store
    recorded, which must be the primary's.                                 */
bool nx_ha_keeps_segment(nx_ha_t *self);

/*  Why this turn takes no writes (NULL: it takes them), with the error
    they get.                                                              */
const char *nx_ha_refusal(nx_broker_t *broker, nexus_err_t *err);

/*  True when this broker serves op now (a standby serves the ops marked
    NX_OF_STANDBY only).                                                    */
bool nx_ha_serves(nx_broker_t *broker, const struct nx_op *op);

/*  The primary's endpoint, as far as this broker knows it (NULL: itself,
    or unknown).                                                           */
const char *nx_ha_primary(nx_broker_t *broker);

/*  The log position up to which held replies and events may go out: what
    is durable here, and at the sync standby when they wait for it
    (replication = sync: every change; async: the turns that reserve seqs
    or fencing tokens).                                                     */
uint64_t nx_ha_released(nx_broker_t *broker);

/*  A turn wrote a reservation (seqs or fencing tokens) ending at lsn: its
    replies wait for the sync standby even under replication = async.     */
void nx_ha_reserved(nx_broker_t *broker, uint64_t lsn);

/*  A turn's records were written: they go to the standbys now, so that
    their flush runs while this broker's does (not after it).             */
void nx_ha_shipped(nx_broker_t *broker);

/*  After each turn, flush and poll: ships the log, decides about the sync
    standby, acknowledges a standby's flushed log.                        */
void nx_ha_after_turn(nx_broker_t *broker);
void nx_ha_flushed(nx_broker_t *broker);

/*  Before a turn: a standby that did not run for a while knows it before
    it answers a request of the turn (nx_repl_receiver_awake).            */
void nx_ha_awake(nx_broker_t *broker);

/*  Adds its sockets to items (at most max); returns how many.            */
int nx_ha_poll(nx_broker_t *broker, nx_poll_item_t *items, int max);

/*  Handles what its sockets brought and its timers. Returns 0, or
    NX_BROKER_RESTART when the broker must restart (a base copy arrived,
    or it was fenced and follows the new primary), or -1 (the log failed). */
int nx_ha_handle(nx_broker_t *broker);

/*  The longest the loop may sleep for its timers, ms.                     */
long nx_ha_timeout(nx_broker_t *broker);

/*  A clean stop: gives up the leadership (etcd) so the standby takes over
    at once instead of when the lease runs out.                            */
void nx_ha_stop(nx_broker_t *broker);

/*  Packs the role fields of ping and health, and state's replication map. */
void nx_ha_pack_role(nx_broker_t *broker, nx_request_t *rq);
void nx_ha_pack_state(nx_broker_t *broker, nx_request_t *rq);

/*  The ops (nx_ops.c's table).                                            */
nx_op_fn nx_op_replicate, nx_op_replicate_ack, nx_op_replicate_base, nx_op_promote, nx_op_fence;

#endif
