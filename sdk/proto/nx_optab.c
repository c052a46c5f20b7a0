/*  =========================================================================
    nx_optab - the table of control-plane operations (see nx_optab.h).
    docs/protocol.md section 6 is this table written out for people.
    =========================================================================
*/

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nx_codec.h"
#include "nx_optab.h"
#include "nx_topic.h"

static const char *const s_orders[] = {"asc", "desc", NULL};
static const char *const s_states[] = {"available", "busy", "away", NULL};
static const char *const s_claim_states[] = {"claimed",   "released", "expired",
                                             "completed", "open",     NULL};

/*  Fields shared by many ops.                                              */
#define F_SESSION_REQ                                                                              \
    {                                                                                              \
        "session", NX_FT_STR, NX_FF_REQ, 0, 0, 0, NULL, "the session this request acts as"         \
    }
#define F_SECRET                                                                                   \
    {                                                                                              \
        "secret", NX_FT_STR, 0, 0, 0, 0, NULL,                                                     \
            "the session's secret, to act as it from another connection"                           \
    }
#define F_WORK_ID                                                                                  \
    {                                                                                              \
        "work_id", NX_FT_STR, NX_FF_REQ | NX_FF_NONUL, 1, 256, 0, NULL,                            \
            "the unit of work: any name, 1..256 bytes"                                             \
    }
#define F_TOKEN                                                                                    \
    {                                                                                              \
        "token", NX_FT_U64, NX_FF_REQ, 0, 0, 0, NULL, "the fencing token the claim returned"       \
    }
#define F_TTL                                                                                      \
    {                                                                                              \
        "ttl_ms", NX_FT_U64, 0, 100, 0, 0, NULL,                                                   \
            "lease length in ms (default: the broker's claim_ttl, 30 s)"                           \
    }
#define F_TEXT(name, doc)                                                                          \
    {                                                                                              \
        name, NX_FT_STR, NX_FF_NIL | NX_FF_NONUL, 0, 4096, 0, NULL, doc                            \
    }
#define F_END                                                                                      \
    {                                                                                              \
        NULL, 0, 0, 0, 0, 0, NULL, NULL                                                            \
    }

static const nx_field_t s_none[] = {F_END};

static const nx_field_t s_publish[] = {
    {"topic", NX_FT_TOPIC, NX_FF_REQ, 0, 0, 0, NULL,
     "dot-separated tokens, no spaces or wildcards, at most 255 bytes"},
    {"payload", NX_FT_ANY, NX_FF_NIL, 0, 0, 0, NULL,
     "the event's bytes (bin), or any value, stored as its msgpack encoding"},
    {"source", NX_FT_STR, 0, 0, 128, 0, NULL, "who publishes, at most 128 bytes"},
    F_END};

static const nx_field_t s_history[] = {
    {"pattern", NX_FT_PATTERN, 0, 0, 0, 0, NULL, "one topic pattern"},
    {"patterns", NX_FT_PATTERNS, 0, 0, 0, 64, NULL,
     "topic patterns ('*' one token, '>' the rest); none: every event"},
    {"since_seq", NX_FT_U64, 0, 0, 0, 0, NULL, "only events with seq above this"},
    {"until_seq", NX_FT_U64, 0, 0, 0, 0, NULL, "only events with seq up to this"},
    {"since_time", NX_FT_U64, 0, 0, 0, 0, NULL, "only events stamped at or after (us)"},
    {"until_time", NX_FT_U64, 0, 0, 0, 0, NULL, "only events stamped at or before (us)"},
    {"limit", NX_FT_U64, 0, 1, 0, 0, NULL, "events per page (default 100)"},
    {"order", NX_FT_ENUM, 0, 0, 0, 0, s_orders, "asc (oldest first) or desc"},
    {"cursor", NX_FT_U64, 0, 0, 0, 0, NULL, "next_cursor of the previous page"},
    F_END};

