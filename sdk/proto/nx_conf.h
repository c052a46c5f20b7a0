/*  =========================================================================
    nx_conf - one configuration table per program (nexusd, nexus-gateway).

    Each program describes its settings as a table of nx_conf_key_t: name,
    type, bounds, default, help, and where the value lives in the program's
    own settings struct. This module fills that struct from, in order:
      1. the defaults in the table,
      2. a ZPL config file (CZMQ zconfig; keys at the top level),
      3. environment variables NEXUS_<NAME> (name upper-cased),
      4. command-line flags --name VALUE or --name=VALUE ('_' or '-').
    Later sources override earlier ones. It never prints or exits: errors
    come back as codes with a message in err_buf.
    =========================================================================
*/

#ifndef NX_CONF_H_INCLUDED
#define NX_CONF_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nexus.h"

typedef enum {
    NX_CONF_STRING,   /* char *, owned by the struct (freed by nx_conf_free)  */
    NX_CONF_U64,      /* uint64_t, plain integer                             */
    NX_CONF_SIZE,     /* uint64_t bytes; accepts suffixes k, M, G, T (x1024)  */
    NX_CONF_DURATION, /* uint64_t milliseconds; accepts ms, s, m, h, d       */
    NX_CONF_BOOL,     /* bool; true/false/yes/no/on/off/1/0                  */
    NX_CONF_ENUM      /* int index into choices ("full|none" -> 0 or 1)      */
} nx_conf_type_t;

typedef struct {
    const char *name;    /* key, lower_snake_case                             */
    nx_conf_type_t type; /* how to parse the value                           */
    size_t offset;       /* offsetof the field in the settings struct         */
    const char *dflt;    /* default, as text (parsed like any other source)   */
    uint64_t min, max;   /* bounds for numeric types; max 0 = no upper bound  */
    const char *choices; /* NX_CONF_ENUM: "a|b|c"                             */
    const char *help;    /* one line for --help                               */
} nx_conf_key_t;

/*  Sets every key of table (count entries) to its default in settings.
    Returns NEXUS_OK or NEXUS_ERR_INVALID (a default that does not parse is
    a bug in the table; err_buf says which).                                */
nexus_err_t nx_conf_defaults(const nx_conf_key_t *table, size_t count, void *settings,
                             char *err_buf, size_t err_size);

/*  Parses value for the key called name ('-' and '_' are the same) and
    stores it. Returns NEXUS_OK, NEXUS_ERR_NOT_FOUND for an unknown key, or
    NEXUS_ERR_INVALID for a value that does not parse or is out of bounds;
    err_buf then says what and why.                                         */
nexus_err_t nx_conf_set(const nx_conf_key_t *table, size_t count, void *settings, const char *name,
                        const char *value, char *err_buf, size_t err_size);

/*  Loads a ZPL file. Every top-level key must be in the table, once: a key
    set twice ('-' and '_' alike) is NEXUS_ERR_INVALID, and err_buf names
    it and both lines. Returns NEXUS_OK, NEXUS_ERR_NOT_FOUND (no such file
    / unknown key), NEXUS_ERR_INVALID or NEXUS_ERR_NOMEM.                  */
nexus_err_t nx_conf_load_file(const nx_conf_key_t *table, size_t count, void *settings,
                              const char *path, char *err_buf, size_t err_size);

/*  Applies NEXUS_<NAME> variables that are set.                            */
nexus_err_t nx_conf_load_env(const nx_conf_key_t *table, size_t count, void *settings,
                             char *err_buf, size_t err_size);

/*  Applies --name VALUE / --name=VALUE flags from argv[first..argc).
    Flags that are not in the table are an error (NEXUS_ERR_NOT_FOUND),
    except the ones listed in passthrough (a NULL-terminated list of exact
    arguments such as "-v", which are skipped).                             */
nexus_err_t nx_conf_load_args(const nx_conf_key_t *table, size_t count, void *settings, int argc,
                              char **argv, int first, const char *const *passthrough, char *err_buf,
                              size_t err_size);

/*  Prints one line per key: --name VALUE, the help, the default and bounds.*/
void nx_conf_print_help(const nx_conf_key_t *table, size_t count, FILE *out);

/*  Prints the effective settings as ZPL (a valid config file).            */
void nx_conf_print(const nx_conf_key_t *table, size_t count, const void *settings, FILE *out);

/*  Frees the NX_CONF_STRING fields of settings and sets them to NULL.      */
void nx_conf_free(const nx_conf_key_t *table, size_t count, void *settings);

/*  What nx_conf_main tells the program to do next.                         */
typedef enum {
    NX_CONF_RUN = 0,       /* settings are loaded: run                      */
    NX_CONF_EXIT_OK = 1,   /* --help, --version or --print-config done      */
    NX_CONF_EXIT_USAGE = 2 /* bad usage or settings, said on stderr         */
} nx_conf_next_t;

/*  The command line of every nexus program (nexusd, nexus-gateway):
        -h/--help, --version, -v/--verbose, --print-config, -c/--config FILE,
        then --key VALUE flags from the table.
    Fills settings (which must start zeroed) from the defaults, the file,
    NEXUS_* variables and the flags, in that order. --help calls usage
    (stdout); --version prints "program version". Unlike the rest of this
    module it prints: it is for main. *verbose is set by -v, which also
    sets a log_level key, if the table has one, to "debug".                 */
nx_conf_next_t nx_conf_main(const nx_conf_key_t *table, size_t count, void *settings, int argc,
                            char **argv, const char *program, void (*usage)(FILE *out),
                            bool *verbose);

/*  Parses "1.5M"-style sizes and "250ms"/"10s"/"5m" durations. Return 0 on
    success, -1 on bad syntax or overflow.                                  */
int nx_conf_parse_size(const char *text, uint64_t *bytes);
int nx_conf_parse_duration(const char *text, uint64_t *ms);

#endif
