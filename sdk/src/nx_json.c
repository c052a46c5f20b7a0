/*  =========================================================================
    nx_json - JSON text <-> msgpack for libnexus, over jansson.

    The mapping, documented in docs/sdk.md:
      nil/bool/int/float/str/array/map  <->  null/bool/integer/real/string/
                                              array/object
      bin, and str that is not UTF-8     ->  {"$base64":"..."}
      ext                                ->  {"$ext":type,"$base64":"..."}
      map keys that are not strings      ->  their JSON text as the key
      {"$base64":"..."} (only key)       ->  bin
    Integers above INT64_MAX become reals (JSON has no u64); NaN and the
    infinities become null.
    =========================================================================
*/

#include <math.h>
#include <string.h>

#include "nx_client.h"
#include "nx_jdump.h"

static json_t *s_base64_object(const void *data, size_t size)
{
    char *text = nx_base64_encode(data, size);
    if (!text)
        return NULL;
    json_t *obj = json_pack("{s:s}", "$base64", text);
    free(text);
    return obj;
}

json_t *nx_json_from_msgpack(const msgpack_object *obj)
{
    switch (obj->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(obj->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (obj->via.u64 > INT64_MAX)
            return json_real((double)obj->via.u64);
        return json_integer((json_int_t)obj->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)obj->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        /*  JSON has no NaN or infinity, and jansson refuses them (NULL),
            which would lose the whole payload: null, as JavaScript's
            JSON.stringify writes them.                                     */
        if (!isfinite(obj->via.f64))
            return json_null();
        return json_real(obj->via.f64);
    case MSGPACK_OBJECT_STR: {
        /*  msgpack-c leaves ptr NULL for an empty string (fuzz_sdk).      */
        const char *str = obj->via.str.size ? obj->via.str.ptr : "";
        json_t *s = json_stringn(str, obj->via.str.size);
        return s ? s : s_base64_object(obj->via.str.ptr, obj->via.str.size);
    }
    case MSGPACK_OBJECT_BIN:
        return s_base64_object(obj->via.bin.ptr, obj->via.bin.size);
    case MSGPACK_OBJECT_EXT: {
        json_t *o = s_base64_object(obj->via.ext.ptr, obj->via.ext.size);
        if (o)
            json_object_set_new(o, "$ext", json_integer(obj->via.ext.type));
        return o;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < obj->via.array.size; i++) {
            json_t *item = nx_json_from_msgpack(&obj->via.array.ptr[i]);
            if (!item || json_array_append_new(a, item)) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *o = json_object();
        for (uint32_t i = 0; o && i < obj->via.map.size; i++) {
            const msgpack_object *k = &obj->via.map.ptr[i].key;
            char *key = NULL;
            if (k->type == MSGPACK_OBJECT_STR) {
                key = strndup(k->via.str.size ? k->via.str.ptr : "", k->via.str.size);
            } else {
                json_t *kj = nx_json_from_msgpack(k);
                key = kj ? nx_json_dumps(kj, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                json_decref(kj);
            }
            json_t *v = key ? nx_json_from_msgpack(&obj->via.map.ptr[i].val) : NULL;
            /*  A key that is not valid UTF-8 fails here: skip the pair
                rather than lose the whole payload.                         */
            if (v)
                (void)json_object_set_new(o, key, v);
            free(key);
            if (!v) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    }
    return json_null();
}

int nx_json_pack(msgpack_packer *pk, const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(value));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(value));
    case JSON_STRING:
        /*  Every write is checked: a failed one (out of memory) followed by
            smaller ones that succeed would make bytes that are not msgpack. */
        if (msgpack_pack_str(pk, json_string_length(value)))
            return -1;
        return msgpack_pack_str_body(pk, json_string_value(value), json_string_length(value));
    case JSON_ARRAY: {
        if (msgpack_pack_array(pk, json_array_size(value)))
            return -1;
        size_t i;
        json_t *item;
        json_array_foreach(value, i, item)
        {
            if (nx_json_pack(pk, item))
                return -1;
        }
        return 0;
    }
    case JSON_OBJECT: {
        json_t *b64 = json_object_get(value, "$base64");
        if (json_object_size(value) == 1 && json_is_string(b64)) {
            size_t size = 0;
            uint8_t *bytes =
                nx_base64_decode(json_string_value(b64), json_string_length(b64), &size);
            if (bytes) {
                int rc = msgpack_pack_bin(pk, size) || msgpack_pack_bin_body(pk, bytes, size);
                free(bytes);
                return rc ? -1 : 0;
            }
        }
        if (msgpack_pack_map(pk, json_object_size(value)))
            return -1;
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)value, key, item)
        {
            size_t klen = strlen(key);
            if (msgpack_pack_str(pk, klen) || msgpack_pack_str_body(pk, key, klen) ||
                nx_json_pack(pk, item))
                return -1;
        }
        return 0;
    }
    }
    return msgpack_pack_nil(pk);
}

int nx_json_text_to_msgpack(const char *text, msgpack_sbuffer *buf, char *err, size_t errsize)
{
    json_error_t jerr;
    json_t *value = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!value) {
        snprintf(err, errsize, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    int rc = nx_json_pack(&pk, value);
    json_decref(value);
    if (rc)
        snprintf(err, errsize, "out of memory");
    return rc ? -1 : 0;
}

void *nexus_json_to_msgpack(const char *json, size_t *size)
{
    if (size)
        *size = 0;
    if (!json || !size)
        return NULL;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    char err[8];
    if (nx_json_text_to_msgpack(json, &buf, err, sizeof err) || !buf.data) {
        msgpack_sbuffer_destroy(&buf);
        return NULL;
    }
    /*  The sbuffer's memory is plain malloc: the caller frees it.         */
    *size = buf.size;
    return msgpack_sbuffer_release(&buf);
}

char *nexus_msgpack_to_json(const void *data, size_t size)
{
    if (size == 0)
        return strdup("null");
    if (!data)
        return NULL; /* no bytes to read the size from */
    msgpack_unpacked unp;
    msgpack_unpacked_init(&unp);
    size_t off = 0;
    json_t *value = NULL;
    /*  Checked first: msgpack-c allocates what a count declares (5 bytes
        `df ff ff ff ff` ask for 2^32 entries) before it reads them.        */
    if (nx_msgpack_check(data, size, NX_MSGPACK_DEPTH) == NX_MSGPACK_OK &&
        msgpack_unpack_next(&unp, data, size, &off) == MSGPACK_UNPACK_SUCCESS && off == size)
        value = nx_json_from_msgpack(&unp.data);
    else
        value = s_base64_object(data, size);
    msgpack_unpacked_destroy(&unp);
    if (!value)
        return NULL;
    char *text = nx_json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(value);
    return text;
}
