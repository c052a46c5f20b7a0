/*  =========================================================================
    nx_gw_config - the table of nexus-gateway's settings. Defaults suit one
    machine: loopback, the broker on its default port, the dashboard from
    the source tree or the installed share directory.
    =========================================================================
*/

#include <stddef.h>

#include "nx_gw_config.h"

#define S_KEY(name, type, dflt, min, max, choices, help)                                           \
    {                                                                                              \
#name, type, offsetof(nx_gw_config_t, name), dflt, min, max, choices, help                 \
    }

const nx_conf_key_t nx_gw_conf_keys[] = {
    S_KEY(listen, NX_CONF_STRING, "127.0.0.1", 0, 0, NULL,
          "address to bind HTTP and WebSocket: an IPv4 or IPv6 address, or an interface name "
          "(its IPv4 address); 0.0.0.0 or :: for every interface"),
    S_KEY(port, NX_CONF_U64, "8450", 0, 65535, NULL, "port to bind (0: any free port)"),
    S_KEY(allow_open_remote, NX_CONF_BOOL, "false", 0, 0, NULL,
          "allow a non-loopback listen address with no tokens configured"),
    S_KEY(broker, NX_CONF_STRING, "tcp://127.0.0.1:8451", 0, 0, NULL,
          "the broker's control endpoint (event endpoints are the next two ports); a comma-separated list names a primary/standby pair, the gateway follows the primary"),
    S_KEY(broker_token, NX_CONF_STRING, "", 0, 0, NULL,
          "token the gateway presents to the broker (when the broker wants one); it acts for "
          "every client: give it a '*' line with sub=>"),
    S_KEY(broker_timeout, NX_CONF_DURATION, "5s", 100, 600000, NULL,
          "how long a request to the broker may take before it fails"),
    S_KEY(web_root, NX_CONF_STRING, "", 0, 0, NULL,
          "directory of the dashboard files; empty (the default): the source tree it was "
          "built from, next to the binary, or the installed share/nexus/web; 'none': the API "
          "only"),
    S_KEY(token, NX_CONF_STRING, "", 0, 0, NULL,
          "shared token clients must present (?token= or Authorization: Bearer)"),
    S_KEY(tokens_file, NX_CONF_STRING, "", 0, 0, NULL,
          "file of client tokens, in the broker's format ('TOKEN SESSION[,SESSION...]' or "
          "'TOKEN name= sessions= pub= sub=')"),
    S_KEY(allowed_origins, NX_CONF_STRING, "", 0, 0, NULL,
          "Origins allowed for WebSocket and the HTTP API, comma-separated, '*' any; empty: "
          "same origin"),
    S_KEY(allowed_hosts, NX_CONF_STRING, "", 0, 0, NULL,
          "without tokens: host names clients may reach the gateway by (the Host header), "
          "comma-separated, '*' any; IP addresses, localhost and the hosts of allowed_origins "
          "always (a guard against DNS rebinding)"),
    S_KEY(max_message, NX_CONF_SIZE, "1M", 256, 64ull << 20, NULL,
          "largest WebSocket message a client may send (larger: close 1009)"),
    S_KEY(max_body, NX_CONF_SIZE, "1M", 256, 64ull << 20, NULL, "largest HTTP request body"),
    S_KEY(queue_messages, NX_CONF_U64, "4096", 16, 10000000, NULL,
          "messages queued per client before it counts as slow"),
    S_KEY(command_bytes, NX_CONF_SIZE, "64M", 1 << 20, 1ull << 34, NULL,
          "bytes of client messages waiting for the worker; past it a message gets 'busy'"),
    S_KEY(http_bytes, NX_CONF_SIZE, "256M", 1 << 20, 1ull << 36, NULL,
          "bytes of HTTP answers held until their connections take them, all clients "
          "together; past it an answer is 503 'busy'"),
    S_KEY(queue_bytes, NX_CONF_SIZE, "4M", 4096, 1ull << 32, NULL,
          "bytes queued per client before it counts as slow"),
    S_KEY(slow_timeout, NX_CONF_DURATION, "5s", 0, 3600000, NULL,
          "a client whose queue stays full this long is closed with 1008"),
    S_KEY(rate, NX_CONF_U64, "1000", 1, 10000000, NULL,
          "requests per second per session (open gateway: per address for HTTP calls acting as "
          "no session)"),
    S_KEY(burst, NX_CONF_U64, "2000", 1, 10000000, NULL, "requests a session may burst"),
    S_KEY(ping_interval, NX_CONF_DURATION, "20s", 1000, 3600000, NULL, "WebSocket ping interval"),
    S_KEY(dead_timeout, NX_CONF_DURATION, "60s", 1000, 3600000, NULL,
          "a client silent this long (no pong) is dropped"),
    S_KEY(welcome_events, NX_CONF_U64, "20", 0, 1000, NULL,
          "recent events sent in the welcome message"),
    S_KEY(heartbeat, NX_CONF_DURATION, "5s", 200, 3600000, NULL,
          "heartbeat interval for the sessions the gateway hosts"),
    S_KEY(http_session_ttl, NX_CONF_DURATION, "10m", 1000, 2592000000ull, NULL,
          "how long the session of an HTTP work call (session_id) lives after its last call"),
    S_KEY(max_clients, NX_CONF_U64, "20000", 1, 1000000, NULL, "WebSocket connections at most"),
    S_KEY(log_level, NX_CONF_ENUM, "info", 0, 0, "error|warn|info|debug|warning",
          "how much the log says (-v: debug)"),
};

const size_t nx_gw_conf_count = sizeof(nx_gw_conf_keys) / sizeof(nx_gw_conf_keys[0]);
