/*  =========================================================================
    test_disk - the data disk's free-space reserve (nx_disk): what must be
    free (reserve + three segments + a turn + twice the log above the
    checkpoint), full below it, room again only a margin above it, and
    checks made at most every NX_DISK_CHECK_US or NX_DISK_CHECK_BYTES of
    log. Against the real free space of /tmp.
    =========================================================================
*/

#include "nx_disk.h"
#include "nx_test.h"

int main(void)
{
    const char *dir = "/tmp";
    uint64_t free_now = nx_disk_free(dir);
    CHECK(free_now > 0 && free_now != UINT64_MAX);
    CHECK(nx_disk_free("/nonexistent/nexus") == UINT64_MAX);

    nx_disk_t d;
    nx_disk_init(&d, dir, 1000, 100, 50);
    CHECK_EQ_U64(nx_disk_need(&d, 0), 1000 + 3 * 100 + 50);
    CHECK_EQ_U64(nx_disk_need(&d, 7), 1000 + 3 * 100 + 50 + 14);
    CHECK_EQ_U64(d.margin, 250); /* a quarter of the reserve, at least a segment */

    /*  What the need is made of, with the settings behind each part.      */
    char why[300];
    nx_disk_t big;
    nx_disk_init(&big, dir, 64ull << 20, 16ull << 20, (64ull << 20) + (4ull << 20));
    nx_disk_explain(&big, 1ull << 20, why, sizeof why);
    CHECK_EQ_STR(why, "disk_reserve 64.0 MiB + three log segments 48.0 MiB (wal_segment) + a "
                      "turn's records 68.0 MiB (batch_bytes + 4 MiB) + twice the log not yet in "
                      "the store 2.0 MiB");
    nx_disk_explain(&d, 0, why, 40); /* cut, terminated */
    CHECK_EQ_U64(strlen(why), 39);

    /*  A small reserve: not full, and no change to report.                 */
    bool changed = true;
    CHECK(!nx_disk_full(&d, 1, 0, 0, &changed));
    CHECK(!changed);

    /*  A reserve over the free space: full, reported once.                 */
    nx_disk_init(&d, dir, free_now * 2 + (1ull << 30), 1 << 20, 1 << 20);
    CHECK(nx_disk_full(&d, 1, 0, 0, &changed));
    CHECK(changed);
    CHECK(d.free > 0 && d.need > d.free);
    /*  Within the interval and the bytes, the last answer is kept.         */
    CHECK(nx_disk_full(&d, 2, 10, 0, &changed));
    CHECK(!changed);

    /*  Room again only with the margin: a need just under the free space
        is still full while it was full, and not full from a fresh start.  */
    uint64_t f = nx_disk_free(dir);
    uint64_t reserve = f > (64u << 20) ? f - (32u << 20) : f / 2;
    nx_disk_init(&d, dir, reserve, 1 << 20, 0); /* need = reserve + 3 MiB */
    d.margin = 64u << 20;
    d.full = true;
    d.at_us = 1;
    CHECK(nx_disk_full(&d, 1 + NX_DISK_CHECK_US, 0, 0, &changed)); /* within the margin */
    CHECK(!changed);
    d.full = false;
    CHECK(!nx_disk_full(&d, 1 + 2 * NX_DISK_CHECK_US, 0, 0, &changed));
    CHECK(!changed); /* not full before either */
    /*  Log growth past NX_DISK_CHECK_BYTES checks again at once: a lag of
        the whole free space makes it full.                                */
    CHECK(nx_disk_full(&d, 2 + 2 * NX_DISK_CHECK_US, NX_DISK_CHECK_BYTES, f, &changed));
    CHECK(changed);
    NX_TEST_DONE();
}
