/*  =========================================================================
    fuzz_broker - a real nexusd loop (nx_broker) on a thread of the fuzz
    target's process, with its store in a temporary directory: the control
    and event-plane targets send it what the fuzzer makes over in-process
    ZeroMQ sockets, so that inputs reach the handlers, the store and the
    log, not only the decoders.
    =========================================================================
*/

#ifndef FUZZ_BROKER_H_INCLUDED
#define FUZZ_BROKER_H_INCLUDED

#include <stdbool.h>
#include <zmq.h>

typedef struct _fz_broker_t fz_broker_t;

/*  Starts a broker: data in a new directory under dir, sync=none,
    endpoints inproc://nexus-fuzz-NAME-{control,in,out} (ipc:// files in its
    directory when ipc is set, for clients such as libnexus that speak
    tcp:// or ipc:// only). settings: NULL-terminated name, value pairs of
    nexusd's configuration (docs/operations.md) applied on top. A
    tokens_file value is the file's text: it is written to the directory.
    Aborts when the broker does not start. Stopped at exit.                 */
fz_broker_t *fz_broker_start(const char *name, const char *dir, bool ipc,
                             const char *const *settings);

/*  Its endpoints.                                                          */
const char *fz_broker_control(fz_broker_t *self);
const char *fz_broker_events_in(fz_broker_t *self);
const char *fz_broker_events_out(fz_broker_t *self);

/*  The broker's max_payload and max_request.                              */
unsigned long long fz_broker_max_payload(fz_broker_t *self);

/*  zmq_msg_recv on sock within timeout_ms, going on when a signal
    interrupts it (libFuzzer's SIGALRM comes every 601 s with the default
    -timeout: taken for a lost reply, it was the events target's "marker
    did not come"). 0, or -1 with errno EAGAIN when nothing came.         */
int fz_msg_recv(void *sock, zmq_msg_t *msg, int timeout_ms);

/*  zmq_send, sent again when a signal interrupts it (see fz_msg_recv).   */
int fz_send(void *sock, const void *data, size_t size, int flags);

/*  The broker's `state` reply as text (out: size bytes), for a failure's
    report.                                                                */
void fz_broker_state(fz_broker_t *self, char *out, size_t size);

/*  Stops the loop and destroys the broker (nx_broker_run's clean stop).   */
void fz_broker_stop(fz_broker_t **self_p);

#endif
