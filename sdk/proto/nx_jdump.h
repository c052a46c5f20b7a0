/*  =========================================================================
    nx_jdump - JSON text for people and programs: reals in the fewest
    digits that read back as the same double.

    jansson prints every real with 17 significant digits, so a payload's
    0.1 came back to its reader as 0.10000000000000001: the same double,
    not the text that was sent. nx_json_dumps prints the whole value with
    the smallest precision (1..17) at which each of its reals reads back
    exactly; 17 always does, so nothing is ever lost. jansson takes one
    precision for a whole dump: a value holding one real that needs 17
    digits (0.1 + 0.2) prints all of its reals with 17, as before.

    Compiled into libnexus (it needs jansson, which nexus_proto and the
    broker do without); the gateway and the CLI take it from there.
    =========================================================================
*/

#ifndef NX_JDUMP_H_INCLUDED
#define NX_JDUMP_H_INCLUDED

#include <jansson.h>

/*  As json_dumps (flags likewise), with reals in the fewest exact digits.
    Caller frees; NULL when out of memory (or as json_dumps refuses).     */
char *nx_json_dumps(const json_t *value, size_t flags);

/*  The fewest significant digits (1..17) at which every real in value
    prints back to itself: the precision nx_json_dumps uses.              */
int nx_json_real_digits(const json_t *value);

#endif