static const nx_field_t s_register[] = {
    {"session", NX_FT_STR, 0, 0, 0, 0, NULL, "the id to register (default: a new one)"},
    F_SECRET,
    F_TEXT("name", "a name for people"),
    {"capabilities", NX_FT_STRS, NX_FF_NONUL, 1, 256, 256, NULL, "what the session can do"},
    {"metadata", NX_FT_MAP, NX_FF_NIL, 0, 65536, 0, NULL, "anything: machine, repo, pid"},
    {"heartbeat_ms", NX_FT_U64, 0, 100, 3600000, 0, NULL, "expected heartbeat interval"},
    {"ttl_ms", NX_FT_U64, 0, 0, 2592000000ull, 0, NULL,
     "alive this long without heartbeats (0: none)"},
    F_END};

static const nx_field_t s_heartbeat[] = {
    {"session", NX_FT_STR, 0, 0, 0, 0, NULL, "the session (or 'sessions')"},
    F_SECRET,
    {"sessions", NX_FT_STRS, 0, 0, 0, 100000, NULL, "many sessions this connection hosts"},
    F_END};

static const nx_field_t s_status[] = {
    F_SESSION_REQ,
    F_SECRET,
    {"state", NX_FT_ENUM, 0, 0, 0, 0, s_states, "available, busy or away"},
    F_TEXT("current_work", "what it works on (null clears)"),
    F_TEXT("text", "free text (null clears)"),
    F_END};

static const nx_field_t s_acting[] = {F_SESSION_REQ, F_SECRET, F_END};

static const nx_field_t s_cursor[] = {
    F_SESSION_REQ,
    F_SECRET,
    {"seq", NX_FT_U64, 0, 0, 0, 0, NULL, "the new position (absent: only read it)"},
    F_END};

static const nx_field_t s_get[] = {
    {"session", NX_FT_STR, NX_FF_REQ, 0, 0, 0, NULL, "the session id"}, F_END};

static const nx_field_t s_list[] = {
    {"all", NX_FT_BOOL, 0, 0, 0, 0, NULL, "also sessions that went (list only)"},
    {"window_ms", NX_FT_U64, 0, 0, 0, 0, NULL, "with all: gone within this long"},
    {"capability", NX_FT_STR, 0, 0, 0, 0, NULL, "must have this capability"},
    {"capabilities", NX_FT_STRS, NX_FF_NONUL, 0, 0, 0, NULL, "must have every one of these"},
    {"available", NX_FT_BOOL, 0, 0, 0, 0, NULL, "only available and active sessions"},
    {"after", NX_FT_STR, 0, 0, 64, 0, NULL, "only ids after this one (the next page)"},
    {"limit", NX_FT_U64, 0, 1, 100000, 0, NULL, "sessions at most (default 1000)"},
    F_END};

static const nx_field_t s_claim[] = {
    F_SESSION_REQ,
    F_SECRET,
    F_WORK_ID,
    F_TTL,
    {"description", NX_FT_STR, NX_FF_NONUL, 0, 4096, 0, NULL, "what the work is"},
    {"metadata", NX_FT_MAP, NX_FF_NIL, 0, 65536, 0, NULL, "anything"},
    F_END};

static const nx_field_t s_renew[] = {
    F_SESSION_REQ,
    F_SECRET,
    F_WORK_ID,
    F_TOKEN,
    {"ttl_ms", NX_FT_U64, 0, 100, 0, 0, NULL,
     "the new lease in ms from now (default: the claim's own lease length)"},
    F_END};

static const nx_field_t s_release[] = {
    F_SESSION_REQ,
    F_SECRET,
    F_WORK_ID,
    F_TOKEN,
    {"reason", NX_FT_STR, 0, 0, 4096, 0, NULL, "why, in the session's words"},
    F_END};

static const nx_field_t s_complete[] = {
    F_SESSION_REQ,
    F_SECRET,
    F_WORK_ID,
    F_TOKEN,
    {"result", NX_FT_ANY, NX_FF_NIL, 0, 65536, 0, NULL, "the outcome, any value"},
    F_END};

static const nx_field_t s_reopen[] = {F_SESSION_REQ, F_SECRET, F_WORK_ID, F_END};

static const nx_field_t s_work_get[] = {F_WORK_ID, F_END};

