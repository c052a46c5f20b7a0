/*  =========================================================================
    nx_snapshot - the state snapshot file: active sessions and claims as
    JSON, for tools that read files (the seeds' SSOT.json). Written to a
    temporary file in the same directory, flushed, then renamed over the
    old one, so a reader never sees half a file. The loop packs the state
    (msgpack, cheap); a thread of its own makes the JSON and writes it.
    =========================================================================
*/

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nx_base64.h"
#include "nx_coord.h"
#include "nx_log.h"
#include "nx_topic.h"

void nx_claims_pack_active(nx_broker_t *self, msgpack_packer *pk);

/*  A JSON string of bytes that should be UTF-8: every byte that is not
    part of a valid sequence becomes U+FFFD, so that one bad string (a
    client may send any bytes as a msgpack str) never stops the snapshot.  */
static json_t *s_json_str(const char *ptr, size_t n)
{
    char *out = malloc(n * 3 + 1);
    if (!out)
        return json_null();
    const uint8_t *p = (const uint8_t *)ptr;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        /*  NUL is refused too: jansson would end the string there.         */
        size_t len = p[i] < 0x80 ? p[i] != 0 : nx_utf8_seq(p, n, i);
        if (len) {
            memcpy(out + j, p + i, len);
            j += len;
            i += len;
        } else {
            memcpy(out + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
        }
    }
    json_t *s = json_stringn(out, j);
    free(out);
    return s ? s : json_null();
}

/*  msgpack -> JSON for what the broker itself packs: maps with string
    keys, arrays, strings, integers, floats, booleans, nil. Binary becomes
    {"$base64": ...} like everywhere else in nexus.                         */
static json_t *s_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return s_json_str(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: {
        char *out = nx_base64_encode((const uint8_t *)o->via.bin.ptr, o->via.bin.size);
        json_t *obj = out ? json_pack("{s:s}", "$base64", out) : json_null();
        free(out);
        return obj;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, s_to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR)
                continue;
            json_t *key = s_json_str(k->via.str.ptr, k->via.str.size);
            if (json_is_string(key))
                json_object_set_new(m, json_string_value(key), s_to_json(&o->via.map.ptr[i].val));
            json_decref(key);
        }
        return m;
    }
    default:
        return json_null();
    }
}

