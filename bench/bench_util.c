/*  =========================================================================
    bench_util - shared machinery of the nexus benchmarks; bench_util.h is
    the contract.
    =========================================================================
*/

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_util.h"
#include "nx_codec.h"

#define S_READY_TIMEOUT_MS 10000                  /* nexusd must answer ping within this     */
#define S_STOP_TIMEOUT_MS  10000                  /* and exit within this after SIGTERM      */
#define S_IDLE_TIMEOUT_NS  (3ull * 1000000000ull) /* no event for this: lost */
#define S_WARM_TOPIC       "warm.up"

/*  ---- Clock and statistics ---------------------------------------------- */

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*  Nearest rank: the smallest sample with at least q of them at or below. */
static double s_rank_us(const uint64_t *v, size_t n, double q)
{
    size_t rank = (size_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)v[rank - 1] / 1000.0;
}

void bench_percentiles(uint64_t *v, size_t n, bench_pct_t *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, s_cmp_u64);
    out->p50_us = s_rank_us(v, n, 0.50);
    out->p99_us = s_rank_us(v, n, 0.99);
    out->p999_us = s_rank_us(v, n, 0.999);
    out->max_us = (double)v[n - 1] / 1000.0;
}

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, s_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void s_sleep_us(unsigned us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/*  ---- The broker child ----------------------------------------------- */

static char s_nexusd[PATH_MAX];

void bench_set_nexusd(const char *path)
{
    if (path && *path) {
        snprintf(s_nexusd, sizeof s_nexusd, "%s", path);
        return;
    }
    const char *env = getenv("NEXUSD");
    if (env && *env) {
        snprintf(s_nexusd, sizeof s_nexusd, "%s", env);
        return;
    }
#ifdef BENCH_NEXUSD_DEFAULT
    if (access(BENCH_NEXUSD_DEFAULT, X_OK) == 0) {
        snprintf(s_nexusd, sizeof s_nexusd, "%s", BENCH_NEXUSD_DEFAULT);
        return;
    }
#endif
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len > 0) {
        self[len] = 0;
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = 0;
        snprintf(s_nexusd, sizeof s_nexusd, "%.*s/../broker/nexusd", PATH_MAX - 20, self);
    } else
        snprintf(s_nexusd, sizeof s_nexusd, "nexusd");
}

const char *bench_nexusd(void)
{
    if (!*s_nexusd)
        bench_set_nexusd(NULL);
    return s_nexusd;
}

/*  Binds three sockets to port 0 at once, so the three ports differ.       */
static int s_free_ports(int ports[3])
{
    int fds[3] = {-1, -1, -1}, rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t alen = sizeof addr;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&addr, sizeof addr) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&addr, &alen) != 0)
            rc = -1;
        else
            ports[i] = ntohs(addr.sin_port);
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc;
}

static void s_print_log(const bench_broker_t *self)
{
    FILE *f = fopen(self->log_path, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "# --- %s ---\n", self->log_path);
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "# %s", line);
    fclose(f);
}

/*  Waits for a reply to ping while the child lives. Returns 0 when ready.  */
static int s_wait_ready(bench_broker_t *self)
{
    void *ctx = zmq_ctx_new();
    void *dealer = bench_dealer(ctx, self->control);
    int rc = -1;
    const char ping[] = "\x82\xa2op\xa4ping\xa2id\x01";
    if (dealer && zmq_send(dealer, ping, sizeof ping - 1, 0) >= 0) {
        for (int waited = 0; waited < S_READY_TIMEOUT_MS; waited += 100) {
            bench_reply_t reply;
            if (bench_recv_reply(dealer, &reply, 100) == 0) {
                rc = bench_reply_ok(reply.map, NULL) ? 0 : -1;
                bench_reply_destroy(&reply);
                break;
            }
            int status;
            if (waitpid(self->pid, &status, WNOHANG) == self->pid) {
                fprintf(stderr, "# nexusd exited before it was ready (status %d)\n", status);
                self->pid = 0;
                break;
            }
        }
    }
    if (dealer)
        zmq_close(dealer);
    zmq_ctx_term(ctx);
    return rc;
}

