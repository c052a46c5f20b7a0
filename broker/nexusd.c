/*  =========================================================================
    nexusd - the nexus broker. main only reads the configuration (file, then
    environment, then flags), starts the broker and runs its loop until
    SIGINT or SIGTERM.
    =========================================================================
*/

#include <czmq.h>
#include <stdio.h>
#include <string.h>

#include "nx_broker.h"
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

int main(int argc, char **argv)
{
    const char *config_file = NULL;
    bool verbose = false, print_config = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            s_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("nexusd %s\n", NEXUS_VERSION_STRING);
            return 0;
        }
        if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
            verbose = true;
        else if (!strcmp(argv[i], "--print-config"))
            print_config = true;
        else if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "nexusd: %s needs a file name\n", argv[i]);
                return 2;
            }
            config_file = argv[++i];
        }
    }

    nx_broker_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[512] = "";
    static const char *const passthrough[] = {"-v", "--verbose", "--print-config", NULL};
    nexus_err_t rc =
        nx_conf_defaults(nx_broker_conf_keys, nx_broker_conf_count, &cfg, err, sizeof err);
    if (!rc && config_file)
        rc = nx_conf_load_file(nx_broker_conf_keys, nx_broker_conf_count, &cfg, config_file, err,
                               sizeof err);
    if (!rc)
        rc = nx_conf_load_env(nx_broker_conf_keys, nx_broker_conf_count, &cfg, err, sizeof err);
    if (!rc) {
        /*  -c FILE was consumed above; hide it from the flag parser.       */
        char **args = calloc((size_t)argc + 1, sizeof *args);
        int n = 0;
        for (int i = 0; i < argc; i++) {
            if (i > 0 && (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))) {
                i++;
                continue;
            }
            args[n++] = argv[i];
        }
        rc = nx_conf_load_args(nx_broker_conf_keys, nx_broker_conf_count, &cfg, n, args, 1,
                               passthrough, err, sizeof err);
        free(args);
    }
    if (rc) {
        fprintf(stderr, "nexusd: %s (see nexusd --help)\n", err);
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    if (print_config) {
        nx_conf_print(nx_broker_conf_keys, nx_broker_conf_count, &cfg, stdout);
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 0;
    }
    int level = nx_log_level_parse(cfg.log_level);
    if (level < 0) {
        fprintf(stderr, "nexusd: log_level must be error, warn, info or debug\n");
        nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
        return 2;
    }
    nx_log_init("nexusd", verbose ? NX_LOG_DEBUG : (nx_log_level_t)level);

    /*  CZMQ installs SIGINT/SIGTERM handlers that set zsys_interrupted; the
        loop checks it every turn and commits before it returns.           */
    zsys_init();
    zsys_set_logstream(stderr);
    nx_broker_t *broker = nx_broker_new(&cfg, err, sizeof err);
    nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
    if (!broker) {
        nx_error("cannot start: %s", err);
        return 1;
    }
    int status = nx_broker_run(broker) == 0 ? 0 : 1;
    nx_broker_destroy(&broker);
    nx_info("stopped");
    return status;
}
