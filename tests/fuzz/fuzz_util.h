/*  =========================================================================
    fuzz_util - what the libFuzzer targets share: an input cut into parts,
    a file that holds given bytes, a temporary directory removed at exit,
    and the check that turns a broken promise into a crash the fuzzer
    keeps (docs/testing.md).
    =========================================================================
*/

#ifndef FUZZ_UTIL_H_INCLUDED
#define FUZZ_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*  One part of an input; points into it.                                   */
typedef struct {
    const uint8_t *data;
    size_t size;
} fz_part_t;

/*  Cuts data at every occurrence of sep (sep_len bytes) into at most max
    parts (the last one keeps the rest). Returns how many (at least 1).   */
size_t fz_split(const uint8_t *data, size_t size, const char *sep, size_t sep_len, fz_part_t *parts,
                size_t max);

/*  The path of a file that holds exactly these bytes (one memfd per
    process, rewritten each call; valid until the next call).            */
const char *fz_file(const uint8_t *data, size_t size);

/*  Makes a directory under $TMPDIR (or /tmp) that is removed, with what
    it holds, when the process exits normally. Returns its path (static
    storage) or aborts.                                                    */
const char *fz_tmpdir(const char *what);

/*  A copy of the bytes with a NUL after them. Caller frees.               */
char *fz_strndup(const uint8_t *data, size_t size);

/*  Reports a broken promise and aborts, so that libFuzzer saves the input. */
void fz_fail(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn));

#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fz_fail(__VA_ARGS__);                                                                  \
    } while (0)

/*  True when the environment variable FUZZ_VERBOSE is set: the targets
    then log what the programs under test log (else errors only).          */
bool fz_verbose(void);

#endif
