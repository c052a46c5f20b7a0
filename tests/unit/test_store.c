/*  =========================================================================
    test_store - the LMDB store: append and read back in both directions,
    seek, time lookup, restart, retention (count, bytes, age, trim_batch),
    the keyed databases, abort, a full map and growing the map.

    Every test works in a fresh directory under /tmp, removed at the end.
    =========================================================================
*/

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include "nx_store.h"
#include "nx_test.h"

static char s_dir[64];    /* mkdtemp root, removed at the end         */
static char s_path[128];  /* store directory of the current test      */
static int s_path_no = 0; /* makes each test's directory unique       */
static const char *s_topic = "orders.created";
static const char *s_source = "svc-a";

/*  A fresh store directory (one level deeper than the root, so that the
    store's mkdir -p is exercised).                                         */
static const char *s_new_path(void)
{
    snprintf(s_path, sizeof s_path, "%s/t%d/store", s_dir, ++s_path_no);
    return s_path;
}

static void s_rm_store(const char *path)
{
    char file[192];
    snprintf(file, sizeof file, "%s/data.mdb", path);
    unlink(file);
    snprintf(file, sizeof file, "%s/lock.mdb", path);
    unlink(file);
    snprintf(file, sizeof file, "%s/nexusd.lock", path);
    unlink(file);
    rmdir(path);
    /*  and the t<n> parent                                                 */
    char parent[128];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        rmdir(parent);
    }
}

static nx_store_config_t s_config(const char *path)
{
    nx_store_config_t cfg = {
        .path = path,
        .sync = false,
        .map_size = 4 << 20,
        .map_max = 4 << 20,
        .trim_batch = 1000,
    };
    return cfg;
}

static nx_store_t *s_open(const nx_store_config_t *cfg)
{
    nexus_err_t err = NEXUS_ERR_INTERNAL;
    char buf[256] = "";
    nx_store_t *store = nx_store_new(cfg, &err, buf, sizeof buf);
    if (!store)
        fprintf(stderr, "nx_store_new: %s\n", buf);
    CHECK(store != NULL);
    CHECK_EQ_U64(err, NEXUS_OK);
    return store;
}

static void s_payload(uint64_t seq, char *buf, size_t size)
{
    snprintf(buf, size, "payload-%" PRIu64, seq);
}

static nexus_err_t s_append(nx_store_t *store, uint64_t seq, uint64_t ts)
{
    char payload[32];
    s_payload(seq, payload, sizeof payload);
    return nx_store_append(store, seq, ts, s_topic, strlen(s_topic), s_source, strlen(s_source),
                           (const uint8_t *)payload, strlen(payload));
}

static size_t s_size(uint64_t seq)
{
    char payload[32];
    s_payload(seq, payload, sizeof payload);
    return nx_record_size(strlen(s_topic), strlen(s_source), strlen(payload));
}

/*  Checks rec is exactly the event s_append wrote for seq.                */
static void s_check_record(uint64_t seq, uint64_t ts, const nx_record_t *rec)
{
    char payload[32];
    s_payload(seq, payload, sizeof payload);
    CHECK_EQ_U64(rec->ts, ts);
    CHECK(rec->topic_len == strlen(s_topic) && memcmp(rec->topic, s_topic, rec->topic_len) == 0);
    CHECK(rec->source_len == strlen(s_source) &&
          memcmp(rec->source, s_source, rec->source_len) == 0);
    CHECK(rec->payload_len == strlen(payload) &&
          memcmp(rec->payload, payload, rec->payload_len) == 0);
}

static uint64_t s_ts(uint64_t seq)
{
    return 1000 + seq * 10;
}

/*  Appends seqs first..last (ts s_ts) in one batch and commits.          */
static void s_fill(nx_store_t *store, uint64_t first, uint64_t last, uint64_t now_us)
{
    for (uint64_t seq = first; seq <= last; seq++)
        CHECK_EQ_U64(s_append(store, seq, s_ts(seq)), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, now_us), NEXUS_OK);
}

/*  Reads the whole history from 0 ascending, checks every record (when
    they were written by s_append), returns the count and the first seq.   */
static uint64_t s_count_events(nx_store_t *store, uint64_t *first, bool check)
{
    nx_store_reader_t *reader = nx_store_reader_new(store);
    CHECK(reader != NULL);
    if (!reader)
        return 0;
    nx_store_reader_seek(reader, 0, false);
    uint64_t n = 0, seq, prev = 0;
    nx_record_t rec;
    int rc;
    while ((rc = nx_store_reader_next(reader, &seq, &rec)) == 1) {
        if (n == 0 && first)
            *first = seq;
        CHECK(seq > prev);
        if (check)
            s_check_record(seq, s_ts(seq), &rec);
        prev = seq;
        n++;
    }
    CHECK_EQ_U64(rc, 0);
    nx_store_reader_destroy(&reader);
    CHECK(reader == NULL);
    return n;
}

