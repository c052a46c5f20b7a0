/*  =========================================================================
    nx_client - the client handle: configuration, the control-plane call
    (DEALER, one request at a time per client), fire-and-forget publish
    (XPUB, under its own lock), the bounded event queue that nexus_recv
    reads, and the commands sent to the background actor (nx_actor.c).

    Lock order, outermost first: pipe_lock, ctl_lock, pub_lock, lock. The
    actor only ever takes lock, and never while calling the callback.
    =========================================================================
*/

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <time.h>

#include "nx_cert.h"
#include "nx_client.h"
#include "nx_jdump.h"
#include "nx_optab.h"

uint64_t nx_random_id(void)
{
    uint64_t value = 0;
    if (getrandom(&value, sizeof value, GRND_NONBLOCK) != (ssize_t)sizeof value) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        value = (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() << 32;
    }
    /*  Under 2^52 so that JSON consumers keep it exact; never 0.           */
    return (value & 0x000FFFFFFFFFFFFFull) | 1;
}

int nx_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr))
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) || pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc ? -1 : 0;
}

uint64_t nx_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

nexus_err_t nx_client_fail(nexus_client_t *self, nexus_err_t err, const char *fmt, ...)
{
    pthread_mutex_lock(&self->lock);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->errmsg, sizeof self->errmsg, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&self->lock);
    return err;
}

/*  Clears the error text at the start of a call that succeeds.            */
static nexus_err_t s_ok(nexus_client_t *self)
{
    pthread_mutex_lock(&self->lock);
    self->errmsg[0] = 0;
    pthread_mutex_unlock(&self->lock);
    return NEXUS_OK;
}

static char *s_strdup_opt(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

/*  ---- Endpoints -------------------------------------------------------- */

/*  Derives the event endpoints from a control endpoint: tcp ports +1/+2,
    ipc paths with "-in"/"-out" appended. Returns 0 or -1 when malformed.  */
static int s_derive(const char *endpoint, char *in, char *out)
{
    if (strncmp(endpoint, "ipc://", 6) == 0) {
        snprintf(in, NX_ENDPOINT_MAX, "%s-in", endpoint);
        snprintf(out, NX_ENDPOINT_MAX, "%s-out", endpoint);
        return 0;
    }
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return -1;
    const char *colon = strrchr(endpoint + 6, ':');
    if (!colon || colon[1] == 0)
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || port == 0 || port > 65533)
        return -1;
    int host_len = (int)(colon - endpoint);
    snprintf(in, NX_ENDPOINT_MAX, "%.*s:%lu", host_len, endpoint, port + 1);
    snprintf(out, NX_ENDPOINT_MAX, "%.*s:%lu", host_len, endpoint, port + 2);
    return 0;
}

/*  ---- Life cycle ------------------------------------------------------- */

/*  The clients not destroyed yet. A program that exits with one alive
    (exit(1) on an error path, a return from main) met CZMQ's exit handler
    closing the client's sockets under its background thread, which then
    aborted the process. Ours runs first (registered after CZMQ's) and
    stops every live client's thread and closes its sockets; the memory
    stays, so that a nexus_client_destroy from a handler of the
    program's that runs after ours still works.                            */
static pthread_mutex_t s_live_lock = PTHREAD_MUTEX_INITIALIZER;
static nexus_client_t *s_live;
static pthread_once_t s_exit_once = PTHREAD_ONCE_INIT;

static pthread_cond_t s_live_cond = PTHREAD_COND_INITIALIZER;
static zactor_t *s_orphan; /* the actor of a client exited from its own thread */
static void s_shutdown(nexus_client_t *self);
static void s_close_sockets(nexus_client_t *self);

static void s_live_unlink(nexus_client_t *self)
{
    if (self->live_prev)
        self->live_prev->live_next = self->live_next;
    else if (s_live == self)
        s_live = self->live_next;
    if (self->live_next)
        self->live_next->live_prev = self->live_prev;
    self->live_prev = self->live_next = NULL;
}

static void s_at_exit(void)
{
    pthread_mutex_lock(&s_live_lock);
    while (s_live) {
        nexus_client_t *self = s_live;
        s_live_unlink(self);
        /*  A destroy on another thread meanwhile waits until this is
            done with the client.                                          */
        self->at_exit = true;
        pthread_mutex_unlock(&s_live_lock);
        /*  A forked child that exits has none of its parent's threads to
            stop (asking one would wait for ever). An exit() from one of
            this client's event callbacks runs here on its background
            thread, which cannot be joined from itself: its sockets close
            here, and CZMQ's handler ends the rest.                         */
        if (self->pid != getpid())
            ;
        else if (nx_actor_is_current(self)) {
            nx_actor_close_current();
            /*  The pipe's other end: the zactor itself cannot be
                destroyed (it would wait for this thread).                 */
            zsock_t *pipe = self->actor ? zactor_sock(self->actor) : NULL;
            zsock_destroy(&pipe);
            s_orphan = self->actor; /* kept (a destroy later must not use it) */
            self->actor = NULL;
            s_close_sockets(self);
        } else
            s_shutdown(self);
        pthread_mutex_lock(&s_live_lock);
        self->at_exit = false;
        pthread_cond_broadcast(&s_live_cond);
    }
    pthread_mutex_unlock(&s_live_lock);
}

static void s_exit_register(void)
{
    zsys_init(); /* CZMQ's handler first, so that ours runs before it   */
    atexit(s_at_exit);
}

nexus_client_t *nexus_client_new(void)
{
    nexus_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_once(&s_exit_once, s_exit_register);
    self->source_gen = 1; /* the publish path copies the source first   */
    pthread_mutex_init(&self->lock, NULL);
    pthread_mutex_init(&self->ctl_lock, NULL);
    pthread_mutex_init(&self->pub_lock, NULL);
    pthread_mutex_init(&self->pipe_lock, NULL);
    pthread_mutex_init(&self->async_lock, NULL);
    self->async_window = 1024;
    self->async_window_bytes = 64u << 20;
    /*  Timed waits on the monotonic clock: a step of the wall clock
        neither stretches nor cuts nexus_recv's timeout.                   */
    if (nx_cond_init_monotonic(&self->cond))
        pthread_cond_init(&self->cond, NULL);
    self->heartbeat_ms = 5000;
    self->backoff_min = 100;
    self->backoff_max = 5000;
    self->timeout_ms = 5000;
    self->keepalive_ms = 5000;
    self->keepalive_timeout_ms = 15000;
    self->queue_max = 10000;
    /*  Request ids are random, not 1, 2, ...: the broker keeps the answers
        of mutating ops per (session, id) for retries, and another process
        acting as the same session must not get our answers.               */
    self->next_id = nx_random_id();
    const char *env = getenv("NEXUS_ENDPOINT");
    if (!env || !*env || nexus_client_set_endpoint(self, env) != NEXUS_OK)
        nexus_client_set_endpoint(self, NEXUS_DEFAULT_ENDPOINT);
    env = getenv("NEXUS_TOKEN");
    if (env && *env)
        self->token = strdup(env);
    snprintf(self->token_setting, sizeof self->token_setting, "NEXUS_TOKEN");
    /*  A bad CURVE setting in the environment is reported by connect: a
        client meant to be encrypted must not quietly talk in the clear.  */
    env = getenv("NEXUS_CURVE_SERVER_KEY");
    const char *cert_env = getenv("NEXUS_CURVE_CERT");
    if (((env && *env) || (cert_env && *cert_env)) &&
        nexus_client_set_curve(self, env, cert_env) != NEXUS_OK)
        self->curve_error = strdup(nexus_client_errmsg(self));
    self->pid = getpid();
    pthread_mutex_lock(&s_live_lock);
    self->live_next = s_live;
    if (s_live)
        s_live->live_prev = self;
    s_live = self;
    pthread_mutex_unlock(&s_live_lock);
    return self;
}

/*  Closes the sockets the application's threads use.                    */
static void s_close_sockets(nexus_client_t *self)
{
    if (self->pub) {
        zsock_set_linger(self->pub, 200);
        zsock_destroy(&self->pub);
    }
    zsock_destroy(&self->dealer);
    for (size_t i = 0; i < self->n_spare; i++)
        zsock_destroy(&self->spare[i]);
    self->n_spare = 0;
}

/*  Stops what runs on its own and closes the sockets: first what threads
    may be waiting in (an asynchronous publish waiting for room, the
    callback's, on the background thread, gives up, and nexus_recv returns
    NEXUS_ERR_CLOSED; both are out before anything they use goes). Then
    the background thread stops (no callback runs any more), and what is
    still in flight completes, closed. Done again, it does nothing.        */
static void s_shutdown(nexus_client_t *self)
{
    nx_async_close(self);
    pthread_mutex_lock(&self->lock);
    self->closing = true;
    pthread_cond_broadcast(&self->cond);
    while (self->q_waiters)
        pthread_cond_wait(&self->cond, &self->lock);
    pthread_mutex_unlock(&self->lock);
    zactor_destroy(&self->actor);
    nx_async_destroy(self);
    s_close_sockets(self);
}

