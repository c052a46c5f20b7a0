/*  =========================================================================
    test_log - ISO-8601 times both ways: nx_iso8601 writes what
    nx_iso8601_parse reads back, and the parser takes the forms people
    type (a date, a fraction, a zone) and refuses the rest.
    =========================================================================
*/

#include <string.h>

#include "nx_log.h"
#include "nx_test.h"

static uint64_t s_parse(const char *text)
{
    uint64_t us = 0;
    CHECK(nx_iso8601_parse(text, &us) == 0);
    return us;
}

int main(void)
{
    /*  2026-12-07T10:00:00Z is 1796637600 s after the epoch.               */
    const uint64_t base = 1796637600ull * 1000000;
    CHECK_EQ_U64(s_parse("2026-12-07T10:00:00Z"), base);
    CHECK_EQ_U64(s_parse("2026-12-07T10:00:00"), base); /* no zone: UTC */
    CHECK_EQ_U64(s_parse("2026-12-07T10:00:00.5Z"), base + 500000);
    CHECK_EQ_U64(s_parse("2026-12-07T10:00:00.123456789Z"), base + 123456);
    CHECK_EQ_U64(s_parse("2026-12-07T11:30:00+01:30"), base);
    CHECK_EQ_U64(s_parse("2026-12-07T02:00:00-0800"), base);
    CHECK_EQ_U64(s_parse("2026-12-07T10:00:00+00:00"), base);
    CHECK_EQ_U64(s_parse("2026-12-07"), base - 10 * 3600 * 1000000ull);
    CHECK_EQ_U64(s_parse("2026-12-07T12:00:00+02"), base); /* hour-only zone */
    CHECK_EQ_U64(s_parse("2026-12-07t10:00:00z"), base);
    CHECK_EQ_U64(s_parse("2028-02-29"), 1835395200ull * 1000000); /* a leap day */
    CHECK_EQ_U64(s_parse("2026-12-07T09:59:60Z"), base); /* a leap second */
    /*  What it writes, it reads back.                                      */
    char buf[32];
    CHECK_EQ_U64(s_parse(nx_iso8601(base + 42, buf)), base + 42);
    /*  Refused: not a time, trailing bytes, a bad zone or fraction.        */
    const char *bad[] = {"", "yesterday", "2026-12-07T10:00:00Zx", "2026-12-07T10:00:00+1",
                         "2026-12-07T10:00:00+25:00", "2026-12-07T10:00:00.Z", "2026-12-07 x",
                         "1970-01-01T00:00:00+01:00",
                         /*  glibc's strptime took these.                    */
                         "2026-02-31", "2026-02-29", "2026-13-01", "2026-00-10", " 2026-12-07",
                         "2026-1-7", "2026-12-07T1:00:00Z", "2026-12-07T10:00Z",
                         "2026-12-07T24:00:00Z", "2026-12-07T10:00:00+01:", "2026-12-07T10:00:00+013",
                         "20261207"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t us = 7;
        CHECK(nx_iso8601_parse(bad[i], &us) == -1);
        CHECK_EQ_U64(us, 7);
    }
    NX_TEST_DONE();
}
