/*  =========================================================================
    nx_fwdlog - the forward log: the events the broker has sent to
    subscribers before their commit, since its last commit.

    Forwarding before the flush takes the fsync out of the path from
    publisher to subscriber. What a subscriber has seen must still be in
    the history after a crash of the broker process (kill -9), so the turn's
    events are first written here, to the page cache, which outlives the
    process; a start after a crash appends the ones the store lacks. A
    power cut or reboot may lose the page cache: the log carries the boot
    id it was written under, and a log from another boot is not trusted
    (those events were never acknowledged; see docs/architecture.md).

    File layout (forwarded.log in the data directory):
        offset 0      header: magic "NXFWD001", boot id (40 bytes, NUL
                      padded), first seq (u64 BE), count (u32 BE), body
                      length (u32 BE), FNV-1a 64 of the bytes before it
        offset 4096   body: count records of [u32 BE length][event message
                      as nx_event_msg_encode writes it]
    Each turn appends its records to the body, then rewrites the header to
    cover them: a header always describes a body that was written in full.
    After a commit the broker resets the log, and the next turn writes from
    the body's start again; a stale tail past the header's length is never
    read.
    =========================================================================
*/

#ifndef NX_FWDLOG_H_INCLUDED
#define NX_FWDLOG_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "nx_codec.h"

#define NX_FWDLOG_BOOT_MAX 40

typedef struct _nx_fwdlog_t nx_fwdlog_t;

/*  Reads this boot's id into buf (NX_FWDLOG_BOOT_MAX bytes, NUL padded).
    Returns 0, or -1 when the system has none (the log is then never
    trusted at start).                                                       */
int nx_fwdlog_boot_id(char *buf);

/*  Opens (creating) the log file `path`, written under boot id `boot` (may
    be "" when unknown). max_body bounds one turn's body in bytes. Returns
    NULL with a message in err (err_size bytes) on failure.                 */
nx_fwdlog_t *nx_fwdlog_new(const char *path, const char *boot, size_t max_body, char *err,
                           size_t err_size);
void nx_fwdlog_destroy(nx_fwdlog_t **self_p);

/*  Where the body ends: a turn starts at a mark, and may go back to it.    */
typedef struct {
    size_t len;     /* body bytes before the mark */
    uint32_t count; /* records before the mark    */
} nx_fwdlog_mark_t;

/*  Empties the log in memory (after a commit); the file's header is
    rewritten by the next write or clear.                                   */
void nx_fwdlog_reset(nx_fwdlog_t *self);

nx_fwdlog_mark_t nx_fwdlog_mark(nx_fwdlog_t *self);

/*  Forgets the records added after mark.                                   */
void nx_fwdlog_rollback(nx_fwdlog_t *self, nx_fwdlog_mark_t mark);

/*  Makes room for one record of len bytes and returns where to write it,
    or NULL when the body would exceed max_body.                            */
uint8_t *nx_fwdlog_add(nx_fwdlog_t *self, size_t len);

/*  Walks the records: returns the one at *pos (start at a mark's len) and
    sets *len, advancing *pos; NULL past the last.                          */
const uint8_t *nx_fwdlog_next(nx_fwdlog_t *self, size_t *pos, size_t *len);

/*  Writes the records added since `from`, then the header naming first_seq
    (the seq of the body's first record) and every record. Returns 0, or -1
    (errno set) when the file could not be written; the header then still
    describes what it described before.                                    */
int nx_fwdlog_write(nx_fwdlog_t *self, uint64_t first_seq, nx_fwdlog_mark_t from);

/*  Calls fn for every logged event with seq > after_seq, in seq order, when
    the header is intact and was written under this boot. Stops at fn's
    first non-zero return. Returns the number of calls, or -1 when fn
    failed. A missing or empty log gives 0 calls; so does one that is not
    trusted (damaged, or from another boot), and *why (may be NULL) then
    says why; otherwise *why is NULL.                                        */
typedef int(nx_fwdlog_fn)(const nx_event_msg_t *ev, void *arg);
int64_t nx_fwdlog_recover(nx_fwdlog_t *self, uint64_t after_seq, nx_fwdlog_fn *fn, void *arg,
                          const char **why);

/*  Writes an empty header: nothing to recover. Returns 0 or -1.            */
int nx_fwdlog_clear(nx_fwdlog_t *self);

#endif
