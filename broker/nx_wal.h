/*  =========================================================================
    nx_wal - the broker's write-ahead log: every change a loop turn makes
    (events, session and claim records, meta counters) is appended here,
    written with one pwrite, flushed with one fdatasync, and only then
    acknowledged. The LMDB store is written behind it by the checkpointer
    (nx_checkpointer.h), and a log segment is reused once a durable LMDB
    commit covers it. docs/architecture.md, "The write-ahead log", tells
    the whole story; this header is the contract.

    Positions. The log is one stream of bytes; a position in it is an LSN
    (u64). The stream is cut into segments of segment_size bytes, one file
    each, named after the LSN it starts at: wal/<16 hex digits>.log. The
    files are preallocated (written with zeros once, under sync=full) and
    reused by renaming, so a flush writes data into blocks the file system
    already has and never waits for file-size metadata.

    Frames. A turn's records are written as one frame (several when they do
    not fit the rest of a segment; every frame but the last of a turn then
    carries NX_WAL_F_MORE). A frame is a 32-byte header and a body:

        0   u32  crc     CRC-32 (zlib) of bytes 4 .. 32+len of the frame
        4   u32  magic   "NXW1"
        8   u64  lsn     where the frame starts: a frame is valid only at
                         the position it names, so a stale frame of a
                         segment's earlier life never passes for a new one
        16  u32  len     body bytes
        20  u32  prev    crc of the frame before it: the frames form a
                         chain, so a frame left over from before a crash
                         never continues a log written after it
        24  u32  flags   NX_WAL_F_MORE, NX_WAL_F_PAD
        28  u32  count   records in the body

    All integers are big-endian. A frame never spans two segments: when
    the next frame does not fit, a PAD frame (no body) fills the rest of the
    segment (or, with fewer than 32 bytes left, nothing) and the log goes on
    at the next segment's first byte.

    Records. A body is records back to back, each [u32 length][u8 type]
    [data]; length counts the type byte and the data:
        NX_WAL_EVENT  data is the event message subscribers receive
                      (protocol.md 3.2: topic NUL version seq ts source
                      payload), so an event is written once, in the form
                      that is also forwarded
        NX_WAL_PUT    u8 db, u16 key length, key, value (the rest)
        NX_WAL_DEL    u8 db, u16 key length, key

    Threads. The loop owns the writing side (add, write, flush, start); a
    flusher thread of the log's own runs the fdatasyncs (under sync), so
    that the loop processes the next turn while the last one is flushed;
    the checkpointer reads with a reader of its own and recycles segments
    (recycle, prepare); nx_wal_durable and nx_wal_written may be read by any
    thread. Mutexes inside keep the loop's switch to a new segment, the
    flusher's files and the checkpointer's renames apart.
    =========================================================================
*/

#ifndef NX_WAL_H_INCLUDED
#define NX_WAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NX_WAL_EVENT 1 /* an event message                                  */
#define NX_WAL_PUT   2 /* key -> value in a keyed database                  */
#define NX_WAL_DEL   3 /* key removed from a keyed database                 */

#define NX_WAL_FRAME_HEAD  32 /* bytes of a frame header                 */
#define NX_WAL_RECORD_HEAD 5  /* bytes before a record's data            */
#define NX_WAL_F_MORE      1u /* the turn goes on in the next frame      */
#define NX_WAL_F_PAD       2u /* rest of the segment unused              */
#define NX_WAL_SEGMENT_MIN (1u << 20)
#define NX_WAL_BOOT_MAX    40 /* bytes of a boot id, NUL padded          */

typedef struct _nx_wal_t nx_wal_t;
typedef struct _nx_wal_reader_t nx_wal_reader_t;

typedef struct {
    const char *dir;       /* the log's directory; created (0700) if missing */
    uint64_t segment_size; /* bytes per segment file, >= NX_WAL_SEGMENT_MIN */
    bool sync;             /* flush with fdatasync and zero-fill new segments
                              (sync=full); false: leave it to the OS       */
} nx_wal_config_t;

/*  Reads this boot's id (/proc/sys/kernel/random/boot_id) into buf
    (NX_WAL_BOOT_MAX bytes, NUL padded). Returns 0, or -1 when the system
    has none.                                                               */
int nx_wal_boot_id(char *buf);

/*  Opens the log directory (creating it) and removes temporary files a
    crash may have left. Writes nothing else until nx_wal_start. Returns
    NULL with a message in err on failure. Copies what it needs from cfg.  */
nx_wal_t *nx_wal_new(const nx_wal_config_t *cfg, char *err, size_t err_size);

/*  Closes every file and frees self; sets *self_p to NULL. Safe on NULL.   */
void nx_wal_destroy(nx_wal_t **self_p);

uint64_t nx_wal_segment_size(nx_wal_t *self);

/*  ---- Writing (the loop's thread) --------------------------------------- */

