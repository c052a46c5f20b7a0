/*  =========================================================================
    compare_mqtt - the Mosquitto side of bench/compare, through libmosquitto
    (Debian's libmosquitto-dev). MQTT 3.1.1, QoS 0, clean sessions.

      --workload pubsub|fanout  one publisher client, --subs subscriber
                                clients, each with its own network thread
                                (mosquitto_loop_start); the publisher writes
                                from its own thread (no network thread), all
                                with TCP_NODELAY

    Mosquitto has no durable acknowledged log, no replay and no claims: the
    driver marks those cells "n/a".

    --port P (127.0.0.1). Prints RESULT lines (compare_common.h).
    =========================================================================
*/

#include "compare_common.h"

#include <mosquitto.h>

static int s_port = 1883;

typedef struct {
    cmp_flood_t *flood;
    int idx;
    _Atomic int subscribed;
} s_sub_t;

static void s_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    (void)m;
    s_sub_t *s = (s_sub_t *)ud;
    cmp_deliver(s->flood, s->idx, msg->payload, (size_t)msg->payloadlen);
}

static void s_on_subscribe(struct mosquitto *m, void *ud, int mid, int qos_count,
                           const int *granted)
{
    (void)m;
    (void)mid;
    (void)qos_count;
    (void)granted;
    atomic_store(&((s_sub_t *)ud)->subscribed, 1);
}

static struct mosquitto *s_client(const char *id, void *ud)
{
    struct mosquitto *m = mosquitto_new(id, true, ud);
    if (!m)
        return NULL;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    if (mosquitto_connect(m, "127.0.0.1", s_port, 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "# mosquitto connect %d failed\n", s_port);
        return NULL;
    }
    return m;
}

static int s_pub(void *arg, const void *buf, size_t len)
{
    int rc =
        mosquitto_publish((struct mosquitto *)arg, NULL, "bench/data", (int)len, buf, 0, false);
    if (rc == MOSQ_ERR_SUCCESS)
        return 0;
    if (rc == MOSQ_ERR_NOMEM || rc == MOSQ_ERR_OVERSIZE_PACKET)
        return -1;
    return 1;
}

/*  The publisher has no network thread: mosquitto_publish writes in the
    caller's thread; this services the socket (reads, pings) meanwhile.    */
static void s_flush(void *arg)
{
    mosquitto_loop((struct mosquitto *)arg, 0, 1);
}

static const char *s_usage = "usage: compare_mqtt [options]\n"
                             "  the Mosquitto side of bench/compare (pubsub, fanout)\n"
                             "  --port P         127.0.0.1 port (1883)\n" CMP_USAGE_COMMON;

int main(int argc, char **argv)
{
    cmp_args_t a;
    cmp_parse(argc, argv, s_usage, &a);
    s_port = (int)bench_arg_u64(argc, argv, "port", 1883);
    if (strcmp(a.workload, "pubsub") && strcmp(a.workload, "fanout")) {
        fprintf(stderr, "mosquitto: workload %s not applicable\n", a.workload);
        return 2;
    }
    mosquitto_lib_init();
    static cmp_flood_t flood;
    static s_sub_t subs[CMP_SUBS_MAX];
    struct mosquitto *ms[CMP_SUBS_MAX];
    flood.nsubs = (int)a.subs;
    for (int i = 0; i < flood.nsubs; i++) {
        char id[64];
        snprintf(id, sizeof id, "sub-%d-%d", (int)getpid(), i);
        subs[i].flood = &flood;
        subs[i].idx = i;
        if (!(ms[i] = s_client(id, &subs[i])))
            return 1;
        mosquitto_message_callback_set(ms[i], s_on_message);
        mosquitto_subscribe_callback_set(ms[i], s_on_subscribe);
        mosquitto_subscribe(ms[i], NULL, "bench/data", 0);
        mosquitto_loop_start(ms[i]);
    }
    char id[64];
    snprintf(id, sizeof id, "pub-%d", (int)getpid());
    struct mosquitto *pub = s_client(id, NULL);
    if (!pub)
        return 1;
    int status = 0;
    for (int r = 0; r < (int)a.reps; r++) {
        cmp_flood_result_t res;
        if (cmp_flood_run(&flood, a.n, a.size, a.window, s_pub, s_flush, pub, &res) != 0)
            return 1;
        cmp_print_flood(a.label, "mosquitto", r, &res);
    }
    mosquitto_disconnect(pub);
    mosquitto_destroy(pub);
    for (int i = 0; i < flood.nsubs; i++) {
        mosquitto_disconnect(ms[i]);
        mosquitto_loop_stop(ms[i], false);
        mosquitto_destroy(ms[i]);
    }
    mosquitto_lib_cleanup();
    return status;
}
