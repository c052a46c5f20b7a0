/*  =========================================================================
    nx_history - the history query: patterns, seq and time bounds, a page
    size and a cursor in; matching events out in seq order or reverse. It
    runs on the broker's reader thread (nx_reader.c) against a read
    snapshot, so a long query never holds up the event loop.
    =========================================================================
*/

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nx_history.h"
#include "nx_topic.h"

#define S_PATTERNS_MAX 64 /* patterns in one history query                  */

static int s_fail(nexus_err_t *err, nexus_err_t code, char *err_msg, const char *text)
{
    *err = code;
    if (text)
        snprintf(err_msg, NX_ERRMSG_MAX, "%s", text);
    return -1;
}

/*  ---- history ----------------------------------------------------------
    Patterns, bounds and a page size come in; events matching any pattern
    go out in seq order (or reverse), with a cursor when the page was cut
    short by `limit` or by the scan budget (history_scan), so one query can
    never hold the loop for long.                                            */

typedef struct {
    const char *ptr[S_PATTERNS_MAX];
    size_t len[S_PATTERNS_MAX];
    bool literal[S_PATTERNS_MAX]; /* no wildcard: compared as bytes          */
    size_t count;                 /* 0: every event                                         */
} s_patterns_t;

static bool s_patterns_match(const s_patterns_t *p, const nx_record_t *rec)
{
    if (p->count == 0)
        return true;
    for (size_t i = 0; i < p->count; i++) {
        /*  A pattern without wildcards matches its own bytes only: a page
            scans up to history_scan records, so spare them the matcher.   */
        if (p->literal[i]
                ? p->len[i] == rec->topic_len && memcmp(p->ptr[i], rec->topic, rec->topic_len) == 0
                : nx_pattern_match(p->ptr[i], p->len[i], rec->topic, rec->topic_len))
            return true;
    }
    return false;
}

static int s_read_patterns(const msgpack_object *req, s_patterns_t *p, nexus_err_t *err,
                           char *err_msg)
{
    p->count = 0;
    const char *one = NULL;
    size_t one_len = 0;
    const msgpack_object_array *many = NULL;
    if ((*err = nx_map_str(req, "pattern", &one, &one_len, err_msg)) ||
        (*err = nx_map_str_array(req, "patterns", &many, err_msg)))
        return -1;
    if (one) {
        p->ptr[0] = one;
        p->len[0] = one_len;
        p->count = 1;
    }
    if (many) {
        /*  No pattern at all means every event; an empty list given on
            purpose is more likely a bug of the caller's than that.        */
        if (many->size == 0 && !one)
            return s_fail(err, NEXUS_ERR_BAD_REQUEST, err_msg,
                          "field 'patterns' is empty (leave it out for every event)");
        if (many->size + p->count > S_PATTERNS_MAX)
            return s_fail(err, NEXUS_ERR_BAD_REQUEST, err_msg, "at most 64 patterns per query");
        for (uint32_t i = 0; i < many->size; i++) {
            p->ptr[p->count] = many->ptr[i].via.str.ptr;
            p->len[p->count] = many->ptr[i].via.str.size;
            p->count++;
        }
    }
    for (size_t i = 0; i < p->count; i++) {
        if (!nx_pattern_valid(p->ptr[i], p->len[i])) {
            *err = NEXUS_ERR_BAD_PATTERN;
            snprintf(err_msg, NX_ERRMSG_MAX, "invalid pattern '%.*s'",
                     (int)nx_utf8_cut(p->ptr[i], p->len[i], 64), p->ptr[i]);
            return -1;
        }
        /*  A pattern that matches everything makes the filter moot.       */
        if (nx_pattern_is_all(p->ptr[i], p->len[i])) {
            p->count = 0;
            break;
        }
        p->literal[i] = nx_pattern_is_literal(p->ptr[i], p->len[i]);
    }
    return 0;
}

/*  With tokens: every pattern (none means ">") must be one the token may
    read; other sessions' private topics under it are filtered later.    */
static int s_check_access(nx_auth_t *auth, const void *handle, const s_patterns_t *p,
                          nexus_err_t *err, char *err_msg)
{
    if (!auth || !nx_auth_enabled(auth))
        return 0;
    for (size_t i = 0; i < (p->count ? p->count : 1); i++) {
        const char *pat = p->count ? p->ptr[i] : ">";
        size_t len = p->count ? p->len[i] : 1;
        if (!nx_auth_may_subscribe(auth, handle, pat, len)) {
            char sub[200];
            *err = NEXUS_ERR_FORBIDDEN;
            snprintf(err_msg, NX_ERRMSG_MAX,
                     "this token (%s) may not read '%.*s': its sub= is '%s'",
                     nx_auth_name(auth, handle), (int)nx_utf8_cut(pat, len, 64), pat,
                     nx_auth_describe(auth, handle, true, sub, sizeof sub));
            return -1;
        }
    }
    return 0;
}

