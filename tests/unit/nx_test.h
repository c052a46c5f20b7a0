/*  =========================================================================
    nx_test - the few macros our unit tests use. A failed check prints the
    file, line and expression (and the values for the _EQ forms) and counts
    as a failure; main returns non-zero when any check failed.
    =========================================================================
*/

#ifndef NX_TEST_H_INCLUDED
#define NX_TEST_H_INCLUDED

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int nx_test_failures = 0;
static int nx_test_checks = 0;

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        nx_test_checks++;                                                                          \
        if (!(expr)) {                                                                             \
            nx_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        uint64_t nx_a_ = (uint64_t)(a), nx_b_ = (uint64_t)(b);                                     \
        nx_test_checks++;                                                                          \
        if (nx_a_ != nx_b_) {                                                                      \
            nx_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s == %s failed: %" PRIu64 " != %" PRIu64 "\n", __FILE__,      \
                    __LINE__, #a, #b, nx_a_, nx_b_);                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *nx_a_ = (a), *nx_b_ = (b);                                                     \
        nx_test_checks++;                                                                          \
        if (!nx_a_ || !nx_b_ || strcmp(nx_a_, nx_b_) != 0) {                                       \
            nx_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,  \
                    #b, nx_a_ ? nx_a_ : "(null)", nx_b_ ? nx_b_ : "(null)");                       \
        }                                                                                          \
    } while (0)

/*  Removes dir and everything under it (a test's scratch directory).      */
static inline void nx_test_rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue; /* deeper than a test makes */
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            nx_test_rm_tree(path);
        else
            unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/*  Writes text to path (a test's scratch file), a failed check if it
    cannot.                                                                */
static inline void nx_test_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/*  Ends main: prints a summary and returns the exit code.                  */
#define NX_TEST_DONE()                                                                             \
    do {                                                                                           \
        printf("%d checks, %d failed\n", nx_test_checks, nx_test_failures);                        \
        return nx_test_failures ? 1 : 0;                                                           \
    } while (0)

#endif