void nexus_client_destroy(nexus_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nexus_client_t *self = *self_p;
    pthread_mutex_lock(&s_live_lock);
    while (self->at_exit)
        pthread_cond_wait(&s_live_cond, &s_live_lock);
    s_live_unlink(self);
    pthread_mutex_unlock(&s_live_lock);
    s_shutdown(self);
    while (self->q_count) {
        nexus_event_destroy(&self->ring[self->q_head]);
        self->q_head = (self->q_head + 1) % self->queue_max;
        self->q_count--;
    }
    free(self->ring);
    for (size_t i = 0; i < self->n_caps; i++)
        free(self->caps[i]);
    free(self->caps);
    free(self->name);
    free(self->metadata);
    free(self->token);
    free(self->curve_error);
    zcert_destroy(&self->curve_cert);
    free(self->session_id);
    free(self->secret);
    pthread_mutex_destroy(&self->lock);
    pthread_mutex_destroy(&self->ctl_lock);
    pthread_mutex_destroy(&self->pub_lock);
    pthread_mutex_destroy(&self->pipe_lock);
    pthread_mutex_destroy(&self->async_lock);
    pthread_cond_destroy(&self->cond);
    free(self);
    *self_p = NULL;
}

#define S_CONFIGURING(self)                                                                        \
    do {                                                                                           \
        if (!(self))                                                                               \
            return NEXUS_ERR_INVALID;                                                              \
        if ((self)->started)                                                                       \
            return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is already connected");      \
    } while (0)

nexus_err_t nexus_client_set_endpoint(nexus_client_t *self, const char *endpoint)
{
    S_CONFIGURING(self);
    nx_ep_t eps[NX_EPS_MAX];
    size_t n = 0;
    const char *p = endpoint;
    bool bad = !endpoint || !*endpoint;
    while (!bad && p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ')) { /* "a, b" as written in a config file */
            p++;
            len--;
        }
        while (len && p[len - 1] == ' ')
            len--;
        if (n == NX_EPS_MAX || len == 0 || len >= NX_ENDPOINT_MAX - 8) {
            bad = true;
            break;
        }
        memcpy(eps[n].control, p, len);
        eps[n].control[len] = 0;
        if (s_derive(eps[n].control, eps[n].in, eps[n].out)) {
            bad = true;
            break;
        }
        n++;
        p = comma ? comma + 1 : NULL;
    }
    if (bad)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "endpoint '%.200s' is not tcp://HOST:PORT or ipc://PATH (or a "
                              "comma-separated list of at most %d of them)",
                              endpoint ? endpoint : "(null)", NX_EPS_MAX);
    memcpy(self->eps, eps, n * sizeof eps[0]);
    self->n_eps = n;
    self->ep_cur = 0;
    return s_ok(self);
}

nexus_err_t nexus_client_set_event_endpoints(nexus_client_t *self, const char *events_in,
                                             const char *events_out)
{
    S_CONFIGURING(self);
    if ((events_in && strlen(events_in) >= NX_ENDPOINT_MAX) ||
        (events_out && strlen(events_out) >= NX_ENDPOINT_MAX))
        return nx_client_fail(self, NEXUS_ERR_INVALID, "endpoint too long");
    if (self->n_eps > 1)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "explicit event endpoints go with one control endpoint, not a list");
    if (events_in && *events_in)
        snprintf(self->eps[0].in, sizeof self->eps[0].in, "%s", events_in);
    if (events_out && *events_out)
        snprintf(self->eps[0].out, sizeof self->eps[0].out, "%s", events_out);
    return s_ok(self);
}

unsigned nx_client_failover(nexus_client_t *self, unsigned seen_gen, const char *primary)
{
    pthread_mutex_lock(&self->lock);
    unsigned gen = self->ep_gen;
    if (self->n_eps > 1 && gen == seen_gen) {
        size_t cur = self->ep_cur, next = (cur + 1) % self->n_eps;
        for (size_t i = 0; primary && *primary && i < self->n_eps; i++)
            if (i != cur && strcmp(self->eps[i].control, primary) == 0)
                next = i;
        __atomic_store_n(&self->ep_cur, (unsigned)next, __ATOMIC_RELEASE);
        gen = __atomic_add_fetch(&self->ep_gen, 1, __ATOMIC_RELEASE);
        self->stats.failovers++;
    }
    pthread_mutex_unlock(&self->lock);
    return gen;
}

nexus_err_t nexus_client_set_session(nexus_client_t *self, const char *session_id,
                                     const char *secret)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    /*  The broker's rule (nx_session_id_valid): an id it would refuse at
        the first session op is refused here, where the caller gave it,
        and the id in use stays.                                           */
    if (session_id && *session_id && !nx_session_id_valid(session_id, strlen(session_id)))
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "session_id '%.80s%s' is no session id: 1 to %d of A-Z a-z 0-9 _ : "
                              "@ -",
                              session_id, strlen(session_id) > 80 ? "..." : "", NX_SESSION_ID_MAX);
    pthread_mutex_lock(&self->lock);
    free(self->session_id);
    free(self->secret);
    self->session_id = s_strdup_opt(session_id);
    self->secret = s_strdup_opt(secret);
    __atomic_add_fetch(&self->source_gen, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&self->lock);
    return s_ok(self);
}

nexus_err_t nexus_client_set_name(nexus_client_t *self, const char *name)
{
    S_CONFIGURING(self);
    free(self->name);
    self->name = s_strdup_opt(name);
    return s_ok(self);
}

nexus_err_t nexus_client_set_capabilities(nexus_client_t *self, const char *csv)
{
    S_CONFIGURING(self);
    for (size_t i = 0; i < self->n_caps; i++)
        free(self->caps[i]);
    free(self->caps);
    self->caps = NULL;
    self->n_caps = 0;
    if (!csv || !*csv)
        return s_ok(self);
    char *copy = strdup(csv);
    size_t max = 1;
    for (const char *c = csv; *c; c++)
        max += *c == ',';
    self->caps = calloc(max, sizeof *self->caps);
    if (!copy || !self->caps) {
        free(copy);
        return nx_client_fail(self, NEXUS_ERR_NOMEM, "out of memory");
    }
    char *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        self->caps[self->n_caps++] = strdup(t);
    free(copy);
    return s_ok(self);
}

nexus_err_t nexus_client_set_metadata_msgpack(nexus_client_t *self, const void *data, size_t size)
{
    S_CONFIGURING(self);
    msgpack_unpacked unp;
    msgpack_unpacked_init(&unp);
    size_t off = 0;
    bool ok = data && size && nx_msgpack_check(data, size, NX_MSGPACK_DEPTH) == NX_MSGPACK_OK &&
              msgpack_unpack_next(&unp, data, size, &off) == MSGPACK_UNPACK_SUCCESS &&
              off == size && unp.data.type == MSGPACK_OBJECT_MAP;
    msgpack_unpacked_destroy(&unp);
    if (!ok)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "metadata must be one msgpack map");
    free(self->metadata);
    self->metadata = malloc(size);
    if (!self->metadata)
        return nx_client_fail(self, NEXUS_ERR_NOMEM, "out of memory");
    memcpy(self->metadata, data, size);
    self->metadata_len = size;
    return s_ok(self);
}

nexus_err_t nexus_client_set_metadata_json(nexus_client_t *self, const char *json)
{
    S_CONFIGURING(self);
    json_t *value = json ? json_loads(json, JSON_ALLOW_NUL, NULL) : NULL;
    if (!json_is_object(value)) {
        json_decref(value);
        return nx_client_fail(self, NEXUS_ERR_INVALID, "metadata must be a JSON object");
    }
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    nx_json_pack(&pk, value);
    json_decref(value);
    nexus_err_t rc = nexus_client_set_metadata_msgpack(self, buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

nexus_err_t nexus_client_set_token(nexus_client_t *self, const char *token)
{
    S_CONFIGURING(self);
    free(self->token);
    self->token = s_strdup_opt(token);
    return s_ok(self);
}

nexus_err_t nexus_client_set_token_setting(nexus_client_t *self, const char *name)
{
    S_CONFIGURING(self);
    if (name && strlen(name) >= sizeof self->token_setting)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "the token's setting name is over %zu bytes",
                              sizeof self->token_setting - 1);
    snprintf(self->token_setting, sizeof self->token_setting, "%s",
             name && *name ? name : "NEXUS_TOKEN");
    return s_ok(self);
}

nexus_err_t nexus_client_set_curve(nexus_client_t *self, const char *server_key,
                                   const char *cert_file)
{
    S_CONFIGURING(self);
    if (!server_key || !*server_key) {
        if (cert_file && *cert_file)
            return nx_client_fail(self, NEXUS_ERR_INVALID,
                                  "a CURVE certificate without the broker's key "
                                  "(NEXUS_CURVE_SERVER_KEY) would talk in the clear");
        self->curve_server[0] = 0;
        zcert_destroy(&self->curve_cert);
        free(self->curve_error);
        self->curve_error = NULL;
        return s_ok(self);
    }
    if (!zsys_has_curve())
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "this libzmq was built without CURVE (libsodium)");
    /*  The broker's public certificate file, or a key as such (Z85 has
        '/' and '.' among its characters, so a file that is there wins).   */
    char key[41] = "";
    if (access(server_key, R_OK) == 0) {
        zcert_t *server = zcert_load(server_key);
        if (server)
            snprintf(key, sizeof key, "%s", zcert_public_txt(server));
        zcert_destroy(&server);
    } else if (strlen(server_key) == 40)
        snprintf(key, sizeof key, "%s", server_key);
    uint8_t bin[32];
    if (!key[0] || !zmq_z85_decode(bin, key))
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "CURVE server key '%.60s' is neither 40 characters of Z85 nor a "
                              "certificate file",
                              server_key);
    zcert_t *cert = cert_file && *cert_file ? nx_cert_load_secret(cert_file) : zcert_new();
    if (!cert) {
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              cert_file ? "CURVE certificate '%.200s' is not a secret certificate "
                                          "file (nexus keygen NAME writes NAME_secret)"
                                        : "cannot make a CURVE key pair%.0s",
                              cert_file ? cert_file : "");
    }
    zcert_destroy(&self->curve_cert);
    self->curve_cert = cert;
    snprintf(self->curve_server, sizeof self->curve_server, "%s", key);
    free(self->curve_error);
    self->curve_error = NULL;
    return s_ok(self);
}