static void s_test_open_errors(void)
{
    nexus_err_t err = NEXUS_OK;
    char buf[128] = "";
    nx_store_config_t cfg = s_config(NULL);
    CHECK(nx_store_new(&cfg, &err, buf, sizeof buf) == NULL);
    CHECK_EQ_U64(err, NEXUS_ERR_INVALID);
    CHECK(buf[0] != '\0');
    /*  A path below a regular file cannot be created.                    */
    char file[128];
    snprintf(file, sizeof file, "%s/plain", s_dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    char path[160];
    snprintf(path, sizeof path, "%s/sub", file);
    cfg = s_config(path);
    CHECK(nx_store_new(&cfg, &err, buf, sizeof buf) == NULL);
    CHECK_EQ_U64(err, NEXUS_ERR_STORE);
    /*  A data directory that is a regular file says so.                  */
    cfg = s_config(file);
    CHECK(nx_store_new(&cfg, &err, buf, sizeof buf) == NULL);
    CHECK_EQ_U64(err, NEXUS_ERR_STORE);
    CHECK(strstr(buf, "is not a directory") != NULL);
    unlink(file);
    nx_store_destroy(NULL);
}

/*  A second open of a directory that is open already (in another broker
    process in real life: flock conflicts between open files even within
    one process) is refused and names the holder; once the first closes,
    the directory opens again.                                             */
static void s_test_one_store_per_dir(void)
{
    nexus_err_t err = NEXUS_OK;
    char buf[256] = "";
    nx_store_config_t cfg = s_config(s_new_path());
    nx_store_t *first = nx_store_new(&cfg, &err, buf, sizeof buf);
    CHECK(first != NULL);
    char pid[32];
    snprintf(pid, sizeof pid, "(pid %ld)", (long)getpid());
    CHECK(nx_store_new(&cfg, &err, buf, sizeof buf) == NULL);
    CHECK_EQ_U64(err, NEXUS_ERR_BUSY);
    CHECK(strstr(buf, "is in use by another nexusd") != NULL);
    CHECK(strstr(buf, pid) != NULL);
    nx_store_destroy(&first);
    nx_store_t *again = nx_store_new(&cfg, &err, buf, sizeof buf);
    CHECK(again != NULL);
    nx_store_destroy(&again);
    s_rm_store(cfg.path);
}

static void s_test_append_read(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    CHECK_EQ_U64(nx_store_last_seq(store), 0);
    CHECK(!nx_store_in_batch(store));

    uint64_t bytes = 0;
    for (uint64_t seq = 1; seq <= 100; seq++) {
        CHECK_EQ_U64(s_append(store, seq, s_ts(seq)), NEXUS_OK);
        bytes += s_size(seq);
    }
    CHECK(nx_store_in_batch(store));
    /*  seq must grow; a bad one leaves the batch as it was.               */
    CHECK_EQ_U64(s_append(store, 100, 5000), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(s_append(store, 7, 5000), NEXUS_ERR_INVALID);
    CHECK(nx_store_in_batch(store));
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    CHECK(!nx_store_in_batch(store));
    /*  Commit without a batch is a no-op.                                  */
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);

    nx_store_stats_t st;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.first_seq, 1);
    CHECK_EQ_U64(st.last_seq, 100);
    CHECK_EQ_U64(st.last_ts, s_ts(100));
    CHECK_EQ_U64(st.count, 100);
    CHECK_EQ_U64(st.bytes, bytes);
    CHECK_EQ_U64(st.commits, 1);
    CHECK_EQ_U64(st.map_size, 4 << 20);
    CHECK(st.map_used > 0 && st.map_used <= st.map_size);
    CHECK(st.disk_bytes > 0);
    CHECK_EQ_U64(nx_store_last_ts(store), s_ts(100));

    nx_store_reader_t *reader = nx_store_reader_new(store);
    CHECK(reader != NULL);
    uint64_t seq = 0, expect;
    nx_record_t rec;

    /*  Without a seek: ascending from the start.                           */
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 1);

    nx_store_reader_seek(reader, 0, false);
    for (expect = 1; nx_store_reader_next(reader, &seq, &rec) == 1; expect++) {
        CHECK_EQ_U64(seq, expect);
        s_check_record(seq, s_ts(seq), &rec);
    }
    CHECK_EQ_U64(expect, 101);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 0);

    nx_store_reader_seek(reader, UINT64_MAX, true);
    for (expect = 100; nx_store_reader_next(reader, &seq, &rec) == 1; expect--) {
        CHECK_EQ_U64(seq, expect);
        s_check_record(seq, s_ts(seq), &rec);
    }
    CHECK_EQ_U64(expect, 0);

    nx_store_reader_seek(reader, 50, false);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 50);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 51);
    nx_store_reader_seek(reader, 50, true);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 50);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 49);
    nx_store_reader_seek(reader, 101, false);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 0);
    nx_store_reader_seek(reader, 0, true);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 0);
    nx_store_reader_seek(reader, 1, true);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 1);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 0);

    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, s_ts(50)), 50);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, s_ts(50) - 5), 50);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 0), 1);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, s_ts(1)), 1);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, s_ts(100)), 100);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, s_ts(100) + 1), 101);
    /*  seq_at_time leaves the reader's position alone.                     */
    nx_store_reader_seek(reader, 10, false);
    nx_store_reader_seq_at_time(reader, s_ts(70));
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 10);

    /*  A reader sees its snapshot only.                                    */
    CHECK_EQ_U64(s_append(store, 200, 50000), NEXUS_OK);
    CHECK_EQ_U64(s_append(store, 300, 60000), NEXUS_OK);
    CHECK_EQ_U64(s_append(store, 301, 60000), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    nx_store_reader_seek(reader, UINT64_MAX, true);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 100);
    nx_store_reader_destroy(&reader);
    nx_store_reader_destroy(&reader);

    /*  Gaps in seq: time lookup and seeks land on stored events.           */
    reader = nx_store_reader_new(store);
    CHECK(reader != NULL);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 40000), 200);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 50000), 200);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 50001), 300);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 60000), 300);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 60001), 302);
    nx_store_reader_seek(reader, 250, true);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 200);
    CHECK_EQ_U64(rec.ts, 50000);
    nx_store_reader_seek(reader, 250, false);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 300);
    /*  Two readers at once in one thread.                                  */
    nx_store_reader_t *other = nx_store_reader_new(store);
    CHECK(other != NULL);
    nx_store_reader_destroy(&other);
    nx_store_reader_destroy(&reader);

    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 103);
    bytes += s_size(200) + s_size(300) + s_size(301);
    CHECK_EQ_U64(st.bytes, bytes);

    /*  Restart: history, last_seq and bytes survive.                       */
    nx_store_destroy(&store);
    CHECK(store == NULL);
    nx_store_destroy(&store);
    store = s_open(&cfg);
    if (!store)
        return;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.first_seq, 1);
    CHECK_EQ_U64(st.last_seq, 301);
    CHECK_EQ_U64(st.last_ts, 60000);
    CHECK_EQ_U64(st.count, 103);
    CHECK_EQ_U64(st.bytes, bytes);
    CHECK_EQ_U64(st.commits, 0);
    reader = nx_store_reader_new(store);
    CHECK(reader != NULL);
    nx_store_reader_seek(reader, 42, false);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 1);
    CHECK_EQ_U64(seq, 42);
    s_check_record(42, s_ts(42), &rec);
    nx_store_reader_destroy(&reader);
    CHECK_EQ_U64(s_append(store, 301, 70000), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(s_append(store, 302, 70000), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    CHECK_EQ_U64(nx_store_last_seq(store), 302);
    nx_store_destroy(&store);
    s_rm_store(path);
}

static void s_test_abort(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    s_fill(store, 1, 10, 0);
    nx_store_stats_t before, after;
    nx_store_stats(store, &before);
    for (uint64_t seq = 11; seq <= 20; seq++)
        CHECK_EQ_U64(s_append(store, seq, s_ts(seq)), NEXUS_OK);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_SESSIONS, "s1", 2, "x", 1), NEXUS_OK);
    nx_store_abort(store);
    CHECK(!nx_store_in_batch(store));
    nx_store_abort(store);
    nx_store_stats(store, &after);
    CHECK_EQ_U64(after.last_seq, 10);
    CHECK_EQ_U64(after.last_ts, before.last_ts);
    CHECK_EQ_U64(after.count, 10);
    CHECK_EQ_U64(after.bytes, before.bytes);
    CHECK_EQ_U64(s_count_events(store, NULL, true), 10);
    void *value = NULL;
    size_t len = 0;
    CHECK_EQ_U64(nx_store_get(store, NX_DB_SESSIONS, "s1", 2, &value, &len), NEXUS_ERR_NOT_FOUND);
    /*  The seqs of the aborted batch are free again.                       */
    s_fill(store, 11, 12, 0);
    CHECK_EQ_U64(nx_store_last_seq(store), 12);
    nx_store_destroy(&store);
    s_rm_store(path);
}

