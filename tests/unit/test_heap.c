/*  =========================================================================
    test_heap - after nx_heap_tune, a block under mmap_min comes from the
    heap and freeing it does not shrink the heap (no trim, no refault).
    Under AddressSanitizer malloc is ASan's own, which takes no settings.
    =========================================================================
*/

#include <stdlib.h>
#include <unistd.h>

#include "nx_heap.h"
#include "nx_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define S_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_ASAN 1
#endif
#endif

int main(void)
{
    CHECK(nx_heap_tune((size_t)1 << 40, 4u << 20) == -1); /* over mallopt's int */
#if defined(S_ASAN)
    /*  ASan's mallopt takes nothing (it returns 0): reported as refused.   */
    CHECK(nx_heap_tune(64u << 20, 4u << 20) == -1);
#else
    CHECK(nx_heap_tune(64u << 20, 4u << 20) == 0);
    /*  2 MiB is over glibc's default mmap threshold (128 KiB), under ours:
        it must come from the main heap, between its start and its break. */
    extern char end; /* the end of the program's data: the heap is above */
    char *p = malloc(2u << 20);
    CHECK(p != NULL);
    char *top = sbrk(0);
    CHECK(p > &end && p < top); /* on the heap, not mmapped near the libraries */
    p[0] = 1;
    free(p);
    CHECK((char *)sbrk(0) == top); /* freed, kept: no trim */
#endif
    NX_TEST_DONE();
}