nexus_err_t nexus_client_set_heartbeat(nexus_client_t *self, uint32_t heartbeat_ms, uint64_t ttl_ms)
{
    S_CONFIGURING(self);
    if (heartbeat_ms < 100 || heartbeat_ms > 3600000)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "heartbeat must be 100..3600000 ms");
    self->heartbeat_ms = heartbeat_ms;
    self->ttl_ms = ttl_ms;
    return s_ok(self);
}

nexus_err_t nexus_client_set_reconnect(nexus_client_t *self, uint32_t min_ms, uint32_t max_ms)
{
    S_CONFIGURING(self);
    if (min_ms < 1 || min_ms > max_ms || max_ms > 3600000)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "reconnect bounds need 1 <= min <= max <= 3600000 ms");
    self->backoff_min = min_ms;
    self->backoff_max = max_ms;
    return s_ok(self);
}

nexus_err_t nexus_client_set_keepalive(nexus_client_t *self, uint32_t interval_ms,
                                       uint32_t timeout_ms)
{
    S_CONFIGURING(self);
    /*  ZMQ_HEARTBEAT_TTL travels in deciseconds in a 16-bit field.         */
    if (interval_ms && (interval_ms < 100 || interval_ms > timeout_ms || timeout_ms > 6553500))
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "keepalive needs interval 0 (off) or 100 <= interval <= timeout "
                              "<= 6553500 ms");
    self->keepalive_ms = interval_ms;
    self->keepalive_timeout_ms = timeout_ms;
    return s_ok(self);
}

nexus_err_t nexus_client_set_timeout(nexus_client_t *self, uint32_t timeout_ms)
{
    /*  Any time, also once connected: a call already waiting keeps the
        deadline it started with.                                          */
    if (!self)
        return NEXUS_ERR_INVALID;
    if (timeout_ms < 1)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "timeout must be at least 1 ms");
    __atomic_store_n(&self->timeout_ms, timeout_ms, __ATOMIC_RELAXED);
    return s_ok(self);
}

nexus_err_t nexus_client_set_queue_max(nexus_client_t *self, size_t max_events)
{
    S_CONFIGURING(self);
    if (max_events < 1 || max_events > 10000000)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "queue size must be 1..10000000");
    self->queue_max = max_events;
    return s_ok(self);
}

nexus_err_t nexus_client_set_publish_window(nexus_client_t *self, uint32_t max_requests,
                                            size_t max_bytes)
{
    S_CONFIGURING(self);
    if (max_requests < 1 || max_requests > 65536 || max_bytes < (64u << 10) ||
        max_bytes > (1u << 30))
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "publish window needs 1..65536 requests and 64 KiB..1 GiB");
    self->async_window = max_requests;
    self->async_window_bytes = max_bytes;
    return s_ok(self);
}

nexus_err_t nexus_client_set_callback(nexus_client_t *self, nexus_event_fn *fn, void *arg)
{
    S_CONFIGURING(self);
    self->cb = fn;
    self->cb_arg = arg;
    return s_ok(self);
}

zsock_t *nx_client_socket(nexus_client_t *self, int type, const char *endpoint)
{
    zsock_t *sock = zsock_new(type);
    if (!sock)
        return NULL;
    zsock_set_linger(sock, 0);
    zsock_set_reconnect_ivl(sock, (int)self->backoff_min);
    zsock_set_reconnect_ivl_max(sock, (int)self->backoff_max);
    if (self->curve_cert) {
        zcert_apply(self->curve_cert, sock);
        zsock_set_curve_serverkey(sock, self->curve_server);
    } else if (self->token) {
        /*  A broker with tokens checks them at every socket's handshake
            (PLAIN: the token is the password; the user name is not used).
            With CURVE the key authenticates instead, and the token still
            travels in each request's "auth".                              */
        zsock_set_plain_username(sock, "nexus");
        zsock_set_plain_password(sock, self->token);
    }
    if (self->keepalive_ms) {
        /*  A SUB sends nothing once subscribed: without pings of its own it
            would never learn that the broker's host went away.             */
        zsock_set_heartbeat_ivl(sock, (int)self->keepalive_ms);
        zsock_set_heartbeat_timeout(sock, (int)self->keepalive_timeout_ms);
        zsock_set_heartbeat_ttl(sock, (int)self->keepalive_timeout_ms);
    }
    if (type == ZMQ_DEALER) {
        zsock_set_sndhwm(sock, 10000);
        zsock_set_rcvhwm(sock, 10000);
    }
    if (endpoint && zsock_connect(sock, "%s", endpoint) != 0) {
        zsock_destroy(&sock);
        return NULL;
    }
    return sock;
}

zsock_t *nx_client_control_dealer(nexus_client_t *self)
{
    zsock_t *sock = nx_client_socket(self, ZMQ_DEALER, NULL);
    if (!sock)
        return NULL;
    /*  A request waits for a connection instead of a queue to a broker
        that is not there: with a list, so that it can go to the next; and
        so that one that never went out is told apart (unreachable: not
        done) from one that got no answer (timeout: outcome unknown).     */
    zsock_set_immediate(sock, 1);
    if (zsock_connect(sock, "%s", nx_client_ep(self)->control) != 0)
        zsock_destroy(&sock);
    return sock;
}

/*  Makes the XPUB again when the broker in use changed (pub_lock held).
    Events sent without an acknowledgement to the lost broker are lost
    with it, as with any broker that goes away.                            */
static void s_pub_current(nexus_client_t *self)
{
    unsigned gen = nx_client_gen(self);
    if (self->pub && self->pub_gen == gen)
        return;
    zsock_destroy(&self->pub);
    self->pub = nx_client_socket(self, ZMQ_XPUB, nx_client_ep(self)->in);
    if (self->pub)
        zsock_set_sndhwm(self->pub, 100000);
    self->pub_gen = gen;
}

