/*  =========================================================================
    test_fwdlog - the forward log: what turns appended since the last reset
    is recovered after after_seq, in order and byte for byte; after a reset
    a shorter body hides the stale tail of a longer one; a rollback forgets
    records; a log from another boot, with a damaged header or a damaged
    record gives nothing; a body over max_body is refused; clear leaves
    nothing to recover. A real file in a temporary directory.
    =========================================================================
*/

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "nx_fwdlog.h"
#include "nx_test.h"

typedef struct {
    uint64_t seqs[64];
    char payloads[64][32];
    int n;
    int fail_at; /* return non-zero at this call, -1: never */
} s_seen_t;

static int s_collect(const nx_event_msg_t *ev, void *arg)
{
    s_seen_t *s = arg;
    if (s->n == s->fail_at || s->n == 64)
        return -1;
    s->seqs[s->n] = ev->seq;
    snprintf(s->payloads[s->n], 32, "%.*s", (int)ev->payload_len, (const char *)ev->payload);
    s->n++;
    return 0;
}

/*  Appends one turn of n events, seqs first..first+n-1, payload "p<seq>",
    to a log whose first record has seq log_first.                          */
static int s_turn(nx_fwdlog_t *log, uint64_t log_first, uint64_t first, int n)
{
    nx_fwdlog_mark_t mark = nx_fwdlog_mark(log);
    for (int i = 0; i < n; i++) {
        char payload[32];
        int plen = snprintf(payload, sizeof payload, "p%llu", (unsigned long long)(first + i));
        size_t size = nx_event_msg_size(4, 3, (size_t)plen);
        uint8_t *p = nx_fwdlog_add(log, size);
        if (!p)
            return -1;
        nx_event_msg_encode(p, "a.b.", 4, first + (uint64_t)i, 1000 + (uint64_t)i, "src", 3,
                            (const uint8_t *)payload, (size_t)plen);
    }
    return nx_fwdlog_write(log, log_first, mark);
}

static int64_t s_recover(const char *path, const char *boot, uint64_t after, s_seen_t *seen,
                         const char **why)
{
    char err[256];
    nx_fwdlog_t *log = nx_fwdlog_new(path, boot, 1 << 16, err, sizeof err);
    if (!log)
        return -2;
    memset(seen, 0, sizeof *seen);
    seen->fail_at = -1;
    int64_t n = nx_fwdlog_recover(log, after, s_collect, seen, why);
    nx_fwdlog_destroy(&log);
    return n;
}

static void s_flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    uint8_t b = 0;
    if (fd >= 0 && pread(fd, &b, 1, at) == 1) {
        b ^= 0x5a;
        CHECK(pwrite(fd, &b, 1, at) == 1);
    }
    if (fd >= 0)
        close(fd);
}

