/*  =========================================================================
    nx_topk - the k smallest of a stream of items, for the lists the broker
    answers (work.list, session.list, session.find).

    A list asks for at most `limit` items, sorted, out of a table of up to
    millions: sorting the table held the loop (and its timers) for a second
    at 200 000. This keeps the k smallest items seen so far in a max-heap,
    O(n log k) for n items and k slots of memory, then sorts those k.
    Items are pointers the caller owns; cmp orders them (strcmp-like).
    =========================================================================
*/

#ifndef NX_TOPK_H_INCLUDED
#define NX_TOPK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef int nx_topk_cmp_fn(const void *a, const void *b);

typedef struct {
    void **items;        /* heap, then sorted by nx_topk_sort             */
    size_t n, k;         /* items held, most held                        */
    nx_topk_cmp_fn *cmp; /* the order                                    */
} nx_topk_t;

/*  Keeps at most k items (k may be 0). Returns 0, or -1 out of memory.     */
int nx_topk_init(nx_topk_t *self, size_t k, nx_topk_cmp_fn *cmp);
/*  Offers item: kept when fewer than k are held or it is smaller than the
    largest held (which then goes).                                         */
void nx_topk_offer(nx_topk_t *self, void *item);
/*  Sorts what is held, smallest first (self->items[0 .. n-1]); after this,
    no more offers.                                                         */
void nx_topk_sort(nx_topk_t *self);
void nx_topk_destroy(nx_topk_t *self);

#endif