static int s_spawn(bench_broker_t *self)
{
    const char *nexusd = bench_nexusd();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(self->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        const char *argv[32] = {"nexusd",         "--data-dir",
                                self->data_dir,   "--control-endpoints",
                                self->control,    "--events-in-endpoints",
                                self->events_in,  "--events-out-endpoints",
                                self->events_out, "--sync",
                                self->sync};
        int n = 11;
        for (int i = 0; self->extra[i] && n < 31; i++)
            argv[n++] = self->extra[i];
        argv[n] = NULL;
        execv(nexusd, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", nexusd, strerror(errno));
        _exit(127);
    }
    self->pid = pid;
    if (s_wait_ready(self) != 0) {
        fprintf(stderr, "# nexusd (%s) did not become ready\n", nexusd);
        bench_broker_stop(self);
        s_print_log(self);
        return -1;
    }
    return 0;
}

bench_broker_t *bench_broker_new(const char *sync)
{
    return bench_broker_new_with(sync, NULL);
}

bench_broker_t *bench_broker_new_with(const char *sync, const char *const *extra)
{
    bench_broker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    for (int i = 0; extra && extra[i] && i < 15; i++)
        self->extra[i] = strdup(extra[i]);
    const char *base = getenv("NEXUS_BENCH_DIR");
    snprintf(self->dir, sizeof self->dir, "%s/nexus-bench-XXXXXX", base && *base ? base : "/tmp");
    int ports[3];
    if (!mkdtemp(self->dir) || s_free_ports(ports) != 0) {
        fprintf(stderr, "# cannot make a directory or find free ports: %s\n", strerror(errno));
        free(self);
        return NULL;
    }
    snprintf(self->data_dir, sizeof self->data_dir, "%s/data", self->dir);
    snprintf(self->log_path, sizeof self->log_path, "%s/nexusd.log", self->dir);
    snprintf(self->control, sizeof self->control, "tcp://127.0.0.1:%d", ports[0]);
    snprintf(self->events_in, sizeof self->events_in, "tcp://127.0.0.1:%d", ports[1]);
    snprintf(self->events_out, sizeof self->events_out, "tcp://127.0.0.1:%d", ports[2]);
    snprintf(self->sync, sizeof self->sync, "%s", sync);
    if (s_spawn(self) != 0)
        bench_broker_destroy(&self);
    return self;
}

int bench_broker_restart(bench_broker_t *self, const char *sync)
{
    if (self->pid)
        bench_broker_stop(self);
    snprintf(self->sync, sizeof self->sync, "%s", sync);
    return s_spawn(self);
}

int bench_broker_stop(bench_broker_t *self)
{
    if (!self->pid)
        return 0;
    kill(self->pid, SIGTERM);
    int status = 0, rc = -1;
    for (int waited = 0; waited < S_STOP_TIMEOUT_MS; waited += 10) {
        pid_t got = waitpid(self->pid, &status, WNOHANG);
        if (got == self->pid) {
            rc = 0;
            break;
        }
        s_sleep_us(10000);
    }
    if (rc != 0) {
        fprintf(stderr, "# BROKER PROBLEM: nexusd did not exit %d ms after SIGTERM; killing\n",
                S_STOP_TIMEOUT_MS);
        kill(self->pid, SIGKILL);
        waitpid(self->pid, &status, 0);
    } else if (WIFSIGNALED(status)) {
        fprintf(stderr, "# BROKER PROBLEM: nexusd died of signal %d\n", WTERMSIG(status));
        s_print_log(self);
        rc = -1;
    } else if (WEXITSTATUS(status) != 0) {
        fprintf(stderr, "# BROKER PROBLEM: nexusd exited with status %d\n", WEXITSTATUS(status));
        s_print_log(self);
        rc = WEXITSTATUS(status);
    }
    self->pid = 0;
    return rc;
}

static int s_unlink_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

void bench_broker_destroy(bench_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bench_broker_t *self = *self_p;
    bench_broker_stop(self);
    const char *keep = getenv("NEXUS_BENCH_KEEP");
    if (keep && *keep && *keep != '0')
        fprintf(stderr, "# kept %s\n", self->dir);
    else
        nftw(self->dir, s_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
    for (int i = 0; self->extra[i]; i++)
        free(self->extra[i]);
    free(self);
    *self_p = NULL;
}

static uint64_t s_get_u64(const msgpack_object *map, const char *key)
{
    uint64_t value = 0;
    nx_map_u64(map, key, &value, NULL);
    return value;
}

int bench_broker_state(bench_broker_t *self, void *ctx, bench_state_t *out)
{
    memset(out, 0, sizeof *out);
    void *dealer = bench_dealer(ctx, self->control);
    if (!dealer)
        return -1;
    const char req[] = "\x82\xa2op\xa5state\xa2id\x07";
    int rc = -1;
    bench_reply_t reply;
    if (zmq_send(dealer, req, sizeof req - 1, 0) >= 0 &&
        bench_recv_reply(dealer, &reply, 5000) == 0) {
        const msgpack_object *map = reply.map;
        if (bench_reply_ok(map, NULL)) {
            out->events_total = s_get_u64(map, "events_total");
            out->events_out = s_get_u64(map, "events_out");
            out->batches = s_get_u64(map, "batches");
            const msgpack_object *drops = nx_map_get(map, "drops");
            if (drops) {
                out->drops = s_get_u64(drops, "total");
                out->drop_send = s_get_u64(drops, "send");
            }
            const msgpack_object *hist = nx_map_get(map, "history");
            if (hist) {
                out->last_seq = s_get_u64(hist, "last_seq");
                out->count = s_get_u64(hist, "count");
            }
            rc = 0;
        }
        bench_reply_destroy(&reply);
    }
    zmq_close(dealer);
    return rc;
}

/*  ---- Control plane ---------------------------------------------------- */

void *bench_dealer(void *ctx, const char *endpoint)
{
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (!sock)
        return NULL;
    int linger = 0, hwm = 100000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(sock, endpoint) != 0) {
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

void bench_pack_publish(msgpack_sbuffer *buf, uint64_t id, const char *topic, const void *payload,
                        size_t len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    nx_pack_kv_str(&pk, "op", "publish");
    nx_pack_kv_u64(&pk, "id", id);
    nx_pack_kv_str(&pk, "topic", topic);
    nx_pack_kv_bin(&pk, "payload", payload, len);
}

int bench_recv_reply(void *dealer, bench_reply_t *reply, int timeout_ms)
{
    if (timeout_ms > 0) {
        zmq_pollitem_t item = {dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, timeout_ms) <= 0)
            return -1;
    }
    zmq_msg_init(&reply->frame);
    if (zmq_msg_recv(&reply->frame, dealer, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&reply->frame);
        return -1;
    }
    msgpack_unpacked_init(&reply->unpacked);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&reply->unpacked, zmq_msg_data(&reply->frame),
                                                   zmq_msg_size(&reply->frame), &off);
    reply->map = &reply->unpacked.data;
    if (ur != MSGPACK_UNPACK_SUCCESS || reply->map->type != MSGPACK_OBJECT_MAP) {
        bench_reply_destroy(reply);
        return -1;
    }
    return 0;
}

void bench_reply_destroy(bench_reply_t *reply)
{
    msgpack_unpacked_destroy(&reply->unpacked);
    zmq_msg_close(&reply->frame);
    reply->map = NULL;
}

bool bench_reply_ok(const msgpack_object *map, uint64_t *id)
{
    const msgpack_object *ok = nx_map_get(map, "ok");
    const msgpack_object *rid = nx_map_get(map, "id");
    if (id && rid && rid->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *id = rid->via.u64;
    return ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
}

void bench_reply_print_error(const char *what, const msgpack_object *map)
{
    const char *err = "?", *msg = "?";
    size_t err_len = 1, msg_len = 1;
    nx_map_str(map, "error", &err, &err_len, NULL);
    nx_map_str(map, "message", &msg, &msg_len, NULL);
    fprintf(stderr, "# %s: %.*s: %.*s\n", what, (int)err_len, err, (int)msg_len, msg);
}

/*  ---- Event plane: subscribers ------------------------------------------
    One thread per subscriber. Every data event's payload starts with its
    index (u64) and its send time (u64 ns, CLOCK_MONOTONIC); events on the
    warm-up topic only show that the path through the broker is open.      */

typedef struct {
    void *ctx;                 /* shared context                           */
    const char *endpoint;      /* the broker's XPUB                        */
    uint64_t n;                /* events to expect                         */
    uint64_t *lat;             /* latency per index (ns), or NULL          */
    atomic_int *pub_done;      /* set when the publisher sent everything   */
    atomic_uint_fast64_t next; /* highest index seen + 1                   */
    atomic_int ready;          /* subscribed                               */
    atomic_int warm;           /* saw a warm-up event                      */
    atomic_int failed;         /* could not set up                         */
    uint64_t received;         /* data events received                     */
    uint64_t out_of_order;     /* index lower than one seen before         */
    uint64_t t_last_ns;        /* when the last data event came            */
    pthread_t thread;
} s_sub_t;

static void *s_sub_run(void *arg)
{
    s_sub_t *self = arg;
    void *sock = zmq_socket(self->ctx, ZMQ_SUB);
    int hwm = 0, timeo = 100, linger = 0;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeo, sizeof timeo);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(sock, self->endpoint) != 0) {
        atomic_store(&self->failed, 1);
        atomic_store(&self->ready, 1);
        zmq_close(sock);
        return NULL;
    }
    atomic_store(&self->ready, 1);
    zmq_msg_t frames[3];
    for (int i = 0; i < 3; i++)
        zmq_msg_init(&frames[i]);
    uint64_t idle_since = bench_now_ns();
    while (true) {
        if (zmq_msg_recv(&frames[0], sock, 0) < 0) {
            uint64_t now = bench_now_ns();
            if (atomic_load(self->pub_done) && now - idle_since > S_IDLE_TIMEOUT_NS)
                break;
            if (!atomic_load(self->pub_done))
                idle_since = now;
            continue;
        }
        int nframes = 1;
        bool more = zmq_msg_more(&frames[0]);
        while (more) {
            zmq_msg_t *f = nframes < 3 ? &frames[nframes] : &frames[2];
            zmq_msg_recv(f, sock, 0);
            more = zmq_msg_more(f);
            nframes++;
        }
        uint64_t now = bench_now_ns();
        idle_since = now;
        /*  One frame per event: topic NUL stamp payload (nx_codec.h).      */
        nx_event_msg_t em;
        if (nframes != 1 ||
            nx_event_msg_decode(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), &em) != 0)
            continue;
        if (em.topic_len == strlen(S_WARM_TOPIC) &&
            memcmp(em.topic, S_WARM_TOPIC, strlen(S_WARM_TOPIC)) == 0) {
            atomic_store(&self->warm, 1);
            continue;
        }
        if (em.payload_len < 16)
            continue;
        uint64_t idx, sent;
        memcpy(&idx, em.payload, 8);
        memcpy(&sent, em.payload + 8, 8);
        if (idx >= self->n)
            continue;
        self->received++;
        self->t_last_ns = now;
        if (self->lat)
            self->lat[idx] = now - sent;
        if (idx + 1 > atomic_load_explicit(&self->next, memory_order_relaxed))
            atomic_store_explicit(&self->next, idx + 1, memory_order_release);
        else
            self->out_of_order++;
        if (idx == self->n - 1)
            break;
    }
    for (int i = 0; i < 3; i++)
        zmq_msg_close(&frames[i]);
    zmq_close(sock);
    return NULL;
}

