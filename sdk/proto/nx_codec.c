/*  =========================================================================
    nx_codec - the stamp frame, the stored event record, and helpers to read
    msgpack request maps and build reply maps.

    Decoders take bytes straight from the network or from disk, so they
    check every length before reading and return -1 rather than assert.
    Encoders trust their caller for buffer size but still refuse lengths the
    format cannot carry (returning 0, which no valid frame has), so a caller
    bug cannot turn into a buffer overflow.
    =========================================================================
*/

#include <stdio.h>
#include <string.h>

#include "nx_codec.h"
#include "nx_topic.h"

/*  Big-endian through memcpy and a byte swap: the compiler turns these
    into one load or store and a bswap on every stamp and key.             */
void nx_put_u64(uint8_t *buf, uint64_t value)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    value = __builtin_bswap64(value);
#endif
    memcpy(buf, &value, 8);
}

uint64_t nx_get_u64(const uint8_t *buf)
{
    uint64_t value;
    memcpy(&value, buf, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    value = __builtin_bswap64(value);
#endif
    return value;
}

/*  ---- Event message ------------------------------------------------------*/

size_t nx_event_msg_size(size_t topic_len, size_t source_len, size_t payload_len)
{
    return topic_len + NX_EVENT_HEAD + source_len + payload_len;
}

size_t nx_event_msg_encode(uint8_t *buf, const char *topic, size_t topic_len, uint64_t seq,
                           uint64_t ts, const char *source, size_t source_len,
                           const uint8_t *payload, size_t payload_len)
{
    if (topic_len == 0 || topic_len > NX_TOPIC_MAX || !topic || source_len > NX_SOURCE_MAX ||
        (source_len && !source) || (payload_len && !payload))
        return 0;
    uint8_t *p = buf;
    memcpy(p, topic, topic_len);
    p += topic_len;
    *p++ = 0;
    *p++ = NX_EVENT_VERSION;
    nx_put_u64(p, seq);
    nx_put_u64(p + 8, ts);
    p += 16;
    *p++ = (uint8_t)source_len;
    if (source_len)
        memcpy(p, source, source_len);
    p += source_len;
    if (payload_len)
        memcpy(p, payload, payload_len);
    return (size_t)(p - buf) + payload_len;
}

int nx_event_msg_decode(const uint8_t *buf, size_t len, nx_event_msg_t *ev)
{
    if (!buf || !ev)
        return -1;
    size_t scan = len < NX_TOPIC_MAX + 1 ? len : NX_TOPIC_MAX + 1;
    const uint8_t *nul = memchr(buf, 0, scan);
    if (!nul || nul == buf)
        return -1;
    size_t tlen = (size_t)(nul - buf);
    if (len < tlen + NX_EVENT_HEAD || nul[1] != NX_EVENT_VERSION)
        return -1;
    size_t slen = nul[18];
    if (slen > NX_SOURCE_MAX || len < tlen + NX_EVENT_HEAD + slen)
        return -1;
    ev->topic = (const char *)buf;
    ev->topic_len = tlen;
    ev->seq = nx_get_u64(nul + 2);
    ev->ts = nx_get_u64(nul + 10);
    ev->source = (const char *)nul + NX_EVENT_HEAD;
    ev->source_len = slen;
    ev->payload = nul + NX_EVENT_HEAD + slen;
    ev->payload_len = len - tlen - NX_EVENT_HEAD - slen;
    return 0;
}

/*  ---- Stored record -----------------------------------------------------*/

size_t nx_record_size(size_t topic_len, size_t source_len, size_t payload_len)
{
    return NX_RECORD_HEAD + topic_len + source_len + payload_len;
}

size_t nx_record_encode(uint8_t *buf, uint64_t ts, const char *topic, size_t topic_len,
                        const char *source, size_t source_len, const uint8_t *payload,
                        size_t payload_len)
{
    if (topic_len > NX_TOPIC_MAX || source_len > NX_SOURCE_MAX || (topic_len && !topic) ||
        (source_len && !source) || (payload_len && !payload))
        return 0;
    buf[0] = NX_RECORD_VERSION;
    nx_put_u64(buf + 1, ts);
    buf[9] = (uint8_t)(topic_len >> 8);
    buf[10] = (uint8_t)(topic_len & 0xff);
    buf[11] = (uint8_t)source_len;
    size_t off = NX_RECORD_HEAD;
    /* memcpy with a NULL source is undefined even for 0 bytes.             */
    if (topic_len)
        memcpy(buf + off, topic, topic_len);
    off += topic_len;
    if (source_len)
        memcpy(buf + off, source, source_len);
    off += source_len;
    if (payload_len)
        memcpy(buf + off, payload, payload_len);
    return off + payload_len;
}

int nx_record_decode(const uint8_t *buf, size_t len, nx_record_t *rec)
{
    if (!buf || len < NX_RECORD_HEAD || buf[0] != NX_RECORD_VERSION)
        return -1;
    size_t topic_len = ((size_t)buf[9] << 8) | buf[10];
    size_t source_len = buf[11];
    /* The encoder never writes longer fields, so longer ones mean a
       corrupt record.                                                      */
    if (topic_len > NX_TOPIC_MAX || source_len > NX_SOURCE_MAX)
        return -1;
    if (len - NX_RECORD_HEAD < topic_len + source_len)
        return -1;
    rec->ts = nx_get_u64(buf + 1);
    rec->topic = (const char *)buf + NX_RECORD_HEAD;
    rec->topic_len = topic_len;
    rec->source = rec->topic + topic_len;
    rec->source_len = source_len;
    rec->payload = buf + NX_RECORD_HEAD + topic_len + source_len;
    rec->payload_len = len - NX_RECORD_HEAD - topic_len - source_len;
    return 0;
}

/*  ---- Reading request maps ----------------------------------------------*/

const msgpack_object *nx_map_get(const msgpack_object *map, const char *key)
{
    if (!map || !key || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t key_len = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size != key_len)
            continue;
        if (key_len == 0 || memcmp(kv->key.via.str.ptr, key, key_len) == 0)
            return &kv->val;
    }
    return NULL;
}

