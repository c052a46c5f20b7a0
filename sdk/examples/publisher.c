/*  =========================================================================
    publisher - publishes N numbered events on a topic, acknowledged, and
    prints the seq of each. Usage: publisher [TOPIC] [COUNT]
    Endpoint: NEXUS_ENDPOINT (default tcp://127.0.0.1:8451). Exits 0 when
    every event was stored, 1 when a publish failed, 3 without a broker.
    =========================================================================
*/

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <nexus.h>

int main(int argc, char **argv)
{
    const char *topic = argc > 1 ? argv[1] : "example.numbers";
    int count = argc > 2 ? atoi(argv[2]) : 10;
    nexus_client_t *client = nexus_client_new();
    nexus_client_set_name(client, "example-publisher");
    if (nexus_client_connect(client) != NEXUS_OK) {
        fprintf(stderr, "publisher: %s\n", nexus_client_errmsg(client));
        nexus_client_destroy(&client);
        return 3;
    }
    int failed = 0;
    for (int i = 0; i < count && !failed; i++) {
        char json[64];
        snprintf(json, sizeof json, "{\"n\":%d}", i);
        uint64_t seq = 0;
        nexus_err_t rc = nexus_publish_json_acked(client, topic, json, &seq);
        if (rc != NEXUS_OK) {
            fprintf(stderr, "publisher: %s\n", nexus_client_errmsg(client));
            failed = 1; /* a script running us must see it */
            continue;
        }
        printf("%" PRIu64 "\n", seq);
    }
    nexus_client_destroy(&client);
    return failed;
}
