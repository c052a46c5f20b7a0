/*  =========================================================================
    test_jdump - nx_json_dumps: reals in the fewest digits that read back
    as the same double, and never fewer.
    =========================================================================
*/

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "nx_jdump.h"
#include "nx_test.h"

static char *s_dump(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    CHECK(v != NULL);
    char *out = nx_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    return out;
}

/*  Every real of a and b, in order, is the same double.                   */
static bool s_same_reals(const json_t *a, const json_t *b)
{
    if (json_typeof(a) != json_typeof(b))
        return false;
    size_t i;
    const char *key;
    json_t *item;
    switch (json_typeof(a)) {
    case JSON_REAL:
        return json_real_value(a) == json_real_value(b);
    case JSON_ARRAY:
        json_array_foreach((json_t *)a, i,
                           item) if (!s_same_reals(item, json_array_get(b, i))) return false;
        return true;
    case JSON_OBJECT:
        json_object_foreach((json_t *)a, key,
                            item) if (!s_same_reals(item, json_object_get(b, key))) return false;
        return true;
    default:
        return json_equal(a, b);
    }
}

int main(void)
{
    /*  What was sent comes back as sent.                                  */
    const char *const as_sent[] = {
        "{\"x\":0.1}", "[2.5,0.1,-3.75]",         "{\"pi\":3.14159,\"n\":[1,2]}",
        "1e+300",      "0.30000000000000004",     "[0.1,0.30000000000000004]",
        "5e-324",      "{\"a\":\"0.1\",\"b\":7}",
    };
    char *out = s_dump(as_sent[0]);
    CHECK_EQ_STR(out, "{\"x\":0.1}"); /* jansson alone: 0.10000000000000001 */
    free(out);
    out = s_dump(as_sent[1]);
    CHECK_EQ_STR(out, "[2.5,0.1,-3.75]");
    free(out);
    out = s_dump(as_sent[4]);
    CHECK_EQ_STR(out, "0.30000000000000004"); /* needs all 17 */
    free(out);
    out = s_dump(as_sent[7]); /* no reals: as json_dumps */
    CHECK_EQ_STR(out, "{\"a\":\"0.1\",\"b\":7}");
    free(out);

    /*  Every value reads back exactly, however its digits are chosen.      */
    for (size_t i = 0; i < sizeof as_sent / sizeof as_sent[0]; i++) {
        json_t *v = json_loads(as_sent[i], JSON_DECODE_ANY, NULL);
        char *text = nx_json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
        CHECK(back && s_same_reals(v, back));
        json_decref(v);
        json_decref(back);
        free(text);
    }
    /*  Doubles of every scale, pseudo-random bits: each reads back.       */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof d);
        if (!isfinite(d))
            continue;
        json_t *v = json_real(d);
        char *text = nx_json_dumps(v, JSON_ENCODE_ANY);
        json_t *back = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
        if (!back || json_real_value(back) != d)
            bad++;
        json_decref(v);
        json_decref(back);
        free(text);
    }
    CHECK_EQ_U64(bad, 0);
    CHECK_EQ_U64(nx_json_real_digits(NULL), 1);
    NX_TEST_DONE();
}