/*  Writes "field 'key' must be <what>" and returns BAD_REQUEST.            */
static nexus_err_t s_bad_type(const char *key, const char *what, char *err_buf)
{
    if (err_buf)
        snprintf(err_buf, NX_ERRMSG_MAX, "field '%s' must be %s", key, what);
    return NEXUS_ERR_BAD_REQUEST;
}

static nexus_err_t s_missing(const char *key, char *err_buf)
{
    if (err_buf)
        snprintf(err_buf, NX_ERRMSG_MAX, "missing field '%s'", key ? key : "");
    return NEXUS_ERR_BAD_REQUEST;
}

nexus_err_t nx_map_str(const msgpack_object *map, const char *key, const char **out,
                       size_t *out_len, char *err_buf)
{
    const msgpack_object *val = nx_map_get(map, key);
    if (!val)
        return NEXUS_OK;
    if (val->type != MSGPACK_OBJECT_STR)
        return s_bad_type(key, "a string", err_buf);
    /*  Whatever is read here may be sent on to other clients as str, and a
        strict decoder refuses a str that is not UTF-8.                     */
    if (!nx_utf8_valid(val->via.str.ptr, val->via.str.size))
        return s_bad_type(key, "valid UTF-8", err_buf);
    if (out)
        *out = val->via.str.ptr;
    if (out_len)
        *out_len = val->via.str.size;
    return NEXUS_OK;
}

nexus_err_t nx_map_str_req(const msgpack_object *map, const char *key, const char **out,
                           size_t *out_len, char *err_buf)
{
    if (!nx_map_get(map, key))
        return s_missing(key, err_buf);
    return nx_map_str(map, key, out, out_len, err_buf);
}

