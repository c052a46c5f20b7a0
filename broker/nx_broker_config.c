/*  =========================================================================
    nx_broker_config - the table of nexusd's settings. Defaults are chosen
    for one machine on loopback: a VPN deployment sets the endpoints to the
    VPN address (deploy/nexusd.conf).
    =========================================================================
*/

#include <stddef.h>

#include "nx_broker_config.h"

#define S_KEY(name, type, dflt, min, max, choices, help)                                           \
    {                                                                                              \
#name, type, offsetof(nx_broker_config_t, name), dflt, min, max, choices, help             \
    }

const nx_conf_key_t nx_broker_conf_keys[] = {
    S_KEY(data_dir, NX_CONF_STRING, "./nexus-data", 0, 0, NULL,
          "directory of the LMDB store (created if missing)"),
    S_KEY(control_endpoints, NX_CONF_STRING, "tcp://127.0.0.1:8451", 0, 0, NULL,
          "control plane ROUTER binds, comma-separated (tcp:// or ipc://)"),
    S_KEY(events_in_endpoints, NX_CONF_STRING, "tcp://127.0.0.1:8452", 0, 0, NULL,
          "event plane XSUB binds where publishers connect, comma-separated"),
    S_KEY(events_out_endpoints, NX_CONF_STRING, "tcp://127.0.0.1:8453", 0, 0, NULL,
          "event plane XPUB binds where subscribers connect, comma-separated"),
    S_KEY(sync, NX_CONF_ENUM, "full", 0, 0, "full|none",
          "full: fsync every commit before replying; none: leave it to the OS"),
    S_KEY(max_payload, NX_CONF_SIZE, "1M", 0, 64ull << 20, NULL,
          "largest event payload; larger events are dropped and counted"),
    S_KEY(max_request, NX_CONF_SIZE, "2M", 1024, 128ull << 20, NULL,
          "largest control-plane request"),
    S_KEY(retain_events, NX_CONF_U64, "0", 0, 0, NULL,
          "keep at most this many events (0: no limit)"),
    S_KEY(retain_bytes, NX_CONF_SIZE, "1G", 0, 0, NULL,
          "keep at most this many bytes of events (0: no limit)"),
    S_KEY(retain_age, NX_CONF_DURATION, "30d", 0, 0, NULL,
          "drop events older than this (0: no limit)"),
    S_KEY(trim_batch, NX_CONF_U64, "2000", 1, 1000000, NULL,
          "events deleted by retention per commit at most (keeps commits short)"),
    S_KEY(map_size, NX_CONF_SIZE, "1G", 1ull << 20, 0, NULL,
          "initial LMDB map size (virtual; the file grows as used)"),
    S_KEY(map_max, NX_CONF_SIZE, "64G", 1ull << 20, 0, NULL,
          "the LMDB map may grow up to this; then the oldest events are trimmed"),
    S_KEY(out_hwm, NX_CONF_U64, "100000", 1, 100000000, NULL,
          "messages queued per subscriber before the broker drops for it"),
    S_KEY(in_hwm, NX_CONF_U64, "100000", 1, 100000000, NULL,
          "messages queued per publisher connection (past it, the publisher's PUB drops)"),
    S_KEY(control_hwm, NX_CONF_U64, "10000", 1, 100000000, NULL,
          "control messages queued per client, each way"),
    S_KEY(queue_bytes, NX_CONF_SIZE, "64M", 1ull << 20, 1ull << 40, NULL,
          "bytes a client connection's queue may hold, each way: out_hwm, in_hwm and control_hwm "
          "follow from it (a subscriber that does not drain large events is disconnected)"),
    S_KEY(subscriptions_max, NX_CONF_U64, "1000", 1, 1000000, NULL,
          "subscriptions one subscriber connection may hold; one more (or a prefix over 255 "
          "bytes) drops the connection"),
    S_KEY(peer_timeout, NX_CONF_DURATION, "15s", 0, 6553500, NULL,
          "a client connection that answers no ZeroMQ ping (sent every third of this) for this "
          "long is dropped with its queues; 0: never"),
    S_KEY(batch_max, NX_CONF_U64, "8192", 1, 1000000, NULL,
          "events in one write transaction at most (group commit)"),
    S_KEY(batch_bytes, NX_CONF_SIZE, "64M", 64 << 10, 1ull << 32, NULL,
          "payload bytes in one write transaction at most"),
    S_KEY(flush_interval, NX_CONF_DURATION, "200ms", 0, 10000, NULL,
          "sync=full: events nobody waits for (no acknowledgement) go to subscribers at once and "
          "are flushed within this; 0: every turn"),
    S_KEY(checkpoint_interval, NX_CONF_DURATION, "1s", 1, 600000, NULL,
          "the LMDB store is committed (a checkpoint: the write-ahead log behind it is reused) "
          "at least this often while changes come in"),
    S_KEY(wal_segment, NX_CONF_SIZE, "32M", 1ull << 20, 1ull << 32, NULL,
          "bytes per write-ahead log file (data_dir/wal); files are preallocated and reused "
          "(raised to hold two of the largest records)"),
    S_KEY(disk_reserve, NX_CONF_SIZE, "64M", 0, 0, NULL,
          "free space kept on the data disk beyond what the log and the next checkpoint need; "
          "below it writes get store_full (data disk full) until space is freed"),
    S_KEY(wal_max, NX_CONF_SIZE, "1G", 1ull << 20, 0, NULL,
          "write-ahead log the store may lag behind; past it writes get busy and events are "
          "dropped (counted) until the store catches up"),
    S_KEY(requests_per_turn, NX_CONF_U64, "1024", 1, 1000000, NULL,
          "control requests handled per loop turn, so events are never starved"),
    S_KEY(history_limit, NX_CONF_U64, "10000", 1, 1000000, NULL,
          "most events in one history page (a query asking more gets pages of this size)"),
    S_KEY(history_scan, NX_CONF_U64, "100000", 100, 100000000, NULL,
          "records one history page may scan before it returns a cursor"),
    S_KEY(history_bytes, NX_CONF_SIZE, "16M", 64 << 10, 1ull << 30, NULL,
          "event bytes one history page may carry before it returns a cursor"),
    S_KEY(log_level, NX_CONF_ENUM, "info", 0, 0, "error|warn|info|debug|warning",
          "how much the log says (-v: debug)"),
    S_KEY(heartbeat, NX_CONF_DURATION, "5s", 100, 3600000, NULL,
          "default session heartbeat interval (a client may ask for its own)"),
    S_KEY(heartbeat_misses, NX_CONF_U64, "3", 1, 100, NULL,
          "missed heartbeats after which a session is gone"),
    S_KEY(claims_on_disconnect, NX_CONF_ENUM, "release", 0, 0, "release|keep",
          "what happens to a gone session's claims: release now, or keep until the lease ends"),
    S_KEY(claim_ttl, NX_CONF_DURATION, "30s", 100, 0, NULL, "default lease of a claim"),
    S_KEY(claim_ttl_max, NX_CONF_DURATION, "1d", 100, 0, NULL, "longest lease a claim may ask for"),
    S_KEY(session_retain, NX_CONF_DURATION, "1h", 0, 0, NULL,
          "gone sessions stay listed (session.list all) this long"),
    S_KEY(claims_retain, NX_CONF_DURATION, "7d", 0, 0, NULL,
          "released, expired and completed work items are remembered this long"),
    S_KEY(sessions_max, NX_CONF_U64, "100000", 1, 100000000, NULL, "sessions known at most"),
    S_KEY(claims_max, NX_CONF_U64, "1000000", 1, 1000000000, NULL, "work items known at most"),
    S_KEY(token, NX_CONF_STRING, "", 0, 0, NULL,
          "shared fabric token (name 'shared'): every client presents it at the handshake of "
          "every socket and in every control request; empty: none"),
    S_KEY(tokens_file, NX_CONF_STRING, "", 0, 0, NULL,
          "file of tokens, one a line: 'TOKEN SESSION[,SESSION...]' ('*' = any session), or "
          "'TOKEN name= sessions= pub= sub= key=' (operations.md, \"Tokens file\"); empty: none"),
    S_KEY(curve_cert, NX_CONF_STRING, "", 0, 0, NULL,
          "the broker's CURVE certificate (secret file, `nexus keygen`): every socket encrypts "
          "and authenticates clients by key; empty: off"),
    S_KEY(curve_clients, NX_CONF_STRING, "", 0, 0, NULL,
          "with curve_cert: directory of allowed clients' public certificates, or * for any "
          "client that knows the broker's key"),
    S_KEY(snapshot_file, NX_CONF_STRING, "", 0, 0, NULL,
          "JSON file of active sessions and claims, rewritten within 1 s of a change"),
    S_KEY(name, NX_CONF_STRING, "", 0, 0, NULL,
          "this broker's name in a primary/standby pair (empty: the host name)"),
    S_KEY(advertise, NX_CONF_STRING, "", 0, 0, NULL,
          "the control endpoint clients and the standby reach this broker at (empty: the first "
          "of control_endpoints)"),
    S_KEY(peer_advertise, NX_CONF_STRING, "", 0, 0, NULL,
          "the control endpoint a standby reaches this broker at to copy its log, when it is "
          "not advertise (a link of its own between the brokers); empty: advertise"),
    S_KEY(replica_of, NX_CONF_STRING, "", 0, 0, NULL,
          "run as a hot standby of the primary at this control endpoint (without etcd; "
          "`nexus promote` makes it the primary)"),
    S_KEY(replica_token, NX_CONF_STRING, "", 0, 0, NULL,
          "the token this broker presents to its primary as a standby, one with every right "
          "(sessions=* pub=> sub=>); empty: the shared token"),
    S_KEY(replication, NX_CONF_ENUM, "sync", 0, 0, "sync|async",
          "sync: a change is acknowledged once the standby has it durable too; async: once "
          "this broker has (the standby may lag)"),
    S_KEY(replication_timeout, NX_CONF_DURATION, "5s", 100, 3600000, NULL,
          "a standby that leaves a change unacknowledged this long is no longer waited for; "
          "a primary silent this long is asked again"),
    S_KEY(etcd, NX_CONF_STRING, "", 0, 0, NULL,
          "etcd client URLs, comma-separated (http://10.0.0.1:2379,...): etcd decides which "
          "broker of the pair is the primary; empty: manual failover"),
    S_KEY(etcd_prefix, NX_CONF_STRING, "/nexus", 0, 0, NULL,
          "the pair's keys in etcd live under this prefix (one prefix per pair)"),
    S_KEY(etcd_lease, NX_CONF_DURATION, "5s", 2000, 600000, NULL,
          "the primary's lease in etcd: it stops taking writes when it cannot renew it, and "
          "the standby takes over once it has run out"),
};

const size_t nx_broker_conf_count = sizeof(nx_broker_conf_keys) / sizeof(nx_broker_conf_keys[0]);
