/*  =========================================================================
    nexus-gateway - WebSocket + HTTP bridge onto the nexus fabric, with the
    live dashboard. main reads the configuration (file, environment,
    flags), connects to the broker, starts the worker, and runs the lws
    loop until SIGINT or SIGTERM.
    =========================================================================
*/

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_gw.h"
#include "nx_heap.h"
#include "nx_log.h"

static nx_gw_t *s_gw;

static void s_on_signal(int sig)
{
    (void)sig;
    if (s_gw) {
        s_gw->stop = 1;
        /*  Writes to lws's wake pipe: safe in a signal handler.            */
        if (s_gw->lws)
            lws_cancel_service(s_gw->lws);
    }
}

static void s_usage(FILE *out)
{
    fprintf(out, "Usage: nexus-gateway [-c FILE] [-v] [--KEY VALUE]...\n"
                 "\n"
                 "WebSocket + HTTP gateway onto a nexus fabric, with the dashboard at /.\n"
                 "It is a client of the broker given by --broker; the WebSocket protocol\n"
                 "and the HTTP endpoints are in docs/gateway.md.\n"
                 "\n"
                 "  -c, --config FILE   read settings from a ZPL file (KEY = VALUE lines)\n"
                 "  -v, --verbose       log at debug level\n"
                 "      --print-config  print the effective settings, exit\n"
                 "  -h, --help          this help\n"
                 "      --version       print the version and exit\n"
                 "\n"
                 "Settings (file keys; environment NEXUS_KEY; flags --key VALUE):\n");
    nx_conf_print_help(nx_gw_conf_keys, nx_gw_conf_count, out);
    fprintf(out, "\nExit status: 0 clean stop, 1 runtime failure, 2 bad usage or settings.\n");
}

/*  The dashboard: --web-root (a directory), else the first of: the
    source tree this binary was built from (CMake tells us where, so that
    a build anywhere finds it), next to the binary (build/gateway ->
    gateway/web, or bin -> share/nexus/web), and the install prefix's
    share directory. Returns 0 when found, 1 when none has the files (the
    gateway then serves the API without a dashboard), 2 when web_root is
    "none" (no dashboard, asked for), -1 when web_root names no directory.
    *looked lists where it looked.                                         */
static int s_find_web_root(nx_gw_t *gw, char *looked, size_t size)
{
    struct stat st;
    looked[0] = 0;
    if (gw->cfg.web_root && strcmp(gw->cfg.web_root, "none") == 0) {
        gw->web_root[0] = 0; /* the API only, by choice */
        return 2;
    }
    if (gw->cfg.web_root && *gw->cfg.web_root) {
        snprintf(gw->web_root, sizeof gw->web_root, "%s", gw->cfg.web_root);
        if (stat(gw->web_root, &st) != 0 || !S_ISDIR(st.st_mode))
            return -1;
        char index[4200];
        snprintf(index, sizeof index, "%s/index.html", gw->web_root);
        if (stat(index, &st) == 0)
            return 0;
        snprintf(looked, size, "%.1000s", gw->web_root);
        gw->web_root[0] = 0;
        return 1;
    }
    char self[PATH_MAX] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    char candidates[5][4096];
    size_t count = 0;
#ifdef NX_GW_SOURCE_WEB
    snprintf(candidates[count++], sizeof candidates[0], "%s", NX_GW_SOURCE_WEB);
#endif
    if (self[0]) {
        snprintf(candidates[count++], sizeof candidates[0], "%.3000s/../../gateway/web", self);
        snprintf(candidates[count++], sizeof candidates[0], "%.3000s/../share/nexus/web", self);
        snprintf(candidates[count++], sizeof candidates[0], "%.3000s/web", self);
    }
#ifdef NX_GW_INSTALL_WEB
    snprintf(candidates[count++], sizeof candidates[0], "%s", NX_GW_INSTALL_WEB);
#endif
    size_t used = 0;
    for (size_t i = 0; i < count; i++) {
        char index[4200];
        snprintf(index, sizeof index, "%s/index.html", candidates[i]);
        if (stat(index, &st) == 0) {
            if (!realpath(candidates[i], gw->web_root))
                snprintf(gw->web_root, sizeof gw->web_root, "%s", candidates[i]);
            return 0;
        }
        if (used < size)
            used +=
                (size_t)snprintf(looked + used, size - used, "%s%s", i ? ", " : "", candidates[i]);
    }
    gw->web_root[0] = 0;
    return 1;
}

static void s_item_free(void **item)
{
    free(*item);
    *item = NULL;
}

/*  A table whose values are malloc'd and freed with their entries; NULL
    when out of memory.                                                    */
static zhashx_t *s_owning_table(void)
{
    zhashx_t *table = zhashx_new();
    if (table)
        zhashx_set_destructor(table, s_item_free);
    return table;
}

