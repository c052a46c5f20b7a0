/*  =========================================================================
    worker - registers a session with the capability "build", claims work
    items named on the command line, "does" them, and completes them with
    a result. An item someone else holds, or one already completed, is
    skipped.
    Usage: worker WORK_ID...
    =========================================================================
*/

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <nexus.h>

int main(int argc, char **argv)
{
    nexus_client_t *client = nexus_client_new();
    nexus_client_set_name(client, "example-worker");
    nexus_client_set_capabilities(client, "build");
    if (nexus_client_connect(client) != NEXUS_OK || nexus_session_register(client, NULL)) {
        fprintf(stderr, "worker: %s\n", nexus_client_errmsg(client));
        nexus_client_destroy(&client);
        return 3;
    }
    int done = 0;
    for (int i = 1; i < argc; i++) {
        nexus_claim_result_t claim;
        nexus_err_t rc = nexus_claim(client, argv[i], 60000, "example work", &claim);
        if (rc == NEXUS_ERR_DENIED) {
            /*  Denied for two reasons: a completed item is closed for
                good, a held one may come free when its lease ends.        */
            if (strcmp(claim.state, "completed") == 0)
                printf("%s: already completed by %s\n", argv[i], claim.holder);
            else
                printf("%s: held by %s\n", argv[i], claim.holder);
            continue;
        }
        if (rc != NEXUS_OK) {
            fprintf(stderr, "worker: %s\n", nexus_client_errmsg(client));
            continue;
        }
        nexus_session_status(client, "busy", argv[i], NULL);
        /* ... the work happens here, renewing the lease if it is long ... */
        if (nexus_complete(client, argv[i], claim.token, "{\"ok\":true}") == NEXUS_OK) {
            printf("%s: done (token %" PRIu64 ")\n", argv[i], claim.token);
            done++;
        }
    }
    nexus_session_unregister(client, NULL);
    nexus_client_destroy(&client);
    return done == argc - 1 ? 0 : 1;
}
