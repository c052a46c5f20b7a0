/*  =========================================================================
    test_conf - unit test of nx_conf (the configuration table) and the pure
    helpers of nx_log. Runs under ASan, so string replacement that leaked
    or double-freed would fail here.
    =========================================================================
*/

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_conf.h"
#include "nx_log.h"
#include "nx_test.h"

#define KB (1ULL << 10)
#define MB (1ULL << 20)
#define GB (1ULL << 30)
#define TB (1ULL << 40)

typedef struct {
    char *data_dir;       /* string with a default                          */
    char *token;          /* string without a default (NULL)                */
    uint64_t max_payload; /* size, bounded                                  */
    uint64_t retention;   /* duration                                       */
    uint64_t workers;     /* plain integer, bounded                         */
    bool foreground;      /* boolean                                        */
    int sync;             /* enum full|none                                 */
} test_settings_t;

static const nx_conf_key_t s_table[] = {
    {"data_dir", NX_CONF_STRING, offsetof(test_settings_t, data_dir), "/var/lib/nexus", 0, 0, NULL,
     "where the store lives"},
    {"token", NX_CONF_STRING, offsetof(test_settings_t, token), NULL, 0, 0, NULL, "shared secret"},
    {"max_payload", NX_CONF_SIZE, offsetof(test_settings_t, max_payload), "1M", 1, 64 * MB, NULL,
     "largest event payload"},
    {"retention", NX_CONF_DURATION, offsetof(test_settings_t, retention), "7d", 0, 0, NULL,
     "how long events are kept"},
    {"workers", NX_CONF_U64, offsetof(test_settings_t, workers), "4", 1, 64, NULL,
     "worker threads"},
    {"foreground", NX_CONF_BOOL, offsetof(test_settings_t, foreground), "false", 0, 0, NULL,
     "stay in the foreground"},
    {"sync", NX_CONF_ENUM, offsetof(test_settings_t, sync), "full", 0, 0, "full|none",
     "fsync policy"},
};

#define S_COUNT (sizeof s_table / sizeof s_table[0])

static char s_err[256];

static nexus_err_t s_set(test_settings_t *s, const char *name, const char *value)
{
    s_err[0] = '\0';
    return nx_conf_set(s_table, S_COUNT, s, name, value, s_err, sizeof s_err);
}

static void s_defaults(test_settings_t *s)
{
    CHECK(nx_conf_defaults(s_table, S_COUNT, s, s_err, sizeof s_err) == NEXUS_OK);
}

