/*  =========================================================================
    test_wal - the write-ahead log on real files in a temporary directory:
    turns of event, put and del records come back frame by frame, record
    by record, byte for byte; written and durable positions; a turn that
    does not fit the rest of a segment is padded over or split (MORE); a
    turn larger than a segment spans several; the end of the log is told
    apart from a torn write (a flipped byte, a file cut inside a frame,
    garbage) and from a frame of an earlier life of a segment (recycled
    segments, and a log a crash cut off and that was written on after it);
    recycle and prepare keep spares ready; malformed records are refused.
    =========================================================================
*/

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_codec.h"
#include "nx_test.h"
#include "nx_wal.h"

#define SEG (1u << 20)

static char s_dir[64];

static nx_wal_t *s_open(bool sync)
{
    char err[256] = "";
    nx_wal_config_t cfg = {s_dir, SEG, sync};
    nx_wal_t *wal = nx_wal_new(&cfg, err, sizeof err);
    if (!wal)
        fprintf(stderr, "nx_wal_new: %s\n", err);
    CHECK(wal != NULL);
    return wal;
}

static void s_start(nx_wal_t *wal, uint64_t lsn, uint32_t prev)
{
    char err[256] = "";
    int rc = nx_wal_start(wal, lsn, prev, err, sizeof err);
    if (rc)
        fprintf(stderr, "nx_wal_start: %s\n", err);
    CHECK_EQ_U64(rc, 0);
}

/*  One event record: seq, payload "p<seq>" padded to size bytes.          */
static void s_event(nx_wal_t *wal, uint64_t seq, size_t size)
{
    char payload[8192];
    int n = snprintf(payload, sizeof payload, "p%llu", (unsigned long long)seq);
    while ((size_t)n < size && (size_t)n < sizeof payload)
        payload[n++] = 'x';
    size_t len = nx_event_msg_size(3, 1, (size_t)n);
    uint8_t *p = nx_wal_add(wal, NX_WAL_EVENT, len);
    CHECK(p != NULL);
    if (p)
        nx_event_msg_encode(p, "a.b", 3, seq, 1000 + seq, "s", 1, (const uint8_t *)payload,
                            (size_t)n);
}

/*  Reads every frame from lsn (verified), collecting event seqs and kv
    keys in order. Returns frames read; *end, *torn where it stopped.     */
typedef struct {
    uint64_t seqs[40000];
    int n_seqs;
    char keys[64][32];
    int kinds[64]; /* NX_WAL_PUT or NX_WAL_DEL */
    int n_keys;
    int more; /* frames with F_MORE */
    int pads;
    uint64_t end;
    uint32_t end_crc;
    bool torn;
} s_read_t;

static int s_read_all(uint64_t from, uint32_t prev, s_read_t *r)
{
    memset(r, 0, sizeof *r);
    nx_wal_reader_t *rd = nx_wal_reader_new(s_dir, SEG);
    CHECK(rd != NULL);
    if (!rd)
        return -1;
    int frames = 0;
    uint64_t lsn = from;
    nx_wal_frame_t f;
    for (int guard = 0; guard < 100000; guard++) {
        int rc = nx_wal_reader_read(rd, lsn, prev, true, &f, &r->torn);
        CHECK(rc >= 0);
        if (rc <= 0) {
            r->end = f.lsn;
            break;
        }
        frames++;
        if (f.flags & NX_WAL_F_MORE)
            r->more++;
        if (f.flags & NX_WAL_F_PAD)
            r->pads++;
        size_t pos = 0;
        int type;
        const uint8_t *data;
        size_t dlen;
        uint32_t count = 0;
        while (nx_wal_record_next(f.body, f.len, &pos, &type, &data, &dlen) == 1) {
            count++;
            if (type == NX_WAL_EVENT) {
                nx_event_msg_t ev;
                CHECK_EQ_U64(nx_event_msg_decode(data, dlen, &ev), 0);
                if (r->n_seqs < 40000)
                    r->seqs[r->n_seqs++] = ev.seq;
                CHECK_EQ_U64(ev.ts, 1000 + ev.seq);
            } else {
                int db;
                const uint8_t *key, *value;
                size_t klen, vlen;
                CHECK_EQ_U64(nx_wal_record_kv(data, dlen, &db, &key, &klen, &value, &vlen), 0);
                if (r->n_keys < 64) {
                    snprintf(r->keys[r->n_keys], 32, "%d:%.*s=%.*s", db, (int)klen, key, (int)vlen,
                             value);
                    r->kinds[r->n_keys++] = type;
                }
            }
        }
        CHECK_EQ_U64(count, f.count);
        prev = f.crc;
        lsn = f.next;
        r->end = lsn;
    }
    r->end_crc = prev;
    nx_wal_reader_destroy(&rd);
    return frames;
}