/*  A monitor of the API's DEALER for its handshakes, or NULL.             */
static zsock_t *s_handshake_monitor(nexus_client_t *self)
{
    char ep[80];
    snprintf(ep, sizeof ep, "inproc://nexus-handshake-%p", (void *)self);
    if (zmq_socket_monitor(zsock_resolve(self->dealer), ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
        return NULL;
    zsock_t *mon = zsock_new_pair(ep);
    if (!mon)
        zmq_socket_monitor(zsock_resolve(self->dealer), NULL, 0);
    return mon;
}

/*  The event of a monitor message (its first frame starts with it).       */
static int s_monitor_event(zmsg_t *m)
{
    zframe_t *f = zmsg_first(m);
    uint16_t event = 0;
    if (f && zframe_size(f) >= 2)
        memcpy(&event, zframe_data(f), 2);
    return event;
}

/*  Waits until the first handshake with the broker ends or until, in
    ms. Returns 0 when it succeeded; 1 when the broker refused it (auth:
    the token or key; protocol: the mechanism), which no later try can
    change; -1 when neither came (no broker there, or only handshakes cut
    short, which a later try may pass). *failed keeps the first failure.  */
static int s_handshake_wait(zsock_t *mon, uint64_t until, int *failed)
{
    for (int i = 0; i < 1000; i++) {
        uint64_t now = nx_clock_ms();
        if (now >= until)
            break;
        zsock_set_rcvtimeo(mon, (int)(until - now));
        zmsg_t *m = zmsg_recv(mon);
        if (!m)
            continue; /* the time is up, or a signal: the loop looks */
        int event = s_monitor_event(m);
        zmsg_destroy(&m);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            *failed = 0; /* one cut short before it is no refusal */
            return 0;
        }
        if (!*failed)
            *failed = event;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
            event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            return 1;
    }
    return -1;
}

/*  Stops the monitor and returns the first failure it saw (a
    ZMQ_EVENT_HANDSHAKE_FAILED_* value), 0 for none. Its events are read
    before it stops: libzmq sends them blocking.                           */
static int s_handshake_monitor_end(nexus_client_t *self, zsock_t **mon_p)
{
    zsock_t *mon = *mon_p;
    if (!mon)
        return 0;
    int failed = 0;
    zsock_set_rcvtimeo(mon, 0);
    for (int i = 0; i < 1000; i++) {
        zmsg_t *m = zmsg_recv(mon);
        if (!m)
            break;
        int event = s_monitor_event(m);
        if (!failed && event != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            failed = event;
        zmsg_destroy(&m);
    }
    if (self->dealer)
        zmq_socket_monitor(zsock_resolve(self->dealer), NULL, 0);
    zsock_destroy(mon_p);
    return failed;
}

nexus_err_t nexus_client_connect(nexus_client_t *self)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (self->started)
        return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is already connected");
    if (self->curve_error)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "NEXUS_CURVE_*: %s", self->curve_error);
    if (!self->cb) {
        self->ring = calloc(self->queue_max, sizeof *self->ring);
        if (!self->ring)
            return nx_client_fail(self, NEXUS_ERR_NOMEM, "out of memory");
    }
    /*  With CURVE, a failed handshake looks like silence; a monitor on the
        first connection tells the two apart for the error message.        */
    const nx_ep_t *ep = nx_client_ep(self);
    self->dealer = nx_client_socket(self, ZMQ_DEALER, NULL);
    self->dealer_gen = self->pub_gen = nx_client_gen(self);
    zsock_t *mon = self->dealer ? s_handshake_monitor(self) : NULL;
    if (self->dealer)
        zsock_set_immediate(self->dealer, 1); /* as nx_client_control_dealer */
    if (self->dealer && zsock_connect(self->dealer, "%s", ep->control) != 0)
        zsock_destroy(&self->dealer);
    self->pub = nx_client_socket(self, ZMQ_XPUB, ep->in);
    if (!self->dealer || !self->pub) {
        s_handshake_monitor_end(self, &mon);
        zsock_destroy(&self->dealer);
        zsock_destroy(&self->pub);
        free(self->ring); /* made again by the next try */
        self->ring = NULL;
        return nx_client_fail(self, NEXUS_ERR_INVALID, "cannot connect to %s / %s: %s", ep->control,
                              ep->in, zmq_strerror(zmq_errno()));
    }
    zsock_set_sndhwm(self->pub, 100000);
    self->started = true;
    self->actor = zactor_new(nx_actor_fn, self);
    if (!self->actor) {
        s_handshake_monitor_end(self, &mon);
        return nx_client_fail(self, NEXUS_ERR_NOMEM, "cannot start the background thread");
    }

    nx_req_t req;
    nx_reply_t rep;
    nx_req_init(&req, "ping");
    nx_reply_init(&rep);
    /*  One broker: its answer to the handshake comes first, and a refusal
        (a wrong token, an unlisted key) is said at once, not after the
        ping's timeout. With a list, the ping's failover decides.          */
    int failed = 0;
    nexus_err_t rc = NEXUS_ERR_UNREACHABLE;
    bool asked = !mon || self->n_eps > 1 ||
                 s_handshake_wait(mon, nx_clock_ms() + nx_client_timeout(self), &failed) == 0;
    if (asked)
        rc = nx_client_call(self, &req, &rep);
    int late = s_handshake_monitor_end(self, &mon);
    if (!failed)
        failed = late;
    if (!asked) {
        /*  Not asked: as after a call with no answer, a fresh socket for
            the next try, and the link is down.                             */
        pthread_mutex_lock(&self->ctl_lock);
        zsock_destroy(&self->dealer);
        pthread_mutex_unlock(&self->ctl_lock);
        nx_client_set_link(self, false);
    }
    /*  With a list: the first broker that answers as the primary (else the
        last that answered at all; the actor keeps looking).               */
    for (size_t i = 1; i < self->n_eps; i++) {
        char role[16] = "", primary[NX_ENDPOINT_MAX] = "";
        if (rc == NEXUS_OK) {
            nx_obj_str(rep.map, "role", role, sizeof role);
            nx_obj_str(rep.map, "primary", primary, sizeof primary);
            if (!role[0] || !strcmp(role, "primary"))
                break;
        }
        /*  (A call that got no answer moved on by itself.)                */
        if (rc == NEXUS_OK)
            nx_client_failover(self, nx_client_gen(self), primary);
        nx_reply_destroy(&rep);
        nexus_err_t again = nx_client_call(self, &req, &rep);
        if (again != NEXUS_OK && rc == NEXUS_OK) {
            nx_client_failover(self, nx_client_gen(self), NULL); /* back to one that answered */
            break;
        }
        rc = again;
        if (again == NEXUS_OK)
            failed = 0;
    }
    nx_req_destroy(&req);
    if (rc == NEXUS_OK) {
        nx_client_take_limits(self, rep.map);
        char store[NEXUS_STORE_ID_MAX];
        nx_obj_str(rep.map, "store_id", store, sizeof store);
        pthread_mutex_lock(&self->lock);
        if (!self->store_id[0])
            nx_store_id_copy(self->store_id, store);
        pthread_mutex_unlock(&self->lock);
    }
    nx_reply_destroy(&rep);
    ep = nx_client_ep(self);
    /*  No answer: the request never went out (no connection) or went
        out and nothing came back; a failed handshake says which.          */
    bool silent = rc == NEXUS_ERR_TIMEOUT || rc == NEXUS_ERR_UNREACHABLE;
    if (silent && failed == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && !self->curve_cert)
        rc = nx_client_fail(self, NEXUS_ERR_UNAUTHORIZED,
                            "the broker at %s refused this client's token (%s): it is "
                            "neither its token nor in its tokens_file",
                            ep->control, self->token_setting);
    else if (silent && failed && self->token && !self->curve_cert)
        rc = nx_client_fail(self, NEXUS_ERR_UNREACHABLE,
                            "the handshake with %s failed: a token (%s) makes this "
                            "client present it with PLAIN; does the broker have tokens configured "
                            "(and no CURVE)?",
                            ep->control, self->token_setting);
    else if (silent && failed && !self->curve_cert)
        rc = nx_client_fail(self, NEXUS_ERR_UNAUTHORIZED,
                            "the broker at %s refused the handshake: it wants a token "
                            "(%s) or a CURVE key (NEXUS_CURVE_SERVER_KEY)",
                            ep->control, self->token_setting);
    else if (silent && failed == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        rc = nx_client_fail(self, NEXUS_ERR_UNAUTHORIZED,
                            "the broker at %s refused this client's CURVE key: its public "
                            "certificate must be in the broker's curve_clients directory",
                            ep->control);
    else if (silent && failed)
        rc = nx_client_fail(self, NEXUS_ERR_UNREACHABLE,
                            "the CURVE handshake with %s failed: does the broker run with "
                            "curve_cert, and is NEXUS_CURVE_SERVER_KEY its public key?",
                            ep->control);
    else if (silent)
        rc = nx_client_fail(self, NEXUS_ERR_UNREACHABLE, "no answer from the broker at %s",
                            ep->control);
    if (rc == NEXUS_ERR_UNAUTHORIZED) {
        pthread_mutex_lock(&self->lock);
        /*  (Cut to leave room for the advice: errmsg fills at most 400.) */
        snprintf(self->refused_msg, sizeof self->refused_msg,
                 "%.400s (at connect; make a new client with a token or key it takes)",
                 self->errmsg);
        pthread_mutex_unlock(&self->lock);
        __atomic_store_n(&self->refused, true, __ATOMIC_RELEASE);
    }
    if (rc)
        return rc;
    /*  The first nexus_publish waits for the broker's XSUB subscription
        (s_pub_wait), not this: a client that never publishes that way
        (requests, history, the CLI) never waits out its timeout for an
        event port that is elsewhere.                                       */
    return s_ok(self);
}

int nexus_client_is_connected(nexus_client_t *self)
{
    pthread_mutex_lock(&self->lock);
    int ok = self->link_ok;
    pthread_mutex_unlock(&self->lock);
    return ok;
}

void nx_client_set_link(nexus_client_t *self, bool ok)
{
    pthread_mutex_lock(&self->lock);
    self->link_ok = ok;
    if (ok)
        self->ever_ok = true;
    pthread_mutex_unlock(&self->lock);
}

static const char *s_copy_locked(nexus_client_t *self, const char *value, char *buf, size_t size);

void nx_client_set_store(nexus_client_t *self, const char *store_id)
{
    pthread_mutex_lock(&self->lock);
    nx_store_id_copy(self->store_id, store_id);
    pthread_mutex_unlock(&self->lock);
}

const char *nexus_client_store_id(nexus_client_t *self, char *buf, size_t size)
{
    if (!self)
        return NULL;
    pthread_mutex_lock(&self->lock);
    const char *rc = s_copy_locked(self, self->store_id[0] ? self->store_id : NULL, buf, size);
    pthread_mutex_unlock(&self->lock);
    return rc;
}

const char *nexus_client_errmsg(nexus_client_t *self)
{
    return self ? self->errmsg : "no client";
}

const char *nexus_client_endpoint(nexus_client_t *self)
{
    return nx_client_ep(self)->control;
}

static const char *s_copy_locked(nexus_client_t *self, const char *value, char *buf, size_t size)
{
    const char *rc = NULL;
    if (value && buf && size) {
        snprintf(buf, size, "%s", value);
        rc = buf;
    }
    return rc;
}

const char *nexus_client_session_id(nexus_client_t *self, char *buf, size_t size)
{
    pthread_mutex_lock(&self->lock);
    const char *rc = s_copy_locked(self, self->session_id, buf, size);
    pthread_mutex_unlock(&self->lock);
    return rc;
}

const char *nexus_client_session_secret(nexus_client_t *self, char *buf, size_t size)
{
    pthread_mutex_lock(&self->lock);
    const char *rc = s_copy_locked(self, self->secret, buf, size);
    pthread_mutex_unlock(&self->lock);
    return rc;
}

void nexus_client_stats(nexus_client_t *self, nexus_client_stats_t *stats)
{
    pthread_mutex_lock(&self->lock);
    *stats = self->stats;
    pthread_mutex_unlock(&self->lock);
}

uint64_t nx_client_next_id(nexus_client_t *self)
{
    return __atomic_fetch_add(&self->next_id, 1, __ATOMIC_RELAXED);
}

zsock_t *nx_client_dealer_get(nexus_client_t *self, unsigned *gen_p)
{
    zsock_t *sock = NULL;
    unsigned gen = nx_client_gen(self);
    pthread_mutex_lock(&self->lock);
    /*  Those made for another broker of the list are of no use now.       */
    while (self->n_spare && self->spare_gen[self->n_spare - 1] != gen)
        zsock_destroy(&self->spare[--self->n_spare]);
    if (self->n_spare)
        sock = self->spare[--self->n_spare];
    pthread_mutex_unlock(&self->lock);
    *gen_p = gen;
    return sock ? sock : nx_client_socket(self, ZMQ_DEALER, nx_client_ep(self)->control);
}

void nx_client_dealer_put(nexus_client_t *self, zsock_t **sock, bool quiet, unsigned gen)
{
    if (!*sock)
        return;
    if (quiet && gen == nx_client_gen(self)) {
        pthread_mutex_lock(&self->lock);
        if (self->n_spare < NX_SPARE_MAX && !self->closing) {
            self->spare_gen[self->n_spare] = gen;
            self->spare[self->n_spare++] = *sock;
            *sock = NULL;
        }
        pthread_mutex_unlock(&self->lock);
    }
    zsock_destroy(sock);
}

/*  ---- Requests ---------------------------------------------------------- */

void nx_req_init(nx_req_t *req, const char *op)
{
    msgpack_sbuffer_init(&req->body);
    msgpack_packer_init(&req->pk, &req->body, msgpack_sbuffer_write);
    req->fields = 0;
    snprintf(req->op, sizeof req->op, "%s", op);
}

void nx_req_destroy(nx_req_t *req)
{
    msgpack_sbuffer_destroy(&req->body);
}

void nx_req_str(nx_req_t *req, const char *key, const char *value)
{
    if (!value)
        return;
    nx_pack_kv_str(&req->pk, key, value);
    req->fields++;
}

void nx_req_nil(nx_req_t *req, const char *key)
{
    nx_pack_str(&req->pk, key);
    msgpack_pack_nil(&req->pk);
    req->fields++;
}

void nx_req_u64(nx_req_t *req, const char *key, uint64_t value)
{
    nx_pack_kv_u64(&req->pk, key, value);
    req->fields++;
}

void nx_req_bool(nx_req_t *req, const char *key, bool value)
{
    nx_pack_kv_bool(&req->pk, key, value);
    req->fields++;
}

void nx_req_bin(nx_req_t *req, const char *key, const void *data, size_t size)
{
    nx_pack_kv_bin(&req->pk, key, data, size);
    req->fields++;
}

void nx_req_raw(nx_req_t *req, const char *key, const void *packed, size_t size)
{
    nx_pack_str(&req->pk, key);
    msgpack_sbuffer_write(&req->body, packed, size);
    req->fields++;
}

void nx_req_strs(nx_req_t *req, const char *key, char **items, size_t count)
{
    nx_pack_str(&req->pk, key);
    msgpack_pack_array(&req->pk, count);
    for (size_t i = 0; i < count; i++)
        nx_pack_str(&req->pk, items[i]);
    req->fields++;
}

void nx_req_session(nx_req_t *req, nexus_client_t *client)
{
    pthread_mutex_lock(&client->lock);
    nx_req_str(req, "session", client->session_id);
    nx_req_str(req, "secret", client->secret);
    pthread_mutex_unlock(&client->lock);
}

void nx_req_frame(nx_req_t *req, uint64_t id, const char *token, msgpack_sbuffer *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, req->fields + 2 + (token ? 1 : 0));
    nx_pack_kv_str(&pk, "op", req->op);
    nx_pack_kv_u64(&pk, "id", id);
    if (token)
        nx_pack_kv_str(&pk, "auth", token);
    msgpack_sbuffer_write(out, req->body.data, req->body.size);
}

