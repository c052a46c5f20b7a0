/*  =========================================================================
    nx_disk - the data disk's free space, kept above what the broker may
    still have to write, so that a write it acknowledged never fails for
    want of space (as Kafka and PostgreSQL keep headroom).

    What may still be written at any moment, beyond what the files hold:
    the log's next segments (three: the one being filled may be sparse,
    the next is created ahead, one more is a spare), the next turn's
    records (batch_bytes of events and 4 MiB of requests), and the LMDB
    pages of the log not yet in a checkpoint (twice its bytes: the B-tree
    is copy-on-write). On top of that the broker keeps disk_reserve free.
    Below the sum, writes are refused with store_full ("data disk full")
    before anything changes, events from the event plane are dropped
    (counted), and what was acknowledged stays whole; once space is freed
    (the sum and a margin: a quarter of disk_reserve, at least a segment)
    the next check lets writes in again.

    The check is a statvfs, made at most every NX_DISK_CHECK_US or when
    the log has grown NX_DISK_CHECK_BYTES since the last one (a turn adds
    at most batch_bytes, which the sum holds).
    =========================================================================
*/

#ifndef NX_DISK_H_INCLUDED
#define NX_DISK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NX_DISK_CHECK_US    (250 * 1000ull)
#define NX_DISK_CHECK_BYTES (1ull << 20)

typedef struct {
    const char *dir;  /* the data directory (not owned)                   */
    uint64_t reserve; /* disk_reserve                                     */
    uint64_t fixed;   /* three segments, a turn's records                 */
    uint64_t segment; /* the log's segment size                           */
    uint64_t turn;    /* the most one turn writes                         */
    uint64_t margin;  /* free beyond the need that ends a refusal         */
    uint64_t free;    /* bytes free at the last check                     */
    uint64_t need;    /* bytes that had to be free then                   */
    bool full;        /* free < need at the last check                    */
    uint64_t at_us;   /* mono us of the last check                        */
    uint64_t at_lsn;  /* log position at the last check                   */
} nx_disk_t;

/*  Free bytes for an unprivileged writer on dir's file system, or
    UINT64_MAX when statvfs fails (the check then never refuses).          */
uint64_t nx_disk_free(const char *dir);

/*  fsyncs the directory dir, so that a file created, renamed or removed
    in it stays so after a power loss. 0, or -1 with errno set.            */
int nx_disk_sync_dir(const char *dir);

/*  Sets up the check of dir: reserve (disk_reserve), the log's segment
    size and the most one turn writes.                                     */
void nx_disk_init(nx_disk_t *self, const char *dir, uint64_t reserve, uint64_t segment,
                  uint64_t turn_bytes);

/*  Bytes that must be free while lag bytes of the log wait for a
    checkpoint.                                                            */
uint64_t nx_disk_need(const nx_disk_t *self, uint64_t lag);

/*  Checks again when due (now: mono us; written: the log's end; lag: log
    bytes not in a checkpoint) and returns whether the disk is too full
    for writes. *changed is set when that differs from the last check.    */
bool nx_disk_full(nx_disk_t *self, uint64_t now, uint64_t written, uint64_t lag, bool *changed);

/*  Writes into buf (NUL-terminated, cut to size) what the need with lag
    is made of, naming the settings behind each part, for the log and the
    refusals: "disk_reserve 64 MiB + 3 log segments (wal_segment) ...".    */
void nx_disk_explain(const nx_disk_t *self, uint64_t lag, char *buf, size_t size);

#endif
