/*  =========================================================================
    nx_codec - the wire formats of nexus, in one place:

    1. The stamp frame the broker puts between topic and payload on the
       event plane, and the stored event record in LMDB.
    2. Helpers over msgpack-c to read request maps and build reply maps on
       the control plane.

    docs/protocol.md describes the same formats byte by byte.
    =========================================================================
*/

#ifndef NX_CODEC_H_INCLUDED
#define NX_CODEC_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nexus.h"
#include "nx_topic.h"

/*  ---- Event message (event plane, XPUB -> subscriber) -------------------
    One frame per event, so that each event costs one ZeroMQ message on the
    way out and at every subscriber:
        topic        1..NX_TOPIC_MAX bytes; ZeroMQ's prefix filter reads these
        0x00         ends the topic (the topic grammar has no NUL)
        version      1 byte, NX_EVENT_VERSION
        seq          u64 big-endian
        ts           u64 big-endian, microseconds since the Unix epoch
        source_len   u8, then source_len bytes of source
        payload      the rest of the frame: the bytes published, untouched
*/
#define NX_EVENT_VERSION 2
#define NX_EVENT_HEAD    19 /* NUL, version, seq, ts, source_len            */
#define NX_SOURCE_MAX    128

typedef struct {
    const char *topic; /* all pointers point into the frame; none is   */
    size_t topic_len;  /* NUL-terminated (the payload may hold NULs)   */
    uint64_t seq;      /* sequence number, from 1                      */
    uint64_t ts;       /* broker time, microseconds since the epoch    */
    const char *source;
    size_t source_len;
    const uint8_t *payload;
    size_t payload_len;
} nx_event_msg_t;

/*  Returns the size of the message nx_event_msg_encode writes.             */
size_t nx_event_msg_size(size_t topic_len, size_t source_len, size_t payload_len);

/*  Writes an event message into buf (nx_event_msg_size bytes) and returns
    its size, or 0 when topic_len is 0 or over NX_TOPIC_MAX or source_len
    is over NX_SOURCE_MAX.                                                  */
size_t nx_event_msg_encode(uint8_t *buf, const char *topic, size_t topic_len, uint64_t seq,
                           uint64_t ts, const char *source, size_t source_len,
                           const uint8_t *payload, size_t payload_len);

/*  Parses an event message. Returns 0, or -1 when it has no NUL within
    NX_TOPIC_MAX + 1 bytes, is truncated or of another version.             */
int nx_event_msg_decode(const uint8_t *buf, size_t len, nx_event_msg_t *ev);

/*  ---- Stored event record (LMDB value; the key is seq as u64 big-endian) --
        byte 0       version, NX_RECORD_VERSION
        bytes 1..8   ts, u64 big-endian
        bytes 9..10  topic length, u16 big-endian
        byte  11     source length, u8
        bytes 12..   topic, then source, then payload (the rest)
*/
#define NX_RECORD_VERSION 1
#define NX_RECORD_HEAD    12

typedef struct {
    uint64_t ts;
    const char *topic; /* all three point into the record; not terminated  */
    size_t topic_len;
    const char *source;
    size_t source_len;
    const uint8_t *payload;
    size_t payload_len;
} nx_record_t;

/*  Returns the size of the record that nx_record_encode will write.        */
size_t nx_record_size(size_t topic_len, size_t source_len, size_t payload_len);

/*  Writes a record into buf (nx_record_size bytes) and returns its size.
    topic_len <= NX_TOPIC_MAX, source_len <= NX_SOURCE_MAX.                 */
size_t nx_record_encode(uint8_t *buf, uint64_t ts, const char *topic, size_t topic_len,
                        const char *source, size_t source_len, const uint8_t *payload,
                        size_t payload_len);

/*  Parses a record; returns 0, or -1 when it is truncated or of another
    version. Pointers in rec point into buf.                                */
int nx_record_decode(const uint8_t *buf, size_t len, nx_record_t *rec);

/*  Big-endian u64 helpers for keys and frames.                             */
void nx_put_u64(uint8_t *buf, uint64_t value);
uint64_t nx_get_u64(const uint8_t *buf);

/*  ---- Checking untrusted msgpack ----------------------------------------
    msgpack-c allocates a container's elements from its declared count
    before it reads them, so 5 bytes claiming 2^32 elements ask for 100 GB.
    nx_msgpack_check walks the bytes first without allocating: every
    declared count must fit in the bytes that remain (each element takes at
    least one byte), nesting is at most max_depth, and exactly one object
    fills the buffer. After it passes, unpacking allocates O(len).          */
typedef enum {
    NX_MSGPACK_OK = 0,
    NX_MSGPACK_TRUNCATED, /* the object needs more bytes than given        */
    NX_MSGPACK_INVALID,   /* 0xc1, or a count that cannot fit in the bytes */
    NX_MSGPACK_TOO_DEEP,  /* nested deeper than max_depth                  */
    NX_MSGPACK_TRAILING   /* bytes left after the first object             */
} nx_msgpack_check_t;

nx_msgpack_check_t nx_msgpack_check(const uint8_t *data, size_t len, int max_depth);

/*  msgpack-c's unpacker decodes at most 32 nested containers
    (MSGPACK_EMBED_STACK_SIZE): what nx_msgpack_check(.., NX_MSGPACK_DEPTH)
    passes, msgpack_unpack decodes in O(len) memory, so every decoder of
    untrusted bytes checks with it first.                                    */
