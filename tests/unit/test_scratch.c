/*  =========================================================================
    test_scratch - the loop's pool of reusable msgpack buffers: a buffer
    taken is empty and reuses memory given back, large buffers are not
    kept, the pool keeps at most NX_SCRATCH_MAX, give leaves the buffer
    empty. Run under ASan, a leak or double free here fails the test.
    =========================================================================
*/

#include "nx_scratch.h"
#include "nx_test.h"

int main(void)
{
    nx_scratch_t pool;
    nx_scratch_init(&pool, 64 * 1024);

    /*  Nothing kept: take is a fresh, empty buffer.                        */
    msgpack_sbuffer a;
    nx_scratch_take(&pool, &a);
    CHECK(a.data == NULL);
    CHECK_EQ_U64(a.size, 0);
    msgpack_sbuffer_write(&a, "hello", 5);
    CHECK_EQ_U64(a.size, 5);
    char *mem = a.data;
    size_t alloc = a.alloc;

    /*  Given back, its memory is kept and lent again, the buffer empty.    */
    nx_scratch_give(&pool, &a);
    CHECK(a.data == NULL && a.size == 0 && a.alloc == 0);
    CHECK_EQ_U64(pool.n_kept, 1);
    msgpack_sbuffer b;
    nx_scratch_take(&pool, &b);
    CHECK(b.data == mem);
    CHECK_EQ_U64(b.alloc, alloc);
    CHECK_EQ_U64(b.size, 0);
    CHECK_EQ_U64(pool.n_kept, 0);
    msgpack_sbuffer_write(&b, "abc", 3);
    CHECK(memcmp(b.data, "abc", 3) == 0);

    /*  Two out at once do not share memory.                                */
    msgpack_sbuffer c;
    nx_scratch_take(&pool, &c);
    msgpack_sbuffer_write(&c, "xyz", 3);
    CHECK(c.data != b.data);
    nx_scratch_give(&pool, &c);
    nx_scratch_give(&pool, &b);
    CHECK_EQ_U64(pool.n_kept, 2);

    /*  A buffer that grew past keep_max is freed, not kept.                */
    msgpack_sbuffer big;
    nx_scratch_take(&pool, &big);
    static char blob[100 * 1024];
    msgpack_sbuffer_write(&big, blob, sizeof blob);
    CHECK(big.alloc > 64 * 1024);
    nx_scratch_give(&pool, &big);
    CHECK(big.data == NULL);
    CHECK_EQ_U64(pool.n_kept, 1);

    /*  At most NX_SCRATCH_MAX are kept; the others are freed on give.      */
    msgpack_sbuffer out[NX_SCRATCH_MAX + 3];
    for (int i = 0; i < NX_SCRATCH_MAX + 3; i++) {
        nx_scratch_take(&pool, &out[i]);
        msgpack_sbuffer_write(&out[i], "x", 1);
    }
    CHECK_EQ_U64(pool.n_kept, 0);
    for (int i = 0; i < NX_SCRATCH_MAX + 3; i++)
        nx_scratch_give(&pool, &out[i]);
    CHECK_EQ_U64(pool.n_kept, NX_SCRATCH_MAX);

    /*  A buffer never written to gives nothing back.                       */
    msgpack_sbuffer none;
    msgpack_sbuffer_init(&none);
    nx_scratch_give(&pool, &none);
    CHECK_EQ_U64(pool.n_kept, NX_SCRATCH_MAX);

    nx_scratch_release(&pool);
    CHECK_EQ_U64(pool.n_kept, 0);
    NX_TEST_DONE();
}