static int s_subs_start(s_sub_t *subs, int nsubs, void *ctx, const char *endpoint, uint64_t n,
                        uint64_t *lat, atomic_int *pub_done)
{
    for (int i = 0; i < nsubs; i++) {
        s_sub_t *s = &subs[i];
        memset(s, 0, sizeof *s);
        s->ctx = ctx;
        s->endpoint = endpoint;
        s->n = n;
        s->lat = lat;
        s->pub_done = pub_done;
        atomic_init(&s->next, 0);
        atomic_init(&s->ready, 0);
        atomic_init(&s->warm, 0);
        atomic_init(&s->failed, 0);
        if (pthread_create(&s->thread, NULL, s_sub_run, s) != 0)
            return -1;
    }
    for (int i = 0; i < nsubs; i++)
        while (!atomic_load(&subs[i].ready))
            s_sleep_us(1000);
    for (int i = 0; i < nsubs; i++)
        if (atomic_load(&subs[i].failed))
            return -1;
    return 0;
}

/*  A PUB socket connected to the broker's XSUB.                             */
static void *s_pub_new(void *ctx, const char *endpoint, int hwm)
{
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    int linger = 2000;
    zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(pub, endpoint) != 0) {
        zmq_close(pub);
        return NULL;
    }
    return pub;
}

