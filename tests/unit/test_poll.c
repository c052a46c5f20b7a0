/*  =========================================================================
    test_poll - nx_poll with real ZeroMQ sockets (inproc and TCP over
    loopback) and a pipe: what arrives is reported, lazy or not; a lazy
    socket left with messages unread is reported again though its
    descriptor stays quiet; a socket not looked at keeps what it had; the
    timeout holds; bad arguments are refused.
    =========================================================================
*/

#include <czmq.h>
#include <errno.h>
#include <unistd.h>

#include "nx_poll.h"
#include "nx_test.h"

/*  Waits up to 2 s, a call at a time, until nx_poll reports item i.       */
static bool s_reported(nx_poll_item_t *items, int n, int i)
{
    for (int k = 0; k < 40; k++) {
        int rc = nx_poll(items, n, 50);
        if (rc > 0 && (items[i].revents & ZMQ_POLLIN))
            return true;
    }
    return false;
}

static int s_drain(zsock_t *sock)
{
    int n = 0;
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, zsock_resolve(sock), ZMQ_DONTWAIT) == -1) {
            zmq_msg_close(&msg);
            return n;
        }
        zmq_msg_close(&msg);
        n++;
    }
}

int main(void)
{
    zsys_init();
    /*  Two inproc pairs (one lazy, one not), a TCP PUSH/PULL (lazy), a
        pipe.                                                             */
    zsock_t *lazy_in = zsock_new_pair("@inproc://test-poll-lazy");
    zsock_t *lazy_out = zsock_new_pair(">inproc://test-poll-lazy");
    zsock_t *eager_in = zsock_new_pair("@inproc://test-poll-eager");
    zsock_t *eager_out = zsock_new_pair(">inproc://test-poll-eager");
    zsock_t *pull = zsock_new(ZMQ_PULL);
    CHECK(pull && zsock_bind(pull, "tcp://127.0.0.1:*") > 0);
    zsock_t *push = zsock_new(ZMQ_PUSH);
    CHECK(push && zsock_connect(push, "%s", zsock_endpoint(pull)) == 0);
    CHECK(lazy_in && lazy_out && eager_in && eager_out);
    int fds[2];
    CHECK(pipe(fds) == 0);

    nx_poll_item_t items[4] = {
        {zsock_resolve(lazy_in), -1, ZMQ_POLLIN, 0, true, false},
        {zsock_resolve(eager_in), -1, ZMQ_POLLIN, 0, false, false},
        {zsock_resolve(pull), -1, ZMQ_POLLIN, 0, true, false},
        {NULL, fds[0], ZMQ_POLLIN, 0, false, false},
    };

    /*  Nothing yet: the timeout, and nothing reported.                   */
    int64_t t0 = zclock_mono();
    CHECK(nx_poll(items, 4, 100) == 0);
    CHECK(zclock_mono() - t0 >= 90);
    for (int i = 0; i < 4; i++)
        CHECK(items[i].revents == 0);

    /*  Each one, alone.                                                   */
    zstr_send(lazy_out, "a");
    CHECK(s_reported(items, 4, 0));
    CHECK(items[1].revents == 0 && items[2].revents == 0 && items[3].revents == 0);
    CHECK(s_drain(lazy_in) == 1);
    zstr_send(eager_out, "b");
    CHECK(s_reported(items, 4, 1));
    CHECK(s_drain(eager_in) == 1);
    zstr_send(push, "c");
    CHECK(s_reported(items, 4, 2));
    CHECK(s_drain(pull) == 1);
    CHECK(write(fds[1], "x", 1) == 1);
    CHECK(s_reported(items, 4, 3));
    char c;
    CHECK(read(fds[0], &c, 1) == 1);

    /*  Drained: the lazy socket is asked once more, then quiet again.    */
    CHECK(nx_poll(items, 4, 0) == 0);
    CHECK(nx_poll(items, 4, 30) == 0);

    /*  A lazy socket read only in part: its descriptor does not fire
        again, and it is reported at every call until it is drained.      */
    for (int i = 0; i < 5; i++)
        zstr_send(push, "d");
    CHECK(s_reported(items, 4, 2));
    /*  All five in its queue before one is taken (TCP brings them in
        batches).                                                        */
    zclock_sleep(100);
    zmq_msg_t one;
    zmq_msg_init(&one);
    CHECK(zmq_msg_recv(&one, zsock_resolve(pull), ZMQ_DONTWAIT) >= 0);
    zmq_msg_close(&one);
    for (int k = 0; k < 3; k++) {
        CHECK(nx_poll(items, 4, 1000) == 1);
        CHECK(items[2].revents == ZMQ_POLLIN);
    }
    CHECK(s_drain(pull) == 4);
    CHECK(nx_poll(items, 4, 0) == 0);

    /*  Not looked at (events 0): what came stays, and is reported once it
        is looked at again, lazy as it is.                                */
    zstr_send(lazy_out, "e");
    CHECK(s_reported(items, 4, 0));
    items[0].events = 0;
    CHECK(nx_poll(items, 4, 0) == 0);
    CHECK(items[0].revents == 0);
    items[0].events = ZMQ_POLLIN;
    CHECK(nx_poll(items, 4, 0) == 1 && items[0].revents == ZMQ_POLLIN);
    CHECK(s_drain(lazy_in) == 1);

    /*  Two at once.                                                       */
    zstr_send(lazy_out, "f");
    zstr_send(eager_out, "g");
    zclock_sleep(20);
    CHECK(nx_poll(items, 4, 1000) == 2);
    CHECK(items[0].revents == ZMQ_POLLIN && items[1].revents == ZMQ_POLLIN);
    CHECK(s_drain(lazy_in) == 1 && s_drain(eager_in) == 1);

    /*  A lazy socket that connected (its peer bound), never read: what
        comes brings no signal until it has been asked once, so it starts
        ready (nx_poll.h), and is reported.                               */
    zsock_t *bound = zsock_new_pair("@inproc://test-poll-connected");
    zsock_t *connected = zsock_new_pair(">inproc://test-poll-connected");
    CHECK(bound && connected);
    zstr_send(bound, "h");
    zstr_send(bound, "i");
    nx_poll_item_t first[1] = {{zsock_resolve(connected), -1, ZMQ_POLLIN, 0, true, true}};
    CHECK(nx_poll(first, 1, 1000) == 1 && first[0].revents == ZMQ_POLLIN);
    CHECK(s_drain(connected) == 2);
    CHECK(nx_poll(first, 1, 0) == 0);
    zstr_send(bound, "j");
    CHECK(s_reported(first, 1, 0));
    CHECK(s_drain(connected) == 1);
    zsock_destroy(&connected);
    zsock_destroy(&bound);

    /*  Refused: too many items.                                           */
    nx_poll_item_t many[NX_POLL_MAX + 1];
    memset(many, 0, sizeof many);
    errno = 0;
    CHECK(nx_poll(many, NX_POLL_MAX + 1, 0) == -1 && errno == EINVAL);

    close(fds[0]);
    close(fds[1]);
    zsock_destroy(&push);
    zsock_destroy(&pull);
    zsock_destroy(&eager_out);
    zsock_destroy(&eager_in);
    zsock_destroy(&lazy_out);
    zsock_destroy(&lazy_in);
    NX_TEST_DONE();
}