static void s_test_retention(void)
{
    /*  By count, trim_batch limiting each commit, then nx_store_trim.     */
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.retain_events = 10;
    cfg.trim_batch = 5;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    s_fill(store, 1, 30, 0);
    nx_store_stats_t st;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 25);
    CHECK_EQ_U64(st.first_seq, 6);
    CHECK_EQ_U64(st.trimmed, 5);
    uint64_t bytes = 0;
    for (uint64_t seq = 6; seq <= 30; seq++)
        bytes += s_size(seq);
    CHECK_EQ_U64(st.bytes, bytes);
    CHECK_EQ_U64(nx_store_trim(store, 0, 4), 4);
    CHECK_EQ_U64(nx_store_trim(store, 0, 100), 11);
    CHECK_EQ_U64(nx_store_trim(store, 0, 100), 0);
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 10);
    CHECK_EQ_U64(st.first_seq, 21);
    CHECK_EQ_U64(st.trimmed, 20);
    uint64_t first = 0;
    CHECK_EQ_U64(s_count_events(store, &first, true), 10);
    CHECK_EQ_U64(first, 21);
    /*  nx_store_trim refuses to run inside a batch.                        */
    CHECK_EQ_U64(s_append(store, 31, s_ts(31)), NEXUS_OK);
    CHECK_EQ_U64(nx_store_trim(store, 0, 100), -1);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    CHECK_EQ_U64(nx_store_last_seq(store), 31);
    nx_store_destroy(&store);
    /*  Restart: bytes and count match what is stored.                      */
    store = s_open(&cfg);
    if (!store)
        return;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 10);
    CHECK_EQ_U64(st.first_seq, 22);
    bytes = 0;
    for (uint64_t seq = 22; seq <= 31; seq++)
        bytes += s_size(seq);
    CHECK_EQ_U64(st.bytes, bytes);
    nx_store_destroy(&store);
    s_rm_store(path);

    /*  By bytes.                                                           */
    path = s_new_path();
    cfg = s_config(path);
    cfg.retain_bytes = 5 * s_size(1);
    store = s_open(&cfg);
    if (!store)
        return;
    s_fill(store, 1, 9, 0); /* payload-1..9: all the same size            */
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 5);
    CHECK_EQ_U64(st.first_seq, 5);
    CHECK_EQ_U64(st.bytes, 5 * s_size(1));
    s_fill(store, 10, 10, 0); /* a longer record: bytes over until 4 left  */
    nx_store_stats(store, &st);
    CHECK(st.bytes <= cfg.retain_bytes);
    CHECK_EQ_U64(st.count, 4);
    CHECK_EQ_U64(st.last_seq, 10);
    nx_store_destroy(&store);
    s_rm_store(path);

    /*  By age: everything older than now - age, trim_batch at a time;
        last_seq and last_ts survive when no event is left, also across a
        restart.                                                            */
    path = s_new_path();
    cfg = s_config(path);
    cfg.retain_age_us = 1000;
    cfg.trim_batch = 7;
    store = s_open(&cfg);
    if (!store)
        return;
    s_fill(store, 1, 20, s_ts(20)); /* nothing older than 1000 us yet      */
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 20);
    CHECK_EQ_U64(nx_store_trim(store, s_ts(10) + 1000, 100), 9); /* ts < s_ts(10)          */
    uint64_t far = UINT64_C(1) << 60;
    CHECK_EQ_U64(nx_store_trim(store, far, 5), 5);
    CHECK_EQ_U64(s_append(store, 21, s_ts(21)), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, far), NEXUS_OK); /* 7 of the 7 left        */
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 0);
    CHECK_EQ_U64(st.first_seq, 0);
    CHECK_EQ_U64(st.bytes, 0);
    CHECK_EQ_U64(st.last_seq, 21);
    CHECK_EQ_U64(st.last_ts, s_ts(21));
    CHECK_EQ_U64(st.trimmed, 21);
    nx_store_reader_t *reader = nx_store_reader_new(store);
    CHECK(reader != NULL);
    CHECK_EQ_U64(nx_store_reader_seq_at_time(reader, 0), 22);
    uint64_t seq;
    nx_record_t rec;
    nx_store_reader_seek(reader, UINT64_MAX, true);
    CHECK_EQ_U64(nx_store_reader_next(reader, &seq, &rec), 0);
    nx_store_reader_destroy(&reader);
    nx_store_destroy(&store);
    store = s_open(&cfg);
    if (!store)
        return;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 0);
    CHECK_EQ_U64(st.first_seq, 0);
    CHECK_EQ_U64(st.bytes, 0);
    CHECK_EQ_U64(st.last_seq, 21);
    CHECK_EQ_U64(st.last_ts, s_ts(21));
    CHECK_EQ_U64(s_append(store, 21, s_ts(21)), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(s_append(store, 22, s_ts(22)), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, s_ts(22)), NEXUS_OK);
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 1);
    CHECK_EQ_U64(st.first_seq, 22);
    nx_store_destroy(&store);
    s_rm_store(path);
}

