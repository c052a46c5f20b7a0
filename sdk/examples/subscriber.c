/*  =========================================================================
    subscriber - prints events matching the patterns given, as JSON lines,
    until COUNT events (when NEXUS_COUNT is set) or forever.
    Usage: subscriber PATTERN... (none: usage, exit 2)
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>

#include <nexus.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        /*  Without a pattern nothing can match: it would wait for ever.   */
        fprintf(stderr, "usage: subscriber PATTERN... (e.g. 'example.>'; NEXUS_COUNT=N stops "
                        "after N events)\n");
        return 2;
    }
    long limit = getenv("NEXUS_COUNT") ? atol(getenv("NEXUS_COUNT")) : 0;
    nexus_client_t *client = nexus_client_new();
    if (nexus_client_connect(client) != NEXUS_OK)
        fprintf(stderr, "subscriber: %s (retrying)\n", nexus_client_errmsg(client));
    for (int i = 1; i < argc; i++)
        if (nexus_subscribe(client, argv[i]) != NEXUS_OK) {
            fprintf(stderr, "subscriber: %s\n", nexus_client_errmsg(client));
            nexus_client_destroy(&client);
            return 2;
        }
    for (long seen = 0; limit == 0 || seen < limit;) {
        nexus_event_t *event = NULL;
        nexus_err_t rc = nexus_recv(client, 1000, &event);
        if (rc == NEXUS_ERR_TIMEOUT)
            continue;
        /*  A gap (retention) and a reset (the broker serves another store:
            delivery starts over there) are events too: printed as JSON.    */
        if (rc != NEXUS_OK && rc != NEXUS_ERR_GAP && rc != NEXUS_ERR_RESET)
            break;
        printf("%s\n", nexus_event_json(event));
        fflush(stdout);
        nexus_event_destroy(&event);
        seen++;
    }
    nexus_client_destroy(&client);
    return 0;
}
