/*  =========================================================================
    nx_base64 - standard base64 (RFC 4648, with padding), for the
    {"$base64": ...} form binary takes in JSON everywhere in nexus.
    =========================================================================
*/

#include <stdlib.h>
#include <string.h>

#include "nx_base64.h"

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *nx_base64_encode(const uint8_t *data, size_t size)
{
    char *out = malloc(4 * ((size + 2) / 3) + 1);
    if (!out)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < size; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < size)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < size)
            v |= data[i + 2];
        *p++ = s_b64[(v >> 18) & 63];
        *p++ = s_b64[(v >> 12) & 63];
        *p++ = i + 1 < size ? s_b64[(v >> 6) & 63] : '=';
        *p++ = i + 2 < size ? s_b64[v & 63] : '=';
    }
    *p = 0;
    return out;
}

static int s_b64_value(char c)
{
    const char *at = c ? strchr(s_b64, c) : NULL;
    return at ? (int)(at - s_b64) : -1;
}

uint8_t *nx_base64_decode(const char *text, size_t len, size_t *size)
{
    while (len > 0 && text[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return NULL;
    uint8_t *out = malloc(len * 3 / 4 + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = s_b64_value(text[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    *size = n;
    return out;
}