typedef struct {
    int calls;      /* fn invocations                                       */
    int stop_after; /* return 1 after this many; 0 = never                 */
    char keys[8][8];
} s_each_t;

static int s_each(const void *key, size_t key_len, const void *value, size_t value_len, void *arg)
{
    s_each_t *each = arg;
    if (each->calls < 8 && key_len < 8) {
        memcpy(each->keys[each->calls], key, key_len);
        each->keys[each->calls][key_len] = '\0';
    }
    each->calls++;
    CHECK(value_len == 2 && memcmp(value, "v", 1) == 0);
    return each->stop_after && each->calls >= each->stop_after;
}

static void s_test_keyed(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    void *value = NULL;
    size_t len = 0;
    CHECK_EQ_U64(nx_store_get(store, NX_DB_CLAIMS, "w1", 2, &value, &len), NEXUS_ERR_NOT_FOUND);
    CHECK_EQ_U64(nx_store_del(store, NX_DB_CLAIMS, "w1", 2), NEXUS_ERR_NOT_FOUND);
    CHECK(!nx_store_in_batch(store));
    CHECK_EQ_U64(nx_store_put(store, NX_DB__COUNT, "k", 1, "v", 1), NEXUS_ERR_INVALID);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "", 0, "v", 1), NEXUS_ERR_INVALID);
    char big[600];
    memset(big, 'k', sizeof big);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, big, sizeof big, "v", 1), NEXUS_ERR_INVALID);
    CHECK(!nx_store_in_batch(store));

    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "w2", 2, "v2", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "w1", 2, "v1", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "w3", 2, "vx", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_SESSIONS, "w1", 2, "va", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_META, "r", 1, "", 0), NEXUS_OK);
    CHECK(nx_store_in_batch(store));
    /*  Inside the batch get sees the batch; foreach sees the last commit. */
    CHECK_EQ_U64(nx_store_get(store, NX_DB_CLAIMS, "w1", 2, &value, &len), NEXUS_OK);
    CHECK(len == 2 && memcmp(value, "v1", 2) == 0);
    free(value);
    s_each_t each = {0};
    CHECK_EQ_U64(nx_store_foreach(store, NX_DB_CLAIMS, s_each, &each), NEXUS_OK);
    CHECK_EQ_U64(each.calls, 0);
    /*  A missing key does not spoil the batch.                             */
    CHECK_EQ_U64(nx_store_del(store, NX_DB_CLAIMS, "nope", 4), NEXUS_ERR_NOT_FOUND);
    CHECK(nx_store_in_batch(store));
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);

    CHECK_EQ_U64(nx_store_get(store, NX_DB_SESSIONS, "w1", 2, &value, &len), NEXUS_OK);
    CHECK(len == 2 && memcmp(value, "va", 2) == 0);
    free(value);
    CHECK_EQ_U64(nx_store_get(store, NX_DB_META, "r", 1, &value, &len), NEXUS_OK);
    CHECK_EQ_U64(len, 0);
    free(value);
    CHECK_EQ_U64(nx_store_get(store, NX_DB_SESSIONS, "w2", 2, &value, &len), NEXUS_ERR_NOT_FOUND);
    CHECK(strlen(nx_store_errmsg(store)) > 0);

    each = (s_each_t){0};
    CHECK_EQ_U64(nx_store_foreach(store, NX_DB_CLAIMS, s_each, &each), NEXUS_OK);
    CHECK_EQ_U64(each.calls, 3);
    CHECK_EQ_STR(each.keys[0], "w1");
    CHECK_EQ_STR(each.keys[1], "w2");
    CHECK_EQ_STR(each.keys[2], "w3");
    each = (s_each_t){.stop_after = 2};
    CHECK_EQ_U64(nx_store_foreach(store, NX_DB_CLAIMS, s_each, &each), NEXUS_OK);
    CHECK_EQ_U64(each.calls, 2);

    /*  Overwrite and delete in one batch, read inside and after.          */
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "w1", 2, "vy", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_del(store, NX_DB_CLAIMS, "w2", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_get(store, NX_DB_CLAIMS, "w2", 2, &value, &len), NEXUS_ERR_NOT_FOUND);
    CHECK_EQ_U64(nx_store_get(store, NX_DB_CLAIMS, "w1", 2, &value, &len), NEXUS_OK);
    CHECK(len == 2 && memcmp(value, "vy", 2) == 0);
    free(value);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    nx_store_destroy(&store);

    /*  Keyed data survives a restart, and the store's meta keys do not
        show up as the caller's.                                            */
    store = s_open(&cfg);
    if (!store)
        return;
    each = (s_each_t){0};
    CHECK_EQ_U64(nx_store_foreach(store, NX_DB_CLAIMS, s_each, &each), NEXUS_OK);
    CHECK_EQ_U64(each.calls, 2);
    CHECK_EQ_STR(each.keys[0], "w1");
    CHECK_EQ_STR(each.keys[1], "w3");
    nx_store_destroy(&store);
    s_rm_store(path);
}