void nx_reply_init(nx_reply_t *rep)
{
    msgpack_unpacked_init(&rep->unp);
    rep->data = NULL;
    rep->map = NULL;
}

void nx_reply_destroy(nx_reply_t *rep)
{
    msgpack_unpacked_destroy(&rep->unp);
    free(rep->data);
    rep->data = NULL;
    rep->map = NULL;
}

int nx_reply_parse(nx_reply_t *rep, const void *data, size_t size)
{
    nx_reply_destroy(rep);
    nx_reply_init(rep);
    /*  msgpack-c's objects point into the buffer for str and bin: keep a
        copy that lives as long as the reply.                               */
    rep->data = malloc(size ? size : 1);
    if (!rep->data)
        return -1;
    memcpy(rep->data, data, size);
    size_t off = 0;
    /*  A reply's counts are bounded by its bytes before msgpack-c
        allocates for them (nx_msgpack_check).                              */
    if (nx_msgpack_check(data, size, NX_MSGPACK_DEPTH) != NX_MSGPACK_OK ||
        msgpack_unpack_next(&rep->unp, rep->data, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        rep->unp.data.type != MSGPACK_OBJECT_MAP)
        return -1;
    rep->map = &rep->unp.data;
    return 0;
}

uint64_t nx_obj_u64(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = nx_map_get(map, key);
    if (!v)
        return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return v->via.u64;
    if (v->type == MSGPACK_OBJECT_BOOLEAN)
        return v->via.boolean;
    /*  A float outside 0..2^64 (or NaN) has no u64: converting it is
        undefined behaviour (found by fuzz_sdk); it saturates.            */
    if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
        return !(v->via.f64 > 0)                      ? 0
               : v->via.f64 >= 18446744073709551616.0 ? UINT64_MAX
                                                      : (uint64_t)v->via.f64;
    return 0;
}

const char *nx_obj_str(const msgpack_object *map, const char *key, char *buf, size_t size)
{
    const msgpack_object *v = nx_map_get(map, key);
    if (v && v->type == MSGPACK_OBJECT_STR)
        snprintf(buf, size, "%.*s", (int)v->via.str.size, v->via.str.ptr);
    else
        buf[0] = 0;
    return buf;
}

uint64_t nx_reply_id(const nx_reply_t *rep)
{
    return rep->map ? nx_obj_u64(rep->map, "id") : 0;
}

nexus_err_t nx_reply_status(const nx_reply_t *rep, char *errbuf, size_t errsize)
{
    const msgpack_object *ok = nx_map_get(rep->map, "ok");
    if (ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean)
        return NEXUS_OK;
    char name[64];
    nx_obj_str(rep->map, "error", name, sizeof name);
    nx_obj_str(rep->map, "message", errbuf, errsize);
    nexus_err_t err = nexus_err_from_name(name);
    if (err == NEXUS_OK)
        err = NEXUS_ERR_INTERNAL;
    return err;
}

/*  Makes the API's DEALER again when the broker in use changed (ctl_lock
    held). Returns the generation it is for.                               */
static unsigned s_dealer_current(nexus_client_t *self)
{
    unsigned gen = nx_client_gen(self);
    if (self->dealer && self->dealer_gen != gen) {
        /*  A monitor (connect's handshake watch) must not outlive its
            socket: libzmq sends monitor events blocking.                   */
        zmq_socket_monitor(zsock_resolve(self->dealer), NULL, 0);
        zsock_destroy(&self->dealer);
    }
    if (!self->dealer) {
        self->dealer = nx_client_control_dealer(self);
        self->dealer_gen = gen;
    }
    return gen;
}

enum { S_X_REPLY, S_X_MOVED, S_X_BUSY, S_X_NO_ROUTE, S_X_NO_REPLY };

/*  With a list: how long a request waits for a connection to one broker
    before it goes to the next (it was not sent: safe to send there).     */
#define S_CONNECT_MS 1000

/*  Sends the framed request once on the current DEALER and waits for the
    reply with its id until deadline (ctl_lock held). S_X_MOVED: the client
    moved to another broker meanwhile (the request may or may not have
    been done).

    Plain zmq_send and a zmq_recv that blocks with ZMQ_RCVTIMEO, not a
    poller: a zmq_poll round asks the socket for its events before and
    after its poll(), each a look at the mailbox (poll, getpid, read).
    strace of 16 clients: 20 system calls per request in the client
    process that way, 16 now; on a VM they are most of a round trip.     */
static int s_exchange(nexus_client_t *self, const msgpack_sbuffer *frame, uint64_t id,
                      nx_reply_t *rep, uint64_t deadline, unsigned gen)
{
    void *h = self->dealer ? zsock_resolve(self->dealer) : NULL;
    if (!h)
        return S_X_BUSY;
    /*  A DEALER without a connection blocks a send, and ZeroMQ drops a
        connection whose handshake failed (no, or another, security
        mechanism) without connecting again: wait for room at most the
        timeout, never for ever.                                          */
    int sent = -1;
    uint64_t give_up = deadline;
    if (self->n_eps > 1 && nx_clock_ms() + S_CONNECT_MS < deadline)
        give_up = nx_clock_ms() + S_CONNECT_MS; /* then the next broker */
    while ((sent = zmq_send(h, frame->data, frame->size, ZMQ_DONTWAIT)) < 0 &&
           zmq_errno() == EAGAIN) {
        uint64_t now = nx_clock_ms();
        if (now >= give_up || nx_client_gen(self) != gen)
            break;
        zmq_pollitem_t item = {h, 0, ZMQ_POLLOUT, 0};
        zmq_poll(&item, 1, (long)(deadline - now < 100 ? deadline - now : 100));
    }
    if (sent < 0) {
        if (zmq_errno() != EAGAIN)
            return S_X_BUSY;
        /*  Never sent: safe to send to the next broker.                   */
        return nx_client_gen(self) != gen ? S_X_MOVED : S_X_NO_ROUTE;
    }
    bool watch = self->n_eps > 1;
    int result = S_X_NO_REPLY;
    int timeo_set = -2; /* what ZMQ_RCVTIMEO holds now, as this call set it */
    zmq_msg_t in;
    zmq_msg_init(&in);
    for (;;) {
        uint64_t now = nx_clock_ms();
        if (now >= deadline)
            break;
        if (watch && nx_client_gen(self) != gen) {
            result = S_X_MOVED;
            break;
        }
        /*  With a list, look every 100 ms whether the actor found the
            broker gone (it hears of a lost connection at once).           */
        int wait = deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
        if (watch && wait > 100)
            wait = 100;
        if (wait != timeo_set) {
            zmq_setsockopt(h, ZMQ_RCVTIMEO, &wait, sizeof wait);
            timeo_set = wait;
        }
        if (zmq_msg_recv(&in, h, 0) < 0) {
            if (zmq_errno() == EAGAIN || zmq_errno() == EINTR)
                continue;
            break; /* the socket is closing: no reply */
        }
        /*  An error without an id is the broker's answer to a request it
            could not read (too_large, bad_msgpack): this one, since this
            socket has nothing else in flight (one that timed out took its
            socket with it).                                               */
        bool parsed = nx_reply_parse(rep, zmq_msg_data(&in), zmq_msg_size(&in)) == 0;
        const msgpack_object *ok = parsed ? nx_map_get(rep->map, "ok") : NULL;
        bool refused = ok && ok->type == MSGPACK_OBJECT_BOOLEAN && !ok->via.boolean;
        bool mine = parsed && (nx_reply_id(rep) == id || (refused && nx_reply_id(rep) == 0));
        /*  A reply is one frame: drop what else came in the message.     */
        bool more = zmq_msg_more(&in);
        while (more && zmq_msg_recv(&in, h, ZMQ_DONTWAIT) >= 0)
            more = zmq_msg_more(&in);
        if (mine) {
            result = S_X_REPLY;
            break;
        }
    }
    zmq_msg_close(&in);
    return result;
}

void nx_client_take_limits(nexus_client_t *self, const msgpack_object *ping)
{
    /*  0 (a broker that does not say): not known, nothing refused here.  */
    __atomic_store_n(&self->max_request, nx_obj_u64(ping, "max_request"), __ATOMIC_RELAXED);
}

uint64_t nx_client_max_request(nexus_client_t *self, size_t size)
{
    uint64_t max = __atomic_load_n(&self->max_request, __ATOMIC_RELAXED);
    if (!max || size <= max)
        return 0;
    /*  The broker's limit may have changed since it was read (a restart
        with other settings, another broker of the list): asked again
        before refusing; only refusals pay the round trip.                 */
    nx_req_t req;
    nx_reply_t rep;
    nx_req_init(&req, "ping");
    if (nx_client_call(self, &req, &rep) == NEXUS_OK)
        nx_client_take_limits(self, rep.map);
    nx_reply_destroy(&rep);
    nx_req_destroy(&req);
    max = __atomic_load_n(&self->max_request, __ATOMIC_RELAXED);
    return max && size > max ? max : 0;
}

nexus_err_t nx_client_usable(nexus_client_t *self)
{
    if (!self->started)
        return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is not connected");
    if (!__atomic_load_n(&self->refused, __ATOMIC_ACQUIRE))
        return NEXUS_OK;
    char msg[NX_CLIENT_ERRMAX];
    pthread_mutex_lock(&self->lock);
    snprintf(msg, sizeof msg, "%s", self->refused_msg);
    pthread_mutex_unlock(&self->lock);
    return nx_client_fail(self, NEXUS_ERR_UNAUTHORIZED, "%s", msg);
}

nexus_err_t nx_client_call(nexus_client_t *self, nx_req_t *req, nx_reply_t *rep)
{
    nx_reply_init(rep);
    nexus_err_t usable = nx_client_usable(self);
    if (usable)
        return usable;
    /*  A request that may have been done is never sent twice; one that
        only reads, or that a broker refused (not_primary: nothing done),
        goes to the next broker of the list within the same timeout.       */
    const nx_opdef_t *op = nx_optab_find(req->op, strlen(req->op));
    bool resend = !op || !(op->flags & NX_OF_WRITE);
    pthread_mutex_lock(&self->ctl_lock);
    uint64_t id = nx_client_next_id(self);
    msgpack_sbuffer frame;
    msgpack_sbuffer_init(&frame);
    nx_req_frame(req, id, self->token, &frame);
    /*  Refused here, not by the broker: one over 4 x max_request would
        cost the connection and look like a timeout ("may have been
        done"), though it never was.                                      */
    uint64_t max = __atomic_load_n(&self->max_request, __ATOMIC_RELAXED);
    if (max && frame.size > max) {
        pthread_mutex_unlock(&self->ctl_lock);
        max = nx_client_max_request(self, frame.size);
        if (max) {
            size_t size = frame.size;
            msgpack_sbuffer_destroy(&frame);
            return nx_client_fail(self, NEXUS_ERR_TOO_LARGE,
                                  "%s: the request is %zu bytes, over the broker's max_request "
                                  "(%" PRIu64 " bytes): not sent",
                                  req->op, size, max);
        }
        pthread_mutex_lock(&self->ctl_lock);
    }
    uint64_t deadline = nx_clock_ms() + nx_client_timeout(self);
    int result = S_X_NO_REPLY;
    unsigned gen = 0;
    char ep[NX_ENDPOINT_MAX];
    for (size_t attempt = 0;; attempt++) {
        gen = s_dealer_current(self);
        snprintf(ep, sizeof ep, "%s", nx_client_ep(self)->control);
        nx_reply_destroy(rep);
        nx_reply_init(rep);
        result = s_exchange(self, &frame, id, rep, deadline, gen);
        if (result == S_X_MOVED && resend && nx_clock_ms() < deadline)
            continue;
        if (result == S_X_NO_ROUTE && self->n_eps > 1 && nx_clock_ms() < deadline) {
            nx_client_failover(self, gen, NULL);
            continue;
        }
        if (result != S_X_REPLY || self->n_eps < 2)
            break;
        char name[32], primary[NX_ENDPOINT_MAX];
        nx_obj_str(rep->map, "error", name, sizeof name);
        if (strcmp(name, "not_primary") != 0)
            break;
        uint64_t now = nx_clock_ms();
        if (now + 20 >= deadline)
            break;
        nx_obj_str(rep->map, "primary", primary, sizeof primary);
        nx_client_failover(self, gen, primary);
        /*  Each broker said no: a promotion is under way; ask again soon. */
        if (attempt + 1 >= self->n_eps)
            usleep((useconds_t)(deadline - now < 100 ? deadline - now : 100) * 1000);
    }
    msgpack_sbuffer_destroy(&frame);
    if (result != S_X_REPLY) {
        /*  The request may sit in a queue to a dead connection: start over
            with a fresh socket so that a late reply cannot confuse the next
            call and stale requests do not pile up; with a list, on the next
            broker.                                                         */
        if (result != S_X_BUSY) {
            zmq_socket_monitor(zsock_resolve(self->dealer), NULL, 0);
            zsock_destroy(&self->dealer);
            if (result == S_X_NO_REPLY || result == S_X_NO_ROUTE)
                nx_client_failover(self, gen, NULL);
        }
        pthread_mutex_unlock(&self->ctl_lock);
        nx_reply_destroy(rep);
        nx_reply_init(rep);
        switch (result) {
        case S_X_BUSY:
            return nx_client_fail(self, NEXUS_ERR_BUSY, "cannot send the request");
        case S_X_NO_ROUTE:
            /*  Never sent: nothing was done, and the caller may say so
                (the gateway answers 503, not 504 "outcome unknown"). No
                connection for a whole timeout: the link is down.          */
            nx_client_set_link(self, false);
            return nx_client_fail(self, NEXUS_ERR_UNREACHABLE,
                                  "no connection to the broker at %s within %u ms: the request "
                                  "was not sent",
                                  ep, nx_client_timeout(self));
        case S_X_MOVED: /* sent: the outcome is unknown, as for a timeout */
            return nx_client_fail(self, NEXUS_ERR_TIMEOUT,
                                  "the broker at %s was lost with '%s' in flight: it may or may "
                                  "not have been done",
                                  ep, req->op);
        default:
            /*  A whole timeout without an answer: the link is down as far
                as this client can tell, until the background thread's probe
                hears the broker again (nx_actor.c, s_link_up).              */
            nx_client_set_link(self, false);
            return nx_client_fail(self, NEXUS_ERR_TIMEOUT, "no reply from %s to '%s' within %u ms",
                                  ep, req->op, nx_client_timeout(self));
        }
    }
    pthread_mutex_unlock(&self->ctl_lock);
    nx_client_set_link(self, true);
    char msg[NX_CLIENT_ERRMAX];
    nexus_err_t rc = nx_reply_status(rep, msg, sizeof msg);
    if (rc)
        return nx_client_fail(self, rc, "%s: %s", req->op, msg[0] ? msg : nexus_strerror(rc));
    return s_ok(self);
}

nexus_err_t nexus_request_json(nexus_client_t *self, const char *request_json, char **reply_json)
{
    if (reply_json)
        *reply_json = NULL;
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!request_json)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "request_json is NULL");
    json_error_t jerr;
    json_t *obj = json_loads(request_json, JSON_ALLOW_NUL, &jerr);
    const char *op = json_string_value(json_object_get(obj, "op"));
    if (!json_is_object(obj) || !op) {
        json_decref(obj);
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "request must be a JSON object with a string \"op\"");
    }
    nx_req_t req;
    nx_req_init(&req, op);
    bool acting = strncmp(op, "session.", 8) == 0 || strncmp(op, "work.", 5) == 0;
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        if (!strcmp(key, "op") || !strcmp(key, "id") || !strcmp(key, "auth"))
            continue;
        nx_pack_str(&req.pk, key);
        nx_json_pack(&req.pk, value);
        req.fields++;
    }
    if (acting && !json_object_get(obj, "session")) {
        pthread_mutex_lock(&self->lock);
        nx_req_str(&req, "session", self->session_id);
        if (!json_object_get(obj, "secret"))
            nx_req_str(&req, "secret", self->secret);
        pthread_mutex_unlock(&self->lock);
    }
    json_decref(obj);
    nx_reply_t rep;
    nexus_err_t rc = nx_client_call(self, &req, &rep);
    nx_req_destroy(&req);
    if (rep.map && reply_json) {
        json_t *j = nx_json_from_msgpack(rep.map);
        *reply_json = j ? nx_json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
    }
    nx_reply_destroy(&rep);
    return rc;
}

