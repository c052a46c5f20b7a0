/*  =========================================================================
    nx_mpread - reads msgpack in place (see nx_mpread.h).
    =========================================================================
*/

#include <string.h>

#include "nx_mpread.h"

static inline uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

void nx_mpread_init(nx_mpread_t *r, const void *data, size_t len)
{
    r->p = data;
    /*  NULL + 0 is undefined behaviour too (UBSan, found by fuzz_sdk).   */
    r->end = data ? r->p + len : r->p;
}

nx_mp_type_t nx_mpread_type(const nx_mpread_t *r)
{
    if (r->p >= r->end)
        return NX_MP_END;
    uint8_t b = *r->p;
    if (b <= 0x7f)
        return NX_MP_UINT;
    if (b <= 0x8f)
        return NX_MP_MAP;
    if (b <= 0x9f)
        return NX_MP_ARRAY;
    if (b <= 0xbf)
        return NX_MP_STR;
    if (b >= 0xe0)
        return NX_MP_INT;
    switch (b) {
    case 0xc0:
        return NX_MP_NIL;
    case 0xc2:
    case 0xc3:
        return NX_MP_BOOL;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return NX_MP_BIN;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return NX_MP_EXT;
    case 0xca:
    case 0xcb:
        return NX_MP_FLOAT;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        return NX_MP_UINT;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3:
        return NX_MP_INT;
    case 0xd9:
    case 0xda:
    case 0xdb:
        return NX_MP_STR;
    case 0xdc:
    case 0xdd:
        return NX_MP_ARRAY;
    case 0xde:
    case 0xdf:
        return NX_MP_MAP;
    default:
        return NX_MP_INVALID;
    }
}

/*  Reads a container header: fix range [lo, lo+15] or 16/32-bit forms.    */
static int s_container(nx_mpread_t *r, uint8_t fix, uint8_t b16, uint8_t b32, uint32_t *count)
{
    size_t left = nx_mpread_left(r);
    if (left < 1)
        return -1;
    uint8_t b = r->p[0];
    if ((b & 0xf0) == fix) {
        *count = b & 0x0f;
        r->p += 1;
        return 0;
    }
    if (b == b16 && left >= 3) {
        *count = (uint32_t)s_be(r->p + 1, 2);
        r->p += 3;
        return 0;
    }
    if (b == b32 && left >= 5) {
        *count = (uint32_t)s_be(r->p + 1, 4);
        r->p += 5;
        return 0;
    }
    return -1;
}

int nx_mpread_map_full(nx_mpread_t *r, uint32_t *count)
{
    return s_container(r, 0x80, 0xde, 0xdf, count);
}

int nx_mpread_array(nx_mpread_t *r, uint32_t *count)
{
    return s_container(r, 0x90, 0xdc, 0xdd, count);
}

/*  Reads the header of a str (bin false) or bin (true) and the length of
    its body; checks the body is there.                                    */
static int s_blob(nx_mpread_t *r, bool bin, const uint8_t **data, uint32_t *len)
{
    size_t left = nx_mpread_left(r);
    if (left < 1)
        return -1;
    uint8_t b = r->p[0];
    size_t head;
    uint64_t n;
    if (!bin && (b & 0xe0) == 0xa0) {
        head = 1;
        n = b & 0x1f;
    } else if (b == (bin ? 0xc4 : 0xd9) && left >= 2) {
        head = 2;
        n = r->p[1];
    } else if (b == (bin ? 0xc5 : 0xda) && left >= 3) {
        head = 3;
        n = s_be(r->p + 1, 2);
    } else if (b == (bin ? 0xc6 : 0xdb) && left >= 5) {
        head = 5;
        n = s_be(r->p + 1, 4);
    } else
        return -1;
    if (n > left - head)
        return -1;
    *data = r->p + head;
    *len = (uint32_t)n;
    r->p += head + n;
    return 0;
}

int nx_mpread_str_full(nx_mpread_t *r, const char **str, uint32_t *len)
{
    return s_blob(r, false, (const uint8_t **)str, len);
}

