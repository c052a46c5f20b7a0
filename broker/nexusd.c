/*  =========================================================================
    nexusd - the nexus broker. main only reads the configuration (file, then
    environment, then flags), starts the broker and runs its loop until
    SIGINT or SIGTERM.
    =========================================================================
*/

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "nx_auth.h"
#include "nx_broker.h"
#include "nx_heap.h"
#include "nx_log.h"

static void s_usage(FILE *out)
{
    fprintf(out, "Usage: nexusd [-c FILE] [-v] [--KEY VALUE]...\n"
                 "\n"
                 "The nexus broker: event plane (XSUB in, XPUB out), control plane (ROUTER)\n"
                 "and the LMDB history, in one process.\n"
                 "\n"
                 "  -c, --config FILE   read settings from a ZPL file (KEY = VALUE lines)\n"
                 "  -v, --verbose       log at debug level\n"
                 "      --print-config  print the effective settings as a config file, exit\n"
                 "  -h, --help          this help\n"
                 "      --version       print the version and exit\n"
                 "\n"
                 "Settings (file keys; environment NEXUS_KEY; flags --key VALUE):\n");
    nx_conf_print_help(nx_broker_conf_keys, nx_broker_conf_count, out);
    fprintf(out, "\nSizes take k/M/G suffixes (1024-based); durations ms/s/m/h/d.\n"
                 "Exit status: 0 clean stop, 1 runtime failure, 2 bad usage or settings.\n");
}

/*  The snapshot is written as PATH.tmp.PID beside PATH, then renamed over
    it: the directory must be there and writable, and PATH no directory.
    Found wrong later, each try (every second) would fail; here it is a
    bad setting. Says what is wrong in bad (size bytes), or leaves it "". */
static void s_check_snapshot_file(const char *path, const char *data_dir, char *bad, size_t size)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    struct stat st;
    size_t dl = data_dir ? strlen(data_dir) : 0;
    while (dl > 1 && data_dir[dl - 1] == '/')
        dl--;
    /*  In data_dir, which nexusd creates when it is missing.              */
    bool in_data_dir = dl && strncmp(dir, data_dir, dl) == 0 && (dir[dl] == 0 || dir[dl] == '/');
    if (stat(dir, &st) != 0) {
        if (!(errno == ENOENT && in_data_dir))
            snprintf(bad, size, "snapshot_file %.100s: directory %.100s: %s", path, dir,
                     strerror(errno));
    } else if (!S_ISDIR(st.st_mode))
        snprintf(bad, size, "snapshot_file %.100s: %.100s is not a directory", path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        snprintf(bad, size,
                 "snapshot_file %.100s: directory %.100s: %s (the file is written "
                 "beside it and renamed)",
                 path, dir, strerror(errno));
    else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(bad, size, "snapshot_file %.200s is a directory: name a file", path);
}

