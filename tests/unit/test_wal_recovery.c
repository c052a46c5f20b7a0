/*  =========================================================================
    test_wal_recovery - what a restart does with a damaged write-ahead log:
    the real log (nx_wal), the real store (LMDB, nx_store) and the real
    recovery (nx_checkpointer_recover), in-process, 240 damaged copies.

    The base: a store and its log written as the broker writes them: turns
    of events and claim records, flushed (acknowledged); a checkpoint in
    the middle (recovery run once, as at a restart); more acknowledged
    turns; then a tail of turns written but not flushed (events nobody
    waited for). The files are left as a kill -9 leaves them.

    Each case copies that directory, damages the log once at a random
    offset (the file cut there, bits flipped, garbage or zeros over a
    stretch) in the tail past the last flush, below the checkpoint, or past
    the end, and recovers it, then checks that
      - every acknowledged event is stored exactly once, at its seq, byte
        for byte, and every acknowledged claim record is there;
      - nothing is stored that was not written (a damaged frame never
        passes), seqs strictly increasing, tail events only whole turns'
        and in order (a prefix of the tail);
      - damage in the tail that hides written frames is reported torn
        (the broker then skips the seqs that may have been seen);
      - the log goes on: a turn written after recovery is recovered by the
        next one, and no frame of the old tail comes back after it;
      - a second recovery changes nothing.
    The broker-level behaviour (new seqs above the skip, tokens, a real
    kill -9) is tests/integration/test_wal_damage.py's.
    =========================================================================
*/

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nx_checkpointer.h"
#include "nx_codec.h"
#include "nx_store.h"
#include "nx_test.h"
#include "nx_wal.h"

#define SEG      (1u << 20)
#define CASES    240
#define ACKED    400 /* acknowledged events                            */
#define CLAIMS   40  /* acknowledged claim records                     */
#define TAIL     300 /* events written, not flushed                    */
#define PER_TURN 10

static char s_root[64];
static uint64_t s_durable, s_written, s_checkpoint;
static uint64_t s_tail_first; /* first seq of the tail                  */

/*  The payload of event seq: deterministic, 20..219 bytes.               */
static size_t s_payload(uint64_t seq, uint8_t *buf)
{
    size_t n = 20 + (seq * 7919) % 200;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(seq * 31 + i * 17);
    memcpy(buf, &seq, sizeof seq);
    return n;
}

static void s_event(nx_wal_t *wal, uint64_t seq)
{
    uint8_t p[256];
    size_t n = s_payload(seq, p);
    size_t len = nx_event_msg_size(5, 2, n);
    uint8_t *w = nx_wal_add(wal, NX_WAL_EVENT, len);
    CHECK(w != NULL);
    if (w)
        nx_event_msg_encode(w, "a.b.c", 5, seq, 1000000 + seq, "sx", 2, p, n);
}

static void s_claim(nx_wal_t *wal, int k)
{
    char key[32], value[64];
    snprintf(key, sizeof key, "work/%d", k);
    snprintf(value, sizeof value, "claim-record-%d-token-%d", k, k + 1);
    CHECK_EQ_U64(nx_wal_put(wal, NX_DB_CLAIMS, key, strlen(key), value, strlen(value)), 0);
}

static nx_store_t *s_open_store(const char *dir)
{
    nx_store_config_t cfg = {.path = dir, .sync = false, .map_size = 16 << 20,
                             .map_max = 64 << 20, .trim_batch = 1000};
    nexus_err_t err;
    char buf[256] = "";
    nx_store_t *store = nx_store_new(&cfg, &err, buf, sizeof buf);
    if (!store)
        fprintf(stderr, "nx_store_new: %s\n", buf);
    return store;
}

static int s_recover(const char *dir, nx_recovery_t *rec)
{
    char wal_dir[256], err[256] = "";
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", dir);
    nx_store_t *store = s_open_store(dir);
    if (!store)
        return -1;
    int rc = nx_checkpointer_recover(store, wal_dir, SEG, rec, err, sizeof err);
    if (rc)
        fprintf(stderr, "recover %s: %s\n", dir, err);
    nx_store_destroy(&store);
    return rc;
}

