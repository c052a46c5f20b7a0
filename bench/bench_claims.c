/*  =========================================================================
    bench_claims - claim + complete pairs per second through nexusd's
    control plane, with 1, 16 and 64 concurrent clients, sync=full.

    Starts its own nexusd (path from --nexusd PATH or argv[1], else $NEXUSD,
    else the one the build made, else build/broker/nexusd) on free loopback
    ports with a fresh data directory. Every client is a thread with its
    own DEALER and its own registered session. It keeps a window of pairs
    in flight: each claims a unique work id, then completes it with the
    token, then starts the next. Window 1 is a worker that waits for every
    reply (the throughput comes from the broker committing the requests of
    many clients in one fsync); window 8 is a dispatcher that keeps eight
    items moving, as a pipelined client of Redis or NATS would.

    Prints one line per window and client count:
        claims_64_clients: 5234 pairs/s, claim p50 5.9 ms p99 10.5 ms,
        complete p50 5.9 ms p99 10.6 ms (sync=full, 1 pair in flight per
        client, ...)
        claims_64_clients_window_8: ...

    Environment: BENCH_SECONDS (default 5) per run, BENCH_CLIENTS (default
    "1,16,64"), BENCH_WINDOWS (pairs in flight per client, default "1,8").

    Build alone: gcc -O2 -o bench_claims bench/bench_claims.c \
                     $(pkg-config --cflags --libs libzmq msgpack) -lpthread
    =========================================================================
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define S_REPLY_TIMEOUT_MS 10000

static void *s_ctx;
static char s_control[64];

static uint64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/*  ---- msgpack helpers ----------------------------------------------------- */

static void s_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void s_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    s_pack_str(pk, k);
    s_pack_str(pk, v);
}

static void s_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    s_pack_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static const msgpack_object *s_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/*  Reads one reply: 1 ok, 0 error reply (printed), -1 nothing within the
    timeout, -2 unreadable. *id and *token get the reply's fields.         */