/*  ---- Publishing --------------------------------------------------------*/

static void s_source(nexus_client_t *self, char *buf, size_t size)
{
    pthread_mutex_lock(&self->lock);
    const char *src = self->session_id ? self->session_id : self->name ? self->name : "";
    snprintf(buf, size, "%s", src);
    pthread_mutex_unlock(&self->lock);
}

nexus_err_t nx_client_bad_topic(nexus_client_t *self, const char *topic)
{
    if (!topic)
        return nx_client_fail(self, NEXUS_ERR_BAD_TOPIC, "invalid topic (null)");
    char shown[72];
    size_t n = 0;
    for (const char *p = topic; *p && n < 64; p++, n++)
        shown[n] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
    shown[n] = 0;
    return nx_client_fail(self, NEXUS_ERR_BAD_TOPIC, "invalid topic '%s%s': %s", shown,
                          strlen(topic) > 64 ? "..." : "",
                          nx_topic_why(topic, strlen(topic), false));
}

nexus_err_t nx_client_check_payload(nexus_client_t *self, const void *payload, size_t size)
{
    /*  NULL with a size is a caller's mistake, not an empty event: sending
        "" instead would store what the caller never meant.                */
    if (!payload && size)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "payload is NULL but size is %zu (NULL goes with size 0)", size);
    return NEXUS_OK;
}