nexus_err_t nx_map_u64(const msgpack_object *map, const char *key, uint64_t *out, char *err_buf)
{
    const msgpack_object *val = nx_map_get(map, key);
    if (!val)
        return NEXUS_OK;
    /* msgpack-c unpacks every integer >= 0 as POSITIVE_INTEGER, so this
       rejects negatives, floats and everything else.                      */
    if (val->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return s_bad_type(key, "a non-negative integer", err_buf);
    if (out)
        *out = val->via.u64;
    return NEXUS_OK;
}

nexus_err_t nx_map_u64_req(const msgpack_object *map, const char *key, uint64_t *out, char *err_buf)
{
    if (!nx_map_get(map, key))
        return s_missing(key, err_buf);
    return nx_map_u64(map, key, out, err_buf);
}

nexus_err_t nx_map_bool(const msgpack_object *map, const char *key, bool *out, char *err_buf)
{
    const msgpack_object *val = nx_map_get(map, key);
    if (!val)
        return NEXUS_OK;
    if (val->type != MSGPACK_OBJECT_BOOLEAN)
        return s_bad_type(key, "a boolean", err_buf);
    if (out)
        *out = val->via.boolean;
    return NEXUS_OK;
}

nexus_err_t nx_map_bytes(const msgpack_object *map, const char *key, const uint8_t **out,
                         size_t *out_len, char *err_buf)
{
    const msgpack_object *val = nx_map_get(map, key);
    if (!val)
        return NEXUS_OK;
    const void *ptr;
    size_t size;
    if (val->type == MSGPACK_OBJECT_BIN) {
        ptr = val->via.bin.ptr;
        size = val->via.bin.size;
    } else if (val->type == MSGPACK_OBJECT_STR) {
        ptr = val->via.str.ptr;
        size = val->via.str.size;
    } else
        return s_bad_type(key, "bytes (bin or str)", err_buf);
    if (out)
        *out = (const uint8_t *)ptr;
    if (out_len)
        *out_len = size;
    return NEXUS_OK;
}

nexus_err_t nx_map_str_array(const msgpack_object *map, const char *key,
                             const msgpack_object_array **out, char *err_buf)
{
    const msgpack_object *val = nx_map_get(map, key);
    if (!val)
        return NEXUS_OK;
    if (val->type != MSGPACK_OBJECT_ARRAY)
        return s_bad_type(key, "an array of strings", err_buf);
    for (uint32_t i = 0; i < val->via.array.size; i++) {
        const msgpack_object *item = &val->via.array.ptr[i];
        if (item->type != MSGPACK_OBJECT_STR)
            return s_bad_type(key, "an array of strings", err_buf);
        if (!nx_utf8_valid(item->via.str.ptr, item->via.str.size))
            return s_bad_type(key, "an array of valid UTF-8 strings", err_buf);
    }
    if (out)
        *out = &val->via.array;
    return NEXUS_OK;
}

/*  ---- Building maps -----------------------------------------------------*/

/*  A NULL string packs as nil, so a missing value shows up as such on the
    wire instead of crashing the packer.                                    */
void nx_pack_str(msgpack_packer *pk, const char *str)
{
    if (!str)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_str_with_body(pk, str, strlen(str));
}

void nx_pack_strn(msgpack_packer *pk, const char *str, size_t len)
{
    if (!str && len)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_str_with_body(pk, str ? str : "", len);
}

void nx_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    nx_pack_str(pk, key);
    nx_pack_str(pk, value);
}

void nx_pack_kv_strn(msgpack_packer *pk, const char *key, const char *value, size_t len)
{
    nx_pack_str(pk, key);
    nx_pack_strn(pk, value, len);
}

void nx_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value)
{
    nx_pack_str(pk, key);
    msgpack_pack_uint64(pk, value);
}

void nx_pack_kv_i64(msgpack_packer *pk, const char *key, int64_t value)
{
    nx_pack_str(pk, key);
    msgpack_pack_int64(pk, value);
}

void nx_pack_kv_double(msgpack_packer *pk, const char *key, double value)
{
    nx_pack_str(pk, key);
    msgpack_pack_double(pk, value);
}

