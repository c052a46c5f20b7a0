/*  =========================================================================
    nx_dedup - answers kept for retries. A client that lost a reply sends
    the same request again with the same id; for mutating session and work
    ops the broker answers with what it answered the first time instead of
    acting twice (a retried claim must not become a denial for its winner).

    Answers are stored in the same batch as the change they describe, so a
    retry after a crash still finds them. They live dedup_window, and at
    most dedup_max are kept (the oldest go first).
    =========================================================================
*/

#include <string.h>

#include "nx_coord.h"
#include "nx_log.h"

typedef struct {
    uint64_t at;    /* us when stored                                      */
    size_t len;     /* bytes in data                                       */
    uint8_t data[]; /* [u64 at][u8 ok][u32 fields][fields...]              */
} s_answer_t;

struct _nx_dedup_t {
    zhashx_t *answers; /* key (hex of session \0 id) -> s_answer_t*, owned   */
};

#define S_HEAD   13  /* at + ok + fields                                       */
#define S_ID_MAX 200 /* ids longer than this are not cached                 */

nx_dedup_t *nx_dedup_new(void)
{
    nx_dedup_t *self = calloc(1, sizeof *self);
    if (self) {
        self->answers = zhashx_new();
        zhashx_set_destructor(self->answers, (zhashx_destructor_fn *)zstr_free);
    }
    return self;
}

void nx_dedup_destroy(nx_dedup_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy(&(*self_p)->answers);
    free(*self_p);
    *self_p = NULL;
}

/*  The LMDB key is session \0 id bytes; the hash key is its hex form.     */
static size_t s_key(const char *session, size_t session_len, const void *id, size_t id_len,
                    uint8_t *raw, char *hex)
{
    memcpy(raw, session, session_len);
    raw[session_len] = 0;
    memcpy(raw + session_len + 1, id, id_len);
    size_t n = session_len + 1 + id_len;
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    return n;
}

static int s_load_one(const void *key, size_t key_len, const void *value, size_t value_len,
                      void *arg)
{
    nx_broker_t *self = arg;
    if (value_len < S_HEAD || key_len > NX_ID_MAX + 1 + S_ID_MAX)
        return 0;
    uint64_t at = nx_get_u64(value);
    uint64_t now = nx_now_us();
    if (at + self->cfg.dedup_window * 1000 < now)
        return 0; /* pruned in the next housekeeping */
    s_answer_t *a = malloc(sizeof *a + value_len);
    if (!a)
        return 0;
    a->at = at;
    a->len = value_len;
    memcpy(a->data, value, value_len);
    char hex[2 * (NX_ID_MAX + 1 + S_ID_MAX) + 1];
    for (size_t i = 0; i < key_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", ((const uint8_t *)key)[i]);
    zhashx_update(self->dedup->answers, hex, a);
    return 0;
}

void nx_dedup_load(nx_broker_t *self, uint64_t now)
{
    nx_store_foreach(self->store, NX_DB_REQUESTS, s_load_one, self);
}

const uint8_t *nx_dedup_find(nx_broker_t *self, const char *session, size_t session_len,
                             const void *id, size_t id_len, bool *ok, uint32_t *fields, size_t *len)
{
    if (!self->cfg.dedup_max || id_len > S_ID_MAX || session_len > NX_ID_MAX)
        return NULL;
    uint8_t raw[NX_ID_MAX + 1 + S_ID_MAX];
    char hex[2 * sizeof raw + 1];
    s_key(session, session_len, id, id_len, raw, hex);
    s_answer_t *a = zhashx_lookup(self->dedup->answers, hex);
    if (!a || a->at + self->cfg.dedup_window * 1000 < nx_now_us())
        return NULL;
    *ok = a->data[8] != 0;
    *fields = (uint32_t)a->data[9] << 24 | (uint32_t)a->data[10] << 16 |
              (uint32_t)a->data[11] << 8 | a->data[12];
    *len = a->len - S_HEAD;
    return a->data + S_HEAD;
}

void nx_dedup_store(nx_broker_t *self, const char *session, size_t session_len, const void *id,
                    size_t id_len, bool ok, uint32_t fields, const void *body, size_t len,
                    uint64_t now)
{
    if (!self->cfg.dedup_max || id_len > S_ID_MAX || session_len > NX_ID_MAX)
        return;
    if (zhashx_size(self->dedup->answers) >= self->cfg.dedup_max)
        nx_dedup_prune(self, now);
    if (zhashx_size(self->dedup->answers) >= self->cfg.dedup_max)
        return; /* full of fresh answers: retries of this one act again */
    uint8_t raw[NX_ID_MAX + 1 + S_ID_MAX];
    char hex[2 * sizeof raw + 1];
    size_t key_len = s_key(session, session_len, id, id_len, raw, hex);
    s_answer_t *a = malloc(sizeof *a + S_HEAD + len);
    if (!a)
        return;
    a->at = now;
    a->len = S_HEAD + len;
    nx_put_u64(a->data, now);
    a->data[8] = ok;
    a->data[9] = (uint8_t)(fields >> 24);
    a->data[10] = (uint8_t)(fields >> 16);
    a->data[11] = (uint8_t)(fields >> 8);
    a->data[12] = (uint8_t)fields;
    memcpy(a->data + S_HEAD, body, len);
    zhashx_update(self->dedup->answers, hex, a);
    nx_coord_put(self, NX_DB_REQUESTS, (const char *)raw, key_len, a->data, a->len);
}

static uint8_t s_unhex(char c)
{
    return (uint8_t)(c <= '9' ? c - '0' : c - 'a' + 10);
}

/*  Drops answers past the window; when still over dedup_max, the oldest
    half of what remains.                                                   */
void nx_dedup_prune(nx_broker_t *self, uint64_t now)
{
    zhashx_t *answers = self->dedup->answers;
    uint64_t cutoff = now - self->cfg.dedup_window * 1000;
    if (zhashx_size(answers) >= self->cfg.dedup_max) {
        uint64_t oldest = UINT64_MAX, newest = 0;
        for (s_answer_t *a = zhashx_first(answers); a; a = zhashx_next(answers)) {
            oldest = a->at < oldest ? a->at : oldest;
            newest = a->at > newest ? a->at : newest;
        }
        uint64_t mid = oldest + (newest - oldest) / 2;
        if (mid > cutoff)
            cutoff = mid;
    }
    zlistx_t *drop = zlistx_new();
    for (s_answer_t *a = zhashx_first(answers); a; a = zhashx_next(answers))
        if (a->at <= cutoff)
            zlistx_add_end(drop, (void *)zhashx_cursor(answers));
    for (const char *hex = zlistx_first(drop); hex; hex = zlistx_next(drop)) {
        uint8_t raw[NX_ID_MAX + 1 + S_ID_MAX];
        size_t n = strlen(hex) / 2;
        for (size_t i = 0; i < n && i < sizeof raw; i++)
            raw[i] = (uint8_t)(s_unhex(hex[2 * i]) << 4 | s_unhex(hex[2 * i + 1]));
        nx_coord_del(self, NX_DB_REQUESTS, (const char *)raw, n);
        zhashx_delete(answers, hex);
    }
    zlistx_destroy(&drop);
}
