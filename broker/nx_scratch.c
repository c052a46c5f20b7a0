/*  =========================================================================
    nx_scratch - msgpack buffers that the loop thread reuses.
    =========================================================================
*/

#include <stdlib.h>

#include "nx_scratch.h"

void nx_scratch_init(nx_scratch_t *self, size_t keep_max)
{
    self->n_kept = 0;
    self->keep_max = keep_max;
}

void nx_scratch_release(nx_scratch_t *self)
{
    while (self->n_kept)
        free(self->data[--self->n_kept]);
}

void nx_scratch_take(nx_scratch_t *self, msgpack_sbuffer *buf)
{
    msgpack_sbuffer_init(buf);
    if (self->n_kept) {
        self->n_kept--;
        buf->data = self->data[self->n_kept];
        buf->alloc = self->alloc[self->n_kept];
    }
}

void nx_scratch_give(nx_scratch_t *self, msgpack_sbuffer *buf)
{
    if (buf->data && buf->alloc <= self->keep_max && self->n_kept < NX_SCRATCH_MAX) {
        self->data[self->n_kept] = buf->data;
        self->alloc[self->n_kept] = buf->alloc;
        self->n_kept++;
    } else
        free(buf->data);
    msgpack_sbuffer_init(buf);
}
