/*  =========================================================================
    test_topk - nx_topk keeps the k smallest items of a stream, and sorts
    them; checked against a full sort of random strings, with duplicates,
    k = 0, k = 1 and k over the stream's length.
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_test.h"
#include "nx_topk.h"

static int s_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int s_qcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void s_check(char **ids, size_t n, size_t k)
{
    nx_topk_t t;
    CHECK(nx_topk_init(&t, k, s_cmp) == 0);
    for (size_t i = 0; i < n; i++)
        nx_topk_offer(&t, ids[i]);
    nx_topk_sort(&t);
    char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    memcpy(sorted, ids, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, s_qcmp);
    size_t want = k < n ? k : n;
    CHECK(t.n == want);
    for (size_t i = 0; i < want; i++)
        CHECK(strcmp(t.items[i], sorted[i]) == 0);
    free(sorted);
    nx_topk_destroy(&t);
    CHECK(t.items == NULL);
}

int main(void)
{
    enum { N = 3000 };
    static char buf[N][16];
    static char *ids[N];
    srand(7);
    for (size_t i = 0; i < N; i++) {
        /*  Few distinct values at the start: duplicates are kept as such.  */
        snprintf(buf[i], sizeof buf[i], "w-%d", i < 100 ? rand() % 10 : rand());
        ids[i] = buf[i];
    }
    size_t ks[] = {0, 1, 2, 7, 100, 999, 2999, 3000, 5000};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        s_check(ids, N, ks[i]);
        s_check(ids, 100, ks[i]); /* duplicates only */
        s_check(ids, 0, ks[i]);
    }
    printf("test_topk: ok\n");
    return 0;
}