/*  Sends warm-up events until every subscriber has seen one: then the
    publisher's connection carries the broker's subscription and every
    subscriber's subscription has reached the broker.                       */
static int s_warm_up(void *pub, s_sub_t *subs, int nsubs)
{
    for (int tries = 0; tries < 500; tries++) {
        zmq_send(pub, S_WARM_TOPIC, strlen(S_WARM_TOPIC), ZMQ_SNDMORE);
        zmq_send(pub, "w", 1, 0);
        s_sleep_us(20000);
        int warm = 0;
        for (int i = 0; i < nsubs; i++)
            warm += atomic_load(&subs[i].warm);
        if (warm == nsubs)
            return 0;
    }
    fprintf(stderr, "# warm-up failed: events do not reach the subscribers\n");
    return -1;
}

static uint64_t s_min_next(s_sub_t *subs, int nsubs)
{
    uint64_t min = UINT64_MAX;
    for (int i = 0; i < nsubs; i++) {
        uint64_t next = atomic_load_explicit(&subs[i].next, memory_order_acquire);
        if (next < min)
            min = next;
    }
    return min;
}

int bench_flood(bench_broker_t *broker, void *ctx, const char *topic, uint64_t n, size_t payload,
                int nsubs, uint64_t window, bench_flood_t *out)
{
    memset(out, 0, sizeof *out);
    if (nsubs < 1 || nsubs > BENCH_SUBS_MAX || payload < 16 || n == 0)
        return -1;
    s_sub_t subs[BENCH_SUBS_MAX];
    atomic_int pub_done;
    atomic_init(&pub_done, 0);
    /*  The window bounds what is queued anywhere; the PUB's own HWM only
        has to be above it so that it never drops.                          */
    void *pub = s_pub_new(ctx, broker->events_in, (int)(window * 2 + 1000));
    uint8_t *buf = calloc(1, payload);
    if (!pub || !buf) {
        free(buf);
        return -1;
    }
    int rc = s_subs_start(subs, nsubs, ctx, broker->events_out, n, NULL, &pub_done);
    if (rc == 0)
        rc = s_warm_up(pub, subs, nsubs);
    size_t tlen = strlen(topic);
    uint64_t t0 = bench_now_ns(), min_next = 0, i = 0;
    for (i = 0; rc == 0 && i < n; i++) {
        if (i - min_next >= window) {
            min_next = s_min_next(subs, nsubs);
            uint64_t waited_since = bench_now_ns();
            while (i - min_next >= window) {
                s_sleep_us(20);
                uint64_t m = s_min_next(subs, nsubs);
                if (m != min_next)
                    waited_since = bench_now_ns();
                else if (bench_now_ns() - waited_since > S_IDLE_TIMEOUT_NS) {
                    fprintf(stderr, "# flood: no progress for 3 s at %" PRIu64 " sent\n", i);
                    out->stalled = true;
                    break;
                }
                min_next = m;
            }
            if (out->stalled)
                break;
        }
        uint64_t now = bench_now_ns();
        memcpy(buf, &i, 8);
        memcpy(buf + 8, &now, 8);
        zmq_send(pub, topic, tlen, ZMQ_SNDMORE);
        zmq_send(pub, buf, payload, 0);
    }
    out->sent = i;
    out->send_seconds = (double)(bench_now_ns() - t0) / 1e9;
    atomic_store(&pub_done, 1);
    uint64_t t_last = t0;
    for (int k = 0; k < nsubs; k++) {
        pthread_join(subs[k].thread, NULL);
        out->received[k] = subs[k].received;
        out->out_of_order += subs[k].out_of_order;
        if (subs[k].t_last_ns > t_last)
            t_last = subs[k].t_last_ns;
        if (subs[k].received < out->sent)
            out->stalled = out->stalled || subs[k].received == 0;
    }
    out->seconds = (double)(t_last - t0) / 1e9;
    zmq_close(pub);
    free(buf);
    return rc;
}