/*  Writes text to a fresh temp file; caller unlinks path.                 */
static void s_write_temp(char *path, const char *text)
{
    strcpy(path, "/tmp/nx_test_conf_XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    size_t len = strlen(text);
    CHECK(write(fd, text, len) == (ssize_t)len);
    close(fd);
}

static uint64_t s_size(const char *text, int *rc)
{
    uint64_t value = 0xdead;
    *rc = nx_conf_parse_size(text, &value);
    return value;
}

static uint64_t s_duration(const char *text, int *rc)
{
    uint64_t value = 0xdead;
    *rc = nx_conf_parse_duration(text, &value);
    return value;
}

static void test_sizes(void)
{
    int rc;
    CHECK_EQ_U64(s_size("0", &rc), 0);
    CHECK(rc == 0);
    CHECK_EQ_U64(s_size("1024", &rc), 1024);
    CHECK_EQ_U64(s_size("512B", &rc), 512);
    CHECK_EQ_U64(s_size("64k", &rc), 64 * KB);
    CHECK_EQ_U64(s_size("64K", &rc), 64 * KB);
    CHECK_EQ_U64(s_size("1M", &rc), MB);
    CHECK_EQ_U64(s_size("1m", &rc), MB);
    CHECK_EQ_U64(s_size("1MB", &rc), MB);
    CHECK_EQ_U64(s_size("1MiB", &rc), MB);
    CHECK_EQ_U64(s_size("3G", &rc), 3 * GB);
    CHECK_EQ_U64(s_size("2T", &rc), 2 * TB);
    CHECK_EQ_U64(s_size("1.5G", &rc), GB + GB / 2);
    CHECK(rc == 0);
    CHECK_EQ_U64(s_size("0.5k", &rc), 512);
    CHECK_EQ_U64(s_size("16777215T", &rc), 16777215ULL * TB);
    CHECK(rc == 0);

    //  Bad syntax, and values that would wrap, are refused.
    const char *bad[] = {"",
                         "k",
                         "-1",
                         "+1",
                         " 1",
                         "1 ",
                         "1x",
                         "1.5",
                         "1.",
                         ".5M",
                         "1.M",
                         "1kk",
                         "1MiBs",
                         "1b",
                         "0x10",
                         "16777216T",
                         "18446744073709551616",
                         "99999999999999999999T",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        s_size(bad[i], &rc);
        if (rc != -1)
            fprintf(stderr, "size '%s' was accepted\n", bad[i]);
        CHECK(rc == -1);
    }
    CHECK_EQ_U64(s_size("18446744073709551615", &rc), UINT64_MAX);
    CHECK(rc == 0);
    CHECK(nx_conf_parse_size(NULL, NULL) == -1);
}

static void test_durations(void)
{
    int rc;
    CHECK_EQ_U64(s_duration("250", &rc), 250);
    CHECK(rc == 0);
    CHECK_EQ_U64(s_duration("250ms", &rc), 250);
    CHECK_EQ_U64(s_duration("10s", &rc), 10000);
    CHECK_EQ_U64(s_duration("5m", &rc), 300000);
    CHECK_EQ_U64(s_duration("2h", &rc), 7200000);
    CHECK_EQ_U64(s_duration("7d", &rc), 7 * 86400000ULL);
    CHECK_EQ_U64(s_duration("1.5s", &rc), 1500);
    CHECK(rc == 0);
    const char *bad[] = {"",
                         "s",
                         "10x",
                         "10 s",
                         "1.5ms",
                         "1.5",
                         "-5s",
                         "10S",
                         "10sec",
                         "99999999999999999999d",
                         "999999999999999999d",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        s_duration(bad[i], &rc);
        if (rc != -1)
            fprintf(stderr, "duration '%s' was accepted\n", bad[i]);
        CHECK(rc == -1);
    }
}

static void test_defaults_and_set(void)
{
    test_settings_t s = {0};
    s_defaults(&s);
    CHECK_EQ_STR(s.data_dir, "/var/lib/nexus");
    CHECK(s.token == NULL);
    CHECK_EQ_U64(s.max_payload, MB);
    CHECK_EQ_U64(s.retention, 7 * 86400000ULL);
    CHECK_EQ_U64(s.workers, 4);
    CHECK(s.foreground == false);
    CHECK(s.sync == 0);

    //  Each type through nx_conf_set; '-' and '_' are the same.
    CHECK(s_set(&s, "max-payload", "2M") == NEXUS_OK);
    CHECK_EQ_U64(s.max_payload, 2 * MB);
    CHECK(s_set(&s, "max_payload", "1.5M") == NEXUS_OK);
    CHECK_EQ_U64(s.max_payload, MB + MB / 2);
    CHECK(s_set(&s, "retention", "250ms") == NEXUS_OK);
    CHECK_EQ_U64(s.retention, 250);
    CHECK(s_set(&s, "workers", "64") == NEXUS_OK);
    CHECK_EQ_U64(s.workers, 64);
    CHECK(s_set(&s, "sync", "none") == NEXUS_OK);
    CHECK(s.sync == 1);
    CHECK(s_set(&s, "sync", "FULL") == NEXUS_OK);
    CHECK(s.sync == 0);

    const char *truthy[] = {"true", "yes", "on", "1", "TRUE", "Yes", NULL};
    const char *falsy[] = {"false", "no", "off", "0", "OFF", NULL};
    for (int i = 0; truthy[i]; i++) {
        s.foreground = false;
        CHECK(s_set(&s, "foreground", truthy[i]) == NEXUS_OK);
        CHECK(s.foreground == true);
    }
    for (int i = 0; falsy[i]; i++) {
        s.foreground = true;
        CHECK(s_set(&s, "foreground", falsy[i]) == NEXUS_OK);
        CHECK(s.foreground == false);
    }
    CHECK(s_set(&s, "foreground", "maybe") == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "foreground") != NULL);

    //  Replacing a string frees the old one (ASan reports a leak if not),
    //  and the stored value is a copy, not the caller's buffer.
    char value[32];
    strcpy(value, "/tmp/a");
    CHECK(s_set(&s, "data-dir", value) == NEXUS_OK);
    strcpy(value, "/tmp/b");
    CHECK_EQ_STR(s.data_dir, "/tmp/a");
    CHECK(s_set(&s, "data_dir", value) == NEXUS_OK);
    CHECK_EQ_STR(s.data_dir, "/tmp/b");
    CHECK(s_set(&s, "token", "secret") == NEXUS_OK);
    CHECK_EQ_STR(s.token, "secret");
    CHECK(s_set(&s, "token", "") == NEXUS_OK);
    CHECK_EQ_STR(s.token, "");

    //  Bounds: the message names the key and the bounds; the field keeps
    //  its value.
    CHECK(s_set(&s, "max_payload", "128M") == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "max_payload") != NULL);
    CHECK(strstr(s_err, "1..64M") != NULL);
    CHECK_EQ_U64(s.max_payload, MB + MB / 2);
    CHECK(s_set(&s, "max_payload", "0") == NEXUS_ERR_INVALID);
    CHECK(s_set(&s, "max_payload", "64M") == NEXUS_OK);
    CHECK(s_set(&s, "max_payload", "1") == NEXUS_OK);
    CHECK(s_set(&s, "workers", "0") == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "workers") != NULL);
    CHECK(strstr(s_err, "1..64") != NULL);
    CHECK(s_set(&s, "workers", "65") == NEXUS_ERR_INVALID);
    CHECK(s_set(&s, "workers", "4k") == NEXUS_ERR_INVALID);
    CHECK(s_set(&s, "workers", "-1") == NEXUS_ERR_INVALID);
    CHECK_EQ_U64(s.workers, 64);
    CHECK(s_set(&s, "max_payload", "99999999999999999999T") == NEXUS_ERR_INVALID);
    CHECK(s_set(&s, "retention", "10 parsecs") == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "retention") != NULL);
    CHECK(s_set(&s, "sync", "sometimes") == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "full|none") != NULL);
    CHECK(s_set(&s, "sync", "ful") == NEXUS_ERR_INVALID);
    CHECK(s.sync == 0);
    CHECK(s_set(&s, "max_payload", NULL) == NEXUS_ERR_INVALID);

    //  Unknown keys.
    CHECK(s_set(&s, "max_payloads", "1") == NEXUS_ERR_NOT_FOUND);
    CHECK(strstr(s_err, "max_payloads") != NULL);
    CHECK(s_set(&s, "max", "1") == NEXUS_ERR_NOT_FOUND);
    CHECK(s_set(&s, "", "1") == NEXUS_ERR_NOT_FOUND);

    //  err_buf may be NULL.
    CHECK(nx_conf_set(s_table, S_COUNT, &s, "nope", "1", NULL, 0) == NEXUS_ERR_NOT_FOUND);
    CHECK(nx_conf_set(s_table, S_COUNT, &s, "workers", "x", NULL, 0) == NEXUS_ERR_INVALID);

    //  Defaults again free the strings they replace and clear token.
    s_defaults(&s);
    CHECK_EQ_STR(s.data_dir, "/var/lib/nexus");
    CHECK(s.token == NULL);

    nx_conf_free(s_table, S_COUNT, &s);
    CHECK(s.data_dir == NULL);
    nx_conf_free(s_table, S_COUNT, &s);
}