#define NX_MSGPACK_LEVELS 32
#define NX_MSGPACK_DEPTH (NX_MSGPACK_LEVELS + 1)

/*  ---- Reading msgpack request maps --------------------------------------
    A request is one msgpack map with string keys. These helpers look a key
    up and check its type. Each returns NEXUS_OK, or:
      NEXUS_ERR_BAD_REQUEST when the key is present with the wrong type or an
      out-of-range value. When the key is absent they return NEXUS_OK and
      leave *out untouched (a caller sets the default first), unless the
      _req variant is used, which returns NEXUS_ERR_BAD_REQUEST for absent.
    On error, when err_buf is not NULL, a message naming the field and the
    expected type is written to it (NX_ERRMSG_MAX bytes).                  */
#define NX_ERRMSG_MAX 256

/*  Returns the value for key in map, or NULL when absent (or map is not a
    map).                                                                   */
const msgpack_object *nx_map_get(const msgpack_object *map, const char *key);

nexus_err_t nx_map_str(const msgpack_object *map, const char *key, const char **out,
                       size_t *out_len, char *err_buf);
nexus_err_t nx_map_str_req(const msgpack_object *map, const char *key, const char **out,
                           size_t *out_len, char *err_buf);
/*  Accepts positive integers only (and 0).                                 */
nexus_err_t nx_map_u64(const msgpack_object *map, const char *key, uint64_t *out, char *err_buf);
nexus_err_t nx_map_u64_req(const msgpack_object *map, const char *key, uint64_t *out,
                           char *err_buf);
nexus_err_t nx_map_bool(const msgpack_object *map, const char *key, bool *out, char *err_buf);
/*  Bytes: accepts bin or str.                                              */
nexus_err_t nx_map_bytes(const msgpack_object *map, const char *key, const uint8_t **out,
                         size_t *out_len, char *err_buf);
/*  Array of strings: *out is the array object (every item checked to be a
    str).                                                                   */
nexus_err_t nx_map_str_array(const msgpack_object *map, const char *key,
                             const msgpack_object_array **out, char *err_buf);

/*  ---- Building msgpack maps ---------------------------------------------
    Thin helpers over msgpack_packer so that op handlers read as plain
    lists of fields.                                                        */
void nx_pack_str(msgpack_packer *pk, const char *str);
void nx_pack_strn(msgpack_packer *pk, const char *str, size_t len);
void nx_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void nx_pack_kv_strn(msgpack_packer *pk, const char *key, const char *value, size_t len);
void nx_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void nx_pack_kv_i64(msgpack_packer *pk, const char *key, int64_t value);
void nx_pack_kv_double(msgpack_packer *pk, const char *key, double value);
void nx_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);
void nx_pack_kv_bin(msgpack_packer *pk, const char *key, const void *data, size_t len);
void nx_pack_kv_nil(msgpack_packer *pk, const char *key);

/*  ---- Maps that count themselves ----------------------------------------
    A map whose length is written when it is done, as Redis's
    addReplyDeferredLen / setDeferredMapLen: nobody counts pairs by hand.
    nx_dmap_pair () counts one pair and returns the packer for it (pack the
    key, then exactly one value). The top level has no header of its own:
    its pairs follow a reply head packed later with nx_dmap_pairs () of
    them. nx_dmap_open () starts a nested map under key (a placeholder
    header) and nx_dmap_close () writes its real length in the shortest
    form, moving its body back when the form is shorter.                    */
#define NX_DMAP_DEPTH 8
typedef struct {
    msgpack_sbuffer *buf;              /* where the pairs go                */
    msgpack_packer pk;                 /* packs into buf                    */
    int depth;                         /* open nested maps                  */
    size_t at[NX_DMAP_DEPTH];          /* offset of each one's header       */
    uint32_t count[NX_DMAP_DEPTH + 1]; /* pairs: [0] top level, then nested */
} nx_dmap_t;

void nx_dmap_init(nx_dmap_t *self, msgpack_sbuffer *buf);
/*  Counts one pair of the current map; the caller packs key and value.   */
msgpack_packer *nx_dmap_pair(nx_dmap_t *self);
/*  Appends pairs already packed (count of them) to the current map.       */
void nx_dmap_raw(nx_dmap_t *self, const void *data, size_t len, uint32_t pairs);
void nx_dmap_open(nx_dmap_t *self, const char *key);
void nx_dmap_close(nx_dmap_t *self);
/*  Pairs packed at the top level so far.                                  */
uint32_t nx_dmap_pairs(const nx_dmap_t *self);
/*  Drops every pair (an error reply keeps none of a partial answer).      */
void nx_dmap_clear(nx_dmap_t *self);

/*  Packs the head of a control-plane reply: a map of fields + 2 entries
    starting with "id" (the request's id, already packed, copied as is; nil
    when id_len is 0) and "ok". The caller packs the fields after it.       */
void nx_pack_reply_head(msgpack_packer *pk, const void *id, size_t id_len, bool ok,
                        uint32_t fields);

/*  Packs one event as the map {seq, ts, topic, source, payload(bin)} that
    history replies carry.                                                  */
void nx_pack_event(msgpack_packer *pk, uint64_t seq, const nx_record_t *rec);

#endif