/*  Appends batches of `per` events with a 200-byte payload until a write or
    the commit says STORE_FULL (or max batches). Returns the error that
    stopped it; *seq is the next seq to use.                                */
static nexus_err_t s_fill_until_full(nx_store_t *store, uint64_t *seq, int per, int max,
                                     bool make_room, int *grows, int *trims)
{
    uint8_t payload[200];
    memset(payload, 'p', sizeof payload);
    for (int b = 0; b < max; b++) {
        if (make_room) {
            int action = -1;
            nexus_err_t err = nx_store_make_room(store, (uint64_t)per * 300, &action);
            CHECK_EQ_U64(err, NEXUS_OK);
            CHECK(action >= 0 && action <= 2);
            if (action == 1)
                (*grows)++;
            if (action == 2)
                (*trims)++;
        }
        nx_store_stats_t before, after;
        nx_store_stats(store, &before);
        nexus_err_t err = NEXUS_OK;
        for (int i = 0; i < per && err == NEXUS_OK; i++) {
            err = nx_store_append(store, *seq, *seq, "t", 1, "s", 1, payload, sizeof payload);
            if (err == NEXUS_OK)
                (*seq)++;
        }
        if (err == NEXUS_OK)
            err = nx_store_commit(store, 0);
        if (err != NEXUS_OK) {
            /*  The whole batch is gone: counters as before it.            */
            CHECK(!nx_store_in_batch(store));
            nx_store_stats(store, &after);
            CHECK_EQ_U64(after.last_seq, before.last_seq);
            CHECK_EQ_U64(after.count, before.count);
            CHECK_EQ_U64(after.bytes, before.bytes);
            CHECK_EQ_U64(after.first_seq, before.first_seq);
            CHECK_EQ_U64(after.commits, before.commits);
            *seq = before.last_seq + 1;
            return err;
        }
    }
    return NEXUS_OK;
}