void nx_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    nx_pack_str(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

void nx_pack_kv_bin(msgpack_packer *pk, const char *key, const void *data, size_t len)
{
    nx_pack_str(pk, key);
    if (!data && len)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_bin_with_body(pk, data ? data : "", len);
}

void nx_pack_kv_nil(msgpack_packer *pk, const char *key)
{
    nx_pack_str(pk, key);
    msgpack_pack_nil(pk);
}

/*  ---- Maps that count themselves ---------------------------------------*/

void nx_dmap_init(nx_dmap_t *self, msgpack_sbuffer *buf)
{
    memset(self, 0, sizeof *self);
    self->buf = buf;
    msgpack_packer_init(&self->pk, buf, msgpack_sbuffer_write);
}

msgpack_packer *nx_dmap_pair(nx_dmap_t *self)
{
    self->count[self->depth]++;
    return &self->pk;
}

void nx_dmap_raw(nx_dmap_t *self, const void *data, size_t len, uint32_t pairs)
{
    if (len)
        msgpack_sbuffer_write(self->buf, data, len);
    self->count[self->depth] += pairs;
}

void nx_dmap_open(nx_dmap_t *self, const char *key)
{
    nx_pack_str(nx_dmap_pair(self), key);
    /*  Deeper than we track: an empty map, never a broken one.           */
    if (self->depth == NX_DMAP_DEPTH) {
        msgpack_pack_map(&self->pk, 0);
        return;
    }
    self->at[self->depth] = self->buf->size;
    static const char placeholder[5] = {(char)0xdf, 0, 0, 0, 0}; /* map32 */
    msgpack_sbuffer_write(self->buf, placeholder, sizeof placeholder);
    self->depth++;
    self->count[self->depth] = 0;
}

void nx_dmap_close(nx_dmap_t *self)
{
    if (self->depth == 0)
        return;
    uint32_t n = self->count[self->depth];
    self->depth--;
    size_t at = self->at[self->depth];
    uint8_t head[5];
    size_t len;
    if (n < 16) {
        head[0] = (uint8_t)(0x80 | n);
        len = 1;
    } else if (n < 65536) {
        head[0] = 0xde;
        head[1] = (uint8_t)(n >> 8);
        head[2] = (uint8_t)n;
        len = 3;
    } else {
        head[0] = 0xdf;
        head[1] = (uint8_t)(n >> 24);
        head[2] = (uint8_t)(n >> 16);
        head[3] = (uint8_t)(n >> 8);
        head[4] = (uint8_t)n;
        len = 5;
    }
    char *p = self->buf->data + at;
    size_t body = self->buf->size - at - 5;
    memcpy(p, head, len);
    if (len < 5) {
        memmove(p + len, p + 5, body);
        self->buf->size -= 5 - len;
    }
}

uint32_t nx_dmap_pairs(const nx_dmap_t *self)
{
    return self->count[0];
}

void nx_dmap_clear(nx_dmap_t *self)
{
    msgpack_sbuffer_clear(self->buf);
    memset(self->count, 0, sizeof self->count);
    self->depth = 0;
}

/*  The shortest msgpack forms, as msgpack-c packs them.                    */
static uint8_t *s_put_uint(uint8_t *p, uint64_t v)
{
    int n;
    if (v < 128) {
        *p++ = (uint8_t)v;
        return p;
    }
    if (v < 256) {
        *p++ = 0xcc;
        n = 1;
    } else if (v < 65536) {
        *p++ = 0xcd;
        n = 2;
    } else if (v <= 0xffffffffu) {
        *p++ = 0xce;
        n = 4;
    } else {
        *p++ = 0xcf;
        n = 8;
    }
    for (int i = n - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *s_put_head(uint8_t *p, uint8_t fix, uint8_t b8, uint8_t b16, uint8_t b32, size_t n)
{
    if (fix && n < 32)
        *p++ = (uint8_t)(fix | n);
    else if (n < 256) {
        *p++ = b8;
        *p++ = (uint8_t)n;
    } else if (n < 65536) {
        *p++ = b16;
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
    } else {
        *p++ = b32;
        for (int i = 3; i >= 0; i--)
            *p++ = (uint8_t)(n >> (8 * i));
    }
    return p;
}

void nx_pack_event(msgpack_packer *pk, uint64_t seq, const nx_record_t *rec)
{
    /*  A history page packs thousands of these: the map is assembled on
        the stack and handed to the packer's writer in one or two writes
        (head, then the payload unless it is small) instead of eleven.
        The bytes are those msgpack-c's packer would write.                */
    uint8_t head[1024];
    if (rec->topic_len > NX_TOPIC_MAX || rec->source_len > NX_SOURCE_MAX) {
        msgpack_pack_map(pk, 5);
        nx_pack_kv_u64(pk, "seq", seq);
        nx_pack_kv_u64(pk, "ts", rec->ts);
        nx_pack_kv_strn(pk, "topic", rec->topic, rec->topic_len);
        nx_pack_kv_strn(pk, "source", rec->source, rec->source_len);
        nx_pack_kv_bin(pk, "payload", rec->payload, rec->payload_len);
        return;
    }
    uint8_t *p = head;
    memcpy(p, "\x85\xa3seq", 5);
    p = s_put_uint(p + 5, seq);
    memcpy(p, "\xa2ts", 3);
    p = s_put_uint(p + 3, rec->ts);
    memcpy(p, "\xa5topic", 6);
    p = s_put_head(p + 6, 0xa0, 0xd9, 0xda, 0xdb, rec->topic_len);
    memcpy(p, rec->topic, rec->topic_len);
    p += rec->topic_len;
    memcpy(p, "\xa6source", 7);
    p = s_put_head(p + 7, 0xa0, 0xd9, 0xda, 0xdb, rec->source_len);
    if (rec->source_len)
        memcpy(p, rec->source, rec->source_len);
    p += rec->source_len;
    memcpy(p, "\xa7payload", 8);
    p = s_put_head(p + 8, 0, 0xc4, 0xc5, 0xc6, rec->payload_len);
    size_t used = (size_t)(p - head);
    if (rec->payload_len <= sizeof head - used) {
        if (rec->payload_len)
            memcpy(p, rec->payload, rec->payload_len);
        pk->callback(pk->data, (const char *)head, used + rec->payload_len);
    } else {
        pk->callback(pk->data, (const char *)head, used);
        pk->callback(pk->data, (const char *)rec->payload, rec->payload_len);
    }
}

/*  ---- Checking untrusted msgpack ---------------------------------------- */

static uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

nx_msgpack_check_t nx_msgpack_check(const uint8_t *data, size_t len, int max_depth)
{
    /*  left[d]: objects still to read at depth d. The walk is iterative so
        hostile nesting cannot exhaust the C stack.                         */
    uint64_t left[64];
    if (max_depth < 1 || max_depth > 63)
        max_depth = 63;
    int depth = 0;
    left[0] = 1;
    size_t pos = 0;
    while (depth >= 0) {
        if (left[depth] == 0) {
            depth--;
            continue;
        }
        left[depth]--;
        if (pos >= len)
            return NX_MSGPACK_TRUNCATED;
        uint8_t b = data[pos++];
        uint64_t skip = 0, items = 0;
        int lenbytes = 0;
        bool container = false;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            skip = 0;
        else if (b >= 0x80 && b <= 0x8f) {
            items = 2 * (uint64_t)(b & 0x0f);
            container = true;
        } else if (b >= 0x90 && b <= 0x9f) {
            items = b & 0x0f;
            container = true;
        } else if (b >= 0xa0 && b <= 0xbf)
            skip = b & 0x1f;
        else
            switch (b) {
            case 0xc1:
                return NX_MSGPACK_INVALID;
            case 0xc4:
            case 0xd9:
                lenbytes = 1;
                break;
            case 0xc5:
            case 0xda:
                lenbytes = 2;
                break;
            case 0xc6:
            case 0xdb:
                lenbytes = 4;
                break;
            case 0xc7:
                lenbytes = 1;
                skip = 1;
                break; /* ext8: len, type */
            case 0xc8:
                lenbytes = 2;
                skip = 1;
                break;
            case 0xc9:
                lenbytes = 4;
                skip = 1;
                break;
            case 0xca:
                skip = 4;
                break;
            case 0xcb:
                skip = 8;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break;
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
            case 0xde:
                lenbytes = 2;
                container = true;
                break;
            case 0xdd:
            case 0xdf:
                lenbytes = 4;
                container = true;
                break;
            default:
                return NX_MSGPACK_INVALID;
            }
        if (lenbytes) {
            if (len - pos < (size_t)lenbytes)
                return NX_MSGPACK_TRUNCATED;
            uint64_t n = s_be(data + pos, lenbytes);
            pos += (size_t)lenbytes;
            if (container)
                items = (b == 0xde || b == 0xdf) ? 2 * n : n;
            else
                skip += n;
        }
        if (container) {
            /*  Every element takes at least one byte.                      */
            if (items > len - pos)
                return items > (uint64_t)1 << 40 ? NX_MSGPACK_INVALID : NX_MSGPACK_TRUNCATED;
            /*  An empty container counts as a level too, as msgpack-c
                counts it (its stack is checked before the count).        */
            if (depth + 1 >= max_depth)
                return NX_MSGPACK_TOO_DEEP;
            if (items)
                left[++depth] = items;
        } else {
            if (skip > len - pos)
                return NX_MSGPACK_TRUNCATED;
            pos += (size_t)skip;
        }
    }
    return pos == len ? NX_MSGPACK_OK : NX_MSGPACK_TRAILING;
}

void nx_pack_reply_head(msgpack_packer *pk, const void *id, size_t id_len, bool ok, uint32_t fields)
{
    msgpack_pack_map(pk, fields + 2);
    nx_pack_str(pk, "id");
    if (id_len)
        pk->callback(pk->data, id, id_len);
    else
        msgpack_pack_nil(pk);
    nx_pack_str(pk, "ok");
    if (ok)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}