static const nx_field_t s_work_list[] = {
    {"holder", NX_FT_STR, 0, 0, 0, 0, NULL, "only items this session holds or held"},
    {"state", NX_FT_ENUM, 0, 0, 0, 0, s_claim_states, "claimed, released, expired, ..."},
    {"prefix", NX_FT_STR, 0, 0, 0, 0, NULL, "work ids starting with this"},
    {"after", NX_FT_STR, 0, 0, 256, 0, NULL, "only work ids after this one (the next page)"},
    {"limit", NX_FT_U64, 0, 1, 100000, 0, NULL, "items at most (default 1000)"},
    F_END};

static const nx_field_t s_replicate[] = {
    {"name", NX_FT_STR, NX_FF_REQ | NX_FF_NONUL, 1, 64, 0, NULL, "the standby's name"},
    {"store_id", NX_FT_STR, NX_FF_REQ, 0, 64, 0, NULL, "the standby's store identity"},
    {"lsn", NX_FT_U64, NX_FF_REQ, 0, 0, 0, NULL, "where the standby's copy of the log ends"},
    {"crc", NX_FT_U64, NX_FF_REQ, 0, UINT32_MAX, 0, NULL, "crc of the frame before lsn"},
    {"epoch", NX_FT_U64, 0, 0, 0, 0, NULL, "the newest epoch the standby has seen"},
    {"segment_size", NX_FT_U64, NX_FF_REQ, 0, 0, 0, NULL, "its log's segment size"},
    {"durable", NX_FT_U64, 0, 0, 0, 0, NULL, "it has the log durable up to here (<= lsn)"},
    F_END};

static const nx_field_t s_replicate_ack[] = {
    {"name", NX_FT_STR, NX_FF_REQ | NX_FF_NONUL, 1, 64, 0, NULL, "the standby's name"},
    {"lsn", NX_FT_U64, NX_FF_REQ, 0, 0, 0, NULL, "it has the log durable up to here"},
    {"received", NX_FT_U64, 0, 0, 0, 0, NULL, "it has received the log up to here"},
    {"base", NX_FT_U64, 0, 0, 0, 0, NULL, "bytes of a base copy it has written"},
    {"n", NX_FT_U64, 0, 0, 0, 0, NULL, "the ack's number (the primary echoes the last one)"},
    F_END};

static const nx_field_t s_replicate_base[] = {
    {"name", NX_FT_STR, NX_FF_REQ | NX_FF_NONUL, 1, 64, 0, NULL, "the standby's name"}, F_END};

static const nx_field_t s_promote[] = {
    {"force", NX_FT_BOOL, 0, 0, 0, 0, NULL,
     "promote even a standby that is not in sync (it may lack acknowledged changes)"},
    F_END};

static const nx_field_t s_fence[] = {
    {"epoch", NX_FT_U64, NX_FF_REQ, 1, 0, 0, NULL, "the epoch of the new primary"},
    {"primary", NX_FT_STR, NX_FF_NONUL, 0, 256, 0, NULL, "the new primary's control endpoint"},
    {"peer", NX_FT_STR, NX_FF_NONUL, 0, 256, 0, NULL,
     "the endpoint a standby copies its log from (default: primary)"},
    F_END};

#define W NX_OF_WRITE
#define R NX_OF_RETRY
#define A NX_OF_ACTS
#define S NX_OF_STANDBY

