/*  =========================================================================
    test_base64 - nx_base64 against the test vectors of RFC 4648 section 10,
    round trips of every byte value, and the inputs decode refuses.
    =========================================================================
*/

#include <stdlib.h>

#include "nx_base64.h"
#include "nx_test.h"

int main(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *enc = nx_base64_encode((const uint8_t *)plain[i], strlen(plain[i]));
        CHECK_EQ_STR(enc, coded[i]);
        size_t n = 99;
        uint8_t *dec = nx_base64_decode(coded[i], strlen(coded[i]), &n);
        CHECK(dec != NULL);
        CHECK_EQ_U64(n, strlen(plain[i]));
        CHECK(dec && memcmp(dec, plain[i], n) == 0);
        free(enc);
        free(dec);
    }
    /*  Every byte value survives a round trip.                             */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *enc = nx_base64_encode(all, sizeof all);
    size_t n = 0;
    uint8_t *dec = enc ? nx_base64_decode(enc, strlen(enc), &n) : NULL;
    CHECK_EQ_U64(n, 256);
    CHECK(dec && memcmp(dec, all, 256) == 0);
    free(enc);
    free(dec);
    /*  Not base64: a character outside the alphabet, a dangling sextet.    */
    CHECK(nx_base64_decode("Zm9v!", 5, &n) == NULL);
    CHECK(nx_base64_decode("Zm9vY", 5, &n) == NULL);
    NX_TEST_DONE();
}
