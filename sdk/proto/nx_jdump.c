/*  =========================================================================
    nx_jdump - JSON text with reals in the fewest exact digits (nx_jdump.h).
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>

#include "nx_jdump.h"

#define S_DIGITS_MAX 17 /* %.17g reads back as the same double, always    */
#define S_DEPTH_MAX  64 /* deeper values are printed with 17 digits        */

/*  The fewest digits, from least, at which d reads back as itself. A
    precision that reads back keeps doing so with more digits (any shorter
    decimal is one of the longer ones), so the largest over a value's
    reals serves them all.                                                  */
static int s_real_digits(double d, int least)
{
    for (int p = least; p < S_DIGITS_MAX; p++) {
        char text[40];
        snprintf(text, sizeof text, "%.*g", p, d);
        if (strtod(text, NULL) == d)
            return p;
    }
    return S_DIGITS_MAX;
}

static int s_digits(const json_t *value, int least, int depth)
{
    if (depth > S_DEPTH_MAX)
        return S_DIGITS_MAX;
    size_t i;
    const char *key;
    json_t *item;
    switch (json_typeof(value)) {
    case JSON_REAL:
        return s_real_digits(json_real_value(value), least);
    case JSON_ARRAY:
        json_array_foreach((json_t *)value, i, item)
        {
            least = s_digits(item, least, depth + 1);
            if (least == S_DIGITS_MAX)
                break;
        }
        return least;
    case JSON_OBJECT:
        json_object_foreach((json_t *)value, key, item)
        {
            least = s_digits(item, least, depth + 1);
            if (least == S_DIGITS_MAX)
                break;
        }
        return least;
    default:
        return least;
    }
}

int nx_json_real_digits(const json_t *value)
{
    return value ? s_digits(value, 1, 0) : 1;
}

char *nx_json_dumps(const json_t *value, size_t flags)
{
    return json_dumps(value, flags | JSON_REAL_PRECISION(nx_json_real_digits(value)));
}
