/*  =========================================================================
    nx_scratch - msgpack buffers that the loop thread reuses.

    Every request packs a few short-lived msgpack documents (the reply body,
    a stored record, an event payload, the retry hash). A fresh
    msgpack_sbuffer costs a malloc of 8 KiB, a realloc or two and a free
    each time, which showed as the largest single cost of a claim. The pool
    keeps the memory of buffers given back and lends it again:
    nx_scratch_take and nx_scratch_give replace msgpack_sbuffer_init and
    msgpack_sbuffer_destroy one for one, on a buffer the caller owns, and
    never fail (with nothing kept, take is init).

    Memory stays bounded: at most NX_SCRATCH_MAX buffers are kept, and a
    buffer that grew past keep_max bytes is freed when given back.
    Not thread-safe: one pool per thread.
    =========================================================================
*/

#ifndef NX_SCRATCH_H_INCLUDED
#define NX_SCRATCH_H_INCLUDED

#include <msgpack.h>
#include <stddef.h>

#define NX_SCRATCH_MAX 8

typedef struct {
    char *data[NX_SCRATCH_MAX];   /* memory of buffers given back      */
    size_t alloc[NX_SCRATCH_MAX]; /* its size                          */
    size_t n_kept;                /* entries used                      */
    size_t keep_max;              /* larger buffers are not kept       */
} nx_scratch_t;

/*  Initializes an empty pool; buffers over keep_max bytes are not kept.   */
void nx_scratch_init(nx_scratch_t *self, size_t keep_max);

/*  Frees the memory the pool keeps.                                        */
void nx_scratch_release(nx_scratch_t *self);

/*  Makes buf an empty buffer, with kept memory when there is some.         */
void nx_scratch_take(nx_scratch_t *self, msgpack_sbuffer *buf);

/*  Keeps buf's memory (or frees it) and leaves buf empty.                  */
void nx_scratch_give(nx_scratch_t *self, msgpack_sbuffer *buf);

#endif