int nx_history_query(nx_store_t *store, const nx_history_limits_t *limits, nx_auth_t *auth,
                     const void *handle, const msgpack_object *req, nx_dmap_t *reply,
                     msgpack_sbuffer *scratch, nexus_err_t *err, char *err_msg)
{
    s_patterns_t patterns;
    if (s_read_patterns(req, &patterns, err, err_msg) ||
        s_check_access(auth, handle, &patterns, err, err_msg))
        return -1;
    /*  Checked per event only when the token may not read everything.    */
    bool filter = auth && nx_auth_sub_restricted(auth, handle);
    uint64_t since_seq = 0, since_time = 0, until_seq = UINT64_MAX, until_time = UINT64_MAX;
    uint64_t limit = 100, cursor = 0;
    const char *order = "asc";
    size_t order_len = 3;
    if ((*err = nx_map_u64(req, "since_seq", &since_seq, err_msg)) ||
        (*err = nx_map_u64(req, "since_time", &since_time, err_msg)) ||
        (*err = nx_map_u64(req, "until_seq", &until_seq, err_msg)) ||
        (*err = nx_map_u64(req, "until_time", &until_time, err_msg)) ||
        (*err = nx_map_u64(req, "limit", &limit, err_msg)) ||
        (*err = nx_map_u64(req, "cursor", &cursor, err_msg)) ||
        (*err = nx_map_str(req, "order", &order, &order_len, err_msg)))
        return -1;
    bool desc;
    if (order_len == 3 && memcmp(order, "asc", 3) == 0)
        desc = false;
    else if (order_len == 4 && memcmp(order, "desc", 4) == 0)
        desc = true;
    else
        return s_fail(err, NEXUS_ERR_BAD_REQUEST, err_msg, "field 'order' must be 'asc' or 'desc'");
    if (limit == 0)
        return s_fail(err, NEXUS_ERR_BAD_REQUEST, err_msg, "field 'limit' must be at least 1");
    /*  A page holds at most history_limit events, whatever was asked: a
        page may end early anyway (history_scan, history_bytes) and every
        client follows next_cursor, so an operator who lowers the limit
        gets shorter pages, not clients that fail on every query.           */
    if (limit > limits->limit_max)
        limit = limits->limit_max;

    nx_store_reader_t *reader = nx_store_reader_new(store);
    if (!reader)
        return s_fail(err, NEXUS_ERR_STORE, err_msg, nx_store_errmsg(store));

    /*  Turn every bound into an inclusive seq range [lo, hi].              */
    uint64_t lo = since_seq == UINT64_MAX ? UINT64_MAX : since_seq + 1, hi = until_seq;
    if (since_time) {
        uint64_t at = nx_store_reader_seq_at_time(reader, since_time);
        if (at > lo)
            lo = at;
    }
    if (until_time != UINT64_MAX) {
        uint64_t after = until_time == UINT64_MAX
                             ? UINT64_MAX
                             : nx_store_reader_seq_at_time(reader, until_time + 1);
        if (after == 0)
            hi = 0;
        else if (after - 1 < hi)
            hi = after - 1;
    }
    if (cursor) {
        if (desc && cursor < hi)
            hi = cursor;
        if (!desc && cursor > lo)
            lo = cursor;
    }

    msgpack_sbuffer *events = scratch;
    msgpack_sbuffer_clear(events);
    msgpack_packer epk;
    msgpack_packer_init(&epk, events, msgpack_sbuffer_write);
    uint64_t found = 0, scanned = 0, next = 0, seq = 0;
    bool more = false;
    if (lo <= hi) {
        nx_store_reader_seek(reader, desc ? hi : lo, desc);
        nx_record_t rec;
        int rc;
        while ((rc = nx_store_reader_next(reader, &seq, &rec)) == 1) {
            if (seq < lo || seq > hi)
                break;
            /*  The byte budget bounds the reader's memory: a page of 10000
                events of 1 MiB would otherwise be 10 GiB. It may pass the
                budget by the one event that crossed it.                   */
            if (found == limit || scanned == limits->scan_max ||
                (found && events->size >= limits->bytes_max)) {
                more = true;
                next = seq;
                break;
            }
            scanned++;
            if (s_patterns_match(&patterns, &rec) &&
                (!filter || nx_auth_may_read(auth, handle, rec.topic, rec.topic_len))) {
                nx_pack_event(&epk, seq, &rec);
                found++;
            }
        }
        if (rc < 0) {
            nx_store_reader_destroy(&reader);
            return s_fail(err, NEXUS_ERR_STORE, err_msg, "history record does not decode");
        }
    }
    uint64_t first_seq, last_seq;
    nx_store_reader_bounds(reader, &first_seq, &last_seq);
    nx_store_reader_destroy(&reader);

    /*  The page's fields first and its events last: a client that reads
        the reply front to back (libnexus does) knows where the next page
        starts, and asks for it, before it walks the events.               */
    msgpack_packer *pk = &reply->pk;
    nx_pack_str(nx_dmap_pair(reply), "next_cursor");
    if (more)
        msgpack_pack_uint64(pk, next);
    else
        msgpack_pack_nil(pk);
    nx_pack_kv_u64(nx_dmap_pair(reply), "scanned", scanned);
    nx_pack_kv_u64(nx_dmap_pair(reply), "first_seq", first_seq);
    nx_pack_kv_u64(nx_dmap_pair(reply), "last_seq", last_seq);
    nx_pack_kv_str(nx_dmap_pair(reply), "store_id", nx_store_id(store));
    nx_pack_str(nx_dmap_pair(reply), "events");
    msgpack_pack_array(pk, (uint32_t)found);
    msgpack_sbuffer_write(reply->buf, events->data, events->size);
    return 0;
}