/*  Makes lsn the position of the next frame, prev the crc of the frame
    before it (0 for a new log). Segment files wholly below lsn become
    spares (at most two) or are removed; the segment holding lsn is opened,
    or created (zero-filled under sync). Called once, after recovery.
    Returns 0, or -1 with a message in err.                                 */
int nx_wal_start(nx_wal_t *self, uint64_t lsn, uint32_t prev, char *err, size_t err_size);

/*  Appends a record of `type` with len bytes of data to the turn and
    returns where to write the data (valid until the next add), or NULL
    when out of memory or len is over what a segment can hold.              */
uint8_t *nx_wal_add(nx_wal_t *self, int type, size_t len);

/*  PUT and DEL records. Return 0, or -1 (out of memory, key over 65535
    bytes or record over what a segment can hold).                          */
int nx_wal_put(nx_wal_t *self, int db, const void *key, size_t key_len, const void *value,
               size_t value_len);
int nx_wal_del(nx_wal_t *self, int db, const void *key, size_t key_len);

/*  Bytes of records added since the last write or discard.                 */
size_t nx_wal_pending(nx_wal_t *self);

/*  Forgets the records added since the last write.                         */
void nx_wal_discard(nx_wal_t *self);

/*  Writes the pending records as frames (pwritev, no flush) and advances
    nx_wal_written. Returns 0, or -1 with errno set; the log's position is
    then unchanged and the pending records are kept.                        */
int nx_wal_write(nx_wal_t *self);

/*  Asks for what was written to be flushed, and returns at once. Under
    sync the flusher thread does it (fdatasync of each segment written to,
    one round for everything written when it starts: pipelined group
    commit), advances nx_wal_durable, and makes nx_wal_flush_fd readable;
    without sync nx_wal_durable becomes nx_wal_written at once. Returns 0,
    or -1 with errno set when an earlier flush failed (a failed fdatasync
    is never retried: what it should have written cannot be trusted).     */
int nx_wal_flush_async(nx_wal_t *self);

/*  Flushes what was written on the calling thread when no round runs
    (returns 0: durable now), else leaves it to the flusher like
    nx_wal_flush_async (returns 1). -1 on an error (errno set). The loop
    uses it when it has nothing else to do meanwhile: no thread hand-off
    on the path of a lone request.                                          */
int nx_wal_flush_now(nx_wal_t *self);

/*  Flushes what was written and waits for it. Returns 0, or -1 (errno).   */
int nx_wal_flush(nx_wal_t *self);

/*  An fd (eventfd) that is readable after each flush round, for the
    loop's poll; -1 without sync (nothing to wait for).                     */
int nx_wal_flush_fd(nx_wal_t *self);

/*  Clears nx_wal_flush_fd. Returns 0, or -1 (errno) when a flush failed.   */
int nx_wal_flush_ack(nx_wal_t *self);

/*  The position after the last frame written / flushed. durable is only
    ever a turn's end. Any thread.                                           */
uint64_t nx_wal_written(nx_wal_t *self);
uint64_t nx_wal_durable(nx_wal_t *self);

/*  The crc of the last frame written (the chain's head).                   */
uint32_t nx_wal_head_crc(nx_wal_t *self);

/*  Counters for `state`.                                                   */
typedef struct {
    uint64_t written;      /* LSN after the last frame written            */
    uint64_t durable;      /* LSN up to which the log is flushed          */
    uint64_t frames;       /* frames written since open                   */
    uint64_t flushes;      /* fdatasyncs since open                       */
    uint64_t segments;     /* segment files on disk (spares included)     */
    uint64_t segment_size; /* bytes per segment                           */
} nx_wal_stats_t;
void nx_wal_stats(nx_wal_t *self, nx_wal_stats_t *st);

/*  ---- Segments (the checkpointer's thread) ------------------------------- */

/*  Recycles the segments that end at or below `below` (a durable LMDB
    commit covers them): renamed to follow the loop's current segment while
    fewer than two spares wait there, otherwise removed.                    */
void nx_wal_recycle(nx_wal_t *self, uint64_t below);

/*  Makes sure the segment after the loop's current one exists and is
    ready (recycled, or zero-filled under sync), so that the loop never
    waits for one. Returns 0, or -1 with errno set (the loop then creates
    the segment itself when it gets there).                                 */
int nx_wal_prepare(nx_wal_t *self);

/*  ---- Reading (the checkpointer and recovery) ---------------------------- */

typedef struct {
    uint64_t lsn;        /* where the frame starts                        */
    uint64_t next;       /* where the next frame starts                   */
    uint32_t crc;        /* its crc (the next frame's prev)               */
    uint32_t flags;      /* NX_WAL_F_*                                    */
    uint32_t count;      /* records in body                               */
    const uint8_t *body; /* valid until the next read or destroy          */
    size_t len;          /* bytes in body                                 */
} nx_wal_frame_t;