/*  Waits once (bounded by the timeout) for the broker's XSUB subscription
    to reach the XPUB: fire-and-forget events sent before it would be
    dropped (pub_lock held).                                               */
static void s_pub_wait(nexus_client_t *self)
{
    if (self->pub_waited || !self->pub)
        return;
    self->pub_waited = true;
    uint64_t deadline = nx_clock_ms() + nx_client_timeout(self);
    zsock_set_rcvtimeo(self->pub, 20);
    while (nx_clock_ms() < deadline) {
        zframe_t *f = zframe_recv(self->pub);
        if (f) {
            zframe_destroy(&f);
            break;
        }
    }
    zsock_set_rcvtimeo(self->pub, 0);
}

nexus_err_t nexus_publish(nexus_client_t *self, const char *topic, const void *payload, size_t size)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!topic)
        return nx_client_bad_topic(self, NULL);
    nexus_err_t bad = nx_client_check_payload(self, payload, size);
    if (bad)
        return bad;
    if (size > (64u << 20))
        return nx_client_fail(self, NEXUS_ERR_TOO_LARGE, "payload of %zu bytes", size);
    if (!self->started || !self->pub || __atomic_load_n(&self->refused, __ATOMIC_RELAXED)) {
        if (!nx_topic_valid(topic, strlen(topic))) /* the errors in their usual order */
            return nx_client_bad_topic(self, topic);
        nexus_err_t usable = nx_client_usable(self);
        return usable ? usable
                      : nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is not connected");
    }
    /*  One uncontended mutex and the zmq_sends: a topic is checked once
        (a publisher mostly repeats its last one), the source is copied
        only when the session id or name changed, and the XPUB's
        subscription messages (one per reconnect of the broker) are read
        only every 1024 events, since reading an empty socket costs a
        system call.                                                        */
    size_t tlen = strlen(topic);
    pthread_mutex_lock(&self->pub_lock);
    if (tlen != self->pub_topic_len || memcmp(topic, self->pub_topic, tlen) != 0) {
        if (!nx_topic_valid(topic, tlen)) {
            pthread_mutex_unlock(&self->pub_lock);
            return nx_client_bad_topic(self, topic);
        }
        memcpy(self->pub_topic, topic, tlen + 1);
        self->pub_topic_len = tlen;
    }
    unsigned gen = __atomic_load_n(&self->source_gen, __ATOMIC_ACQUIRE);
    if (gen != self->pub_source_gen) {
        s_source(self, self->pub_source, sizeof self->pub_source);
        self->pub_source_len = strlen(self->pub_source);
        self->pub_source_gen = gen;
    }
    if (self->pub_gen != nx_client_gen(self))
        s_pub_current(self);
    if (!self->pub) {
        pthread_mutex_unlock(&self->pub_lock);
        return nx_client_fail(self, NEXUS_ERR_BUSY, "cannot connect to %s", nx_client_ep(self)->in);
    }
    s_pub_wait(self);
    void *h = zsock_resolve(self->pub);
    if ((self->pub_count++ & 1023) == 0) {
        char sink[16];
        for (int i = 0; i < 64 && zmq_recv(h, sink, sizeof sink, ZMQ_DONTWAIT) >= 0; i++)
            ;
    }
    size_t slen = self->pub_source_len;
    int rc = zmq_send(h, topic, tlen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0)
        rc = zmq_send(h, size ? payload : "", size, (slen ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
    if (rc >= 0 && slen)
        rc = zmq_send(h, self->pub_source, slen, ZMQ_DONTWAIT);
    pthread_mutex_unlock(&self->pub_lock);
    if (rc < 0)
        return nx_client_fail(self, NEXUS_ERR_BUSY, "cannot queue the event: %s",
                              zmq_strerror(zmq_errno()));
    return NEXUS_OK;
}

nexus_err_t nexus_publish_acked(nexus_client_t *self, const char *topic, const void *payload,
                                size_t size, uint64_t *seq, uint64_t *ts)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!topic)
        return nx_client_bad_topic(self, NULL);
    if (!nx_topic_valid(topic, strlen(topic)))
        return nx_client_bad_topic(self, topic);
    nexus_err_t bad = nx_client_check_payload(self, payload, size);
    if (bad)
        return bad;
    char source[NX_SOURCE_MAX + 1];
    s_source(self, source, sizeof source);
    nx_req_t req;
    nx_req_init(&req, "publish");
    nx_req_str(&req, "topic", topic);
    nx_req_bin(&req, "payload", size ? payload : "", size);
    if (source[0])
        nx_req_str(&req, "source", source);
    nx_reply_t rep;
    nexus_err_t rc = nx_client_call(self, &req, &rep);
    nx_req_destroy(&req);
    if (rc == NEXUS_OK) {
        if (seq)
            *seq = nx_obj_u64(rep.map, "seq");
        if (ts)
            *ts = nx_obj_u64(rep.map, "ts");
    }
    nx_reply_destroy(&rep);
    return rc;
}

static nexus_err_t s_publish_json(nexus_client_t *self, const char *topic, const char *json,
                                  uint64_t *seq, bool acked)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    char err[256];
    if (json && *json && nx_json_text_to_msgpack(json, &buf, err, sizeof err)) {
        msgpack_sbuffer_destroy(&buf);
        return nx_client_fail(self, NEXUS_ERR_INVALID, "payload: %s", err);
    }
    /*  What no reader could decode back to the same JSON (they show it as
        $base64) is refused, as the gateway refuses it.                     */
    if (buf.size && nx_msgpack_check((const uint8_t *)buf.data, buf.size, NX_MSGPACK_DEPTH) ==
                        NX_MSGPACK_TOO_DEEP) {
        msgpack_sbuffer_destroy(&buf);
        return nx_client_fail(self, NEXUS_ERR_INVALID, "payload: nested deeper than %d levels",
                              NX_MSGPACK_LEVELS);
    }
    nexus_err_t rc = acked ? nexus_publish_acked(self, topic, buf.data, buf.size, seq, NULL)
                           : nexus_publish(self, topic, buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

nexus_err_t nexus_publish_json(nexus_client_t *self, const char *topic, const char *json)
{
    return s_publish_json(self, topic, json, NULL, false);
}

nexus_err_t nexus_publish_json_acked(nexus_client_t *self, const char *topic, const char *json,
                                     uint64_t *seq)
{
    return s_publish_json(self, topic, json, seq, true);
}

/*  ---- The event queue ---------------------------------------------------
    The actor appends a burst of events under one lock and wakes waiting
    readers once; readers take one (nexus_recv) or many (nexus_recv_batch)
    per lock.                                                               */

size_t nx_client_take(nexus_client_t *self, nexus_event_t **events, size_t n,
                      const nexus_client_stats_t *delta, uint64_t last_seq)
{
    pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < n; i++)
        self->ring[(self->q_head + self->q_count++) % self->queue_max] = events[i];
    nexus_client_stats_t *st = &self->stats;
    st->reconnects += delta->reconnects;
    st->history_pages += delta->history_pages;
    st->live_events += delta->live_events;
    st->history_events += delta->history_events;
    st->queue_drops += delta->queue_drops;
    st->gaps += delta->gaps;
    st->last_seq = last_seq;
    if (n && self->q_waiters)
        pthread_cond_broadcast(&self->cond);
    size_t room = self->cb ? SIZE_MAX : self->queue_max - self->q_count;
    pthread_mutex_unlock(&self->lock);
    return room;
}

/*  Waits (lock held) until an event is queued, the client closes or the
    time is up. Returns NEXUS_OK with q_count > 0, or the error.           */