static void s_path(char *buf, size_t size, uint64_t base)
{
    snprintf(buf, size, "%s/%016llx.log", s_dir, (unsigned long long)base);
}

static void s_poke(uint64_t lsn, const void *bytes, size_t n)
{
    char path[256];
    s_path(path, sizeof path, lsn - lsn % SEG);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(pwrite(fd, bytes, n, (off_t)(lsn % SEG)) == (ssize_t)n);
        close(fd);
    }
}

static void s_peek(uint64_t lsn, void *bytes, size_t n)
{
    char path[256];
    s_path(path, sizeof path, lsn - lsn % SEG);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(pread(fd, bytes, n, (off_t)(lsn % SEG)) == (ssize_t)n);
        close(fd);
    }
}

static int s_count_files(void)
{
    DIR *d = opendir(s_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".log") != NULL;
    if (d)
        closedir(d);
    return n;
}

static void s_clear_dir(void)
{
    DIR *d = opendir(s_dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", s_dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
}

/*  Turns of events and kv records, flushed; read back exactly; a clean end. */
static void s_test_round_trip(void)
{
    nx_wal_t *wal = s_open(true);
    if (!wal)
        return;
    s_start(wal, 0, 0);
    CHECK_EQ_U64(nx_wal_written(wal), 0);
    uint64_t seq = 1;
    for (int turn = 0; turn < 5; turn++) {
        for (int i = 0; i < 10; i++)
            s_event(wal, seq++, 100);
        char key[16], value[16];
        snprintf(key, sizeof key, "k%d", turn);
        snprintf(value, sizeof value, "v%d", turn);
        CHECK_EQ_U64(nx_wal_put(wal, 2, key, strlen(key), value, strlen(value)), 0);
        if (turn == 3)
            CHECK_EQ_U64(nx_wal_del(wal, 1, "gone", 4), 0);
        CHECK(nx_wal_pending(wal) > 0);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
        CHECK_EQ_U64(nx_wal_pending(wal), 0);
        CHECK(nx_wal_written(wal) > nx_wal_durable(wal));
        CHECK_EQ_U64(nx_wal_flush(wal), 0);
        CHECK_EQ_U64(nx_wal_durable(wal), nx_wal_written(wal));
    }
    /*  The flusher: asked without waiting, it signals its fd when done.   */
    s_event(wal, 990, 10);
    CHECK_EQ_U64(nx_wal_write(wal), 0);
    CHECK(nx_wal_flush_fd(wal) >= 0);
    CHECK_EQ_U64(nx_wal_flush_ack(wal), 0); /* the rounds before */
    CHECK_EQ_U64(nx_wal_flush_async(wal), 0);
    struct pollfd pfd = {nx_wal_flush_fd(wal), POLLIN, 0};
    for (int i = 0; i < 500 && nx_wal_durable(wal) < nx_wal_written(wal); i++) {
        poll(&pfd, 1, 10);
        CHECK_EQ_U64(nx_wal_flush_ack(wal), 0);
    }
    CHECK_EQ_U64(nx_wal_durable(wal), nx_wal_written(wal));
    /*  Flushed on the calling thread when no round runs.                  */
    s_event(wal, 991, 10);
    CHECK_EQ_U64(nx_wal_write(wal), 0);
    CHECK_EQ_U64(nx_wal_flush_now(wal), 0);
    CHECK_EQ_U64(nx_wal_durable(wal), nx_wal_written(wal));
    /*  A discarded turn leaves nothing.                                   */
    s_event(wal, 999, 10);
    nx_wal_discard(wal);
    CHECK_EQ_U64(nx_wal_write(wal), 0);
    nx_wal_stats_t st;
    nx_wal_stats(wal, &st);
    CHECK_EQ_U64(st.frames, 7);
    CHECK_EQ_U64(st.flushes, 7);
    CHECK_EQ_U64(st.segments, 1);
    uint64_t written = nx_wal_written(wal);
    uint32_t head = nx_wal_head_crc(wal);
    nx_wal_destroy(&wal);
    CHECK(wal == NULL);

    static s_read_t r;
    CHECK_EQ_U64(s_read_all(0, 0, &r), 7);
    CHECK_EQ_U64(r.n_seqs, 52);
    for (int i = 0; i < 50; i++)
        CHECK_EQ_U64(r.seqs[i], (uint64_t)i + 1);
    CHECK_EQ_U64(r.seqs[50], 990);
    CHECK_EQ_U64(r.seqs[51], 991);
    CHECK_EQ_U64(r.n_keys, 6);
    CHECK_EQ_STR(r.keys[0], "2:k0=v0");
    CHECK_EQ_STR(r.keys[3], "2:k3=v3");
    CHECK_EQ_STR(r.keys[4], "1:gone=");
    CHECK_EQ_U64(r.kinds[4], NX_WAL_DEL);
    CHECK_EQ_STR(r.keys[5], "2:k4=v4");
    CHECK_EQ_U64(r.end, written);
    CHECK_EQ_U64(r.end_crc, head);
    CHECK(!r.torn);
    /*  The chain: from the middle, the wrong prev ends the log at once.   */
    CHECK_EQ_U64(s_read_all(0, 12345, &r), 0);
    CHECK(!r.torn);
    s_clear_dir();
}

/*  What the end of the log looks like: damage in the last frame is torn,
    a cut file is torn, zeros are clean; earlier frames stay readable.    */
static void s_test_torn(void)
{
    nx_wal_t *wal = s_open(false);
    if (!wal)
        return;
    s_start(wal, 0, 0);
    uint64_t ends[4];
    for (int turn = 0; turn < 4; turn++) {
        for (int i = 0; i < 5; i++)
            s_event(wal, (uint64_t)turn * 5 + (uint64_t)i + 1, 50);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
        ends[turn] = nx_wal_written(wal);
    }
    CHECK_EQ_U64(nx_wal_flush(wal), 0);
    nx_wal_destroy(&wal);
    static s_read_t r;
    CHECK_EQ_U64(s_read_all(0, 0, &r), 4);
    CHECK(!r.torn);

    /*  A byte flipped in the body of the last frame.                      */
    uint8_t b;
    uint64_t at = ends[2] + 40;
    s_peek(at, &b, 1);
    b ^= 0x40;
    s_poke(at, &b, 1);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 3);
    CHECK(r.torn);
    CHECK_EQ_U64(r.end, ends[2]);
    CHECK_EQ_U64(r.n_seqs, 15);
    b ^= 0x40;
    s_poke(at, &b, 1);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 4);

    /*  A byte flipped in a header: the crc covers it.                      */
    s_peek(ends[1] + 20, &b, 1);
    b ^= 1;
    s_poke(ends[1] + 20, &b, 1);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 2);
    CHECK(r.torn);
    b ^= 1;
    s_poke(ends[1] + 20, &b, 1);

    /*  Garbage where the log ends: torn. Zeros: clean.                    */
    uint8_t junk[64];
    for (int i = 0; i < 64; i++)
        junk[i] = (uint8_t)(i * 37 + 1);
    s_poke(ends[3], junk, sizeof junk);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 4);
    CHECK(r.torn);
    uint8_t zeros[64] = {0};
    s_poke(ends[3], zeros, sizeof zeros);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 4);
    CHECK(!r.torn);

    /*  The file cut inside the last frame: torn; cut at a frame's end: clean. */
    char path[256];
    s_path(path, sizeof path, 0);
    CHECK_EQ_U64(truncate(path, (off_t)(ends[3] - 7)), 0);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 3);
    CHECK(r.torn);
    CHECK_EQ_U64(truncate(path, (off_t)ends[2] + 10), 0);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 3);
    CHECK(r.torn);
    CHECK_EQ_U64(truncate(path, (off_t)ends[2]), 0);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 3);
    CHECK(!r.torn);

    /*  A log that a crash cut after its first turn and that was written
        on from there: the frames of the old tail never continue the new
        chain, not even one whose position and length happen to match.    */
    s_clear_dir();
    wal = s_open(false);
    if (!wal)
        return;
    s_start(wal, 0, 0);
    uint64_t e[3];
    for (int turn = 0; turn < 3; turn++) {
        for (int i = 0; i < 5; i++)
            s_event(wal, (uint64_t)turn * 5 + (uint64_t)i + 1, 50);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
        e[turn] = nx_wal_written(wal);
    }
    nx_wal_destroy(&wal);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 3);
    nx_wal_reader_t *rd = nx_wal_reader_new(s_dir, SEG);
    nx_wal_frame_t f;
    bool torn;
    CHECK_EQ_U64(nx_wal_reader_read(rd, 0, 0, true, &f, &torn), 1);
    uint32_t crc0 = f.crc;
    nx_wal_reader_destroy(&rd);
    wal = s_open(false);
    s_start(wal, e[0], crc0);
    /*  Same sizes as the old second turn, other content.                   */
    for (int i = 0; i < 5; i++)
        s_event(wal, 100 + (uint64_t)i, 50);
    CHECK_EQ_U64(nx_wal_write(wal), 0);
    CHECK_EQ_U64(nx_wal_written(wal), e[1]);
    nx_wal_destroy(&wal);
    CHECK_EQ_U64(s_read_all(0, 0, &r), 2);
    CHECK(!r.torn);
    CHECK_EQ_U64(r.end, e[1]);
    CHECK_EQ_U64(r.seqs[5], 100);
    s_clear_dir();
}