/*  ---- Event plane: paced latency stream ------------------------------------ */

int bench_stream(bench_broker_t *broker, void *ctx, const char *topic, uint64_t n, unsigned rate,
                 size_t payload, bench_stream_t *out)
{
    memset(out, 0, sizeof *out);
    if (payload < 16 || n == 0 || rate == 0)
        return -1;
    s_sub_t sub;
    atomic_int pub_done;
    atomic_init(&pub_done, 0);
    void *pub = s_pub_new(ctx, broker->events_in, 1000000);
    uint8_t *buf = calloc(1, payload);
    uint64_t *lat = malloc(n * sizeof *lat);
    if (!pub || !buf || !lat) {
        free(buf);
        free(lat);
        return -1;
    }
    for (uint64_t i = 0; i < n; i++)
        lat[i] = UINT64_MAX;
    /*  Default timer slack (50 us) would blur a 100 us schedule.          */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    int rc = s_subs_start(&sub, 1, ctx, broker->events_out, n, lat, &pub_done);
    if (rc == 0)
        rc = s_warm_up(pub, &sub, 1);
    size_t tlen = strlen(topic);
    uint64_t period = 1000000000ull / rate, t0 = bench_now_ns(), late_max = 0, i;
    for (i = 0; rc == 0 && i < n; i++) {
        uint64_t due = t0 + i * period, now = bench_now_ns();
        if (now < due) {
            struct timespec ts = {(time_t)(due / 1000000000ull), (long)(due % 1000000000ull)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
            now = bench_now_ns();
        } else if (now - due > late_max)
            late_max = now - due;
        memcpy(buf, &i, 8);
        memcpy(buf + 8, &now, 8);
        zmq_send(pub, topic, tlen, ZMQ_SNDMORE);
        zmq_send(pub, buf, payload, 0);
    }
    out->sent = i;
    out->seconds = (double)(bench_now_ns() - t0) / 1e9;
    out->late_max_us = (double)late_max / 1000.0;
    atomic_store(&pub_done, 1);
    pthread_join(sub.thread, NULL);
    out->received = sub.received;
    /*  $BENCH_DUMP=FILE writes "index latency_us" per event, to see when
        the slow ones happen.                                               */
    const char *dump = getenv("BENCH_DUMP");
    FILE *f = dump && *dump ? fopen(dump, "w") : NULL;
    for (uint64_t k = 0; f && k < out->sent; k++)
        if (lat[k] != UINT64_MAX)
            fprintf(f, "%" PRIu64 " %.1f\n", k, (double)lat[k] / 1000.0);
    if (f)
        fclose(f);
    size_t m = 0;
    for (uint64_t k = 0; k < out->sent; k++)
        if (lat[k] != UINT64_MAX)
            lat[m++] = lat[k];
    bench_percentiles(lat, m, &out->lat);
    zmq_close(pub);
    free(buf);
    free(lat);
    return rc;
}

/*  ---- Arguments --------------------------------------------------------- */

/*  True when usage names the option --name (len bytes of name).           */
static bool s_usage_names(const char *usage, const char *name, size_t len)
{
    for (const char *p = strstr(usage, "--"); p; p = strstr(p + 2, "--")) {
        char after = p[2 + len];
        if (strncmp(p + 2, name, len) == 0 && !isalnum((unsigned char)after) && after != '-')
            return true;
    }
    return false;
}

void bench_usage(int argc, char **argv, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            exit(0);
        }
        size_t len = strcspn(a + 2, "=");
        if (strncmp(a, "--", 2) == 0 && (len == 0 || !s_usage_names(usage, a + 2, len))) {
            fprintf(stderr, "%s: unknown option %s\n%s", argv[0], a, usage);
            exit(2);
        }
    }
}

const char *bench_arg_str(int argc, char **argv, const char *name, const char *dflt)
{
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, name, len) != 0)
            continue;
        if (a[2 + len] == '=')
            return a + 3 + len;
        if (a[2 + len] == 0 && i + 1 < argc)
            return argv[i + 1];
    }
    return dflt;
}

uint64_t bench_arg_u64(int argc, char **argv, const char *name, uint64_t dflt)
{
    const char *value = bench_arg_str(argc, argv, name, NULL);
    if (!value)
        return dflt;
    char *end;
    double v = strtod(value, &end); /* accepts 1e6 */
    if (end == value || v < 0) {
        fprintf(stderr, "bad value for --%s: %s\n", name, value);
        exit(2);
    }
    return (uint64_t)v;
}