static nx_wal_t *s_open_wal(const char *dir, uint64_t lsn, uint32_t crc)
{
    char wal_dir[256], err[256] = "";
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", dir);
    nx_wal_config_t cfg = {wal_dir, SEG, false};
    nx_wal_t *wal = nx_wal_new(&cfg, err, sizeof err);
    if (wal && nx_wal_start(wal, lsn, crc, err, sizeof err)) {
        fprintf(stderr, "nx_wal_start: %s\n", err);
        nx_wal_destroy(&wal);
    }
    return wal;
}

/*  The base directory, as a kill -9 leaves it.                            */
static void s_build_base(const char *dir)
{
    mkdir(dir, 0700);
    nx_recovery_t rec;
    CHECK_EQ_U64(s_recover(dir, &rec), 0); /* creates the store, no log yet */
    nx_wal_t *wal = s_open_wal(dir, rec.start, rec.end_crc);
    if (!wal)
        return;
    uint64_t seq = 1;
    int k = 0;
    /*  First half of the acknowledged turns, then a checkpoint (as a
        restart's recovery makes one), then the rest.                      */
    for (int half = 0; half < 2; half++) {
        for (int t = 0; t < ACKED / PER_TURN / 2; t++) {
            for (int i = 0; i < PER_TURN; i++)
                s_event(wal, seq++);
            if (k < CLAIMS && t % 5 == 0)
                s_claim(wal, k++);
            CHECK_EQ_U64(nx_wal_write(wal), 0);
            CHECK_EQ_U64(nx_wal_flush(wal), 0);
        }
        if (half == 0) {
            nx_wal_destroy(&wal);
            CHECK_EQ_U64(s_recover(dir, &rec), 0);
            s_checkpoint = rec.start;
            wal = s_open_wal(dir, rec.start, rec.end_crc);
            if (!wal)
                return;
        }
    }
    while (k < CLAIMS) {
        s_claim(wal, k++);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
    }
    CHECK_EQ_U64(nx_wal_flush(wal), 0);
    s_durable = nx_wal_durable(wal);
    s_tail_first = seq;
    for (int t = 0; t < TAIL / PER_TURN; t++) {
        for (int i = 0; i < PER_TURN; i++)
            s_event(wal, seq++);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
    }
    s_written = nx_wal_written(wal);
    nx_wal_destroy(&wal); /* no flush: the tail was never acknowledged */
}

static void s_copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char buf[65536];
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        CHECK(write(out, buf, (size_t)n) == n);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
}

/*  Copies dir's data.mdb and wal/ (what a restart reads) to copy.        */
static void s_copy_dir(const char *dir, const char *copy)
{
    char a[512], b[512];
    mkdir(copy, 0700);
    snprintf(a, sizeof a, "%s/data.mdb", dir);
    snprintf(b, sizeof b, "%s/data.mdb", copy);
    s_copy_file(a, b);
    snprintf(b, sizeof b, "%s/wal", copy);
    mkdir(b, 0700);
    snprintf(a, sizeof a, "%s/wal", dir);
    DIR *d = opendir(a);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char f1[1024], f2[1024];
        snprintf(f1, sizeof f1, "%s/%s", a, e->d_name);
        snprintf(f2, sizeof f2, "%s/%s", b, e->d_name);
        s_copy_file(f1, f2);
    }
    if (d)
        closedir(d);
}

/*  Removes dir, its files and those of its directories (wal, and the
    copy of a damaged log: wal.damaged-LSN).                               */
static void s_rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char f[700];
        snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
        if (unlink(f) != 0) {
            DIR *sd = opendir(f);
            struct dirent *se;
            while (sd && (se = readdir(sd))) {
                char g[1000];
                snprintf(g, sizeof g, "%s/%s", f, se->d_name);
                if (se->d_name[0] != '.')
                    unlink(g);
            }
            if (sd)
                closedir(sd);
            rmdir(f);
        }
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/*  The same bytes in two files.                                           */
static bool s_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    int ca = 0, cb = 0;
    while (same && (ca = fgetc(fa)) == (cb = fgetc(fb)) && ca != EOF)
        ;
    same = same && ca == cb;
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/*  One damage at log position lsn. Returns whether it hides (part of)
    a written frame at or past the durable end.                            */