static void s_test_map_full(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.map_size = 256 << 10;
    cfg.map_max = 256 << 10;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    CHECK_EQ_U64(nx_store_put(store, NX_DB_SESSIONS, "keep", 4, "me", 2), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    uint64_t seq = 1;
    int grows = 0, trims = 0;
    nexus_err_t err = s_fill_until_full(store, &seq, 50, 1000, false, &grows, &trims);
    CHECK_EQ_U64(err, NEXUS_ERR_STORE_FULL);
    CHECK(strlen(nx_store_errmsg(store)) > 0);
    nx_store_stats_t st;
    nx_store_stats(store, &st);
    CHECK(st.count > 100);
    CHECK_EQ_U64(s_count_events(store, NULL, false), st.count);

    /*  A reader that stays open makes make_room give up (busy).           */
    nx_store_reader_t *reader = nx_store_reader_new(store);
    int action = -1;
    CHECK_EQ_U64(nx_store_make_room(store, 0, &action), NEXUS_ERR_BUSY);
    nx_store_reader_destroy(&reader);

    uint64_t count_before = st.count;
    CHECK_EQ_U64(nx_store_make_room(store, 50 * 300, &action), NEXUS_OK);
    CHECK_EQ_U64(action, 2);
    nx_store_stats(store, &st);
    CHECK(st.count > 0 && st.count < count_before);
    CHECK_EQ_U64(st.last_seq, seq - 1);
    CHECK_EQ_U64(st.grows, 0);
    CHECK_EQ_U64(st.map_size, 256 << 10);
    uint64_t first = 0;
    CHECK_EQ_U64(s_count_events(store, &first, false), st.count);
    CHECK_EQ_U64(first, st.first_seq);
    CHECK_EQ_U64(st.first_seq + st.count, seq);

    /*  Appends fit again, for several batches.                             */
    CHECK_EQ_U64(s_fill_until_full(store, &seq, 50, 5, false, &grows, &trims), NEXUS_OK);
    /*  Nothing to do now.                                                  */
    CHECK_EQ_U64(nx_store_make_room(store, 0, &action), NEXUS_OK);
    CHECK_EQ_U64(action, 0);
    /*  More than the map can ever hold.                                    */
    nx_store_stats(store, &st);
    count_before = st.count;
    CHECK_EQ_U64(nx_store_make_room(store, 1 << 20, &action), NEXUS_ERR_STORE_FULL);
    CHECK_EQ_U64(action, 0);
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, count_before);
    /*  Keyed data filling the map: make_room trims events (even from a
        map full to the last page) until none is left, then gives up.     */
    char big[400];
    memset(big, 'b', sizeof big);
    int key_no = 0, rounds = 0;
    nexus_err_t rerr = NEXUS_OK;
    for (rounds = 0; rounds < 20 && rerr == NEXUS_OK; rounds++) {
        nexus_err_t perr = NEXUS_OK;
        while (perr == NEXUS_OK && key_no < 1000) {
            char key[16];
            snprintf(key, sizeof key, "big%04d", key_no++);
            perr = nx_store_put(store, NX_DB_CLAIMS, key, strlen(key), big, sizeof big);
            if (perr == NEXUS_OK && key_no % 20 == 0)
                perr = nx_store_commit(store, 0);
        }
        CHECK_EQ_U64(perr, NEXUS_ERR_STORE_FULL);
        nx_store_stats(store, &st);
        count_before = st.count;
        rerr = nx_store_make_room(store, 0, &action);
        /*  2 whenever there was something to trim.                         */
        CHECK_EQ_U64(action, count_before > 0 ? 2 : 0);
        nx_store_stats(store, &st);
        CHECK(st.map_size <= (256 << 10) + 32 * 4096);
        CHECK_EQ_U64(st.last_seq, seq - 1);
    }
    CHECK_EQ_U64(rerr, NEXUS_ERR_STORE_FULL);
    CHECK(rounds >= 2);
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 0);
    CHECK_EQ_U64(st.first_seq, 0);
    CHECK_EQ_U64(st.last_seq, seq - 1);
    /*  Freeing the keyed data makes room again.                            */
    for (int i = 0; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof key, "big%04d", i);
        nexus_err_t derr = nx_store_del(store, NX_DB_CLAIMS, key, strlen(key));
        CHECK(derr == NEXUS_OK || derr == NEXUS_ERR_NOT_FOUND);
    }
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    /*  The keyed data was not touched.                                     */
    void *value = NULL;
    size_t len = 0;
    CHECK_EQ_U64(nx_store_get(store, NX_DB_SESSIONS, "keep", 4, &value, &len), NEXUS_OK);
    free(value);
    /*  With make_room before every batch the store never fills up.        */
    CHECK_EQ_U64(s_fill_until_full(store, &seq, 50, 200, true, &grows, &trims), NEXUS_OK);
    CHECK_EQ_U64(grows, 0);
    CHECK(trims > 0);
    nx_store_stats(store, &st);
    CHECK(st.count > 0);
    nx_store_destroy(&store);
    s_rm_store(path);
}

/*  A map filled to the very last page (a big value halved until even a few
    bytes do not fit): a delete needs fresh pages too, so make_room must
    still get out of it, and the map may end only a little over map_max. */