static const nx_opdef_t s_ops[] = {
    {"ping", NX_OF_OPEN | S, s_none, "the broker's clock and role; no token needed"},
    {"health", NX_OF_OPEN | S, s_none, "whether the broker serves, its role, its last seq"},
    {"state", S, s_none, "counters, rates, the store, drops, subscriptions, replication"},
    {"channels", S, s_none, "subscription prefixes with their live subscriber counts"},
    {"publish", W, s_publish, "publishes one event, acknowledged once durable"},
    {"history", NX_OF_READER | S, s_history, "events in seq order, one page at a time"},
    {"session.register", W, s_register, "registers or takes back a session"},
    {"session.heartbeat", 0, s_heartbeat, "keeps sessions alive"},
    {"session.status", W | A, s_status, "sets a session's state and status text"},
    {"session.unregister", W | R | A, s_acting, "ends a session, releasing its claims"},
    {"session.cursor", W | A, s_cursor, "reads or moves the session's durable event cursor"},
    {"session.get", 0, s_get, "one session record"},
    {"session.list", 0, s_list, "the sessions, sorted by id"},
    {"session.find", 0, s_list, "sessions by capability or availability"},
    {"work.claim", W | R | A, s_claim, "claims a work item with a lease and a fencing token"},
    {"work.renew", W | R | A, s_renew, "extends the lease of a held item"},
    {"work.release", W | R | A, s_release, "gives a held item back"},
    {"work.complete", W | R | A, s_complete, "closes a held item with a result"},
    {"work.reopen", W | R | A, s_reopen, "makes a completed item claimable again"},
    {"work.get", 0, s_work_get, "one claim record"},
    {"work.list", 0, s_work_list, "claim records, sorted by work id"},
    {"replicate", 0, s_replicate, "a standby asks for the log from where its copy ends"},
    {"replicate.ack", NX_OF_QUIET, s_replicate_ack, "a standby says how far it has the log"},
    {"replicate.base", 0, s_replicate_base, "a standby asks for a base copy of the store"},
    {"promote", S, s_promote, "makes this standby the primary (without etcd)"},
    {"fence", S, s_fence, "a newer primary tells this broker to stop taking writes"},
};

#define S_OPS (sizeof s_ops / sizeof s_ops[0])

const nx_opdef_t *nx_optab_find(const char *name, size_t len)
{
    for (size_t i = 0; name && i < S_OPS; i++)
        if (strlen(s_ops[i].name) == len && memcmp(s_ops[i].name, name, len) == 0)
            return &s_ops[i];
    return NULL;
}

const nx_opdef_t *nx_optab_all(size_t *count)
{
    *count = S_OPS;
    return s_ops;
}

const nx_field_t *nx_optab_field(const nx_opdef_t *op, const char *name)
{
    for (const nx_field_t *f = op ? op->fields : NULL; f && f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

const char *nx_optab_json_type(nx_ftype_t type)
{
    switch (type) {
    case NX_FT_STR:
    case NX_FT_ENUM:
    case NX_FT_TOPIC:
    case NX_FT_PATTERN:
        return "string";
    case NX_FT_U64:
        return "integer";
    case NX_FT_BOOL:
        return "boolean";
    case NX_FT_STRS:
    case NX_FT_PATTERNS:
        return "array";
    case NX_FT_MAP:
        return "object";
    case NX_FT_ANY:
        break;
    }
    return NULL;
}

/*  ---- Checking ------------------------------------------------------------ */

static size_t s_head(size_t n, size_t small)
{
    return n < small ? 1 : n < 65536 ? 3 : 5;
}

/*  Bytes of o packed as msgpack-c packs it (shortest forms), computed
    without packing. Bounded recursion: requests are checked to 32 levels
    before they are decoded (nx_msgpack_check).                             */
static uint64_t s_packed_size(const msgpack_object *o)
{
    uint64_t n = 0;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
    case MSGPACK_OBJECT_BOOLEAN:
        return 1;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 < 128           ? 1
               : o->via.u64 < 256         ? 2
               : o->via.u64 < 65536       ? 3
               : o->via.u64 <= UINT32_MAX ? 5
                                          : 9;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return o->via.i64 >= -32         ? 1
               : o->via.i64 >= -128      ? 2
               : o->via.i64 >= -32768    ? 3
               : o->via.i64 >= INT32_MIN ? 5
                                         : 9;
    case MSGPACK_OBJECT_FLOAT32:
        return 5;
    case MSGPACK_OBJECT_FLOAT64:
        return 9;
    case MSGPACK_OBJECT_STR:
        return o->via.str.size + (o->via.str.size < 32      ? 1
                                  : o->via.str.size < 256   ? 2
                                  : o->via.str.size < 65536 ? 3
                                                            : 5);
    case MSGPACK_OBJECT_BIN:
        return o->via.bin.size + (o->via.bin.size < 256 ? 2 : o->via.bin.size < 65536 ? 3 : 5);
    case MSGPACK_OBJECT_EXT: {
        size_t s = o->via.ext.size;
        return s + (s == 1 || s == 2 || s == 4 || s == 8 || s == 16 ? 2
                    : s < 256                                       ? 3
                    : s < 65536                                     ? 4
                                                                    : 6);
    }
    case MSGPACK_OBJECT_ARRAY:
        n = s_head(o->via.array.size, 16);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            n += s_packed_size(&o->via.array.ptr[i]);
        return n;
    case MSGPACK_OBJECT_MAP:
        n = s_head(o->via.map.size, 16);
        for (uint32_t i = 0; i < o->via.map.size; i++)
            n += s_packed_size(&o->via.map.ptr[i].key) + s_packed_size(&o->via.map.ptr[i].val);
        return n;
    }
    return 1;
}

static nexus_err_t s_bad(char *err_msg, const char *fmt, const char *field, uint64_t a, uint64_t b)
{
    snprintf(err_msg, NX_ERRMSG_MAX, fmt, field, a, b);
    return NEXUS_ERR_BAD_REQUEST;
}

/*  A str within the field's byte bounds, valid UTF-8.                      */
static nexus_err_t s_check_str(const nx_field_t *f, const char *name, const msgpack_object *v,
                               char *err_msg)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return s_bad(err_msg, "field '%s' must be a string", name, 0, 0);
    if (!nx_utf8_valid(v->via.str.ptr, v->via.str.size))
        return s_bad(err_msg, "field '%s' must be valid UTF-8", name, 0, 0);
    size_t n = v->via.str.size;
    if ((f->flags & NX_FF_NONUL) && memchr(v->via.str.ptr, 0, n))
        return s_bad(err_msg, "field '%s' must be %" PRIu64 "..%" PRIu64 " bytes, no NUL", name,
                     f->min, f->max);
    if (n < f->min || (f->max && n > f->max)) {
        if (f->min)
            return s_bad(err_msg, "field '%s' must be %" PRIu64 "..%" PRIu64 " bytes", name, f->min,
                         f->max);
        return s_bad(err_msg, "field '%s' is over %" PRIu64 " bytes", name, f->max, 0);
    }
    return NEXUS_OK;
}