static const char *s_damage(const char *dir, unsigned *rng, int kind, uint64_t lsn)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wal/%016llx.log", dir, (unsigned long long)(lsn - lsn % SEG));
    off_t off = (off_t)(lsn % SEG);
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return "no such segment";
    static const char *names[] = {"cut", "flip", "garbage", "zeros"};
    if (kind == 0)
        CHECK(ftruncate(fd, off) == 0);
    else if (kind == 1) {
        int n = 1 + (int)(rand_r(rng) % 8);
        for (int i = 0; i < n; i++) {
            uint8_t b = 0;
            off_t at = off + (off_t)(rand_r(rng) % 64);
            if (pread(fd, &b, 1, at) == 1) {
                b ^= (uint8_t)(1u << (rand_r(rng) % 8));
                CHECK(pwrite(fd, &b, 1, at) == 1);
            }
        }
    } else {
        size_t n = 1 + rand_r(rng) % 4096;
        uint8_t buf[4096];
        for (size_t i = 0; i < n; i++)
            buf[i] = kind == 2 ? (uint8_t)rand_r(rng) : 0;
        CHECK(pwrite(fd, buf, n, off) == (ssize_t)n);
    }
    close(fd);
    return names[kind];
}

typedef struct {
    uint64_t events, tail, bad, dup, out_of_order;
    uint64_t acked_missing, claims_missing;
    uint64_t last_seq;
} s_found_t;

static void s_check_store(const char *dir, s_found_t *f)
{
    memset(f, 0, sizeof *f);
    nx_store_t *store = s_open_store(dir);
    if (!store)
        return;
    nx_store_reader_t *rd = nx_store_reader_new(store);
    uint64_t seq, prev = 0, expect_tail = s_tail_first;
    nx_record_t rec;
    static uint8_t seen[ACKED + TAIL + 2 * PER_TURN + 8];
    memset(seen, 0, sizeof seen);
    while (rd && nx_store_reader_next(rd, &seq, &rec) == 1) {
        f->events++;
        uint8_t p[256];
        size_t n = seq < sizeof seen ? s_payload(seq, p) : 0;
        if (!n || rec.payload_len != n || memcmp(rec.payload, p, n) != 0 ||
            rec.ts != 1000000 + seq || rec.topic_len != 5 || memcmp(rec.topic, "a.b.c", 5))
            f->bad++;
        else if (seen[seq]++)
            f->dup++;
        if (seq <= prev)
            f->out_of_order++;
        prev = seq;
        if (seq >= s_tail_first) {
            if (seq != expect_tail)
                f->out_of_order++; /* the tail kept must be a prefix */
            expect_tail = seq + 1;
            f->tail++;
        }
    }
    nx_store_reader_destroy(&rd);
    for (uint64_t s = 1; s <= ACKED; s++)
        f->acked_missing += !seen[s];
    for (int k = 0; k < CLAIMS; k++) {
        char key[32], value[64];
        snprintf(key, sizeof key, "work/%d", k);
        snprintf(value, sizeof value, "claim-record-%d-token-%d", k, k + 1);
        void *v = NULL;
        size_t len = 0;
        if (nx_store_get(store, NX_DB_CLAIMS, key, strlen(key), &v, &len) != NEXUS_OK ||
            len != strlen(value) || memcmp(v, value, len) != 0)
            f->claims_missing++;
        free(v);
    }
    f->last_seq = nx_store_last_seq(store);
    nx_store_destroy(&store);
}