static int s_recv_reply(void *sock, long timeout_ms, uint64_t *id, uint64_t *token)
{
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return -1;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return -1;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = -2;
    if (msgpack_unpack_next(&u, zmq_msg_data(&msg), zmq_msg_size(&msg), NULL) ==
        MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *rid = s_get(&u.data, "id");
        const msgpack_object *ok = s_get(&u.data, "ok");
        const msgpack_object *tok = s_get(&u.data, "token");
        if (rid && rid->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            *id = rid->via.u64;
            *token = tok && tok->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? tok->via.u64 : 0;
            if (ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean)
                rc = 1;
            else {
                const msgpack_object *m = s_get(&u.data, "message");
                fprintf(stderr, "bench_claims: error reply: %.*s\n",
                        m && m->type == MSGPACK_OBJECT_STR ? (int)m->via.str.size : 1,
                        m && m->type == MSGPACK_OBJECT_STR ? m->via.str.ptr : "?");
                rc = 0;
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    zmq_msg_close(&msg);
    return rc;
}

/*  Sends buf, waits for the reply with id `id`; returns 1 when ok, 0 when
    the broker answered an error (printed), -1 on timeout. *token gets the
    reply's token when there is one.                                        */
static int s_call(void *sock, msgpack_sbuffer *buf, uint64_t id, uint64_t *token)
{
    if (zmq_send(sock, buf->data, buf->size, 0) < 0)
        return -1;
    uint64_t deadline = s_now_ns() + (uint64_t)S_REPLY_TIMEOUT_MS * 1000000ull;
    for (int i = 0; i < 1000000; i++) {
        uint64_t now = s_now_ns();
        if (now >= deadline)
            return -1;
        uint64_t rid = 0, tok = 0;
        int rc = s_recv_reply(sock, (long)((deadline - now) / 1000000) + 1, &rid, &tok);
        if (rc >= 0 && rid == id) {
            if (token && tok)
                *token = tok;
            return rc;
        }
    }
    return -1;
}

static void *s_dealer(void)
{
    void *sock = zmq_socket(s_ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(sock, s_control);
    return sock;
}

/*  ---- Latency arrays ------------------------------------------------------ */

typedef struct {
    uint64_t *v;
    size_t n, cap;
} s_lat_t;

static void s_lat_add(s_lat_t *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint64_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ns;
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double s_pct_ms(const s_lat_t *l, double p)
{
    if (!l->n)
        return 0;
    size_t i = (size_t)(p * (double)(l->n - 1) + 0.5);
    return (double)l->v[i] / 1e6;
}

/*  ---- Clients ------------------------------------------------------------- */

typedef struct {
    int index, n_clients, window;
    double seconds;
    pthread_barrier_t *barrier;
    volatile uint64_t *start_ns; /* set by the main thread after the barrier */
    uint64_t pairs, errors;
    s_lat_t claim, complete;
    bool failed;
} s_client_t;

/*  One pair in flight: the claim or the complete that is outstanding.      */
typedef struct {
    uint64_t req;   /* id of the outstanding request, 0 when idle */
    uint64_t sent;  /* when it was sent (ns) */
    uint64_t token; /* the grant's fencing token, once claimed */
    uint64_t n;     /* the work id's number */
    bool completing;
} s_slot_t;

/*  Starts a request on work item n: a map of `fields` entries whose first
    four are op, id, session and work_id; the caller packs the rest.      */
static void s_pack_work_head(msgpack_packer *pk, int fields, const char *op, uint64_t id,
                             const char *session, const s_client_t *self, uint64_t n)
{
    char work_id[96];
    snprintf(work_id, sizeof work_id, "bench/%d/%d/%d/%llu", self->n_clients, self->window,
             self->index, (unsigned long long)n);
    msgpack_sbuffer_clear(pk->data);
    msgpack_pack_map(pk, (uint32_t)fields);
    s_kv_str(pk, "op", op);
    s_kv_u64(pk, "id", id);
    s_kv_str(pk, "session", session);
    s_kv_str(pk, "work_id", work_id);
}

static int s_send_claim(void *sock, msgpack_packer *pk, const char *session, s_client_t *self,
                        s_slot_t *slot, uint64_t id, uint64_t n)
{
    s_pack_work_head(pk, 5, "work.claim", id, session, self, n);
    s_kv_u64(pk, "ttl_ms", 60000);
    *slot = (s_slot_t){.req = id, .sent = s_now_ns(), .n = n};
    msgpack_sbuffer *buf = pk->data;
    return zmq_send(sock, buf->data, buf->size, 0) < 0 ? -1 : 0;
}

static int s_send_complete(void *sock, msgpack_packer *pk, const char *session, s_client_t *self,
                           s_slot_t *slot, uint64_t id)
{
    s_pack_work_head(pk, 6, "work.complete", id, session, self, slot->n);
    s_kv_u64(pk, "token", slot->token);
    s_kv_str(pk, "result", "ok");
    slot->req = id;
    slot->sent = s_now_ns();
    slot->completing = true;
    msgpack_sbuffer *buf = pk->data;
    return zmq_send(sock, buf->data, buf->size, 0) < 0 ? -1 : 0;
}

/*  Keeps `window` pairs in flight: each slot claims a fresh work id, then
    completes it with the granted token, then starts the next. With a
    window of 1 a client waits for every reply before its next request.    */
static void *s_client_run(void *arg)
{
    s_client_t *self = arg;
    void *sock = s_dealer();
    char session[64];
    snprintf(session, sizeof session, "bench-%d-%d-w%d", self->n_clients, self->index,
             self->window);
    uint64_t id = 1, next_n = 0;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    s_slot_t *slots = calloc((size_t)self->window, sizeof *slots);

    msgpack_pack_map(&pk, 4);
    s_kv_str(&pk, "op", "session.register");
    s_kv_u64(&pk, "id", id);
    s_kv_str(&pk, "session", session);
    s_kv_u64(&pk, "heartbeat_ms", 600000);
    if (!slots || s_call(sock, &buf, id++, NULL) != 1)
        self->failed = true;
    pthread_barrier_wait(self->barrier);
    pthread_barrier_wait(self->barrier); /* the main thread sets start_ns */
    uint64_t end = *self->start_ns + (uint64_t)(self->seconds * 1e9);
    int busy = 0;
    for (int k = 0; !self->failed && k < self->window; k++, busy++)
        if (s_send_claim(sock, &pk, session, self, &slots[k], id++, next_n++) != 0)
            self->failed = true;
    /*  Bounded: every pass either reads a reply or times out and fails.    */
    for (uint64_t pass = 0; !self->failed && busy > 0 && pass < 1000000000ull; pass++) {
        uint64_t rid = 0, token = 0;
        int rc = s_recv_reply(sock, S_REPLY_TIMEOUT_MS, &rid, &token);
        if (rc == -1) {
            fprintf(stderr, "bench_claims: no reply within %d ms\n", S_REPLY_TIMEOUT_MS);
            self->failed = true;
            break;
        }
        s_slot_t *slot = NULL;
        for (int k = 0; k < self->window && !slot; k++)
            if (slots[k].req && slots[k].req == rid)
                slot = &slots[k];
        if (!slot || rc == -2)
            continue;
        uint64_t now = s_now_ns();
        bool more = now < end;
        if (rc == 1 && !slot->completing) {
            s_lat_add(&self->claim, now - slot->sent);
            slot->token = token;
            if (s_send_complete(sock, &pk, session, self, slot, id++) != 0)
                self->failed = true;
            continue;
        }
        if (rc == 1) {
            s_lat_add(&self->complete, now - slot->sent);
            self->pairs++;
        } else
            self->errors++;
        slot->req = 0;
        if (more) {
            if (s_send_claim(sock, &pk, session, self, slot, id++, next_n++) != 0)
                self->failed = true;
        } else
            busy--;
    }
    free(slots);
    msgpack_sbuffer_destroy(&buf);
    zmq_close(sock);
    return NULL;
}

static int s_run(int n_clients, int window, double seconds)
{
    s_client_t *clients = calloc((size_t)n_clients, sizeof *clients);
    pthread_t *threads = calloc((size_t)n_clients, sizeof *threads);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n_clients + 1);
    volatile uint64_t start_ns = 0;
    for (int i = 0; i < n_clients; i++) {
        clients[i] = (s_client_t){.index = i,
                                  .n_clients = n_clients,
                                  .window = window,
                                  .seconds = seconds,
                                  .barrier = &barrier,
                                  .start_ns = &start_ns};
        pthread_create(&threads[i], NULL, s_client_run, &clients[i]);
    }
    pthread_barrier_wait(&barrier); /* all registered */
    start_ns = s_now_ns();
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < n_clients; i++)
        pthread_join(threads[i], NULL);
    double elapsed = (double)(s_now_ns() - start_ns) / 1e9;
    pthread_barrier_destroy(&barrier);

    s_lat_t claim = {0}, complete = {0};
    uint64_t pairs = 0, errors = 0;
    bool failed = false;
    for (int i = 0; i < n_clients; i++) {
        pairs += clients[i].pairs;
        errors += clients[i].errors;
        failed |= clients[i].failed;
        for (size_t k = 0; k < clients[i].claim.n; k++)
            s_lat_add(&claim, clients[i].claim.v[k]);
        for (size_t k = 0; k < clients[i].complete.n; k++)
            s_lat_add(&complete, clients[i].complete.v[k]);
        free(clients[i].claim.v);
        free(clients[i].complete.v);
    }
    qsort(claim.v, claim.n, sizeof *claim.v, s_cmp_u64);
    qsort(complete.v, complete.n, sizeof *complete.v, s_cmp_u64);
    char label[64];
    if (window > 1)
        snprintf(label, sizeof label, "claims_%d_clients_window_%d", n_clients, window);
    else
        snprintf(label, sizeof label, "claims_%d_clients", n_clients);
    printf("%s: %.0f pairs/s, claim p50 %.2f ms p99 %.2f ms, complete p50 %.2f ms "
           "p99 %.2f ms (sync=full, %d pair%s in flight per client, %llu pairs in %.1f s%s)\n",
           label, (double)pairs / elapsed, s_pct_ms(&claim, 0.50), s_pct_ms(&claim, 0.99),
           s_pct_ms(&complete, 0.50), s_pct_ms(&complete, 0.99), window, window > 1 ? "s" : "",
           (unsigned long long)pairs, elapsed, errors ? ", ERRORS" : "");
    fflush(stdout);
    free(claim.v);
    free(complete.v);
    free(clients);
    free(threads);
    return failed || errors ? -1 : 0;
}

/*  ---- The broker ---------------------------------------------------------- */

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static pid_t s_start_broker(const char *nexusd, const char *dir)
{
    char in[64], out[64], log[4200];
    snprintf(s_control, sizeof s_control, "tcp://127.0.0.1:%d", s_free_port());
    snprintf(in, sizeof in, "tcp://127.0.0.1:%d", s_free_port());
    snprintf(out, sizeof out, "tcp://127.0.0.1:%d", s_free_port());
    snprintf(log, sizeof log, "%s/nexusd.log", dir);
    char data[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(nexusd, nexusd, "--data-dir", data, "--control-endpoints", s_control,
              "--events-in-endpoints", in, "--events-out-endpoints", out, "--sync", "full",
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    /*  Ready when it answers ping.                                          */
    void *sock = s_dealer();
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    bool up = false;
    for (uint64_t id = 1; id < 100 && !up; id++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "bench_claims: nexusd exited (see %s)\n", log);
            break;
        }
        msgpack_sbuffer_clear(&buf);
        msgpack_pack_map(&pk, 2);
        s_kv_str(&pk, "op", "ping");
        s_kv_u64(&pk, "id", id);
        zmq_send(sock, buf.data, buf.size, 0);
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 100) > 0)
            up = true;
    }
    msgpack_sbuffer_destroy(&buf);
    zmq_close(sock);
    if (!up) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

int main(int argc, char **argv)
{
    const char *nexusd = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--nexusd") == 0 && i + 1 < argc)
            nexusd = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf(
                "usage: bench_claims [--nexusd PATH | PATH]\n"
                "env: NEXUSD, BENCH_SECONDS (5), BENCH_CLIENTS (1,16,64), BENCH_WINDOWS (1,8)\n");
            return 0;
        } else
            nexusd = argv[i];
    }
    if (!nexusd || !*nexusd)
        nexusd = getenv("NEXUSD");
#ifdef BENCH_NEXUSD_DEFAULT
    if (!nexusd || !*nexusd)
        nexusd = BENCH_NEXUSD_DEFAULT;
#endif
    if (!nexusd || !*nexusd)
        nexusd = "build/broker/nexusd";
    if (access(nexusd, X_OK) != 0) {
        fprintf(stderr,
                "bench_claims: cannot run '%s' (give the nexusd path as argument or "
                "in NEXUSD)\n",
                nexusd);
        return 2;
    }
    double seconds = getenv("BENCH_SECONDS") ? atof(getenv("BENCH_SECONDS")) : 5.0;
    if (seconds <= 0)
        seconds = 5.0;
    const char *list = getenv("BENCH_CLIENTS") ? getenv("BENCH_CLIENTS") : "1,16,64";
    const char *windows = getenv("BENCH_WINDOWS") ? getenv("BENCH_WINDOWS") : "1,8";

    char dir[] = "/tmp/bench-claims-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    s_ctx = zmq_ctx_new();
    zmq_ctx_set(s_ctx, ZMQ_IO_THREADS, 1);
    zmq_ctx_set(s_ctx, ZMQ_MAX_SOCKETS, 4096);
    pid_t pid = s_start_broker(nexusd, dir);
    int rc = 0;
    if (pid < 0) {
        fprintf(stderr, "bench_claims: nexusd did not start\n");
        rc = 1;
    } else {
        char *wcopy = strdup(windows), *wsave = NULL;
        for (char *w = strtok_r(wcopy, ",", &wsave); w; w = strtok_r(NULL, ",", &wsave)) {
            int window = atoi(w);
            if (window < 1 || window > 256)
                continue;
            char *copy = strdup(list), *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                int n = atoi(tok);
                if (n < 1 || n > 1024)
                    continue;
                if (s_run(n, window, seconds) != 0)
                    rc = 1;
            }
            free(copy);
        }
        free(wcopy);
        kill(pid, SIGTERM);
        int status = 0;
        for (int i = 0; i < 100 && waitpid(pid, &status, WNOHANG) == 0; i++)
            usleep(50000);
        if (waitpid(pid, &status, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
    }
    zmq_ctx_term(s_ctx);
    nftw(dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
