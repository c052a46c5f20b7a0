/*  =========================================================================
    test_zap - the broker's ZAP handler with real ZeroMQ sockets over
    loopback TCP: a PLAIN server admits the right tokens and names each
    connection by its token's name (the User-Id on its messages), never the
    token; a wrong token gets no message through and is counted; a CURVE
    server names a key listed on a tokens-file line by that line's name
    and another allowed key by itself, and refuses a key not in
    curve_clients.
    =========================================================================
*/

#include <czmq.h>
#include <unistd.h>

#include "nx_auth.h"
#include "nx_test.h"
#include "nx_zap.h"

/*  A message from a client with this PLAIN password, as the server sees
    it: the User-Id, or "" when nothing came within 1.5 s.               */
static void s_plain_try(zsock_t *server, const char *endpoint, const char *password, char *uid,
                        size_t size)
{
    zsock_t *client = zsock_new(ZMQ_DEALER);
    zsock_set_linger(client, 0);
    zsock_set_plain_username(client, "nexus");
    zsock_set_plain_password(client, password);
    zsock_connect(client, "%s", endpoint);
    zstr_send(client, "hello");
    uid[0] = 0;
    zsock_set_rcvtimeo(server, 1500);
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, zsock_resolve(server), 0) >= 0 &&
        zmq_msg_recv(&body, zsock_resolve(server), 0) >= 0) {
        const char *u = zmq_msg_gets(&body, "User-Id");
        snprintf(uid, size, "%s", u ? u : "?");
    }
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    zsock_destroy(&client);
}


int main(void)
{
    zsys_init();
    char dir[] = "/tmp/nx-zap-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char tokens[300], err[256], uid[128];
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);

    /*  PLAIN                                                               */
    nx_test_write_file(tokens, "TOK-A name=alice sessions=alice\nTOK-B bob\n");
    nx_auth_t *auth = nx_auth_new("SHARED", tokens, err, sizeof err);
    CHECK(auth != NULL);
    nx_zap_counts_t counts = {0};
    nx_zap_t *zap = nx_zap_new(auth, NULL, &counts, err, sizeof err);
    CHECK(zap != NULL);
    /*  One handler per context: a second cannot bind its endpoint.        */
    nx_zap_counts_t other = {0};
    nx_zap_t *second = nx_zap_new(auth, NULL, &other, err, sizeof err);
    CHECK(second == NULL && strstr(err, "zeromq.zap.01") != NULL);
    zsock_t *server = zsock_new(ZMQ_ROUTER);
    zsock_set_plain_server(server, 1);
    zsock_set_zap_domain(server, "control");
    int port = zsock_bind(server, "tcp://127.0.0.1:*");
    CHECK(port > 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    s_plain_try(server, ep, "TOK-A", uid, sizeof uid);
    CHECK_EQ_STR(uid, "alice");
    s_plain_try(server, ep, "TOK-B", uid, sizeof uid);
    CHECK_EQ_STR(uid, "bob"); /* the first format: named by its session  */
    s_plain_try(server, ep, "SHARED", uid, sizeof uid);
    CHECK_EQ_STR(uid, "shared");
    s_plain_try(server, ep, "TOK-C", uid, sizeof uid);
    CHECK_EQ_STR(uid, ""); /* refused: nothing came                      */
    CHECK(__atomic_load_n(&counts.plain, __ATOMIC_RELAXED) >= 1);
    CHECK(__atomic_load_n(&counts.curve, __ATOMIC_RELAXED) == 0);
    zsock_destroy(&server);
    nx_zap_destroy(&zap);
    CHECK(zap == NULL);
    nx_zap_destroy(&zap);

    /*  CURVE: the key on a tokens-file line is named by it; an unlisted
        allowed key by itself; a key not in curve_clients is refused.     */
    char clients[300], path[400];
    snprintf(clients, sizeof clients, "%s/clients", dir);
    CHECK(mkdir(clients, 0700) == 0);
    zcert_t *srv = zcert_new(), *named = zcert_new(), *plainkey = zcert_new(),
            *stranger = zcert_new();
    snprintf(path, sizeof path, "%s/named", clients);
    zcert_save_public(named, path);
    snprintf(path, sizeof path, "%s/plain", clients);
    zcert_save_public(plainkey, path);
    char line[200];
    snprintf(line, sizeof line, "TOK-SVC name=svc key=%s\n", zcert_public_txt(named));
    nx_test_write_file(tokens, line);
    nx_auth_t *auth2 = nx_auth_new(NULL, tokens, err, sizeof err);
    CHECK(auth2 != NULL);
    memset(&counts, 0, sizeof counts);
    zap = nx_zap_new(auth2, clients, &counts, err, sizeof err);
    CHECK(zap != NULL);
    server = zsock_new(ZMQ_ROUTER);
    zcert_apply(srv, server);
    zsock_set_curve_server(server, 1);
    zsock_set_zap_domain(server, "events-in");
    port = zsock_bind(server, "tcp://127.0.0.1:*");
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    zcert_t *keys[] = {named, plainkey, stranger};
    const char *want[] = {"svc", zcert_public_txt(plainkey), ""};
    for (size_t i = 0; i < 3; i++) {
        zsock_t *client = zsock_new(ZMQ_DEALER);
        zsock_set_linger(client, 0);
        zcert_apply(keys[i], client);
        zsock_set_curve_serverkey(client, zcert_public_txt(srv));
        zsock_connect(client, "%s", ep);
        zstr_send(client, "hello");
        zsock_set_rcvtimeo(server, 1500);
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        uid[0] = 0;
        if (zmq_msg_recv(&id, zsock_resolve(server), 0) >= 0 &&
            zmq_msg_recv(&body, zsock_resolve(server), 0) >= 0) {
            const char *u = zmq_msg_gets(&body, "User-Id");
            snprintf(uid, sizeof uid, "%s", u ? u : "?");
        }
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        CHECK_EQ_STR(uid, want[i]);
        zsock_destroy(&client);
    }
    CHECK(__atomic_load_n(&counts.curve, __ATOMIC_RELAXED) >= 1);
    zsock_destroy(&server);
    nx_zap_destroy(&zap);
    zcert_destroy(&srv);
    zcert_destroy(&named);
    zcert_destroy(&plainkey);
    zcert_destroy(&stranger);
    nx_auth_destroy(&auth);
    nx_auth_destroy(&auth2);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    CHECK(system(path) == 0);
    NX_TEST_DONE();
}