static void s_run_case(int i, const char *base)
{
    unsigned rng = 0x5eed0000u + (unsigned)i;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/case%d", s_root, i);
    s_copy_dir(base, dir);
    int kind = (int)(rand_r(&rng) % 4);
    unsigned where = rand_r(&rng) % 100;
    uint64_t lsn;
    bool in_tail = false;
    if (where < 10) {
        lsn = rand_r(&rng) % s_checkpoint; /* below the checkpoint */
        if (kind == 0)
            kind = 1; /* a cut there would cut everything after it */
    } else if (where < 20)
        lsn = s_written + 64 + rand_r(&rng) % 8192; /* past the end */
    else {
        lsn = s_durable + rand_r(&rng) % (s_written - s_durable + 64);
        in_tail = lsn < s_written;
    }
    const char *what = s_damage(dir, &rng, kind, lsn);
    nx_recovery_t rec;
    int rc = s_recover(dir, &rec);
    CHECK_EQ_U64(rc, 0);
    s_found_t f;
    s_check_store(dir, &f);
    bool ok = rc == 0 && f.bad == 0 && f.dup == 0 && f.out_of_order == 0 &&
              f.acked_missing == 0 && f.claims_missing == 0;
    /*  A damage that hides written tail frames other than by zeroing a
        frame boundary is torn; the tail kept stops before it.            */
    uint64_t lost = TAIL - f.tail;
    if (in_tail && lost && kind != 3 && !rec.torn)
        ok = false;
    if (!in_tail && f.tail != TAIL)
        ok = false; /* damage elsewhere hides nothing */
    /*  The log goes on: one more turn, recovered again; nothing of the
        old tail comes back after it.                                      */
    nx_wal_t *wal = ok ? s_open_wal(dir, rec.start, rec.end_crc) : NULL;
    uint64_t next = f.last_seq + 1;
    if (wal) {
        /*  The broker hands out next.. again (no skip on a clean end);
            their bytes are the deterministic ones, so a frame of the old
            tail coming back would show as a duplicate.                     */
        for (int k = 0; k < PER_TURN; k++)
            s_event(wal, next + (uint64_t)k);
        CHECK_EQ_U64(nx_wal_write(wal), 0);
        CHECK_EQ_U64(nx_wal_flush(wal), 0);
        nx_wal_destroy(&wal);
        nx_recovery_t rec2;
        CHECK_EQ_U64(s_recover(dir, &rec2), 0);
        s_found_t g;
        s_check_store(dir, &g);
        if (g.events != f.events + PER_TURN || g.bad || g.dup || g.out_of_order ||
            g.acked_missing || g.claims_missing || rec2.torn)
            ok = false;
        /*  And a third recovery: nothing more.                            */
        nx_recovery_t rec3;
        CHECK_EQ_U64(s_recover(dir, &rec3), 0);
        if (rec3.frames || rec3.events)
            ok = false;
    } else
        ok = false;
    if (!ok)
        fprintf(stderr,
                "case %d: %s at %llu (durable %llu, written %llu, checkpoint %llu): torn %d, "
                "events %llu, tail %llu, bad %llu, dup %llu, order %llu, acked missing %llu, "
                "claims missing %llu\n",
                i, what, (unsigned long long)lsn, (unsigned long long)s_durable,
                (unsigned long long)s_written, (unsigned long long)s_checkpoint, rec.torn,
                (unsigned long long)f.events, (unsigned long long)f.tail,
                (unsigned long long)f.bad, (unsigned long long)f.dup,
                (unsigned long long)f.out_of_order, (unsigned long long)f.acked_missing,
                (unsigned long long)f.claims_missing);
    CHECK(ok);
    s_rm_dir(dir);
}

/*  Damage in the middle of the acknowledged log (a frame's body, its
    header intact: the disk, not a crash): recovery cannot keep what
    follows (the chain is broken), but it must not pass it off as a torn
    end: it says how many frames that check follow the damage, and keeps
    a copy of the segments before the log goes on over them.              */