static nexus_err_t s_check_field(const nx_field_t *f, const msgpack_object *v, char *err_msg)
{
    const char *name = f->name;
    if (v->type == MSGPACK_OBJECT_NIL && (f->flags & NX_FF_NIL))
        return NEXUS_OK;
    switch (f->type) {
    case NX_FT_STR:
        return s_check_str(f, name, v, err_msg);
    case NX_FT_U64:
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return s_bad(err_msg, "field '%s' must be a non-negative integer", name, 0, 0);
        if (v->via.u64 < f->min || (f->max && v->via.u64 > f->max)) {
            if (f->max)
                return s_bad(err_msg, "field '%s' must be %" PRIu64 "..%" PRIu64, name, f->min,
                             f->max);
            return s_bad(err_msg, "field '%s' must be at least %" PRIu64 "", name, f->min, 0);
        }
        return NEXUS_OK;
    case NX_FT_BOOL:
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            return s_bad(err_msg, "field '%s' must be a boolean", name, 0, 0);
        return NEXUS_OK;
    case NX_FT_STRS:
    case NX_FT_PATTERNS:
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return s_bad(err_msg, "field '%s' must be an array of strings", name, 0, 0);
        if (f->items && v->via.array.size > f->items)
            return s_bad(err_msg, "field '%s' has more than %" PRIu64 " items", name, f->items, 0);
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            const msgpack_object *it = &v->via.array.ptr[i];
            if (it->type != MSGPACK_OBJECT_STR)
                return s_bad(err_msg, "field '%s' must be an array of strings", name, 0, 0);
            if (!nx_utf8_valid(it->via.str.ptr, it->via.str.size))
                return s_bad(err_msg, "field '%s' must be an array of valid UTF-8 strings", name, 0,
                             0);
            if (f->type == NX_FT_PATTERNS && !nx_pattern_valid(it->via.str.ptr, it->via.str.size)) {
                snprintf(err_msg, NX_ERRMSG_MAX, "invalid pattern '%.*s'",
                         (int)nx_utf8_cut(it->via.str.ptr, it->via.str.size, 64), it->via.str.ptr);
                return NEXUS_ERR_BAD_PATTERN;
            }
            if ((f->flags & NX_FF_NONUL) && memchr(it->via.str.ptr, 0, it->via.str.size))
                return s_bad(err_msg, "field '%s': no NUL in its strings", name, 0, 0);
            if (f->type == NX_FT_STRS &&
                (it->via.str.size < f->min || (f->max && it->via.str.size > f->max)))
                return s_bad(err_msg, "field '%s': each must be %" PRIu64 "..%" PRIu64 " bytes",
                             name, f->min, f->max);
        }
        return NEXUS_OK;
    case NX_FT_MAP:
        if (v->type != MSGPACK_OBJECT_MAP)
            return s_bad(err_msg, "field '%s' must be a map", name, 0, 0);
        __attribute__((fallthrough)); /* the size bound */
    case NX_FT_ANY:
        if (f->max && s_packed_size(v) > f->max)
            return s_bad(err_msg, "field '%s' is over %" PRIu64 " bytes packed", name, f->max, 0);
        return NEXUS_OK;
    case NX_FT_ENUM:
        if (v->type == MSGPACK_OBJECT_STR)
            for (const char *const *e = f->values; *e; e++)
                if (strlen(*e) == v->via.str.size &&
                    memcmp(*e, v->via.str.ptr, v->via.str.size) == 0)
                    return NEXUS_OK;
        {
            char list[160] = "";
            for (const char *const *e = f->values; *e; e++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         e == f->values ? ""
                         : e[1]         ? ", "
                                        : " or ",
                         *e);
            snprintf(err_msg, NX_ERRMSG_MAX, "field '%s' must be %s", name, list);
        }
        return NEXUS_ERR_BAD_REQUEST;
    case NX_FT_TOPIC:
        if (v->type != MSGPACK_OBJECT_STR)
            return s_bad(err_msg, "field '%s' must be a string", name, 0, 0);
        /*  A topic that is not UTF-8 breaks the grammar: bad_topic, as
            protocol.md 2.1 and 6.4 say, not bad_request.                  */
        if (!nx_topic_valid(v->via.str.ptr, v->via.str.size)) {
            snprintf(err_msg, NX_ERRMSG_MAX,
                     "invalid topic: %s (dot-separated non-empty tokens, valid UTF-8, no spaces "
                     "or wildcards, at most %d bytes)",
                     nx_topic_why(v->via.str.ptr, v->via.str.size, false), NX_TOPIC_MAX);
            return NEXUS_ERR_BAD_TOPIC;
        }
        return NEXUS_OK;
    case NX_FT_PATTERN:
        if (v->type != MSGPACK_OBJECT_STR)
            return s_bad(err_msg, "field '%s' must be a string", name, 0, 0);
        if (!nx_pattern_valid(v->via.str.ptr, v->via.str.size)) {
            snprintf(err_msg, NX_ERRMSG_MAX, "invalid pattern '%.*s'",
                     (int)nx_utf8_cut(v->via.str.ptr, v->via.str.size, 64), v->via.str.ptr);
            return NEXUS_ERR_BAD_PATTERN;
        }
        return NEXUS_OK;
    }
    return NEXUS_OK;
}

nexus_err_t nx_optab_check(const nx_opdef_t *op, const msgpack_object *req, char *err_msg)
{
    if (!req || req->type != MSGPACK_OBJECT_MAP) {
        snprintf(err_msg, NX_ERRMSG_MAX, "request must be a map");
        return NEXUS_ERR_BAD_REQUEST;
    }
    for (const nx_field_t *f = op->fields; f->name; f++) {
        const msgpack_object *v = nx_map_get(req, f->name);
        if (!v) {
            if (f->flags & NX_FF_REQ) {
                snprintf(err_msg, NX_ERRMSG_MAX, "missing field '%s'", f->name);
                return NEXUS_ERR_BAD_REQUEST;
            }
            continue;
        }
        nexus_err_t rc = s_check_field(f, v, err_msg);
        if (rc)
            return rc;
    }
    return NEXUS_OK;
}