/*  A reader of the files in dir (which may be another process's log: tests
    read a copy), cut into segments of segment_size bytes. NULL when out of
    memory.                                                                 */
nx_wal_reader_t *nx_wal_reader_new(const char *dir, uint64_t segment_size);
void nx_wal_reader_destroy(nx_wal_reader_t **self_p);

/*  Reads the frame at lsn (a position inside the last 31 bytes of a
    segment means the next segment's first byte, which *next_lsn says
    either way). With verify, the frame must carry prev as its prev and its
    crc must check; without, only its magic, lsn and length are checked
    (the loop's own frames, read back by the checkpointer).
    Returns 1 with *frame filled; 0 when no valid frame is there: the log
    ends, and *torn says whether what is there looks like a frame that was
    being written (a header naming this position whose crc, chain or body
    does not check, or bytes that are no frame at all) rather than nothing
    written (zeros, the end of the file, or a frame of an earlier life of
    the segment); -1 on an I/O error (errno set).                           */
int nx_wal_reader_read(nx_wal_reader_t *self, uint64_t lsn, uint32_t prev, bool verify,
                       nx_wal_frame_t *frame, bool *torn);

/*  After a frame at lsn that does not check (recovery's end of the log):
    whether frames that do check follow it, continuing its chain (its
    header still names lsn and says where the next frame is and what its
    crc is; frames left past an earlier recovery's cut continue an older
    chain and do not count). Returns 1 with *first (the first such frame's
    lsn), *end (where the chain walked from there ends) and *frames
    filled; 0 when none (or the damaged header says nothing); -1 on an I/O
    error (errno set). Either the log was damaged after it was written
    (acknowledged changes past lsn are then lost to recovery) or a power
    loss kept later writes and not this one (none of them acknowledged):
    the log alone cannot tell which.                                       */
int nx_wal_reader_beyond(nx_wal_reader_t *self, uint64_t lsn, uint64_t *first, uint64_t *end,
                         uint64_t *frames);

/*  Walks the records of a body: returns 1 with the record at *pos (type,
    data, data length) and advances *pos; 0 past the last; -1 when the
    body is malformed.                                                      */
int nx_wal_record_next(const uint8_t *body, size_t len, size_t *pos, int *type,
                       const uint8_t **data, size_t *data_len);

/*  Splits a PUT or DEL record's data. Returns 0, or -1 when malformed.    */
int nx_wal_record_kv(const uint8_t *data, size_t data_len, int *db, const uint8_t **key,
                     size_t *key_len, const uint8_t **value, size_t *value_len);

/*  ---- Copying another log (a standby: nx_repl_receiver.h) ---------------- */

/*  A standby's log is a copy of the primary's, byte for byte at the same
    positions, so that a promotion goes on writing it where the primary
    stopped and a checkpoint means the same position on both brokers.     */

/*  Writes the frame at the start of data (avail bytes), a frame of another
    log checked as nx_wal_frame_parse does, at the log's position: its lsn
    must be the position (a segment's last 31 bytes are skipped) and its
    prev the head. The 32-byte end marker follows it, as after every frame.
    A PAD frame sends the log on to the next segment. nx_wal_written
    advances at a turn's end only (a frame without MORE), so a flush never
    makes half a turn durable (the checkpointer applies whole turns).
    Returns the frame's size with *frame filled (it may be NULL), or -1
    with errno set: EINVAL when data does not start with the frame that
    continues the log, else an I/O error.                                  */
long nx_wal_copy_frame(nx_wal_t *self, const uint8_t *data, size_t avail, nx_wal_frame_t *frame);

/*  Forgets the frames copied after the last turn's end (a turn whose last
    frame never came): the log goes on at nx_wal_written.                 */
void nx_wal_copy_rewind(nx_wal_t *self);

/*  The crc of the last frame of the last turn written (the chain's head at
    nx_wal_written).                                                        */
uint32_t nx_wal_turn_crc(nx_wal_t *self);

/*  Keeps the segments from the one holding lsn on from being recycled:
    a standby still needs them. UINT64_MAX: no hold. Any thread.            */
void nx_wal_hold(nx_wal_t *self, uint64_t lsn);

/*  Checks that data (avail bytes) starts with a whole frame that is the one
    at lsn continuing prev in a log of segment_size bytes per segment:
    magic, position (a position in a segment's last 31 bytes means the
    next segment's first byte), length within the segment, chain and crc.
    Returns the frame's size (header and body) with *frame filled (body
    points into data; next as nx_wal_reader_read says), or -1 when it is not
    that frame or is cut short.                                            */
long nx_wal_frame_parse(const uint8_t *data, size_t avail, uint64_t lsn, uint32_t prev,
                        uint64_t segment_size, nx_wal_frame_t *frame);

#endif