/*  Segments: pads, splits with MORE, a turn larger than a segment, and
    recycling with stale frames left in reused files.                      */
static void s_test_segments(void)
{
    nx_wal_t *wal = s_open(false);
    if (!wal)
        return;
    s_start(wal, 0, 0);
    uint64_t seq = 1;
    /*  ~3.5 segments of turns of 1..60 events of 1 KiB.                   */
    int turns = 0;
    while (nx_wal_written(wal) < 3 * SEG + SEG / 2) {
        int n = 1 + (turns * 7) % 60;
        for (int i = 0; i < n; i++)
            s_event(wal, seq++, 1024);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
        turns++;
    }
    /*  One turn of 1.5 segments.                                          */
    for (int i = 0; i < 1500; i++)
        s_event(wal, seq++, 1024);
    CHECK_EQ_U64(nx_wal_write(wal), 0);
    CHECK_EQ_U64(nx_wal_flush(wal), 0);
    uint64_t written = nx_wal_written(wal);
    CHECK(written > 5 * SEG);
    static s_read_t r;
    int frames = s_read_all(0, 0, &r);
    CHECK(frames > turns);
    CHECK_EQ_U64(r.n_seqs, seq - 1);
    for (int i = 0; i < r.n_seqs; i++)
        if (r.seqs[i] != (uint64_t)i + 1) {
            CHECK_EQ_U64(r.seqs[i], (uint64_t)i + 1);
            break;
        }
    CHECK(r.more >= 2);
    CHECK_EQ_U64(r.end, written);
    CHECK(!r.torn);
    CHECK_EQ_U64(s_count_files(), 6);

    /*  Recycle what ends below segment 4: two become spares, the rest go. */
    nx_wal_recycle(wal, 4 * SEG);
    CHECK_EQ_U64(s_count_files(), 4);
    char path[256];
    s_path(path, sizeof path, 6 * SEG);
    CHECK(access(path, F_OK) == 0);
    s_path(path, sizeof path, 7 * SEG);
    CHECK(access(path, F_OK) == 0);
    s_path(path, sizeof path, 0);
    CHECK(access(path, F_OK) != 0);
    /*  Write on into the recycled files: their old frames never show.     */
    uint64_t from = nx_wal_written(wal);
    uint32_t prev = nx_wal_head_crc(wal);
    uint64_t seq2 = seq;
    while (nx_wal_written(wal) < 7 * SEG + SEG / 4) {
        for (int i = 0; i < 50; i++)
            s_event(wal, seq2++, 1024);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
    }
    CHECK_EQ_U64(nx_wal_flush(wal), 0);
    static s_read_t r2;
    s_read_all(from, prev, &r2);
    CHECK_EQ_U64(r2.n_seqs, seq2 - seq);
    CHECK_EQ_U64(r2.seqs[0], seq);
    CHECK_EQ_U64(r2.end, nx_wal_written(wal));
    CHECK(!r2.torn);
    /*  prepare makes the next one ready.                                  */
    CHECK_EQ_U64(nx_wal_prepare(wal), 0);
    s_path(path, sizeof path, 8 * SEG);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == SEG);
    nx_wal_destroy(&wal);
    s_clear_dir();

    /*  A start past old files recycles them; a record too large is refused. */
    wal = s_open(true);
    s_start(wal, 0, 0);
    CHECK(nx_wal_add(wal, NX_WAL_EVENT, SEG) == NULL);
    CHECK(nx_wal_add(wal, NX_WAL_EVENT, SEG - 100) != NULL);
    nx_wal_discard(wal);
    s_path(path, sizeof path, 0);
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == SEG && st.st_blocks * 512 >= SEG);
    nx_wal_destroy(&wal);
    wal = s_open(true);
    s_start(wal, 3 * SEG + 100, 7);
    CHECK_EQ_U64(s_count_files(), 2);
    s_path(path, sizeof path, 3 * SEG);
    CHECK(access(path, F_OK) == 0);
    s_path(path, sizeof path, 4 * SEG);
    CHECK(access(path, F_OK) == 0);
    nx_wal_destroy(&wal);
    s_clear_dir();
}