static void s_test_damaged_middle(const char *base)
{
    char dir[256], wal_dir[300];
    snprintf(dir, sizeof dir, "%s/middle", s_root);
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", dir);
    s_copy_dir(base, dir);
    /*  The fifth frame above the checkpoint.                              */
    nx_wal_reader_t *rd = nx_wal_reader_new(wal_dir, SEG);
    nx_recovery_t rec;
    uint64_t at = s_checkpoint, lsn = 0;
    uint32_t prev = 0;
    {
        /*  The chain's head at the checkpoint is in the store.            */
        nx_store_t *store = s_open_store(dir);
        void *v = NULL;
        size_t len = 0;
        if (store && nx_store_get(store, NX_DB_META, NX_META_WAL_CRC, strlen(NX_META_WAL_CRC), &v,
                                  &len) == NEXUS_OK &&
            len == 8)
            prev = (uint32_t)nx_get_u64(v);
        free(v);
        nx_store_destroy(&store);
    }
    nx_wal_frame_t fr;
    for (int k = 0; k < 5 && rd; k++) {
        CHECK_EQ_U64(nx_wal_reader_read(rd, at, prev, true, &fr, NULL), 1);
        lsn = fr.lsn;
        at = fr.next;
        prev = fr.crc;
    }
    nx_wal_reader_destroy(&rd);
    CHECK(lsn > s_checkpoint && lsn < s_durable);
    char seg_path[512], orig[512];
    snprintf(seg_path, sizeof seg_path, "%s/%016llx.log", wal_dir,
             (unsigned long long)(lsn - lsn % SEG));
    snprintf(orig, sizeof orig, "%s/wal/%016llx.log", base, (unsigned long long)(lsn - lsn % SEG));
    int fd = open(seg_path, O_RDWR);
    uint8_t b = 0;
    off_t off = (off_t)(lsn % SEG) + NX_WAL_FRAME_HEAD + 3;
    CHECK(fd >= 0 && pread(fd, &b, 1, off) == 1);
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, off) == 1);
    close(fd);
    /*  A half copy an earlier start left (it was stopped while copying):
        made again, never taken for the copy.                               */
    char half[700], junk[800];
    snprintf(half, sizeof half, "%s.damaged-%016llx.tmp", wal_dir, (unsigned long long)lsn);
    CHECK(mkdir(half, 0700) == 0);
    snprintf(junk, sizeof junk, "%s/%016llx.log", half, (unsigned long long)(lsn - lsn % SEG));
    FILE *jf = fopen(junk, "w");
    CHECK(jf && fputs("half", jf) >= 0);
    if (jf)
        fclose(jf);
    CHECK_EQ_U64(s_recover(dir, &rec), 0);
    CHECK(access(half, F_OK) != 0); /* renamed into place */
    CHECK(rec.torn);
    CHECK_EQ_U64(rec.damaged_at, lsn);
    CHECK(rec.damaged_frames > 10);
    CHECK_EQ_U64(rec.damaged_from, at);
    CHECK_EQ_U64(rec.damaged_to, s_written);
    /*  The copy holds the damaged segment as it was found.               */
    char kept[700];
    snprintf(kept, sizeof kept, "%s/%016llx.log", rec.kept, (unsigned long long)(lsn - lsn % SEG));
    CHECK(strstr(rec.kept, "/wal.damaged-") != NULL);
    CHECK(s_same_file(kept, seg_path));
    CHECK(!s_same_file(kept, orig));
    /*  What followed the damage is not stored (the loss is real).         */
    s_found_t f;
    s_check_store(dir, &f);
    CHECK(f.acked_missing > 0);
    CHECK_EQ_U64(f.bad + f.dup + f.out_of_order, 0);
    /*  A torn end alone reports no damage.                                */
    char torn[256];
    snprintf(torn, sizeof torn, "%s/tornend", s_root);
    s_copy_dir(base, torn);
    unsigned rng = 7;
    s_damage(torn, &rng, 0, s_written - 5); /* the file cut in the last frame */
    CHECK_EQ_U64(s_recover(torn, &rec), 0);
    CHECK(rec.torn);
    CHECK_EQ_U64(rec.damaged_frames, 0);
    CHECK_EQ_U64(rec.kept[0], 0);
    s_rm_dir(torn);
    s_rm_dir(dir);
}

int main(void)
{
    snprintf(s_root, sizeof s_root, "/tmp/nexus-wal-recovery.XXXXXX");
    if (!mkdtemp(s_root)) {
        perror("mkdtemp");
        return 1;
    }
    char base[256];
    snprintf(base, sizeof base, "%s/base", s_root);
    s_build_base(base);
    CHECK(s_checkpoint > 0 && s_checkpoint < s_durable && s_durable < s_written);
    /*  The undamaged base recovers whole.                                 */
    char whole[256];
    snprintf(whole, sizeof whole, "%s/whole", s_root);
    s_copy_dir(base, whole);
    nx_recovery_t rec;
    CHECK_EQ_U64(s_recover(whole, &rec), 0);
    CHECK(!rec.torn);
    s_found_t f;
    s_check_store(whole, &f);
    CHECK_EQ_U64(f.events, ACKED + TAIL);
    CHECK_EQ_U64(f.bad + f.dup + f.out_of_order + f.acked_missing + f.claims_missing, 0);
    s_rm_dir(whole);
    s_test_damaged_middle(base);
    for (int i = 0; i < CASES; i++)
        s_run_case(i, base);
    s_rm_dir(base);
    CHECK(rmdir(s_root) == 0);
    NX_TEST_DONE();
}