static void s_test_map_exhausted(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.map_size = 256 << 10;
    cfg.map_max = 256 << 10;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    uint64_t seq = 1;
    int grows = 0, trims = 0;
    CHECK_EQ_U64(s_fill_until_full(store, &seq, 20, 1000, false, &grows, &trims),
                 NEXUS_ERR_STORE_FULL);
    size_t big_size = 200000;
    char *big = malloc(big_size);
    CHECK(big != NULL);
    if (!big)
        return;
    memset(big, 'x', big_size);
    int key_no = 0;
    for (size_t len = big_size; len >= 8;) {
        char key[16];
        snprintf(key, sizeof key, "k%d", key_no++);
        nexus_err_t err = nx_store_put(store, NX_DB_CLAIMS, key, strlen(key), big, len);
        if (err == NEXUS_OK)
            err = nx_store_commit(store, 0);
        if (err != NEXUS_OK) {
            CHECK_EQ_U64(err, NEXUS_ERR_STORE_FULL);
            len /= 2;
        }
    }
    free(big);
    nx_store_stats_t st;
    nx_store_stats(store, &st);
    uint64_t count_before = st.count;
    int action = -1;
    CHECK_EQ_U64(nx_store_make_room(store, 1000, &action), NEXUS_OK);
    CHECK_EQ_U64(action, 2);
    nx_store_stats(store, &st);
    CHECK(st.count < count_before);
    CHECK(st.map_size >= (256 << 10) && st.map_size <= (256 << 10) + 32 * 4096);
    CHECK_EQ_U64(s_fill_until_full(store, &seq, 20, 3, true, &grows, &trims), NEXUS_OK);
    nx_store_destroy(&store);
    s_rm_store(path);
}

static void s_test_grow(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.map_size = 256 << 10;
    cfg.map_max = 4 << 20;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    uint64_t seq = 1;
    int grows = 0, trims = 0;
    /*  ~1.5 MiB of records: the map doubles 256K -> 512K -> 1M -> 2M.      */
    CHECK_EQ_U64(s_fill_until_full(store, &seq, 50, 120, true, &grows, &trims), NEXUS_OK);
    nx_store_stats_t st;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.count, 6000);
    CHECK_EQ_U64(st.trimmed, 0);
    CHECK_EQ_U64(st.grows, (uint64_t)grows);
    CHECK_EQ_U64(st.grows, 3);
    CHECK_EQ_U64(trims, 0);
    CHECK_EQ_U64(st.map_size, 2 << 20);
    CHECK(st.map_used <= st.map_size);
    /*  The grown size survives a restart.                                  */
    nx_store_destroy(&store);
    store = s_open(&cfg);
    if (!store)
        return;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.map_size, 2 << 20);
    CHECK_EQ_U64(st.count, 6000);
    CHECK_EQ_U64(s_count_events(store, NULL, false), 6000);
    nx_store_destroy(&store);
    s_rm_store(path);
}

/*  A read of keyed data on another thread (the loop reloads claims and
    sessions at a promotion) holds the map: make_room, on the thread that
    owns the store, must not resize it under the open transaction (LMDB
    forbids it; the reader's pointers would move), and gives up (busy).   */
typedef struct {
    nx_store_t *store;
    atomic_int in, done, keys, good;
} s_slow_t;

static int s_slow_each(const void *key, size_t key_len, const void *value, size_t value_len,
                       void *arg)
{
    s_slow_t *s = arg;
    atomic_store(&s->in, 1);
    for (int i = 0; i < 300 && !atomic_load(&s->done); i++)
        usleep(10000);
    atomic_fetch_add(&s->keys, 1);
    if (key_len == 2 && value_len == 3 && memcmp(value, "val", 3) == 0 &&
        ((const char *)key)[0] == 'k')
        atomic_fetch_add(&s->good, 1);
    return 0;
}

static void *s_slow_reader(void *arg)
{
    s_slow_t *s = arg;
    CHECK_EQ_U64(nx_store_foreach(s->store, NX_DB_CLAIMS, s_slow_each, s), NEXUS_OK);
    return NULL;
}

static void s_test_resize_under_reader(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.map_size = 256 << 10;
    cfg.map_max = 8 << 20;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "k1", 2, "val", 3), NEXUS_OK);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_CLAIMS, "k2", 2, "val", 3), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    s_slow_t slow = {.store = store};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, s_slow_reader, &slow) == 0);
    for (int i = 0; i < 300 && !atomic_load(&slow.in); i++)
        usleep(10000);
    CHECK(atomic_load(&slow.in));
    int action = -1;
    CHECK_EQ_U64(nx_store_make_room(store, 2 << 20, &action), NEXUS_ERR_BUSY);
    nx_store_stats_t st;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.map_size, 256 << 10);
    atomic_store(&slow.done, 1);
    pthread_join(t, NULL);
    CHECK_EQ_U64(atomic_load(&slow.keys), 2);
    CHECK_EQ_U64(atomic_load(&slow.good), 2);
    /*  The reader gone, the map grows.                                     */
    CHECK_EQ_U64(nx_store_make_room(store, 2 << 20, &action), NEXUS_OK);
    CHECK_EQ_U64(action, 1);
    nx_store_stats(store, &st);
    CHECK(st.map_size > 256 << 10);
    nx_store_destroy(&store);
    s_rm_store(path);
}