static void s_test_records(void)
{
    uint8_t body[64];
    size_t pos = 0;
    int type;
    const uint8_t *data;
    size_t dlen;
    /*  A length that runs past the body, and a zero length.               */
    memset(body, 0, sizeof body);
    body[3] = 200;
    CHECK_EQ_U64(nx_wal_record_next(body, 10, &pos, &type, &data, &dlen), (uint64_t)-1);
    body[3] = 0;
    pos = 0;
    CHECK_EQ_U64(nx_wal_record_next(body, 10, &pos, &type, &data, &dlen), (uint64_t)-1);
    pos = 0;
    CHECK_EQ_U64(nx_wal_record_next(body, 3, &pos, &type, &data, &dlen), (uint64_t)-1);
    pos = 10;
    CHECK_EQ_U64(nx_wal_record_next(body, 10, &pos, &type, &data, &dlen), 0);
    int db;
    const uint8_t *key, *value;
    size_t klen, vlen;
    uint8_t kv[8] = {1, 0, 9, 'a'};
    CHECK_EQ_U64(nx_wal_record_kv(kv, 4, &db, &key, &klen, &value, &vlen), (uint64_t)-1);
    kv[2] = 0;
    CHECK_EQ_U64(nx_wal_record_kv(kv, 4, &db, &key, &klen, &value, &vlen), (uint64_t)-1);
    kv[2] = 1;
    CHECK_EQ_U64(nx_wal_record_kv(kv, 6, &db, &key, &klen, &value, &vlen), 0);
    CHECK_EQ_U64(klen, 1);
    CHECK_EQ_U64(vlen, 2);
    char boot[NX_WAL_BOOT_MAX];
    CHECK_EQ_U64(nx_wal_boot_id(boot), 0);
    CHECK(strlen(boot) > 10);
    char err[128];
    nx_wal_config_t cfg = {s_dir, 1000, false};
    CHECK(nx_wal_new(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "segment size") != NULL);
}