static void test_bad_default(void)
{
    int value = 0;
    const nx_conf_key_t table[] = {
        {"mode", NX_CONF_ENUM, 0, "fast", 0, 0, "full|none", "a broken default"}};
    char err[128] = "";
    CHECK(nx_conf_defaults(table, 1, &value, err, sizeof err) == NEXUS_ERR_INVALID);
    CHECK(strstr(err, "mode") != NULL);
}

static void test_file(void)
{
    test_settings_t s = {0};
    s_defaults(&s);
    char path[64];

    s_write_temp(path, "# nexusd settings\nsync = none\nmax_payload = 2M\n"
                       "data_dir = \"/srv/nexus data\"\nforeground = yes\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_OK);
    CHECK(s.sync == 1);
    CHECK_EQ_U64(s.max_payload, 2 * MB);
    CHECK_EQ_STR(s.data_dir, "/srv/nexus data");
    CHECK(s.foreground == true);
    CHECK_EQ_U64(s.workers, 4);
    unlink(path);

    //  Dashes work in a file too.
    s_write_temp(path, "max-payload = 3M\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_OK);
    CHECK_EQ_U64(s.max_payload, 3 * MB);
    unlink(path);

    s_write_temp(path, "sync = full\nmax_paylod = 2M\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) ==
          NEXUS_ERR_NOT_FOUND);
    CHECK(strstr(s_err, "max_paylod") != NULL);
    CHECK(strstr(s_err, path) != NULL);
    unlink(path);

    //  A key set twice is refused, naming it and both lines: the second
    //  would otherwise win in silence over the one its reader sees first.
    s_write_temp(path, "# settings\nsync = full\nmax_payload = 2M\n\nsync = none\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "'sync' is set twice (lines 2 and 5)") != NULL);
    CHECK(strstr(s_err, path) != NULL);
    unlink(path);
    //  '-' and '_' name the same key.
    s_write_temp(path, "max_payload = 2M\nmax-payload = 3M\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "'max_payload' is set twice (lines 1 and 2)") != NULL);
    unlink(path);
    //  A comment naming a key does not set it.
    s_write_temp(path, "#sync = none\nsync = full\nworkers = 2\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_OK);
    unlink(path);

    s_write_temp(path, "workers = 1000\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "workers") != NULL);
    unlink(path);

    //  Settings are flat: a section is refused, not ignored.
    s_write_temp(path, "sync\n    mode = none\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    unlink(path);

    //  Bad syntax names the line and what is wrong with it (zconfig's own
    //  complaint), and leaks nothing (the ASan build checks).
    s_write_temp(path, "sync = none\nmax_payload 2M\n");
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "not a valid ZPL file: line 2: ") != NULL);
    CHECK(strstr(s_err, "2M") != NULL);
    unlink(path);

    //  A NUL byte is not the end of the file: zconfig would read only what
    //  comes before it (here nothing) and start on defaults.
    strcpy(path, "/tmp/nx_test_conf_XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "# ok\n\0sync = none\n", 19) == 19);
    close(fd);
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "line 2: NUL byte") != NULL);
    unlink(path);

    //  A directory is not a config file.
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, "/tmp", s_err, sizeof s_err) ==
          NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "Is a directory") != NULL);

    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, "/tmp/nx_test_conf_does_not_exist.cfg", s_err,
                            sizeof s_err) == NEXUS_ERR_NOT_FOUND);
    CHECK(strstr(s_err, "does_not_exist") != NULL);
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, "/tmp/nx_test_conf_does_not_exist.cfg", NULL,
                            0) == NEXUS_ERR_NOT_FOUND);
    nx_conf_free(s_table, S_COUNT, &s);
}

