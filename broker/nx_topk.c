/*  =========================================================================
    nx_topk - the k smallest of a stream of items (a bounded max-heap).
    =========================================================================
*/

#include <stdlib.h>

#include "nx_topk.h"

int nx_topk_init(nx_topk_t *self, size_t k, nx_topk_cmp_fn *cmp)
{
    self->n = 0;
    self->k = k;
    self->cmp = cmp;
    self->items = malloc((k ? k : 1) * sizeof *self->items);
    return self->items ? 0 : -1;
}

static void s_swap(void **h, size_t a, size_t b)
{
    void *t = h[a];
    h[a] = h[b];
    h[b] = t;
}

/*  Moves h[i] down to its place (the largest at [0]).                      */
static void s_sift_down(nx_topk_t *self, size_t i)
{
    void **h = self->items;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < self->n && self->cmp(h[l], h[m]) > 0)
            m = l;
        if (r < self->n && self->cmp(h[r], h[m]) > 0)
            m = r;
        if (m == i)
            return;
        s_swap(h, i, m);
        i = m;
    }
}

void nx_topk_offer(nx_topk_t *self, void *item)
{
    void **h = self->items;
    if (self->n < self->k) {
        size_t i = self->n++;
        h[i] = item;
        while (i > 0 && self->cmp(h[(i - 1) / 2], h[i]) < 0) {
            s_swap(h, i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    } else if (self->k && self->cmp(item, h[0]) < 0) {
        h[0] = item;
        s_sift_down(self, 0);
    }
}

void nx_topk_sort(nx_topk_t *self)
{
    /*  Heapsort in place: the largest goes to the end, the heap shrinks.  */
    size_t n = self->n;
    while (self->n > 1) {
        s_swap(self->items, 0, self->n - 1);
        self->n--;
        s_sift_down(self, 0);
    }
    self->n = n;
}

void nx_topk_destroy(nx_topk_t *self)
{
    free(self->items);
    self->items = NULL;
    self->n = self->k = 0;
}
