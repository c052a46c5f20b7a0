/*  =========================================================================
    test_cert - nx_cert_load_secret: a secret certificate file loads, as
    does its public file with the secret beside it; a public file alone, a
    missing file and no path do not.
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nx_cert.h"
#include "nx_test.h"

int main(void)
{
    char dir[] = "/tmp/nexus-test-cert-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300], secret[310], alone[300];
    snprintf(path, sizeof path, "%s/key", dir);
    snprintf(secret, sizeof secret, "%s/key_secret", dir);
    snprintf(alone, sizeof alone, "%s/alone", dir);
    zcert_t *made = zcert_new();
    CHECK(made && zcert_save(made, path) == 0);

    zcert_t *cert = nx_cert_load_secret(secret);
    CHECK(cert != NULL);
    CHECK_EQ_STR(cert ? zcert_secret_txt(cert) : "", zcert_secret_txt(made));
    zcert_destroy(&cert);
    /*  The public file finds its secret beside it.                          */
    cert = nx_cert_load_secret(path);
    CHECK(cert != NULL);
    CHECK_EQ_STR(cert ? zcert_public_txt(cert) : "", zcert_public_txt(made));
    zcert_destroy(&cert);
    /*  A public file alone has no secret: refused.                          */
    CHECK(zcert_save_public(made, alone) == 0);
    CHECK(nx_cert_load_secret(alone) == NULL);
    snprintf(alone, sizeof alone, "%s/missing", dir);
    CHECK(nx_cert_load_secret(alone) == NULL);
    CHECK(nx_cert_load_secret(NULL) == NULL);
    CHECK(nx_cert_load_secret("") == NULL);

    zcert_destroy(&made);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    NX_TEST_DONE();
}