int main(int argc, char **argv)
{
    static nx_gw_t gw;
    char err[512] = "";
    bool verbose = false;
    int status = 2;
    nx_conf_next_t next = nx_conf_main(nx_gw_conf_keys, nx_gw_conf_count, &gw.cfg, argc, argv,
                                       "nexus-gateway", s_usage, &verbose);
    if (next != NX_CONF_RUN) {
        status = next == NX_CONF_EXIT_OK ? 0 : 2;
        goto done;
    }
    /*  The table's choices are nx_log_level_t's order, then "warning".   */
    int level = gw.cfg.log_level == 4 ? NX_LOG_WARN : gw.cfg.log_level;
    nx_log_init("nexus-gateway", (nx_log_level_t)level);
    /*  Events are allocated on the SDK's threads and freed on lws's: keep
        freed memory instead of trimming and refaulting it (nx_heap.h).    */
    if (nx_heap_tune(16u << 20, 4u << 20) != 0)
        nx_debug("allocator settings not taken (not glibc?): running with the defaults");
    gw.auth = nx_auth_new(gw.cfg.token, gw.cfg.tokens_file, err, sizeof err);
    if (!gw.auth) {
        fprintf(stderr, "nexus-gateway: %s\n", err);
        goto done;
    }
    if (nx_gw_listen_parse(gw.cfg.listen, &gw.listen, err, sizeof err)) {
        fprintf(stderr, "nexus-gateway: %s\n", err);
        goto done;
    }
    if (!gw.listen.loopback && !nx_auth_enabled(gw.auth)) {
        if (!gw.cfg.allow_open_remote) {
            fprintf(stderr,
                    "nexus-gateway: refusing to listen on %s with no tokens configured: set "
                    "token or tokens_file, or --allow-open-remote true\n",
                    gw.cfg.listen);
            goto done;
        }
        nx_warn("listening on %s with no tokens: anyone who can reach it can use the fabric",
                gw.cfg.listen);
    } else if (!nx_auth_enabled(gw.auth))
        nx_info("no tokens configured: open to clients on this machine only (%s)", gw.cfg.listen);
    char looked[2048];
    int found = s_find_web_root(&gw, looked, sizeof looked);
    if (found < 0) {
        fprintf(stderr, "nexus-gateway: web_root %s is not a directory\n", gw.cfg.web_root);
        goto done;
    }
    /*  No dashboard is no reason to stop: the API and WebSockets work, and
        `nexus up` would stop the broker with us.                          */
    if (found == 2)
        nx_info("web_root none: serving the API and WebSockets only, no dashboard");
    else if (found > 0)
        nx_warn("no dashboard files (index.html) found in %s: serving the API and WebSockets "
                "only, / answers 404 (set web_root to the gateway/web directory)",
                looked);
    /*  Many idle WebSocket connections need many descriptors.              */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    status = 1;
    pthread_mutex_init(&gw.lock, NULL);
    gw.conns = zhashx_new();
    gw.sessions = zhashx_new();
    gw.by_type = zhashx_new();
    gw.buckets = s_owning_table();
    gw.addr_buckets = s_owning_table();
    gw.secrets = s_owning_table();
    gw.descs = s_owning_table();
    if (!gw.conns || !gw.sessions || !gw.by_type || !gw.buckets || !gw.addr_buckets ||
        !gw.secrets || !gw.descs) {
        nx_error("out of memory");
        goto done;
    }
    /*  The command pipe, lws thread -> worker. Its bounds are ours (count
        and bytes, nx_gw_command), so ZeroMQ's are off.                    */
    gw.cmd_pull = zsock_new(ZMQ_PULL);
    gw.cmd_push = zsock_new(ZMQ_PUSH);
    if (!gw.cmd_pull || !gw.cmd_push) {
        nx_error("cannot create the command pipe");
        goto done;
    }
    zsock_set_rcvhwm(gw.cmd_pull, 0);
    zsock_set_sndhwm(gw.cmd_push, 0);
    if (zsock_bind(gw.cmd_pull, "inproc://nexus-gateway-commands") != 0 ||
        zsock_connect(gw.cmd_push, "inproc://nexus-gateway-commands") != 0) {
        nx_error("cannot set up the command pipe");
        goto done;
    }
    gw.commands_max = 100000;
    /*  What clients sent and the worker has not handled yet: without a byte
        bound, 1500 pings of 1 MB took the gateway to 1 GB.                 */
    gw.commands_bytes_max = (size_t)gw.cfg.command_bytes;
    gw.start_us = nx_now_us();
    gw.start_mono = nx_mono_us();
    /*  Our handlers, not CZMQ's: the lws loop must wake on a signal.       */
    zsys_handler_set(NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    s_gw = &gw;

    gw.client = nexus_client_new();
    /*  The token is broker_token here (libnexus takes NEXUS_TOKEN from
        the environment only when broker_token is empty): a refusal names
        the setting the operator has to fix.                               */
    const char *env_token = getenv("NEXUS_TOKEN");
    bool token_from_env = !(gw.cfg.broker_token && *gw.cfg.broker_token) && env_token && *env_token;
    /*  (--print-config shows broker_token empty then: the log says.)     */
    if (token_from_env)
        nx_info("the token presented to the broker is NEXUS_TOKEN from the environment "
                "(broker_token is not set)");
    if (!gw.client || nexus_client_set_endpoint(gw.client, gw.cfg.broker) ||
        nexus_client_set_token_setting(gw.client, token_from_env ? NULL : "broker_token") ||
        (gw.cfg.broker_token && *gw.cfg.broker_token &&
         nexus_client_set_token(gw.client, gw.cfg.broker_token)) ||
        nexus_client_set_timeout(gw.client, (uint32_t)gw.cfg.broker_timeout) ||
        nexus_client_set_callback(gw.client, nx_gw_deliver, &gw)) {
        nx_error("cannot configure the fabric client (broker '%s')", gw.cfg.broker);
        goto done;
    }
    /*  A broker that is not up yet holds up neither the start nor a stop:
        the first calls wait 0.5 s at most (they took two broker_timeouts,
        10 s, before SIGTERM was looked at); the client goes on trying in
        the background.                                                     */
    nexus_client_set_timeout(gw.client,
                             gw.cfg.broker_timeout < 500 ? (uint32_t)gw.cfg.broker_timeout : 500);
    nexus_err_t cerr = nexus_client_connect(gw.client);
    if (cerr == NEXUS_ERR_UNREACHABLE)
        nx_warn("broker %s does not answer yet; retrying in the background", gw.cfg.broker);
    else if (cerr) {
        nx_error("cannot connect to %s: %s", gw.cfg.broker, nexus_client_errmsg(gw.client));
        goto done;
    } else
        nx_info("connected to the broker at %s", gw.cfg.broker);
    gw.broker_up = cerr == NEXUS_OK;
    /*  One subscription to everything; each client's patterns are matched
        here, so clients come and go without touching the broker.           */
    if (nexus_subscribe(gw.client, ">")) {
        nx_error("cannot subscribe: %s", nexus_client_errmsg(gw.client));
        goto done;
    }
    if (nexus_client_set_timeout(gw.client, (uint32_t)gw.cfg.broker_timeout)) {
        nx_error("cannot set broker_timeout: %s", nexus_client_errmsg(gw.client));
        goto done;
    }
    if (gw.stop) {
        nx_info("stopped before it started");
        status = 0; /* asked to stop: not a failure */
        goto done;
    }
    if (nx_gw_worker_start(&gw)) {
        nx_error("cannot start the worker thread");
        goto done;
    }
    nx_info("nexus-gateway %s: dashboard from %s", NEXUS_VERSION_STRING,
            gw.web_root[0]                           ? gw.web_root
            : gw.cfg.web_root && strcmp(gw.cfg.web_root, "none") == 0 ? "nowhere (web_root none)"
                                                     : "nowhere (none found)");
    status = nx_gw_server_run(&gw) == 0 ? 0 : 1;
    nx_gw_worker_stop(&gw);
    nx_info("stopped");

done:
    s_gw = NULL;
    nexus_client_destroy(&gw.client);
    if (gw.conns) {
        for (nx_gw_conn_t *c = zhashx_first(gw.conns); c; c = zhashx_next(gw.conns))
            c->refs = 1;
        zlistx_t *all = zhashx_values(gw.conns);
        zhashx_destroy(&gw.conns);
        for (nx_gw_conn_t *c = zlistx_first(all); c; c = zlistx_next(all)) {
            nx_gw_conn_t *p = c;
            nx_gw_conn_unref(&gw, &p);
        }
        zlistx_destroy(&all);
    }
    for (size_t i = 0; i < gw.recent_count; i++) {
        nx_gw_msg_t *m = gw.recent[(gw.recent_head + i) % (sizeof gw.recent / sizeof gw.recent[0])];
        nx_gw_msg_unref(&m);
    }
    zhashx_destroy(&gw.sessions);
    zhashx_destroy(&gw.by_type);
    zhashx_destroy(&gw.buckets);
    zhashx_destroy(&gw.addr_buckets);
    zhashx_destroy(&gw.secrets);
    zhashx_destroy(&gw.descs);
    zsock_destroy(&gw.cmd_push);
    zsock_destroy(&gw.cmd_pull);
    nx_auth_destroy(&gw.auth);
    nx_conf_free(nx_gw_conf_keys, nx_gw_conf_count, &gw.cfg);
    return status;
}
