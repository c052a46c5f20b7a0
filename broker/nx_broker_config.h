/*  =========================================================================
    nx_broker_config - nexusd's settings: the struct and its one table of
    keys (name, type, bounds, default, help). docs/operations.md lists the
    same keys; `nexusd --help` prints them from this table.
    =========================================================================
*/

#ifndef NX_BROKER_CONFIG_H_INCLUDED
#define NX_BROKER_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_conf.h"

typedef enum { NX_SYNC_FULL = 0, NX_SYNC_NONE = 1 } nx_sync_mode_t;

typedef struct {
    char *data_dir;               /* LMDB environment lives here               */
    char *control_endpoints;      /* ROUTER binds, comma-separated             */
    char *events_in_endpoints;    /* XSUB binds (publishers connect)           */
    char *events_out_endpoints;   /* XPUB binds (subscribers connect)          */
    int sync;                     /* nx_sync_mode_t                            */
    uint64_t max_payload;         /* largest event payload, bytes              */
    uint64_t max_request;         /* largest control request, bytes            */
    uint64_t retain_events;       /* history limit by count, 0 = none          */
    uint64_t retain_bytes;        /* history limit by bytes, 0 = none          */
    uint64_t retain_age;          /* history limit by age, ms, 0 = none        */
    uint64_t trim_batch;          /* events trimmed per commit at most         */
    uint64_t map_size;            /* initial LMDB map size                     */
    uint64_t map_max;             /* LMDB map may grow up to this              */
    uint64_t out_hwm;             /* XPUB send HWM per subscriber, messages    */
    uint64_t in_hwm;              /* XSUB receive HWM per publisher, messages  */
    uint64_t control_hwm;         /* ROUTER HWMs per client, messages          */
    uint64_t queue_bytes;         /* bytes a connection's queue holds, each way*/
    uint64_t subscriptions_max;   /* subscriptions per subscriber connection   */
    uint64_t peer_timeout;        /* dead-connection timeout, ms (0: never)    */
    uint64_t batch_max;           /* events per write transaction at most      */
    uint64_t batch_bytes;         /* payload bytes per write transaction       */
    uint64_t flush_interval;      /* unacknowledged events flushed within, ms  */
    uint64_t checkpoint_interval; /* the store is committed this often, ms   */
    uint64_t wal_segment;         /* bytes per write-ahead log segment         */
    uint64_t disk_reserve;        /* free bytes kept on the data disk          */
    uint64_t wal_max;             /* log bytes the store may lag behind        */
    uint64_t requests_per_turn;   /* control requests handled per loop turn    */
    uint64_t history_limit;       /* largest `limit` a history query may ask   */
    uint64_t history_scan;        /* records one history page may scan         */
    uint64_t history_bytes;       /* event bytes one history page may carry    */
    int log_level;                /* nx_log_level_t: error|warn|info|debug     */
    uint64_t heartbeat;           /* default session heartbeat interval, ms    */
    uint64_t heartbeat_misses;    /* missed heartbeats before a session is gone*/
    int claims_on_disconnect;     /* 0 release, 1 keep (until the lease ends)  */
    uint64_t claim_ttl;           /* default lease, ms                         */
    uint64_t claim_ttl_max;       /* longest lease a claim may ask for, ms     */
    uint64_t session_retain;      /* gone sessions are listed this long, ms    */
    uint64_t claims_retain;       /* closed work items are kept this long, ms  */
    uint64_t sessions_max;        /* sessions known at most                    */
    uint64_t claims_max;          /* work items known at most                  */
    char *token;                  /* shared fabric token ("" = none)           */
    char *tokens_file;            /* token -> allowed session ids ("" = none)  */
    char *curve_cert;             /* broker's CURVE secret cert ("" = off)     */
    char *curve_clients;          /* allowed client certs dir, or "*"          */
    char *snapshot_file;          /* JSON snapshot of sessions/claims ("" = no)*/
    char *name;                   /* this broker's name in a pair ("" = host)  */
    char *advertise;              /* the control endpoint others reach us at   */
    char *peer_advertise;         /* the control endpoint a standby uses       */
    char *replica_of;             /* the primary's control endpoint ("" = none)*/
    char *replica_token;          /* the token a standby presents ("" = token) */
    int replication;              /* nx_replication_mode_t                     */
    uint64_t replication_timeout; /* a silent standby / primary, ms          */
    char *etcd;                   /* etcd client URLs, comma-separated         */
    char *etcd_prefix;            /* keys of this pair live under it           */
    uint64_t etcd_lease;          /* the leader's lease, ms                    */
} nx_broker_config_t;

typedef enum { NX_REPL_SYNC = 0, NX_REPL_ASYNC = 1 } nx_replication_mode_t;

extern const nx_conf_key_t nx_broker_conf_keys[];
extern const size_t nx_broker_conf_count;

#endif