int main(void)
{
    char dir[] = "/tmp/nexus-fwdlog-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/forwarded.log", dir);
    char err[256];
    const char *why = "unset";
    s_seen_t seen;

    char boot[NX_FWDLOG_BOOT_MAX];
    CHECK(nx_fwdlog_boot_id(boot) == 0);
    CHECK(strlen(boot) > 0);

    /*  A new, empty file: nothing, and nothing wrong.                      */
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 0);
    CHECK(why == NULL);

    nx_fwdlog_t *log = nx_fwdlog_new(path, "boot-1", 1 << 16, err, sizeof err);
    CHECK(log != NULL);
    if (!log)
        return 1;

    /*  A turn of 10, then a turn of 3 appended: all 13.                    */
    CHECK(s_turn(log, 100, 100, 10) == 0);
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 10);
    CHECK(why == NULL);
    CHECK_EQ_U64(seen.seqs[0], 100);
    CHECK_EQ_U64(seen.seqs[9], 109);
    CHECK_EQ_STR(seen.payloads[9], "p109");
    nx_fwdlog_mark_t second = nx_fwdlog_mark(log);
    CHECK(s_turn(log, 100, 110, 3) == 0);
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 13);
    CHECK_EQ_U64(seen.seqs[12], 112);
    CHECK_EQ_STR(seen.payloads[12], "p112");

    /*  The second turn's records walk from its mark, in order.             */
    size_t pos = second.len, len = 0;
    int walked = 0;
    for (const uint8_t *r; (r = nx_fwdlog_next(log, &pos, &len)) && walked < 10; walked++) {
        nx_event_msg_t ev;
        CHECK(nx_event_msg_decode(r, len, &ev) == 0);
        CHECK_EQ_U64(ev.seq, 110 + (uint64_t)walked);
    }
    CHECK_EQ_U64(walked, 3);

    /*  A rollback forgets what was added after the mark.                   */
    nx_fwdlog_mark_t before = nx_fwdlog_mark(log);
    CHECK(nx_fwdlog_add(log, 40) != NULL);
    nx_fwdlog_rollback(log, before);
    CHECK_EQ_U64(nx_fwdlog_mark(log).len, before.len);
    CHECK_EQ_U64(nx_fwdlog_mark(log).count, 13);

    /*  After a reset (a commit), a shorter body over the longer one: only
        the new records.                                                    */
    nx_fwdlog_reset(log);
    CHECK(s_turn(log, 113, 113, 3) == 0);
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 3);
    CHECK_EQ_U64(seen.seqs[0], 113);
    CHECK_EQ_U64(seen.seqs[2], 115);

    /*  Only what the store lacks: seqs above after_seq.                    */
    CHECK_EQ_U64(s_recover(path, "boot-1", 113, &seen, &why), 2);
    CHECK_EQ_U64(seen.seqs[0], 114);
    CHECK_EQ_U64(s_recover(path, "boot-1", 115, &seen, &why), 0);
    CHECK(why == NULL);

    /*  fn's failure stops the recovery and is reported.                    */
    nx_fwdlog_t *other = nx_fwdlog_new(path, "boot-1", 1 << 16, err, sizeof err);
    memset(&seen, 0, sizeof seen);
    seen.fail_at = 1;
    CHECK(nx_fwdlog_recover(other, 0, s_collect, &seen, &why) == -1);
    CHECK_EQ_U64(seen.n, 1);
    nx_fwdlog_destroy(&other);
    CHECK(other == NULL);

    /*  Another boot: the page cache may not have reached the disk.         */
    CHECK_EQ_U64(s_recover(path, "boot-2", 0, &seen, &why), 0);
    CHECK(why && strstr(why, "reboot"));
    CHECK_EQ_U64(s_recover(path, "", 0, &seen, &why), 0);
    CHECK(why != NULL);

    /*  A body over max_body is refused as it is built.                     */
    nx_fwdlog_reset(log);
    CHECK(s_turn(log, 200, 200, 5000) == -1);

    /*  A damaged record: nothing of the log is used.                       */
    nx_fwdlog_reset(log);
    CHECK(s_turn(log, 300, 300, 4) == 0);
    s_flip_byte(path, 4096 + 4 + 4 + 1 + 7); /* the first record's seq    */
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 0);
    CHECK(why && strstr(why, "record"));
    CHECK_EQ_U64(seen.n, 0);

    /*  A damaged header.                                                   */
    nx_fwdlog_reset(log);
    CHECK(s_turn(log, 400, 400, 4) == 0);
    s_flip_byte(path, 50);
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 0);
    CHECK(why && strstr(why, "header"));

    /*  Cleared: nothing to recover, and nothing wrong.                     */
    nx_fwdlog_reset(log);
    CHECK(s_turn(log, 500, 500, 4) == 0);
    CHECK(nx_fwdlog_clear(log) == 0);
    CHECK_EQ_U64(s_recover(path, "boot-1", 0, &seen, &why), 0);
    CHECK(why == NULL);

    nx_fwdlog_destroy(&log);
    CHECK(log == NULL);
    nx_fwdlog_destroy(&log);
    unlink(path);
    rmdir(dir);
    NX_TEST_DONE();
}