/*  A standby's copy: every frame of a log (turns that pad over and span
    segments included) copied into another log's directory gives the same
    bytes at the same positions; written moves at turns' ends only; a frame
    that does not continue the copy is refused and changes nothing; a half
    turn is forgotten by rewind; a hold keeps segments from recycling.     */
static void s_test_copy(void)
{
    s_clear_dir();
    char copy_dir[80];
    snprintf(copy_dir, sizeof copy_dir, "%s/copy", s_dir);
    CHECK(mkdir(copy_dir, 0700) == 0);
    nx_wal_t *wal = s_open(true);
    char err[256] = "";
    nx_wal_config_t ccfg = {copy_dir, SEG, true};
    nx_wal_t *cp = nx_wal_new(&ccfg, err, sizeof err);
    CHECK(wal && cp);
    if (!wal || !cp)
        return;
    s_start(wal, 0, 0);
    CHECK_EQ_U64(nx_wal_start(cp, 0, 0, err, sizeof err), 0);
    uint64_t seq = 1;
    /*  Small turns, turns of ~300 KiB (they pad over segment ends), one
        turn of 2.5 MiB (MORE frames over three segments).                 */
    size_t sizes[] = {100, 300000, 50, 300000, 300000, 2600000, 10, 300000, 300000};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        size_t left = sizes[t];
        while (left) {
            size_t n = left > 6000 ? 6000 : left;
            s_event(wal, seq++, n);
            left -= n;
        }
        CHECK_EQ_U64(nx_wal_write(wal), 0);
    }
    CHECK_EQ_U64(nx_wal_flush(wal), 0);
    uint64_t end = nx_wal_written(wal);
    CHECK(end > 3 * SEG);

    nx_wal_reader_t *rd = nx_wal_reader_new(s_dir, SEG);
    nx_wal_frame_t f;
    uint64_t lsn = 0;
    uint32_t prev = 0;
    int frames = 0, mores = 0, pads = 0;
    while (rd && lsn < end && nx_wal_reader_read(rd, lsn, prev, true, &f, NULL) == 1) {
        /*  The frame as the primary sends it: header and body.            */
        size_t len = NX_WAL_FRAME_HEAD + f.len;
        const uint8_t *bytes = f.body - NX_WAL_FRAME_HEAD;
        nx_wal_frame_t g;
        CHECK_EQ_U64(nx_wal_frame_parse(bytes, len, lsn, prev, SEG, &g), len);
        CHECK_EQ_U64(g.next, f.next);
        CHECK(nx_wal_frame_parse(bytes, len - 1, lsn, prev, SEG, &g) < 0);
        CHECK(nx_wal_frame_parse(bytes, len, lsn, prev + 1, SEG, &g) < 0);
        uint64_t before = nx_wal_written(cp);
        CHECK_EQ_U64(nx_wal_copy_frame(cp, bytes, len, NULL), len);
        if (f.flags & NX_WAL_F_MORE) {
            mores++;
            CHECK_EQ_U64(nx_wal_written(cp), before);
        } else
            CHECK_EQ_U64(nx_wal_written(cp), f.next);
        pads += (f.flags & NX_WAL_F_PAD) != 0;
        /*  The same frame again does not continue the copy.               */
        errno = 0;
        CHECK(nx_wal_copy_frame(cp, bytes, len, NULL) == -1 && errno == EINVAL);
        lsn = f.next;
        prev = f.crc;
        frames++;
    }
    CHECK_EQ_U64(lsn, end);
    CHECK(mores >= 2);
    CHECK(pads >= 2);
    CHECK_EQ_U64(nx_wal_written(cp), end);
    CHECK_EQ_U64(nx_wal_turn_crc(cp), nx_wal_turn_crc(wal));
    CHECK_EQ_U64(nx_wal_flush(cp), 0);
    CHECK_EQ_U64(nx_wal_durable(cp), end);
    /*  Byte for byte, segment by segment, up to the end.                  */
    for (uint64_t base = 0; base < end; base += SEG) {
        char a[256], b[256];
        s_path(a, sizeof a, base);
        snprintf(b, sizeof b, "%s/%016llx.log", copy_dir, (unsigned long long)base);
        FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
        CHECK(fa && fb);
        static uint8_t ba[SEG], bb[SEG];
        size_t n = end - base < SEG ? (size_t)(end - base) : SEG;
        if (fa && fb) {
            CHECK_EQ_U64(fread(ba, 1, n, fa), n);
            CHECK_EQ_U64(fread(bb, 1, n, fb), n);
            CHECK(memcmp(ba, bb, n) == 0);
        }
        if (fa)
            fclose(fa);
        if (fb)
            fclose(fb);
    }
    /*  A turn whose last frame never comes: rewind forgets its first.    */
    for (int i = 0; i < 180; i++)
        s_event(wal, seq++, 6000);
    CHECK_EQ_U64(nx_wal_write(wal), 0);
    CHECK(nx_wal_reader_read(rd, lsn, prev, true, &f, NULL) == 1);
    if (f.flags & NX_WAL_F_MORE) {
        CHECK_EQ_U64(
            nx_wal_copy_frame(cp, f.body - NX_WAL_FRAME_HEAD, NX_WAL_FRAME_HEAD + f.len, NULL),
            NX_WAL_FRAME_HEAD + f.len);
        CHECK_EQ_U64(nx_wal_written(cp), end);
        nx_wal_copy_rewind(cp);
        CHECK_EQ_U64(
            nx_wal_copy_frame(cp, f.body - NX_WAL_FRAME_HEAD, NX_WAL_FRAME_HEAD + f.len, NULL),
            NX_WAL_FRAME_HEAD + f.len);
    } else
        CHECK(!"the last turn should span two segments");
    nx_wal_reader_destroy(&rd);

    /*  A hold keeps what a standby still needs; without it, recycled.     */
    int files = s_count_files();
    nx_wal_hold(wal, 0);
    nx_wal_recycle(wal, nx_wal_written(wal));
    CHECK_EQ_U64(s_count_files(), files);
    nx_wal_hold(wal, UINT64_MAX);
    nx_wal_recycle(wal, nx_wal_written(wal));
    CHECK(s_count_files() < files);
    nx_wal_destroy(&wal);
    nx_wal_destroy(&cp);
    DIR *d = opendir(copy_dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", copy_dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    CHECK(rmdir(copy_dir) == 0);
    s_clear_dir();
}

int main(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/nexus-wal-test.XXXXXX");
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        return 1;
    }
    s_test_round_trip();
    s_test_torn();
    s_test_segments();
    s_test_records();
    s_test_copy();
    s_clear_dir();
    CHECK(rmdir(s_dir) == 0);
    NX_TEST_DONE();
}