static void test_env(void)
{
    test_settings_t s = {0};
    s_defaults(&s);
    setenv("NEXUS_MAX_PAYLOAD", "8M", 1);
    setenv("NEXUS_SYNC", "none", 1);
    setenv("NEXUS_DATA_DIR", "/env/dir", 1);
    CHECK(nx_conf_load_env(s_table, S_COUNT, &s, s_err, sizeof s_err) == NEXUS_OK);
    CHECK_EQ_U64(s.max_payload, 8 * MB);
    CHECK(s.sync == 1);
    CHECK_EQ_STR(s.data_dir, "/env/dir");
    CHECK_EQ_U64(s.workers, 4);

    setenv("NEXUS_WORKERS", "lots", 1);
    CHECK(nx_conf_load_env(s_table, S_COUNT, &s, s_err, sizeof s_err) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "NEXUS_WORKERS") != NULL);
    unsetenv("NEXUS_WORKERS");
    unsetenv("NEXUS_MAX_PAYLOAD");
    unsetenv("NEXUS_SYNC");
    unsetenv("NEXUS_DATA_DIR");
    nx_conf_free(s_table, S_COUNT, &s);
}

static nexus_err_t s_args(test_settings_t *s, int argc, char **argv)
{
    static const char *const passthrough[] = {"-v", "--help", NULL};
    s_err[0] = '\0';
    return nx_conf_load_args(s_table, S_COUNT, s, argc, argv, 1, passthrough, s_err, sizeof s_err);
}

