/*  =========================================================================
    fuzz_broker - nexusd's loop on a thread of the fuzz target (fuzz_broker.h).
    =========================================================================
*/

#include <czmq.h>
#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_broker.h"
#include "fuzz_util.h"
#include "nx_broker.h"
#include "nx_log.h"

struct _fz_broker_t {
    nx_broker_t *broker;
    pthread_t thread;
    char dir[4096];
    char control[4200], in[4200], out[4200];
    unsigned long long max_payload;
};

#define S_MAX 8
static fz_broker_t *s_all[S_MAX];

static void *s_run(void *arg)
{
    fz_broker_t *self = arg;
    nx_broker_run(self->broker);
    return NULL;
}

static void s_stop_all(void)
{
    for (size_t i = 0; i < S_MAX; i++)
        fz_broker_stop(&s_all[i]);
}

fz_broker_t *fz_broker_start(const char *name, const char *dir, bool ipc,
                             const char *const *settings)
{
    static bool once;
    if (!once) {
        once = true;
        /*  libFuzzer handles the signals; the loop stops by nx_broker_stop.*/
        zsys_handler_set(NULL);
        zsys_init();
        nx_log_init("fuzz", fz_verbose() ? NX_LOG_INFO : NX_LOG_ERROR);
        atexit(s_stop_all);
    }
    fz_broker_t *self = calloc(1, sizeof *self);
    FZ_CHECK(self, "out of memory");
    snprintf(self->dir, sizeof self->dir, "%s/%s", dir, name);
    FZ_CHECK(mkdir(self->dir, 0700) == 0, "mkdir %s", self->dir);
    if (ipc) {
        snprintf(self->control, sizeof self->control, "ipc://%s/control", self->dir);
        snprintf(self->in, sizeof self->in, "ipc://%s/control-in", self->dir);
        snprintf(self->out, sizeof self->out, "ipc://%s/control-out", self->dir);
    } else {
        snprintf(self->control, sizeof self->control, "inproc://nexus-fuzz-%s-control", name);
        snprintf(self->in, sizeof self->in, "inproc://nexus-fuzz-%s-in", name);
        snprintf(self->out, sizeof self->out, "inproc://nexus-fuzz-%s-out", name);
    }
    nx_broker_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[512] = "", data[4200], tokens[4200];
    FZ_CHECK(nx_conf_defaults(nx_broker_conf_keys, nx_broker_conf_count, &cfg, err, sizeof err) ==
                 NEXUS_OK,
             "defaults: %s", err);
    snprintf(data, sizeof data, "%s/data", self->dir);
    const char *fixed[] = {"data_dir",
                           data,
                           "control_endpoints",
                           self->control,
                           "events_in_endpoints",
                           self->in,
                           "events_out_endpoints",
                           self->out,
                           "sync",
                           "none",
                           "log_level",
                           "error",
                           NULL};
    for (size_t i = 0; fixed[i]; i += 2)
        FZ_CHECK(nx_conf_set(nx_broker_conf_keys, nx_broker_conf_count, &cfg, fixed[i],
                             fixed[i + 1], err, sizeof err) == NEXUS_OK,
                 "%s", err);
    for (size_t i = 0; settings && settings[i]; i += 2) {
        const char *value = settings[i + 1];
        if (strcmp(settings[i], "tokens_file") == 0) {
            snprintf(tokens, sizeof tokens, "%s/tokens", self->dir);
            FILE *f = fopen(tokens, "w");
            FZ_CHECK(f && fputs(value, f) >= 0 && fclose(f) == 0, "cannot write %s", tokens);
            value = tokens;
        }
        FZ_CHECK(nx_conf_set(nx_broker_conf_keys, nx_broker_conf_count, &cfg, settings[i], value,
                             err, sizeof err) == NEXUS_OK,
                 "%s", err);
    }
    self->max_payload = cfg.max_payload;
    self->broker = nx_broker_new(&cfg, err, sizeof err);
    nx_conf_free(nx_broker_conf_keys, nx_broker_conf_count, &cfg);
    FZ_CHECK(self->broker, "the broker did not start: %s", err);
    FZ_CHECK(pthread_create(&self->thread, NULL, s_run, self) == 0, "pthread_create");
    for (size_t i = 0; i < S_MAX; i++)
        if (!s_all[i]) {
            s_all[i] = self;
            return self;
        }
    fz_fail("more than %d brokers", S_MAX);
}

const char *fz_broker_control(fz_broker_t *self)
{
    return self->control;
}

const char *fz_broker_events_in(fz_broker_t *self)
{
    return self->in;
}

const char *fz_broker_events_out(fz_broker_t *self)
{
    return self->out;
}

unsigned long long fz_broker_max_payload(fz_broker_t *self)
{
    return self->max_payload;
}

int fz_msg_recv(void *sock, zmq_msg_t *msg, int timeout_ms)
{
    int64_t deadline = zclock_mono() + timeout_ms;
    for (;;) {
        int64_t left = deadline - zclock_mono();
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, left > 0 ? (long)left : 0);
        if (rc > 0 && zmq_msg_recv(msg, sock, ZMQ_DONTWAIT) >= 0)
            return 0;
        if (rc < 0 && zmq_errno() != EINTR)
            return -1;
        if (zclock_mono() >= deadline) {
            errno = EAGAIN;
            return -1;
        }
    }
}

int fz_send(void *sock, const void *data, size_t size, int flags)
{
    int rc = -1;
    for (int i = 0; i < 1000; i++)
        if ((rc = zmq_send(sock, data, size, flags)) >= 0 || zmq_errno() != EINTR)
            break;
    return rc;
}

void fz_broker_state(fz_broker_t *self, char *out, size_t size)
{
    snprintf(out, size, "(no answer to state within 5 s)");
    zsock_t *d = zsock_new(ZMQ_DEALER);
    if (!d || zsock_connect(d, "%s", self->control) != 0) {
        zsock_destroy(&d);
        return;
    }
    zsock_set_rcvtimeo(d, 5000);
    static const char req[] = "\x82\xa2op\xa5state\xa2id\x01"; /* {op: state, id: 1} */
    zstr_sendm(d, "");
    zmq_send(zsock_resolve(d), req, sizeof req - 1, 0);
    zmsg_t *m = zmsg_recv(d);
    zframe_t *f = m ? zmsg_last(m) : NULL;
    if (f) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, (const char *)zframe_data(f), zframe_size(f), NULL) ==
            MSGPACK_UNPACK_SUCCESS)
            msgpack_object_print_buffer(out, size, u.data);
        msgpack_unpacked_destroy(&u);
    }
    zmsg_destroy(&m);
    zsock_destroy(&d);
}

void fz_broker_stop(fz_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fz_broker_t *self = *self_p;
    for (size_t i = 0; i < S_MAX; i++)
        if (s_all[i] == self)
            s_all[i] = NULL;
    nx_broker_stop(self->broker);
    pthread_join(self->thread, NULL);
    nx_broker_destroy(&self->broker);
    free(self);
    *self_p = NULL;
}