static void s_test_sync(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.sync = true;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    for (uint64_t b = 0; b < 5; b++)
        s_fill(store, b * 10 + 1, b * 10 + 10, 0);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_META, "epoch", 5, "7", 1), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    nx_store_stats_t st;
    nx_store_stats(store, &st);
    CHECK_EQ_U64(st.commits, 6);
    nx_store_destroy(&store);
    store = s_open(&cfg);
    if (!store)
        return;
    CHECK_EQ_U64(nx_store_last_seq(store), 50);
    CHECK_EQ_U64(s_count_events(store, NULL, true), 50);
    void *value = NULL;
    size_t len = 0;
    CHECK_EQ_U64(nx_store_get(store, NX_DB_META, "epoch", 5, &value, &len), NEXUS_OK);
    CHECK(len == 1 && memcmp(value, "7", 1) == 0);
    free(value);
    nx_store_destroy(&store);
    s_rm_store(path);
}

/*  The store's identity: hex of the documented length, the same after a
    reopen, another one for another directory.                            */
static void s_test_identity(void)
{
    const char *path = s_new_path();
    nx_store_config_t cfg = s_config(path);
    cfg.sync = true;
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    char id[NX_STORE_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", nx_store_id(store));
    CHECK_EQ_U64(strlen(id), NX_STORE_ID_LEN);
    CHECK_EQ_U64(strspn(id, "0123456789abcdef"), NX_STORE_ID_LEN);
    s_fill(store, 1, 10, 0);
    nx_store_destroy(&store);
    store = s_open(&cfg);
    if (!store)
        return;
    CHECK_EQ_STR(nx_store_id(store), id);
    nx_store_destroy(&store);
    s_rm_store(path);

    /*  Another directory: another store.                                  */
    path = s_new_path();
    cfg = s_config(path);
    store = s_open(&cfg);
    if (!store)
        return;
    CHECK_EQ_U64(strlen(nx_store_id(store)), NX_STORE_ID_LEN);
    CHECK(strcmp(nx_store_id(store), id) != 0);
    nx_store_destroy(&store);
    s_rm_store(path);
    CHECK_EQ_STR(nx_store_id(NULL), "");
}

/*  A copy (a standby's base) is a store of its own with the same identity,
    events and keyed values, taken while the store stays open.             */
static void s_test_copy(void)
{
    nx_store_config_t cfg = s_config(s_new_path());
    nx_store_t *store = s_open(&cfg);
    if (!store)
        return;
    s_fill(store, 1, 500, 0);
    CHECK_EQ_U64(nx_store_put(store, NX_DB_META, "fence", 5, "\0\0\0\0\0\0\0\x07", 8), NEXUS_OK);
    CHECK_EQ_U64(nx_store_commit(store, 0), NEXUS_OK);
    char id[NX_STORE_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", nx_store_id(store));
    char copy_dir[160], file[200];
    snprintf(copy_dir, sizeof copy_dir, "%s/t%d/store", s_dir, ++s_path_no);
    char parent[160];
    snprintf(parent, sizeof parent, "%s/t%d", s_dir, s_path_no);
    CHECK(mkdir(parent, 0700) == 0 && mkdir(copy_dir, 0700) == 0);
    snprintf(file, sizeof file, "%s/data.mdb", copy_dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    char err[256] = "";
    CHECK_EQ_U64(nx_store_copy(store, fd, err, sizeof err), NEXUS_OK);
    close(fd);
    /*  The store goes on after the copy; the copy does not see it.        */
    s_fill(store, 501, 510, 0);
    CHECK_EQ_U64(nx_store_last_seq(store), 510);
    nx_store_config_t ccfg = s_config(copy_dir);
    nx_store_t *copy = s_open(&ccfg);
    CHECK(copy != NULL);
    if (copy) {
        CHECK_EQ_STR(nx_store_id(copy), id);
        CHECK_EQ_U64(nx_store_last_seq(copy), 500);
        uint64_t first = 0;
        CHECK_EQ_U64(s_count_events(copy, &first, true), 500);
        void *v = NULL;
        size_t len = 0;
        CHECK_EQ_U64(nx_store_get(copy, NX_DB_META, "fence", 5, &v, &len), NEXUS_OK);
        CHECK(len == 8 && v && ((uint8_t *)v)[7] == 7);
        free(v);
        nx_store_destroy(&copy);
    }
    /*  A file that cannot be written: an error, the store unharmed.       */
    CHECK_EQ_U64(nx_store_copy(store, -1, err, sizeof err), NEXUS_ERR_STORE);
    CHECK(err[0] != 0);
    CHECK_EQ_U64(nx_store_last_seq(store), 510);
    nx_store_destroy(&store);
    s_rm_store(cfg.path);
    s_rm_store(copy_dir);
}

int main(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/nx_store_test.XXXXXX");
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        return 1;
    }
    s_test_open_errors();
    s_test_one_store_per_dir();
    s_test_append_read();
    s_test_abort();
    s_test_retention();
    s_test_keyed();
    s_test_map_full();
    s_test_map_exhausted();
    s_test_grow();
    s_test_resize_under_reader();
    s_test_sync();
    s_test_identity();
    s_test_copy();
    if (rmdir(s_dir) != 0)
        perror("rmdir");
    CHECK(access(s_dir, F_OK) != 0);
    NX_TEST_DONE();
}