static json_t *s_packed_to_json(const char *data, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    json_t *j = NULL;
    if (msgpack_unpack_next(&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS)
        j = s_to_json(&u.data);
    msgpack_unpacked_destroy(&u);
    return j ? j : json_null();
}

/*  ---- The writer thread ------------------------------------------------ */

struct _nx_snapshot_t {
    char *path;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /*  The latest state, packed by the loop, not yet written: a newer one
        replaces it, so at most two exist (this and the one being written).*/
    msgpack_sbuffer pending;
    size_t sessions_len; /* the sessions array's bytes at its start      */
    uint64_t last_seq;
    bool has_pending;
    bool stop;
    bool failed;  /* the last write failed: the loop submits again      */
    int said_err; /* the writer's own: errno last logged, 0: it works   */
};

/*  Writes one state as JSON to a temporary file, flushes it and renames it
    over the path. Returns 0, or the errno of the step that failed (EIO
    when it set none).                                                      */
static int s_write(const char *path, const msgpack_sbuffer *buf, size_t sessions_len,
                   uint64_t last_seq)
{
    char iso[40];
    json_t *root = json_object();
    json_object_set_new(root, "generated_at", json_string(nx_iso8601(nx_now_us(), iso)));
    json_object_set_new(root, "last_seq", json_integer((json_int_t)last_seq));
    json_object_set_new(root, "sessions", s_packed_to_json(buf->data, sessions_len));
    json_object_set_new(root, "claims",
                        s_packed_to_json(buf->data + sessions_len, buf->size - sessions_len));
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    errno = 0;
    FILE *f = fopen(tmp, "w");
    int err = f ? 0 : errno;
    if (f) {
        if (json_dumpf(root, f, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 || fputc('\n', f) == EOF ||
            fflush(f) != 0 || fsync(fileno(f)) != 0)
            err = errno ? errno : EIO;
        if (fclose(f) != 0 && !err)
            err = errno ? errno : EIO;
        if (!err && rename(tmp, path) != 0)
            err = errno;
        if (err)
            unlink(tmp);
    }
    json_decref(root);
    return err ? err : 0;
}

/*  Turning the state into JSON and flushing the file take milliseconds per
    thousand claims: on the loop they would delay forwarding and lease
    expiry, so they happen here, on the state the loop packed.             */
static void *s_writer(void *arg)
{
    nx_snapshot_t *self = arg;
    pthread_mutex_lock(&self->lock);
    for (;;) {
        while (!self->has_pending && !self->stop)
            pthread_cond_wait(&self->cond, &self->lock);
        if (!self->has_pending)
            break; /* stopped with nothing left to write */
        msgpack_sbuffer buf = self->pending;
        size_t sessions_len = self->sessions_len;
        uint64_t last_seq = self->last_seq;
        msgpack_sbuffer_init(&self->pending);
        self->has_pending = false;
        pthread_mutex_unlock(&self->lock);
        uint64_t t0 = nx_mono_us();
        int err = s_write(self->path, &buf, sessions_len, last_seq);
        nx_debug("snapshot: %zu packed bytes written as JSON in %.1f ms", buf.size,
                 (double)(nx_mono_us() - t0) / 1000.0);
        msgpack_sbuffer_destroy(&buf);
        /*  A failed write is retried every second until it works: said
            when it starts failing (or fails otherwise), and when it works
            again, not at every try (a missing directory logged a line a
            second for ever).                                              */
        if (err && err != self->said_err)
            nx_warn("cannot write snapshot_file %s: %s (retried every second; said again when "
                    "it works)",
                    self->path, strerror(err));
        else if (!err && self->said_err)
            nx_info("snapshot_file %s written again", self->path);
        self->said_err = err;
        pthread_mutex_lock(&self->lock);
        self->failed = err != 0;
    }
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

nx_snapshot_t *nx_snapshot_new(const char *path)
{
    nx_snapshot_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->path = strdup(path);
    msgpack_sbuffer_init(&self->pending);
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);
    if (!self->path || pthread_create(&self->thread, NULL, s_writer, self) != 0) {
        free(self->path);
        pthread_mutex_destroy(&self->lock);
        pthread_cond_destroy(&self->cond);
        free(self);
        return NULL;
    }
    return self;
}

void nx_snapshot_destroy(nx_snapshot_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_snapshot_t *self = *self_p;
    /*  What was submitted last is written before the thread ends.         */
    pthread_mutex_lock(&self->lock);
    self->stop = true;
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
    pthread_join(self->thread, NULL);
    msgpack_sbuffer_destroy(&self->pending);
    pthread_mutex_destroy(&self->lock);
    pthread_cond_destroy(&self->cond);
    free(self->path);
    free(self);
    *self_p = NULL;
}

bool nx_snapshot_failed(nx_snapshot_t *self)
{
    pthread_mutex_lock(&self->lock);
    bool failed = self->failed;
    pthread_mutex_unlock(&self->lock);
    return failed;
}

void nx_snapshot_submit(nx_snapshot_t *self, nx_broker_t *broker)
{
    uint64_t t0 = nx_mono_us();
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    uint32_t n = 0;
    for (nx_session_t *s = nx_sessions_first(broker); s; s = nx_sessions_next(broker))
        n += s->status != NX_SESSION_GONE;
    msgpack_pack_array(&pk, n);
    for (nx_session_t *s = nx_sessions_first(broker); s; s = nx_sessions_next(broker))
        if (s->status != NX_SESSION_GONE) {
            s->claims = nx_claims_held(broker, s->id);
            nx_sessions_pack(&pk, s);
        }
    size_t sessions_len = buf.size;
    nx_claims_pack_active(broker, &pk);
    nx_debug("snapshot: state packed in %.1f ms on the loop", (double)(nx_mono_us() - t0) / 1000.0);
    pthread_mutex_lock(&self->lock);
    msgpack_sbuffer_destroy(&self->pending);
    self->pending = buf;
    self->sessions_len = sessions_len;
    self->last_seq = broker->last_seq;
    self->has_pending = true;
    self->failed = false;
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
}