static nexus_err_t s_wait_queue(nexus_client_t *self, int timeout_ms)
{
    if (self->q_count == 0 && !self->closing && timeout_ms != 0) {
        struct timespec until; /* the condition waits on CLOCK_MONOTONIC */
        clock_gettime(CLOCK_MONOTONIC, &until);
        if (timeout_ms > 0) {
            until.tv_sec += timeout_ms / 1000;
            until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
        }
        self->q_waiters++;
        while (self->q_count == 0 && !self->closing) {
            if (timeout_ms < 0)
                pthread_cond_wait(&self->cond, &self->lock);
            else if (pthread_cond_timedwait(&self->cond, &self->lock, &until) == ETIMEDOUT)
                break;
        }
        /*  nexus_client_destroy waits for the last one to leave; the
            caller then touches nothing of the client's.                   */
        if (--self->q_waiters == 0 && self->closing)
            pthread_cond_broadcast(&self->cond);
    }
    if (self->closing)
        return NEXUS_ERR_CLOSED;
    return self->q_count ? NEXUS_OK : NEXUS_ERR_TIMEOUT;
}

static nexus_err_t s_recv_check(nexus_client_t *self)
{
    if (self->cb)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "callback mode: events go to the callback");
    if (!self->started)
        return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is not connected");
    return NEXUS_OK;
}

nexus_err_t nexus_recv(nexus_client_t *self, int timeout_ms, nexus_event_t **event)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!event)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "event is NULL: nowhere to put the event");
    *event = NULL;
    nexus_err_t rc = s_recv_check(self);
    if (rc)
        return rc;
    pthread_mutex_lock(&self->lock);
    rc = s_wait_queue(self, timeout_ms);
    if (rc == NEXUS_OK) {
        *event = self->ring[self->q_head];
        self->ring[self->q_head] = NULL;
        self->q_head = (self->q_head + 1) % self->queue_max;
        self->q_count--;
    }
    pthread_mutex_unlock(&self->lock);
    if (rc == NEXUS_OK && (*event)->kind == NEXUS_EVENT_GAP)
        rc = NEXUS_ERR_GAP;
    else if (rc == NEXUS_OK && (*event)->kind == NEXUS_EVENT_RESET)
        rc = NEXUS_ERR_RESET;
    return rc;
}

nexus_err_t nexus_recv_batch(nexus_client_t *self, int timeout_ms, nexus_event_t **events,
                             size_t max, size_t *count)
{
    if (count)
        *count = 0;
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!events || !count || max == 0)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "%s",
                              !events  ? "events is NULL: nowhere to put the events"
                              : !count ? "count is NULL: nowhere to say how many were taken"
                                       : "max is 0: room for at least one event is needed");
    nexus_err_t rc = s_recv_check(self);
    if (rc)
        return rc;
    pthread_mutex_lock(&self->lock);
    rc = s_wait_queue(self, timeout_ms);
    if (rc == NEXUS_OK) {
        size_t n = self->q_count < max ? self->q_count : max;
        for (size_t i = 0; i < n; i++) {
            events[i] = self->ring[self->q_head];
            self->ring[self->q_head] = NULL;
            self->q_head = self->q_head + 1 == self->queue_max ? 0 : self->q_head + 1;
        }
        self->q_count -= n;
        *count = n;
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

/*  ---- Commands to the actor ---------------------------------------------*/

/*  Sends a command with one argument and waits for its status reply.      */
static nexus_err_t s_command(nexus_client_t *self, const char *cmd, const char *arg)
{
    nexus_err_t usable = nx_client_usable(self);
    if (usable)
        return usable;
    if (!self->actor)
        return nx_client_fail(self, NEXUS_ERR_CLOSED, "the client is not connected");
    pthread_mutex_lock(&self->pipe_lock);
    zstr_sendx(self->actor, cmd, arg ? arg : "", NULL);
    char *status = zstr_recv(self->actor);
    pthread_mutex_unlock(&self->pipe_lock);
    nexus_err_t rc = status ? (nexus_err_t)atoi(status) : NEXUS_ERR_CLOSED;
    zstr_free(&status);
    return rc;
}

nexus_err_t nexus_subscribe(nexus_client_t *self, const char *pattern)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!pattern || !nx_pattern_valid(pattern, strlen(pattern)))
        return nx_client_fail(self, NEXUS_ERR_BAD_PATTERN, "invalid pattern '%.64s'",
                              pattern ? pattern : "(null)");
    nexus_err_t rc = s_command(self, "SUB", pattern);
    if (rc == NEXUS_ERR_INVALID)
        return nx_client_fail(self, rc, "at most %d patterns", NX_PATTERNS_MAX);
    if (rc)
        return nx_client_fail(self, rc, "%s", nexus_strerror(rc));
    /*  A starting point set before (resume_from, an earlier pattern) holds
        for this pattern too, and a START would change nothing: no round
        trip, so that the patterns of a start-up reach the thread together,
        before it reads the history from that point (a page read with the
        first pattern alone would move the point past the events of the
        next: nexus sub A B --since 0 printed A's events only).            */
    if (__atomic_load_n(&self->start_known, __ATOMIC_ACQUIRE))
        return s_ok(self);
    /*  Fix the starting point now, after the subscription exists, so that
        an event published once this returns is delivered. If the broker
        does not answer, the actor asks it later by itself.                 */
    nx_req_t req;
    nx_reply_t rep;
    nx_req_init(&req, "health");
    if (nx_client_call(self, &req, &rep) == NEXUS_OK) {
        /*  "seq store": the store the seq belongs to goes with it.        */
        char store[NEXUS_STORE_ID_MAX], arg[32 + NEXUS_STORE_ID_MAX];
        nx_obj_str(rep.map, "store_id", store, sizeof store);
        snprintf(arg, sizeof arg, "%" PRIu64 " %s", nx_obj_u64(rep.map, "last_seq"), store);
        if (s_command(self, "START", arg) == NEXUS_OK)
            __atomic_store_n(&self->start_known, true, __ATOMIC_RELEASE);
    }
    nx_req_destroy(&req);
    nx_reply_destroy(&rep);
    return s_ok(self);
}

nexus_err_t nexus_unsubscribe(nexus_client_t *self, const char *pattern)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!pattern)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "pattern is NULL");
    nexus_err_t rc = s_command(self, "UNSUB", pattern);
    if (rc)
        return nx_client_fail(self, rc, "pattern '%.64s' is not subscribed", pattern);
    return s_ok(self);
}

nexus_err_t nexus_client_resume_at(nexus_client_t *self, const char *store_id, uint64_t seq)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (store_id && (strlen(store_id) >= NEXUS_STORE_ID_MAX || strchr(store_id, ' ')))
        return nx_client_fail(self, NEXUS_ERR_INVALID, "'%.64s' is not a store id", store_id);
    char arg[32 + NEXUS_STORE_ID_MAX];
    snprintf(arg, sizeof arg, "%" PRIu64 " %s", seq, store_id ? store_id : "");
    nexus_err_t rc = s_command(self, "RESUME", arg);
    if (rc == NEXUS_OK)
        __atomic_store_n(&self->start_known, true, __ATOMIC_RELEASE);
    return rc ? nx_client_fail(self, rc, "%s", nexus_strerror(rc)) : s_ok(self);
}

nexus_err_t nexus_client_resume_from(nexus_client_t *self, uint64_t seq)
{
    return nexus_client_resume_at(self, NULL, seq);
}

/*  ---- Sessions: registration (shared with the actor) --------------------*/

void nx_client_register_req(nexus_client_t *self, nx_req_t *req)
{
    nx_req_init(req, "session.register");
    nx_req_session(req, self);
    nx_req_str(req, "name", self->name);
    if (self->n_caps)
        nx_req_strs(req, "capabilities", self->caps, self->n_caps);
    if (self->metadata)
        nx_req_raw(req, "metadata", self->metadata, self->metadata_len);
    nx_req_u64(req, "heartbeat_ms", self->heartbeat_ms);
    if (self->ttl_ms)
        nx_req_u64(req, "ttl_ms", self->ttl_ms);
}

void nx_client_take_registration(nexus_client_t *self, const msgpack_object *map)
{
    char id[NEXUS_ID_MAX], secret[NEXUS_ID_MAX];
    nx_obj_str(map, "session", id, sizeof id);
    nx_obj_str(map, "secret", secret, sizeof secret);
    pthread_mutex_lock(&self->lock);
    if (id[0] && (!self->session_id || strcmp(self->session_id, id) != 0)) {
        char *copy = strdup(id);
        if (copy) {
            free(self->session_id);
            self->session_id = copy;
            /*  The publish paths keep a copy of the source: a new id is
                the events' source from now on.                            */
            __atomic_add_fetch(&self->source_gen, 1, __ATOMIC_RELEASE);
        }
    }
    if (secret[0]) {
        free(self->secret);
        self->secret = strdup(secret);
    }
    pthread_mutex_unlock(&self->lock);
}

nexus_err_t nexus_session_register(nexus_client_t *self, int *resumed)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nx_req_t req;
    nx_reply_t rep;
    nx_client_register_req(self, &req);
    nexus_err_t rc = nx_client_call(self, &req, &rep);
    nx_req_destroy(&req);
    if (rc == NEXUS_OK) {
        nx_client_take_registration(self, rep.map);
        if (resumed)
            *resumed = (int)nx_obj_u64(rep.map, "resumed");
        s_command(self, "HEARTBEAT", "1");
    }
    nx_reply_destroy(&rep);
    return rc;
}