static void test_args(void)
{
    test_settings_t s = {0};
    s_defaults(&s);

    char *ok[] = {"nexusd",          "--max-payload", "4M",  "--sync=none", "-v",
                  "--data_dir=/a=b", "--retention",   "10s", "--token=",    NULL};
    CHECK(s_args(&s, 9, ok) == NEXUS_OK);
    CHECK_EQ_U64(s.max_payload, 4 * MB);
    CHECK(s.sync == 1);
    CHECK_EQ_STR(s.data_dir, "/a=b");
    CHECK_EQ_U64(s.retention, 10000);
    CHECK_EQ_STR(s.token, "");

    char *missing[] = {"nexusd", "--max-payload", NULL};
    CHECK(s_args(&s, 2, missing) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "max-payload") != NULL);

    char *missing2[] = {"nexusd", "--max-payload", "--sync=none", NULL};
    CHECK(s_args(&s, 3, missing2) == NEXUS_ERR_INVALID);

    char *unknown[] = {"nexusd", "--max-paylod", "4M", NULL};
    CHECK(s_args(&s, 3, unknown) == NEXUS_ERR_NOT_FOUND);
    CHECK(strstr(s_err, "max-paylod") != NULL);

    char *unknown2[] = {"nexusd", "--bogus=1", NULL};
    CHECK(s_args(&s, 2, unknown2) == NEXUS_ERR_NOT_FOUND);
    CHECK(strstr(s_err, "bogus") != NULL);

    char *short_flag[] = {"nexusd", "-x", NULL};
    CHECK(s_args(&s, 2, short_flag) == NEXUS_ERR_NOT_FOUND);

    char *stray[] = {"nexusd", "extra", NULL};
    CHECK(s_args(&s, 2, stray) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "unexpected argument 'extra'") != NULL);

    char *bad_value[] = {"nexusd", "--workers", "100", NULL};
    CHECK(s_args(&s, 3, bad_value) == NEXUS_ERR_INVALID);
    CHECK(strstr(s_err, "workers") != NULL);
    CHECK(strstr(s_err, "1..64") != NULL);

    //  first skips a sub-command ("nexus pub --x ..."); the program name
    //  itself is never looked at.
    char *sub[] = {"nexus", "pub", "--workers", "2", NULL};
    CHECK(nx_conf_load_args(s_table, S_COUNT, &s, 4, sub, 2, NULL, NULL, 0) == NEXUS_OK);
    CHECK_EQ_U64(s.workers, 2);
    nx_conf_free(s_table, S_COUNT, &s);
}

/*  The order a program applies the sources in: each one overrides the
    ones before it, key by key.                                            */
static void test_precedence(void)
{
    test_settings_t s = {0};
    char path[64];
    s_write_temp(path, "max_payload = 2M\nworkers = 8\nretention = 1h\n");
    setenv("NEXUS_WORKERS", "16", 1);
    setenv("NEXUS_RETENTION", "2h", 1);
    char *argv[] = {"nexusd", "--retention", "3h", NULL};

    s_defaults(&s);
    CHECK(nx_conf_load_file(s_table, S_COUNT, &s, path, s_err, sizeof s_err) == NEXUS_OK);
    CHECK(nx_conf_load_env(s_table, S_COUNT, &s, s_err, sizeof s_err) == NEXUS_OK);
    CHECK(s_args(&s, 3, argv) == NEXUS_OK);

    CHECK(s.sync == 0);                        /* default */
    CHECK_EQ_U64(s.max_payload, 2 * MB);       /* file    */
    CHECK_EQ_U64(s.workers, 16);               /* env     */
    CHECK_EQ_U64(s.retention, 3 * 3600000ULL); /* args    */

    unsetenv("NEXUS_WORKERS");
    unsetenv("NEXUS_RETENTION");
    unlink(path);
    nx_conf_free(s_table, S_COUNT, &s);
}

/*  What nx_conf_print writes is a config file that gives back the same
    settings, including values that have no exact unit.                    */