int main(int argc, char **argv)
{
    nx_broker_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[512] = "";
    bool verbose = false;
    /*  NEXUS_CURVE_CERT is a client's own certificate (the nexus command's,
        the gateway's: operations.md, CURVE). A broker started from such a
        shell (nexus up) must not take it for its own: curve_cert comes
        from the config file or --curve-cert only.                         */
    unsetenv("NEXUS_CURVE_CERT");
    nx_conf_next_t next = nx_conf_main(nx_broker_conf_keys, nx_broker_conf_count, &cfg, argc, argv,
                                       "nexusd", s_usage, &verbose);
    if (next != NX_CONF_RUN) {
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return next == NX_CONF_EXIT_OK ? 0 : 2;
    }
    /*  The table's choices are nx_log_level_t's order, then "warning".   */
    int level = cfg.log_level == 4 ? NX_LOG_WARN : cfg.log_level;
    /*  What can be told from the settings alone is a usage error (2), as
        the help says, not a failed start (1).                             */
    char bad[300] = "";
    if (!cfg.data_dir || !*cfg.data_dir)
        snprintf(bad, sizeof bad, "data_dir is empty: name the store's directory");
    const char *lists[][2] = {{"control_endpoints", cfg.control_endpoints},
                              {"events_in_endpoints", cfg.events_in_endpoints},
                              {"events_out_endpoints", cfg.events_out_endpoints}};
    for (size_t i = 0; i < 3 && !*bad; i++) {
        /*  Split as the binds split them: commas and spaces.              */
        const char *p = lists[i][1] ? lists[i][1] : "";
        while (*p && !*bad) {
            p += strspn(p, ", ");
            size_t n = strcspn(p, ", ");
            if (n && strncmp(p, "tcp://", 6) != 0 && strncmp(p, "ipc://", 6) != 0)
                snprintf(bad, sizeof bad, "%s: '%.*s' is no endpoint (tcp://HOST:PORT or ipc://PATH)",
                         lists[i][0], (int)(n > 100 ? 100 : n), p);
            p += n;
        }
    }
    if (!*bad && cfg.tokens_file && *cfg.tokens_file && access(cfg.tokens_file, R_OK) != 0)
        snprintf(bad, sizeof bad, "tokens_file %.200s: %s", cfg.tokens_file, strerror(errno));
    else if (!*bad && cfg.tokens_file && *cfg.tokens_file) {
        /*  A line it refuses, or no token at all, is the file's fault too. */
        nx_auth_t *auth = nx_auth_new(cfg.token, cfg.tokens_file, bad, sizeof bad);
        nx_auth_destroy(&auth);
    }
    if (!*bad && cfg.snapshot_file && *cfg.snapshot_file)
        s_check_snapshot_file(cfg.snapshot_file, cfg.data_dir, bad, sizeof bad);
    if (*bad) {
        fprintf(stderr, "nexusd: %s\n", bad);
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    /*  Settings that are valid alone but not together.                     */
    /*  A map_max below the default map_size (a small device) lowers it,
        as it always did: said once the log is up.                        */
    uint64_t map_asked = cfg.map_size;
    if (cfg.map_size > cfg.map_max)
        cfg.map_size = cfg.map_max;
    if (cfg.claim_ttl > cfg.claim_ttl_max) {
        fprintf(stderr,
                "nexusd: claim_ttl (%" PRIu64 " ms) is over claim_ttl_max (%" PRIu64
                " ms): every claim without ttl_ms would be refused\n",
                cfg.claim_ttl, cfg.claim_ttl_max);
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    /*  A pair's settings that cannot work: said before the start (2), as
        the other contradictions, not as a failed start (1) or a standby
        that asks nobody, or itself, for ever.                             */
    const char *replica = cfg.replica_of && *cfg.replica_of ? cfg.replica_of : NULL;
    const char *why = NULL;
    if (replica && cfg.etcd && *cfg.etcd)
        why = "replica_of and etcd exclude each other: with etcd, etcd says which broker is the "
              "primary";
    else if (replica && strncmp(replica, "tcp://", 6) != 0 && strncmp(replica, "ipc://", 6) != 0)
        why = "replica_of is no endpoint: the primary's control endpoint, tcp://HOST:PORT";
    else if (replica && cfg.control_endpoints && strstr(cfg.control_endpoints, replica) &&
             strcspn(strstr(cfg.control_endpoints, replica) + strlen(replica), ", ") == 0)
        why = "replica_of is this broker's own control endpoint: name the primary's";
    if (why) {
        fprintf(stderr, "nexusd: %s\n", why);
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    if ((!cfg.curve_cert || !*cfg.curve_cert) && cfg.curve_clients && *cfg.curve_clients) {
        fprintf(stderr, "nexusd: curve_clients without curve_cert would leave every socket in "
                        "the clear: set curve_cert (nexus keygen NAME writes NAME_secret)\n");
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    if (cfg.curve_cert && *cfg.curve_cert && (!cfg.curve_clients || !*cfg.curve_clients)) {
        fprintf(stderr, "nexusd: curve_cert needs curve_clients: a directory of client public "
                        "certificates, or * for any client that knows the broker's key\n");
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    nx_log_init("nexusd", (nx_log_level_t)level);
    if (map_asked != cfg.map_size)
        nx_warn("map_size %" PRIu64 " is over map_max %" PRIu64 ": the map starts at map_max",
                map_asked, (uint64_t)cfg.map_max);
    /*  Every client takes a descriptor: use all the hard limit allows
        (the soft one is often 1024), as servers do.                       */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            nx_info("file descriptors: ulimit -n raised from %llu to the hard limit %llu",
                    (unsigned long long)was, (unsigned long long)rl.rlim_cur);
    }

    /*  CZMQ installs SIGINT/SIGTERM handlers that set zsys_interrupted; the
        loop checks it every turn and commits before it returns.           */
    /*  Keep freed batches instead of trimming and refaulting them (nx_heap.h);
        16 MiB kept per heap at most, blocks under 4 MiB from the heaps.    */
    if (nx_heap_tune(16u << 20, 4u << 20) != 0)
        nx_debug("allocator settings not taken (not glibc?): running with the defaults");
    zsys_init();
    zsys_set_logstream(stderr);
    nx_broker_t *broker = nx_broker_new(&cfg, err, sizeof err);
    nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
    if (!broker) {
        nx_error("cannot start: %s", err);
        return 1;
    }
    int rc = nx_broker_run(broker);
    nx_broker_destroy(&broker);
    if (rc == NX_BROKER_RESTART) {
        /*  A standby's base copy arrived, a fenced primary comes back as a
            standby, or a read-only broker (a full data disk) found room
            again: the same program, settings and pid start again, and the
            start recovers the log.                                        */
        nx_info("restarting");
        fflush(stderr);
        execv("/proc/self/exe", argv);
        nx_error("cannot restart: %s", strerror(errno));
        return 1;
    }
    nx_info("stopped");
    return rc == 0 ? 0 : 1;
}
