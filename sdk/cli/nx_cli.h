/*  =========================================================================
    nx_cli - helpers of the `nexus` command: option parsing, durations and
    times, state files (session secrets, --resume cursors), aligned tables
    and the mapping of errors to exit codes.
    =========================================================================
*/

#ifndef NX_CLI_H_INCLUDED
#define NX_CLI_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "nexus.h"

/*  Exit codes (docs/cli.md).                                               */
#define NX_EXIT_OK          0
#define NX_EXIT_REFUSED     1
#define NX_EXIT_USAGE       2
#define NX_EXIT_UNREACHABLE 3

/*  Maps an error code to the exit code.                                    */
int nx_cli_exit_code(nexus_err_t err);

/*  Parses a duration: "250ms", "10s", "5m", "2h", "1d"; a plain number is
    seconds. Returns 0 and *ms, or -1.                                      */
int nx_cli_duration(const char *text, uint64_t *ms);

/*  Parses an unsigned integer; returns 0 or -1.                            */
int nx_cli_u64(const char *text, uint64_t *value);

/*  Parses a time: ISO 8601 UTC ("2024-05-01T12:00:00Z", fraction allowed,
    or a date alone) or a duration ago ("10m"). Returns 0 and *us
    (microseconds since the epoch), or -1.                                  */
int nx_cli_time(const char *text, uint64_t *us);

/*  Formats us (microseconds since the epoch) as ISO 8601 UTC with
    milliseconds into buf (at least 32 bytes).                              */
const char *nx_cli_iso(uint64_t us, char *buf);

/*  The state directory: $XDG_STATE_HOME/nexus or ~/.local/state/nexus,
    with sub appended ("sessions"); created (0700) when create is true.
    Returns 0 and the path in buf, or -1.                                   */
int nx_cli_state_dir(const char *sub, bool create, char *buf, size_t size);

/*  Reads a whole small file into a new string (caller frees); NULL on
    failure.                                                               */
char *nx_cli_read_file(const char *path);

/*  Writes text to path atomically (temp file + rename), mode 0600.         */
int nx_cli_write_file(const char *path, const char *text);

/*  The state file of session id ($STATE/sessions/ID), made when create.
    Returns 0 and the path in buf, or -1 (no state dir, or an id that is
    no file name).                                                          */
int nx_cli_session_path(const char *id, bool create, char *buf, size_t size);

/*  The secret stored for id by `nexus session register` or `nexus mcp`
    (caller frees), or NULL.                                                */
char *nx_cli_session_secret(const char *id);

/*  Stores {"session","secret","endpoint"} for id (mode 0600). 0 or -1.    */
int nx_cli_session_store(const char *id, const char *secret, const char *endpoint);

/*  `nexus mcp`: serves MCP over stdio with *client_p (configured, not yet
    connected; taken over: destroyed and nulled), acting as session (NULL:
    a new one); timeout_ms is the client's call timeout. Returns the exit
    code.                                                                   */
int nx_cli_mcp(nexus_client_t **client_p, const char *session, const char *name, const char *caps,
               uint32_t timeout_ms);

/*  Replaces ASCII control bytes in text (a newline, a tab, an escape) with
    '?' in place, so that a value from the fabric stays on its line and
    cannot move the terminal's cursor. Returns text.                        */
char *nx_cli_printable(char *text);

/*  A simple aligned table: add rows of cells (control bytes shown as '?'), print them with columns
    padded to the widest cell.                                             */
typedef struct nx_table_t nx_table_t;
nx_table_t *nx_table_new(int columns);
void nx_table_add(nx_table_t *self, const char *const *cells);
void nx_table_print(nx_table_t *self, FILE *out);
void nx_table_destroy(nx_table_t **self_p);

#endif
