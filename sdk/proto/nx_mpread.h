/*  =========================================================================
    nx_mpread - reads msgpack in place: a cursor over the bytes as they came
    off the wire, with no object tree and no allocation.

    msgpack-c's unpacker builds one msgpack_object per value in a zone, so
    a history page of 10 000 events costs 110 000 objects before the first
    one is read. The hot paths of the SDK (history pages, replies to
    pipelined publishes) only walk a known shape once, front to back; this
    reader does that with a pointer and a bound.

    Every read checks the bytes left first, so truncated or hostile input
    gives -1, never a read past the end. A failed read leaves the cursor
    where it was. Strings and bins point into the input: they live as long
    as the bytes given to nx_mpread_init.
    =========================================================================
*/

#ifndef NX_MPREAD_H_INCLUDED
#define NX_MPREAD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *p;   /* next byte to read                              */
    const uint8_t *end; /* one past the last byte                         */
} nx_mpread_t;

/*  The type of the next value, as far as the readers below care.          */
typedef enum {
    NX_MP_END = 0, /* no bytes left                                       */
    NX_MP_NIL,
    NX_MP_BOOL,
    NX_MP_UINT, /* a non-negative integer                               */
    NX_MP_INT,  /* a negative integer                                   */
    NX_MP_FLOAT,
    NX_MP_STR,
    NX_MP_BIN,
    NX_MP_ARRAY,
    NX_MP_MAP,
    NX_MP_EXT,
    NX_MP_INVALID /* 0xc1, never used by msgpack                          */
} nx_mp_type_t;

void nx_mpread_init(nx_mpread_t *r, const void *data, size_t len);

/*  Bytes not read yet.                                                     */
static inline size_t nx_mpread_left(const nx_mpread_t *r)
{
    return (size_t)(r->end - r->p);
}

nx_mp_type_t nx_mpread_type(const nx_mpread_t *r);

/*  Each reads one value of its type and returns 0, or -1 (cursor left
    alone) when the next value is of another type or truncated. The forms
    a history page is made of are read inline; the _full functions read
    every form.                                                             */
int nx_mpread_map_full(nx_mpread_t *r, uint32_t *count);
int nx_mpread_array(nx_mpread_t *r, uint32_t *count);
int nx_mpread_str_full(nx_mpread_t *r, const char **str, uint32_t *len);
int nx_mpread_bytes_full(nx_mpread_t *r, const uint8_t **data, uint32_t *len);
int nx_mpread_u64_full(nx_mpread_t *r, uint64_t *value);
int nx_mpread_bool(nx_mpread_t *r, bool *value);
int nx_mpread_nil(nx_mpread_t *r);

static inline int nx_mpread_map(nx_mpread_t *r, uint32_t *count)
{
    if (r->p < r->end && (r->p[0] & 0xf0) == 0x80) { /* fixmap */
        *count = r->p[0] & 0x0f;
        r->p++;
        return 0;
    }
    return nx_mpread_map_full(r, count);
}

static inline int nx_mpread_str(nx_mpread_t *r, const char **str, uint32_t *len)
{
    if (r->p < r->end && (r->p[0] & 0xe0) == 0xa0) { /* fixstr */
        uint32_t n = r->p[0] & 0x1f;
        if (n < (size_t)(r->end - r->p)) {
            *str = (const char *)r->p + 1;
            *len = n;
            r->p += 1 + n;
            return 0;
        }
    }
    return nx_mpread_str_full(r, str, len);
}

/*  A bin or a str.                                                         */
static inline int nx_mpread_bytes(nx_mpread_t *r, const uint8_t **data, uint32_t *len)
{
    if (r->end - r->p >= 2 && r->p[0] == 0xc4) { /* bin 8 */
        uint32_t n = r->p[1];
        if (n <= (size_t)(r->end - r->p) - 2) {
            *data = r->p + 2;
            *len = n;
            r->p += 2 + n;
            return 0;
        }
    }
    return nx_mpread_bytes_full(r, data, len);
}

/*  A non-negative integer of any width.                                    */
static inline int nx_mpread_u64(nx_mpread_t *r, uint64_t *value)
{
    if (r->p < r->end && r->p[0] <= 0x7f) { /* positive fixint */
        *value = r->p[0];
        r->p++;
        return 0;
    }
    if (r->end - r->p >= 5 && r->p[0] == 0xce) { /* uint 32 */
        const uint8_t *b = r->p + 1;
        *value = (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 8 | b[3];
        r->p += 5;
        return 0;
    }
    if (r->end - r->p >= 9 && r->p[0] == 0xcf) { /* uint 64 */
        const uint8_t *b = r->p + 1;
        *value = (uint64_t)b[0] << 56 | (uint64_t)b[1] << 48 | (uint64_t)b[2] << 40 |
                 (uint64_t)b[3] << 32 | (uint64_t)b[4] << 24 | (uint64_t)b[5] << 16 |
                 (uint64_t)b[6] << 8 | b[7];
        r->p += 9;
        return 0;
    }
    return nx_mpread_u64_full(r, value);
}

/*  Skips one value, containers with everything in them. Iterative: depth
    costs no stack. Returns 0 or -1 when the value is truncated or invalid
    (the cursor is then somewhere inside it).                               */
int nx_mpread_skip(nx_mpread_t *r);

/*  Reads a str and tells whether it equals key (NUL-terminated). Returns 1
    equal, 0 another str, -1 not a str (cursor left alone).                 */
int nx_mpread_key(nx_mpread_t *r, const char *key, size_t key_len);

#endif