static void test_print_roundtrip(void)
{
    test_settings_t a = {0}, b = {0};
    s_defaults(&a);
    CHECK(s_set(&a, "max_payload", "1025") == NEXUS_OK);
    CHECK(s_set(&a, "retention", "1500") == NEXUS_OK);
    CHECK(s_set(&a, "workers", "7") == NEXUS_OK);
    CHECK(s_set(&a, "foreground", "on") == NEXUS_OK);
    CHECK(s_set(&a, "sync", "none") == NEXUS_OK);
    CHECK(s_set(&a, "data_dir", "/say \"hi\"") == NEXUS_OK);

    char path[64];
    s_write_temp(path, "");
    FILE *out = fopen(path, "w");
    CHECK(out != NULL);
    if (!out)
        return;
    nx_conf_print(s_table, S_COUNT, &a, out);
    fclose(out);

    s_defaults(&b);
    CHECK(nx_conf_load_file(s_table, S_COUNT, &b, path, s_err, sizeof s_err) == NEXUS_OK);
    if (s_err[0])
        fprintf(stderr, "reload: %s\n", s_err);
    CHECK_EQ_STR(b.data_dir, a.data_dir);
    CHECK(b.token == NULL);
    CHECK_EQ_U64(b.max_payload, a.max_payload);
    CHECK_EQ_U64(b.retention, a.retention);
    CHECK_EQ_U64(b.workers, a.workers);
    CHECK(b.foreground == a.foreground);
    CHECK(b.sync == a.sync);

    //  And the defaults themselves read back in their short forms.
    s_defaults(&a);
    out = fopen(path, "w");
    CHECK(out != NULL);
    if (out) {
        nx_conf_print(s_table, S_COUNT, &a, out);
        fclose(out);
    }
    FILE *in = fopen(path, "r");
    char text[2048] = "";
    if (in) {
        size_t n = fread(text, 1, sizeof text - 1, in);
        text[n] = '\0';
        fclose(in);
    }
    CHECK(strstr(text, "max_payload = 1M\n") != NULL);
    CHECK(strstr(text, "retention = 7d\n") != NULL);
    CHECK(strstr(text, "sync = full\n") != NULL);
    CHECK(strstr(text, "foreground = false\n") != NULL);
    unlink(path);
    nx_conf_free(s_table, S_COUNT, &a);
    nx_conf_free(s_table, S_COUNT, &b);
}

static void test_help(void)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    CHECK(out != NULL);
    if (!out)
        return;
    nx_conf_print_help(s_table, S_COUNT, out);
    fclose(out);
    CHECK(strstr(text, "--max-payload SIZE") != NULL);
    CHECK(strstr(text, "largest event payload (default 1M, 1..64M)") != NULL);
    CHECK(strstr(text, "--data-dir TEXT") != NULL);
    CHECK(strstr(text, "--sync full|none") != NULL);
    CHECK(strstr(text, "max_payload") == NULL);

    //  The help texts start in one column.
    const char *a = strstr(text, "largest event payload");
    const char *b = strstr(text, "worker threads");
    const char *line_a = a, *line_b = b;
    while (line_a > text && line_a[-1] != '\n')
        line_a--;
    while (line_b > text && line_b[-1] != '\n')
        line_b--;
    CHECK(a && b && a - line_a == b - line_b);
    free(text);
}

static void test_log(void)
{
    char buf[32];
    CHECK_EQ_STR(nx_iso8601(0, buf), "1970-01-01T00:00:00.000000Z");
    CHECK_EQ_STR(nx_iso8601(1795305541123456ULL, buf), "2026-11-21T23:59:01.123456Z");
    CHECK_EQ_STR(nx_iso8601(951782400000001ULL, buf), "2000-02-29T00:00:00.000001Z");

    //  Clocks: the wall clock is past 2020, the monotonic one never goes
    //  back.
    CHECK(nx_now_us() > 1577836800000000ULL);
    uint64_t t0 = nx_mono_us();
    uint64_t t1 = nx_mono_us();
    CHECK(t1 >= t0);

    nx_log_init("/usr/bin/test_conf", NX_LOG_WARN);
    CHECK(nx_log_level() == NX_LOG_WARN);
    nx_warn("test_conf: a warning line, %d%%\n", 100);
    nx_info("this info line must not appear");
    nx_debug("nor this debug line");
    nx_log_set_level(NX_LOG_DEBUG);
    CHECK(nx_log_level() == NX_LOG_DEBUG);
    char big[6000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    nx_debug("long line cut at 4k: %s", big);
}

int main(void)
{
    test_sizes();
    test_durations();
    test_defaults_and_set();
    test_bad_default();
    test_file();
    test_env();
    test_args();
    test_precedence();
    test_print_roundtrip();
    test_help();
    test_log();
    NX_TEST_DONE();
}
