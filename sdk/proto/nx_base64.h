/*  =========================================================================
    nx_base64 - standard base64 (RFC 4648, with padding), for the
    {"$base64": ...} form binary takes in JSON everywhere in nexus.
    =========================================================================
*/

#ifndef NX_BASE64_H_INCLUDED
#define NX_BASE64_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

/*  Returns a fresh NUL-terminated base64 text of data, or NULL when out of
    memory. The caller frees it.                                            */
char *nx_base64_encode(const uint8_t *data, size_t size);

/*  Returns the bytes of base64 text[0..len) (padding optional) in a fresh
    buffer and their count in *size, or NULL when it is not base64 or out
    of memory. The caller frees it.                                         */
uint8_t *nx_base64_decode(const char *text, size_t len, size_t *size);

#endif