int nx_mpread_bytes_full(nx_mpread_t *r, const uint8_t **data, uint32_t *len)
{
    if (s_blob(r, true, data, len) == 0)
        return 0;
    return s_blob(r, false, data, len);
}

int nx_mpread_u64_full(nx_mpread_t *r, uint64_t *value)
{
    size_t left = nx_mpread_left(r);
    if (left < 1)
        return -1;
    uint8_t b = r->p[0];
    if (b <= 0x7f) {
        *value = b;
        r->p += 1;
        return 0;
    }
    int n = b == 0xcc ? 1 : b == 0xcd ? 2 : b == 0xce ? 4 : b == 0xcf ? 8 : 0;
    /*  A signed form holding a value >= 0 (some packers use them).        */
    bool sig = false;
    if (!n) {
        n = b == 0xd0 ? 1 : b == 0xd1 ? 2 : b == 0xd2 ? 4 : b == 0xd3 ? 8 : 0;
        sig = true;
    }
    if (!n || left < (size_t)n + 1)
        return -1;
    uint64_t v = s_be(r->p + 1, n);
    if (sig && (r->p[1] & 0x80))
        return -1;
    *value = v;
    r->p += 1 + n;
    return 0;
}

int nx_mpread_bool(nx_mpread_t *r, bool *value)
{
    if (r->p >= r->end || (r->p[0] != 0xc2 && r->p[0] != 0xc3))
        return -1;
    *value = r->p[0] == 0xc3;
    r->p++;
    return 0;
}

int nx_mpread_nil(nx_mpread_t *r)
{
    if (r->p >= r->end || r->p[0] != 0xc0)
        return -1;
    r->p++;
    return 0;
}

int nx_mpread_key(nx_mpread_t *r, const char *key, size_t key_len)
{
    const char *s = "";
    uint32_t len = 0;
    if (nx_mpread_str(r, &s, &len) != 0)
        return -1;
    return len == key_len && memcmp(s, key, key_len) == 0;
}

int nx_mpread_skip(nx_mpread_t *r)
{
    /*  Values still to skip. A container adds its elements; each element
        takes at least one byte, so a lying count runs out of input.       */
    uint64_t todo = 1;
    while (todo) {
        todo--;
        size_t left = nx_mpread_left(r);
        if (left < 1)
            return -1;
        uint8_t b = r->p[0];
        uint32_t count;
        const uint8_t *data;
        uint32_t len;
        size_t fixed = 0; /* bytes of a scalar, header included */
        switch (nx_mpread_type(r)) {
        case NX_MP_MAP:
            if (nx_mpread_map(r, &count))
                return -1;
            todo += 2ull * count;
            continue;
        case NX_MP_ARRAY:
            if (nx_mpread_array(r, &count))
                return -1;
            todo += count;
            continue;
        case NX_MP_STR:
            if (nx_mpread_str(r, (const char **)&data, &len))
                return -1;
            continue;
        case NX_MP_BIN:
            if (nx_mpread_bytes(r, &data, &len))
                return -1;
            continue;
        case NX_MP_NIL:
        case NX_MP_BOOL:
            fixed = 1;
            break;
        case NX_MP_UINT:
        case NX_MP_INT:
            if (b <= 0x7f || b >= 0xe0)
                fixed = 1;
            else
                fixed = 1 + ((b == 0xcc || b == 0xd0)   ? 1
                             : (b == 0xcd || b == 0xd1) ? 2
                             : (b == 0xce || b == 0xd2) ? 4
                                                        : 8);
            break;
        case NX_MP_FLOAT:
            fixed = b == 0xca ? 5 : 9;
            break;
        case NX_MP_EXT: {
            size_t head, n;
            if (b >= 0xd4 && b <= 0xd8) {
                head = 2;
                n = (size_t)1 << (b - 0xd4);
            } else {
                int w = b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4;
                if (left < (size_t)w + 2)
                    return -1;
                head = (size_t)w + 2;
                n = (size_t)s_be(r->p + 1, w);
            }
            if (left < head || n > left - head)
                return -1;
            r->p += head + n;
            continue;
        }
        default:
            return -1;
        }
        if (left < fixed)
            return -1;
        r->p += fixed;
    }
    return 0;
}
