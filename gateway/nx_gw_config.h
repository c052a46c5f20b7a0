/*  =========================================================================
    nx_gw_config - nexus-gateway's settings: the struct and its table.
    `nexus-gateway --help` prints them; docs/gateway.md lists them.
    =========================================================================
*/

#ifndef NX_GW_CONFIG_H_INCLUDED
#define NX_GW_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "nx_conf.h"

typedef struct {
    char *listen;              /* address to bind HTTP+WebSocket             */
    uint64_t port;             /* port to bind                               */
    bool allow_open_remote;    /* bind non-loopback with no tokens           */
    char *broker;              /* control endpoint of the broker             */
    char *broker_token;        /* token the gateway presents to the broker   */
    uint64_t broker_timeout;   /* ms a broker request may take               */
    char *web_root;            /* directory of the dashboard files           */
    char *token;               /* shared token clients must present          */
    char *tokens_file;         /* per-session tokens ("TOKEN ID,ID")         */
    char *allowed_origins;     /* comma-separated; "" = same origin only     */
    char *allowed_hosts;       /* Host names besides addresses and localhost */
    uint64_t max_message;      /* largest WebSocket message from a client    */
    uint64_t max_body;         /* largest HTTP request body                  */
    uint64_t queue_messages;   /* per-client send queue, messages            */
    uint64_t queue_bytes;      /* per-client send queue, bytes               */
    uint64_t command_bytes;    /* client messages waiting for the worker     */
    uint64_t http_bytes;       /* HTTP answers held, all clients together    */
    uint64_t slow_timeout;     /* ms a full queue is tolerated before close  */
    uint64_t rate;             /* requests per second per session            */
    uint64_t burst;            /* token bucket depth                         */
    uint64_t ping_interval;    /* ms between WebSocket pings                 */
    uint64_t dead_timeout;     /* ms without pong before a client is dropped */
    uint64_t welcome_events;   /* recent events sent in the welcome          */
    uint64_t heartbeat;        /* ms between heartbeats for hosted sessions  */
    uint64_t http_session_ttl; /* ms an HTTP call's session lives after it */
    uint64_t max_clients;      /* WebSocket connections at most              */
    int log_level;             /* nx_log_level_t: error|warn|info|debug      */
} nx_gw_config_t;

extern const nx_conf_key_t nx_gw_conf_keys[];
extern const size_t nx_gw_conf_count;

#endif
