/*  =========================================================================
    nx_claims - leased, exclusive claims on units of work, with fencing.

    A claim names a work id, a holder session and a lease. Granting it
    takes the next value of the fabric-wide fencing counter (stored in
    meta, it only grows), so anyone downstream can tell a holder whose lease
    ran out (lower token) from the one that replaced it.

        open/released/expired --claim--> claimed --release--> released
                                          |  |---lease ends--> expired
                                          |---complete-----> completed
        completed --reopen--> open

    Lease deadlines sit in a binary min-heap so that the loop can sleep
    until the next one and expire it at most a few ms late. The heap may
    hold outdated entries (renewed or closed claims): each entry carries the
    token and deadline it was pushed with and is ignored when those no
    longer match.
    =========================================================================
*/

#include <stdlib.h>
#include <string.h>

#include "nx_coord.h"
#include "nx_log.h"
#include "nx_topk.h"

typedef enum { S_CLAIMED, S_RELEASED, S_EXPIRED, S_COMPLETED, S_OPEN } s_state_t;
static const char *s_state_names[] = {"claimed", "released", "expired", "completed", "open"};

typedef struct {
    char *work_id;              /* the key                                      */
    s_state_t state;            /* see the diagram above                        */
    char holder[NX_ID_MAX + 1]; /* session that holds or last held it      */
    uint64_t token;             /* fencing token of the current/last grant      */
    uint64_t expires_at;        /* us; lease end while claimed                  */
    uint64_t ttl_ms;            /* lease of the last grant or renewal; 0: not
                                   known (a record from before it was stored) */
    uint64_t claimed_at;        /* us; last grant                               */
    uint64_t updated_at;        /* us; last change                              */
    char *description;          /* free text or NULL                            */
    uint8_t *metadata;          /* packed msgpack map or NULL                   */
    size_t metadata_len;
    uint8_t *result; /* packed msgpack value given at complete       */
    size_t result_len;
    /*  The answer to the request that made the last change, so that a
        retry of it (same session, same bytes) gets the same answer rather
        than acting twice or failing its winner.                            */
    uint64_t answer_hash; /* request hash, 0: none                        */
    char answer_session[NX_ID_MAX + 1];
    uint32_t answer_fields; /* key/value pairs in answer                    */
    uint8_t *answer;        /* packed reply fields                          */
    size_t answer_len;
} s_claim_t;

typedef struct {
    uint64_t expires_at; /* deadline the entry was pushed with             */
    uint64_t token;      /* token it was pushed with                       */
    char *work_id;       /* owned copy                                     */
} s_heap_item_t;

/*  An item that left state claimed, and when. Rings of these give the
    order in which ended items are forgotten (after claims_retain, or
    earlier at claims_max). An entry is stale once its item changed again;
    stale entries are skipped when they come up.                            */
typedef struct {
    char *work_id; /* owned copy                                      */
    uint64_t at;   /* the item's updated_at when it ended             */
} s_ended_t;

typedef struct {
    s_ended_t *e; /* slots, oldest entry at head                   */
    size_t head;  /* index of the oldest entry                     */
    size_t len;   /* entries in the ring                           */
    size_t cap;   /* slots allocated                               */
} s_ring_t;

struct _nx_claims_t {
    zhashx_t *items;     /* work id -> s_claim_t*, owned                  */
    s_heap_item_t *heap; /* min-heap by expires_at                        */
    size_t heap_len, heap_cap;
    uint64_t fence;         /* last fencing token handed out                 */
    zhashx_t *held;         /* session -> count of claimed items             */
    size_t live;            /* items in state claimed                        */
    s_ring_t ended;         /* released, expired and open items              */
    s_ring_t done;          /* completed items: never forgotten early, or a
                               completed item could be claimed again        */
    uint64_t forgot_early;  /* ended items forgotten at claims_max           */
    uint64_t forgot_logged; /* forgot_early when it was last logged          */
};

/*  Ended items forgotten per housekeeping call: keeps each call short.    */
#define S_PRUNE_MAX 20000

#define S_META_FENCE "fence"

static struct _nx_claims_t *s_self(nx_broker_t *b)
{
    return b->claims;
}

/*  ---- Ended items ------------------------------------------------------- */

static s_ended_t *s_ring_at(s_ring_t *r, size_t i)
{
    return &r->e[(r->head + i) % r->cap];
}

/*  Out of memory the entry is dropped: that item is then forgotten only
    when claims_max needs its place (or never, if completed).               */
static void s_ring_push(s_ring_t *r, const s_claim_t *c)
{
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        s_ended_t *grown = malloc(cap * sizeof *grown);
        if (!grown)
            return;
        for (size_t i = 0; i < r->len; i++)
            grown[i] = *s_ring_at(r, i);
        free(r->e);
        r->e = grown;
        r->cap = cap;
        r->head = 0;
    }
    char *id = strdup(c->work_id);
    if (!id)
        return;
    *s_ring_at(r, r->len++) = (s_ended_t){id, c->updated_at};
}

static void s_ring_pop(s_ring_t *r)
{
    free(s_ring_at(r, 0)->work_id);
    r->head = (r->head + 1) % r->cap;
    r->len--;
}

static void s_ring_free(s_ring_t *r)
{
    while (r->len)
        s_ring_pop(r);
    free(r->e);
    *r = (s_ring_t){0};
}

static int s_ended_cmp(const void *a, const void *b)
{
    uint64_t x = ((const s_ended_t *)a)->at, y = ((const s_ended_t *)b)->at;
    return x < y ? -1 : x > y;
}

/*  Loaded in key order; forgotten in the order they ended. Only after a
    load, when the ring starts at slot 0.                                   */
static void s_ring_sort(s_ring_t *r)
{
    if (r->len)
        qsort(r->e, r->len, sizeof *r->e, s_ended_cmp);
}

/*  The item of entry e if e is not stale, else NULL.                      */
static s_claim_t *s_ended_item(struct _nx_claims_t *cs, const s_ended_t *e)
{
    s_claim_t *c = zhashx_lookup(cs->items, e->work_id);
    return c && c->state != S_CLAIMED && c->updated_at == e->at ? c : NULL;
}

/*  Drops the stale entries, keeping the order, so that items that end
    again and again cannot grow a ring past the items known.               */
static void s_ring_compact(struct _nx_claims_t *cs, s_ring_t *r)
{
    size_t kept = 0, n = r->len;
    for (size_t i = 0; i < n; i++) {
        s_ended_t e = *s_ring_at(r, i);
        if (s_ended_item(cs, &e))
            *s_ring_at(r, kept++) = e;
        else
            free(e.work_id);
    }
    r->len = kept;
}

/*  Records that c ended now (its updated_at).                             */
static void s_ended_push(struct _nx_claims_t *cs, const s_claim_t *c)
{
    s_ring_push(c->state == S_COMPLETED ? &cs->done : &cs->ended, c);
}

/*  Forgets an item: out of memory and out of the store.                   */
static void s_forget(nx_broker_t *self, s_claim_t *c)
{
    nx_coord_del(self, NX_DB_CLAIMS, c->work_id, strlen(c->work_id));
    zhashx_delete(s_self(self)->items, c->work_id);
}

/*  At claims_max: forgets the released, expired or open item that ended
    first, to make room. Returns false when none is left.                  */
static bool s_forget_oldest(nx_broker_t *self)
{
    struct _nx_claims_t *cs = s_self(self);
    while (cs->ended.len) {
        s_claim_t *c = s_ended_item(cs, s_ring_at(&cs->ended, 0));
        s_ring_pop(&cs->ended);
        if (c) {
            s_forget(self, c);
            cs->forgot_early++;
            return true;
        }
    }
    return false;
}

/*  Forgets the items of r that ended before `before`, oldest first, at
    most `max`; returns how many entries it took off.                      */
static size_t s_ring_prune(nx_broker_t *self, s_ring_t *r, uint64_t before, size_t max)
{
    struct _nx_claims_t *cs = s_self(self);
    size_t n = 0;
    for (; r->len && n < max && s_ring_at(r, 0)->at < before; n++) {
        s_claim_t *c = s_ended_item(cs, s_ring_at(r, 0));
        s_ring_pop(r);
        if (c)
            s_forget(self, c);
    }
    return n;
}

static void s_claim_free(void **item)
{
    s_claim_t *c = *item;
    if (!c)
        return;
    free(c->work_id);
    free(c->description);
    free(c->metadata);
    free(c->result);
    free(c->answer);
    free(c);
    *item = NULL;
}

/*  ---- Heap -------------------------------------------------------------- */

static void s_heap_swap(s_heap_item_t *a, s_heap_item_t *b)
{
    s_heap_item_t t = *a;
    *a = *b;
    *b = t;
}

static void s_heap_compact(struct _nx_claims_t *cs);

static void s_heap_add(struct _nx_claims_t *cs, const char *work_id, uint64_t at, uint64_t token)
{
    if (cs->heap_len == cs->heap_cap) {
        size_t cap = cs->heap_cap ? cs->heap_cap * 2 : 1024;
        s_heap_item_t *h = realloc(cs->heap, cap * sizeof *h);
        if (!h)
            return; /* out of memory: this deadline is lost; the lease still ends
        at the next claim or renew of the item, which checks it */
        cs->heap = h;
        cs->heap_cap = cap;
    }
    size_t i = cs->heap_len++;
    cs->heap[i] = (s_heap_item_t){at, token, strdup(work_id)};
    while (i > 0 && cs->heap[(i - 1) / 2].expires_at > cs->heap[i].expires_at) {
        s_heap_swap(&cs->heap[i], &cs->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

/*  A deadline for the timers. Compacted here, not only when a timer
    fires: renewals of a long lease leave stale entries that no timer
    reaches for hours (one claim renewed 200 000 times kept 200 001).      */
static void s_heap_push(struct _nx_claims_t *cs, const char *work_id, uint64_t at, uint64_t token)
{
    s_heap_compact(cs);
    s_heap_add(cs, work_id, at, token);
}

static void s_heap_pop(struct _nx_claims_t *cs)
{
    free(cs->heap[0].work_id);
    cs->heap[0] = cs->heap[--cs->heap_len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < cs->heap_len && cs->heap[l].expires_at < cs->heap[m].expires_at)
            m = l;
        if (r < cs->heap_len && cs->heap[r].expires_at < cs->heap[m].expires_at)
            m = r;
        if (m == i)
            break;
        s_heap_swap(&cs->heap[i], &cs->heap[m]);
        i = m;
    }
}

/*  ---- Holder counts ------------------------------------------------------ */

static void s_held_add(struct _nx_claims_t *cs, const char *session, int delta)
{
    cs->live = delta > 0 ? cs->live + 1 : (cs->live ? cs->live - 1 : 0);
    uintptr_t n = (uintptr_t)zhashx_lookup(cs->held, session);
    n = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (n)
        zhashx_update(cs->held, session, (void *)n);
    else
        zhashx_delete(cs->held, session);
}

size_t nx_claims_held(nx_broker_t *self, const char *session)
{
    return s_self(self) ? (uintptr_t)zhashx_lookup(s_self(self)->held, session) : 0;
}

/*  ---- Persistence -------------------------------------------------------- */

static void s_pack_claim(msgpack_packer *pk, const s_claim_t *c)
{
    msgpack_pack_map(pk, 11);
    nx_pack_kv_str(pk, "work_id", c->work_id);
    nx_pack_kv_str(pk, "state", s_state_names[c->state]);
    nx_pack_kv_str(pk, "holder", c->holder);
    nx_pack_kv_u64(pk, "token", c->token);
    nx_pack_kv_u64(pk, "expires_at", c->expires_at);
    nx_pack_kv_u64(pk, "ttl_ms", c->ttl_ms);
    nx_pack_kv_u64(pk, "claimed_at", c->claimed_at);
    nx_pack_kv_u64(pk, "updated_at", c->updated_at);
    if (c->description)
        nx_pack_kv_str(pk, "description", c->description);
    else
        nx_pack_kv_nil(pk, "description");
    nx_pack_str(pk, "metadata");
    if (c->metadata)
        msgpack_sbuffer_write(pk->data, (const char *)c->metadata, c->metadata_len);
    else
        msgpack_pack_map(pk, 0);
    nx_pack_str(pk, "result");
    if (c->result)
        msgpack_sbuffer_write(pk->data, (const char *)c->result, c->result_len);
    else
        msgpack_pack_nil(pk);
}

static nexus_err_t s_save(nx_broker_t *self, s_claim_t *c)
{
    if (c->state != S_CLAIMED)
        s_ended_push(s_self(self), c);
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    /*  Stored: [public record, last answer or nil].                        */
    msgpack_pack_array(&pk, 2);
    s_pack_claim(&pk, c);
    if (c->answer_hash) {
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint64(&pk, c->answer_hash);
        nx_pack_str(&pk, c->answer_session);
        msgpack_pack_uint32(&pk, c->answer_fields);
        msgpack_pack_bin(&pk, c->answer_len);
        msgpack_pack_bin_body(&pk, c->answer, c->answer_len);
    } else
        msgpack_pack_nil(&pk);
    nexus_err_t rc =
        nx_coord_put(self, NX_DB_CLAIMS, c->work_id, strlen(c->work_id), buf.data, buf.size);
    nx_scratch_give(&self->scratch, &buf);
    self->snapshot_dirty = true;
    return rc;
}

static nexus_err_t s_save_fence(nx_broker_t *self)
{
    uint8_t v[8];
    nx_put_u64(v, s_self(self)->fence);
    return nx_coord_put(self, NX_DB_META, S_META_FENCE, strlen(S_META_FENCE), v, 8);
}

static int s_load_one(const void *key, size_t key_len, const void *value, size_t value_len,
                      void *arg)
{
    nx_broker_t *self = arg;
    struct _nx_claims_t *cs = s_self(self);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    /*  A damaged record could declare counts msgpack-c would allocate
        (the nesting is left to msgpack-c, as before).                     */
    if (nx_msgpack_check(value, value_len, 63) != NX_MSGPACK_OK ||
        msgpack_unpack_next(&u, value, value_len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 2 ||
        u.data.via.array.ptr[0].type != MSGPACK_OBJECT_MAP) {
        nx_warn("claims: skipping a record that does not decode");
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    const msgpack_object *m = &u.data.via.array.ptr[0];
    const msgpack_object *ans = &u.data.via.array.ptr[1];
    s_claim_t *c = calloc(1, sizeof *c);
    if (ans->type == MSGPACK_OBJECT_ARRAY && ans->via.array.size == 4 &&
        ans->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        ans->via.array.ptr[1].type == MSGPACK_OBJECT_STR &&
        ans->via.array.ptr[1].via.str.size <= NX_ID_MAX &&
        ans->via.array.ptr[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        ans->via.array.ptr[3].type == MSGPACK_OBJECT_BIN) {
        c->answer_hash = ans->via.array.ptr[0].via.u64;
        memcpy(c->answer_session, ans->via.array.ptr[1].via.str.ptr,
               ans->via.array.ptr[1].via.str.size);
        c->answer_fields = (uint32_t)ans->via.array.ptr[2].via.u64;
        c->answer_len = ans->via.array.ptr[3].via.bin.size;
        c->answer = malloc(c->answer_len ? c->answer_len : 1);
        if (c->answer)
            memcpy(c->answer, ans->via.array.ptr[3].via.bin.ptr, c->answer_len);
        else
            c->answer_hash = 0;
    }
    c->work_id = nx_coord_strdup(key, key_len);
    size_t n = 0;
    const char *p = nx_coord_stored_str(m, "state", &n);
    for (int i = 0; p && i < 5; i++)
        if (strlen(s_state_names[i]) == n && memcmp(s_state_names[i], p, n) == 0)
            c->state = (s_state_t)i;
    p = nx_coord_stored_str(m, "holder", &n);
    if (p && n <= NX_ID_MAX)
        memcpy(c->holder, p, n);
    nx_map_u64(m, "token", &c->token, NULL);
    nx_map_u64(m, "expires_at", &c->expires_at, NULL);
    nx_map_u64(m, "ttl_ms", &c->ttl_ms, NULL);
    nx_map_u64(m, "claimed_at", &c->claimed_at, NULL);
    nx_map_u64(m, "updated_at", &c->updated_at, NULL);
    p = nx_coord_stored_str(m, "description", &n);
    if (p)
        c->description = nx_coord_strdup(p, n);
    const msgpack_object *md = nx_map_get(m, "metadata");
    if (md && md->type == MSGPACK_OBJECT_MAP && md->via.map.size)
        c->metadata = nx_coord_pack_object(self, md, &c->metadata_len);
    const msgpack_object *res = nx_map_get(m, "result");
    if (res && res->type != MSGPACK_OBJECT_NIL)
        c->result = nx_coord_pack_object(self, res, &c->result_len);
    zhashx_update(cs->items, c->work_id, c);
    if (c->state == S_CLAIMED) {
        s_held_add(cs, c->holder, +1);
        /*  Leases that ran out while the broker was down expire in the
            first tick, with their event.                                  */
        s_heap_push(cs, c->work_id, c->expires_at, c->token);
    } else
        s_ended_push(cs, c);
    if (c->token > cs->fence)
        cs->fence = c->token;
    msgpack_unpacked_destroy(&u);
    return 0;
}

int nx_claims_load(nx_broker_t *self)
{
    struct _nx_claims_t *cs = calloc(1, sizeof *cs);
    if (!cs)
        return -1;
    cs->items = zhashx_new();
    cs->held = zhashx_new();
    zhashx_set_destructor(cs->items, s_claim_free);
    self->claims = cs;
    void *v = NULL;
    size_t len = 0;
    if (nx_store_get(self->store, NX_DB_META, S_META_FENCE, strlen(S_META_FENCE), &v, &len) ==
            NEXUS_OK &&
        len == 8)
        cs->fence = nx_get_u64(v);
    free(v);
    if (nx_store_foreach(self->store, NX_DB_CLAIMS, s_load_one, self) != NEXUS_OK)
        return -1;
    s_ring_sort(&cs->ended);
    s_ring_sort(&cs->done);
    return 0;
}

void nx_claims_unload(nx_broker_t *self)
{
    struct _nx_claims_t *cs = s_self(self);
    if (!cs)
        return;
    zhashx_destroy(&cs->items);
    zhashx_destroy(&cs->held);
    for (size_t i = 0; i < cs->heap_len; i++)
        free(cs->heap[i].work_id);
    free(cs->heap);
    s_ring_free(&cs->ended);
    s_ring_free(&cs->done);
    free(cs);
    self->claims = NULL;
}

/*  ---- Events ------------------------------------------------------------ */

static void s_emit_detail(nx_broker_t *self, const char *topic, const s_claim_t *c,
                          const char *reason, const char *by, const char *detail,
                          size_t detail_len);

static void s_emit(nx_broker_t *self, const char *topic, const s_claim_t *c, const char *reason,
                   const char *by)
{
    s_emit_detail(self, topic, c, reason, by, NULL, 0);
}

/*  detail: the releasing session's own words, when it gave any.            */
static void s_emit_detail(nx_broker_t *self, const char *topic, const s_claim_t *c,
                          const char *reason, const char *by, const char *detail, size_t detail_len)
{
    msgpack_sbuffer buf;
    nx_scratch_take(&self->scratch, &buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    bool claimed = strcmp(topic, "work.claimed") == 0;
    bool completed = strcmp(topic, "work.completed") == 0;
    bool reopened = strcmp(topic, "work.reopened") == 0;
    msgpack_pack_map(&pk, 3 + (claimed ? 2 : 0) + (completed ? 1 : 0) + (reason ? 1 : 0) +
                              (reopened ? 1 : 0) + (detail ? 1 : 0));
    nx_pack_kv_str(&pk, "work_id", c->work_id);
    nx_pack_kv_str(&pk, "holder", c->holder);
    nx_pack_kv_u64(&pk, "token", c->token);
    if (claimed) {
        nx_pack_kv_u64(&pk, "expires_at", c->expires_at);
        if (c->description)
            nx_pack_kv_str(&pk, "description", c->description);
        else
            nx_pack_kv_nil(&pk, "description");
    }
    if (completed) {
        nx_pack_str(&pk, "result");
        if (c->result)
            msgpack_sbuffer_write(&buf, (const char *)c->result, c->result_len);
        else
            msgpack_pack_nil(&pk);
    }
    if (reason)
        nx_pack_kv_str(&pk, "reason", reason);
    if (reopened)
        nx_pack_kv_str(&pk, "by", by);
    if (detail)
        nx_pack_kv_strn(&pk, "detail", detail, detail_len);
    nx_coord_emit(self, topic, by ? by : "nexusd", &buf);
    nx_scratch_give(&self->scratch, &buf);
}

/*  Ends a claimed item's lease: state released or expired, event, store.   */
static void s_end(nx_broker_t *self, s_claim_t *c, s_state_t state, const char *reason,
                  const char *by, uint64_t now)
{
    s_held_add(s_self(self), c->holder, -1);
    c->state = state;
    c->updated_at = now;
    /*  The item changed without a request: an older answer is stale now.  */
    free(c->answer);
    c->answer = NULL;
    c->answer_hash = 0;
    s_save(self, c);
    s_emit(self, "work.released", c, reason, by);
}

/*  ---- Retries ---------------------------------------------------------- */

/*  When the request is a retry of the one that made c's last change,
    packs that answer again and returns true.                              */
static bool s_retry(nx_request_t *rq, const s_claim_t *c, const nx_session_t *s)
{
    if (!c || !rq->hash || c->answer_hash != rq->hash || strcmp(c->answer_session, s->id) != 0)
        return false;
    nx_dmap_raw(&rq->reply, c->answer, c->answer_len, c->answer_fields);
    return true;
}

/*  Where a handler's answer starts in its reply, to keep it for retries.  */
typedef struct {
    size_t at;      /* bytes of the reply before it                       */
    uint32_t pairs; /* fields of the reply before it                      */
} s_mark_t;

static s_mark_t s_mark(const nx_request_t *rq)
{
    return (s_mark_t){rq->reply.buf->size, nx_dmap_pairs(&rq->reply)};
}

/*  Keeps the answer packed since mark as c's last answer (saved with c).  */
static void s_remember(nx_request_t *rq, s_claim_t *c, const nx_session_t *s, s_mark_t mark)
{
    msgpack_sbuffer *buf = rq->reply.buf;
    free(c->answer);
    c->answer = NULL;
    c->answer_hash = 0;
    if (!rq->hash)
        return;
    c->answer_len = buf->size - mark.at;
    c->answer = malloc(c->answer_len ? c->answer_len : 1);
    if (!c->answer)
        return;
    memcpy(c->answer, buf->data + mark.at, c->answer_len);
    c->answer_hash = rq->hash;
    c->answer_fields = nx_dmap_pairs(&rq->reply) - mark.pairs;
    snprintf(c->answer_session, sizeof c->answer_session, "%s", s->id);
}

/*  ---- Ops ---------------------------------------------------------------- */

/*  Answers a change of state (work_id, state), remembers the answer for
    retries and stores the item: 0, or -1 if the store refused.            */
static int s_answer_state(nx_broker_t *self, nx_request_t *rq, s_claim_t *c, const nx_session_t *s,
                          const char *what)
{
    s_mark_t mark = s_mark(rq);
    nx_pack_kv_str(nx_kv(rq), "work_id", c->work_id);
    nx_pack_kv_str(nx_kv(rq), "state", s_state_names[c->state]);
    s_remember(rq, c, s, mark);
    nexus_err_t saved = s_save(self, c);
    if (saved)
        return nx_request_fail(rq, saved, "the store could not take the %s", what);
    return 0;
}

/*  The work_id as a string (the table checked it: 1..256 bytes, no NUL).  */
static void s_work_id(const nx_request_t *rq, char *key)
{
    const char *id = "";
    size_t len = 0;
    nx_map_str(rq->fields, "work_id", &id, &len, NULL);
    memcpy(key, id, len);
    key[len] = 0;
}

/*  ttl_ms, up to the claim_ttl_max setting; *ttl holds the default.      */
static int s_ttl(nx_broker_t *self, nx_request_t *rq, uint64_t *ttl)
{
    nx_map_u64(rq->fields, "ttl_ms", ttl, NULL);
    if (*ttl < 100 || *ttl > self->cfg.claim_ttl_max)
        return nx_request_fail(rq, NEXUS_ERR_BAD_REQUEST, "field 'ttl_ms' must be 100..%" PRIu64,
                               self->cfg.claim_ttl_max);
    return 0;
}

/*  Fails with denied and the holder, lease end and state.                 */
static int s_denied(nx_request_t *rq, const s_claim_t *c)
{
    if (c->state == S_COMPLETED)
        nx_request_fail(rq, NEXUS_ERR_DENIED, "'%.120s' is completed (reopen it to claim again)",
                        c->work_id);
    else
        nx_request_fail(rq, NEXUS_ERR_DENIED, "'%.120s' is claimed by %s", c->work_id, c->holder);
    nx_pack_kv_str(nx_kv(rq), "holder", c->holder);
    nx_pack_kv_u64(nx_kv(rq), "expires_at", c->expires_at);
    nx_pack_kv_str(nx_kv(rq), "state", s_state_names[c->state]);
    return -1;
}

int nx_op_work_claim(nx_broker_t *self, nx_request_t *rq)
{
    struct _nx_claims_t *cs = s_self(self);
    char key[NX_WORK_ID_MAX + 1];
    uint64_t ttl = self->cfg.claim_ttl;
    const char *desc = NULL;
    size_t desc_len = 0;
    s_work_id(rq, key);
    if (s_ttl(self, rq, &ttl))
        return -1;
    nx_map_str(rq->fields, "description", &desc, &desc_len, NULL);
    const msgpack_object *md = nx_map_get(rq->fields, "metadata");
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return -1;
    uint64_t now = nx_now_us();
    s_claim_t *c = zhashx_lookup(cs->items, key);
    if (s_retry(rq, c, s))
        return 0;
    if (c && (c->state == S_COMPLETED ||
              (c->state == S_CLAIMED && !nx_coord_expired(self, c->expires_at, now)))) {
        if (c->state == S_CLAIMED && strcmp(c->holder, s->id) == 0) {
            /*  Claiming what you already hold is not a double grant: say
                so, with your token, rather than deny yourself.            */
            nx_request_fail(rq, NEXUS_ERR_CONFLICT,
                            "'%.120s' is already held by you (token %" PRIu64 "); renew it instead",
                            key, c->token);
            nx_pack_kv_u64(nx_kv(rq), "token", c->token);
            nx_pack_kv_u64(nx_kv(rq), "expires_at", c->expires_at);
            return -1;
        }
        return s_denied(rq, c);
    }
    if (c && c->state == S_CLAIMED) /* lease over, not yet swept: expire now */
        s_end(self, c, S_EXPIRED, "expired", NULL, now);
    if (!c) {
        /*  Memory stays bounded and claims keep working: the released,
            expired or open item that ended first is forgotten early
            (logged). Completed items stay until claims_retain, so that
            they are not done twice: with only those and claimed items
            left, the claim is refused.                                     */
        if (zhashx_size(cs->items) >= self->cfg.claims_max && !s_forget_oldest(self))
            return nx_request_fail(rq, NEXUS_ERR_BUSY,
                                   "claims_max work items are known, all claimed or completed "
                                   "(claims_max)");
        c = calloc(1, sizeof *c);
        if (!c)
            return nx_request_fail(rq, NEXUS_ERR_NOMEM, "out of memory");
        c->work_id = strdup(key);
        zhashx_update(cs->items, c->work_id, c);
    }
    c->state = S_CLAIMED;
    memcpy(c->holder, s->id, strlen(s->id) + 1);
    c->token = ++cs->fence;
    c->claimed_at = c->updated_at = now;
    c->expires_at = now + ttl * 1000;
    c->ttl_ms = ttl;
    free(c->description);
    c->description = desc ? nx_coord_strdup(desc, desc_len) : NULL;
    free(c->metadata);
    c->metadata = NULL;
    c->metadata_len = 0;
    if (md && md->type == MSGPACK_OBJECT_MAP)
        c->metadata = nx_coord_pack_object(self, md, &c->metadata_len);
    free(c->result);
    c->result = NULL;
    c->result_len = 0;
    s_held_add(cs, s->id, +1);
    s_heap_push(cs, c->work_id, c->expires_at, c->token);
    nx_coord_wake(self, c->expires_at);
    s_mark_t mark = s_mark(rq);
    nx_pack_kv_str(nx_kv(rq), "work_id", c->work_id);
    nx_pack_kv_u64(nx_kv(rq), "token", c->token);
    nx_pack_kv_u64(nx_kv(rq), "expires_at", c->expires_at);
    nx_pack_kv_str(nx_kv(rq), "holder", c->holder);
    s_remember(rq, c, s, mark);
    nexus_err_t saved = s_save(self, c);
    if (!saved)
        saved = s_save_fence(self);
    if (saved)
        return nx_request_fail(rq, saved, "the store could not take the claim");
    s_emit(self, "work.claimed", c, NULL, s->id);
    return 0;
}

/*  The common checks of renew, release and complete: the item exists, is
    claimed, the token is current and the caller is its holder. NULL with
    rq failed, or the item; *again is true when rq was a retry, answered
    already.                                                                */
static s_claim_t *s_held_item(nx_broker_t *self, nx_request_t *rq, nx_session_t **sp, bool *again)
{
    *again = false;
    char key[NX_WORK_ID_MAX + 1];
    uint64_t token = 0;
    s_work_id(rq, key);
    nx_map_u64(rq->fields, "token", &token, NULL);
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return NULL;
    *sp = s;
    s_claim_t *c = zhashx_lookup(s_self(self)->items, key);
    if (!c) {
        nx_request_fail(rq, NEXUS_ERR_NOT_FOUND, "no work item '%.120s'", key);
        return NULL;
    }
    if ((*again = s_retry(rq, c, s)))
        return c;
    if (token != c->token) {
        nx_request_fail(rq, NEXUS_ERR_STALE_TOKEN,
                        "token %" PRIu64 " is stale: '%.100s' is now at token %" PRIu64
                        " (%s by %.64s)",
                        token, key, c->token, s_state_names[c->state], c->holder);
        return NULL;
    }
    if (strcmp(c->holder, s->id) != 0) {
        nx_request_fail(rq, NEXUS_ERR_FORBIDDEN, "'%.100s' is held by %.64s, not %.64s", key,
                        c->holder, s->id);
        return NULL;
    }
    uint64_t now = nx_now_us();
    if (c->state == S_CLAIMED && nx_coord_expired(self, c->expires_at, now))
        s_end(self, c, S_EXPIRED, "expired", NULL, now);
    if (c->state != S_CLAIMED) {
        nx_request_fail(rq, NEXUS_ERR_CONFLICT, "'%.120s' is %s, not claimed", key,
                        s_state_names[c->state]);
        return NULL;
    }
    return c;
}

int nx_op_work_renew(nx_broker_t *self, nx_request_t *rq)
{
    /*  A ttl_ms out of range is refused before anything else is looked
        at; without one the lease keeps its own length (the claim's or the
        last renewal's): a worker that took an hour must not be cut to
        claim_ttl by a bare renew.                                          */
    uint64_t ttl = self->cfg.claim_ttl;
    if (s_ttl(self, rq, &ttl))
        return -1;
    nx_session_t *s = NULL;
    bool again;
    s_claim_t *c = s_held_item(self, rq, &s, &again);
    if (!c)
        return -1;
    if (again)
        return 0;
    if (!nx_map_get(rq->fields, "ttl_ms") && c->ttl_ms) /* claim_ttl_max may have shrunk   */
        ttl = c->ttl_ms < self->cfg.claim_ttl_max ? c->ttl_ms : self->cfg.claim_ttl_max;
    uint64_t now = nx_now_us();
    c->expires_at = now + ttl * 1000;
    c->ttl_ms = ttl;
    c->updated_at = now;
    s_heap_push(s_self(self), c->work_id, c->expires_at, c->token);
    nx_coord_wake(self, c->expires_at);
    s_mark_t mark = s_mark(rq);
    nx_pack_kv_str(nx_kv(rq), "work_id", c->work_id);
    nx_pack_kv_u64(nx_kv(rq), "token", c->token);
    nx_pack_kv_u64(nx_kv(rq), "expires_at", c->expires_at);
    s_remember(rq, c, s, mark);
    nexus_err_t saved = s_save(self, c);
    if (saved)
        return nx_request_fail(rq, saved, "the store could not take the renewal");
    return 0;
}

int nx_op_work_release(nx_broker_t *self, nx_request_t *rq)
{
    /*  reason: at most 4096 bytes (the table), refused, not cut, before
        the session is touched, so that bad input changes nothing.         */
    const char *reason = NULL;
    size_t reason_len = 0;
    nx_map_str(rq->fields, "reason", &reason, &reason_len, NULL);
    nx_session_t *s = NULL;
    bool again;
    s_claim_t *c = s_held_item(self, rq, &s, &again);
    if (!c)
        return -1;
    if (again)
        return 0;
    uint64_t now = nx_now_us();
    s_held_add(s_self(self), c->holder, -1);
    c->state = S_RELEASED;
    c->updated_at = now;
    if (s_answer_state(self, rq, c, s, "release") < 0)
        return -1;
    s_emit_detail(self, "work.released", c, "released", s->id, reason, reason_len);
    return 0;
}

int nx_op_work_complete(nx_broker_t *self, nx_request_t *rq)
{
    nx_session_t *s = NULL;
    bool again;
    /*  Results are kept with the item for claims_retain: at most 64 KiB
        packed each (the table).                                          */
    const msgpack_object *result = nx_map_get(rq->fields, "result");
    s_claim_t *c = s_held_item(self, rq, &s, &again);
    if (!c)
        return -1;
    if (again)
        return 0;
    uint64_t now = nx_now_us();
    free(c->result);
    c->result = result ? nx_coord_pack_object(self, result, &c->result_len) : NULL;
    if (!result)
        c->result_len = 0;
    s_held_add(s_self(self), c->holder, -1);
    c->state = S_COMPLETED;
    c->updated_at = now;
    if (s_answer_state(self, rq, c, s, "completion") < 0)
        return -1;
    s_emit(self, "work.completed", c, NULL, s->id);
    return 0;
}

int nx_op_work_reopen(nx_broker_t *self, nx_request_t *rq)
{
    char key[NX_WORK_ID_MAX + 1];
    s_work_id(rq, key);
    nx_session_t *s = nx_sessions_authorize(self, rq);
    if (!s)
        return -1;
    s_claim_t *c = zhashx_lookup(s_self(self)->items, key);
    if (!c)
        return nx_request_fail(rq, NEXUS_ERR_NOT_FOUND, "no work item '%.120s'", key);
    if (s_retry(rq, c, s))
        return 0;
    if (c->state != S_COMPLETED)
        return nx_request_fail(rq, NEXUS_ERR_CONFLICT,
                               "'%.120s' is %s; only a completed item can be reopened", key,
                               s_state_names[c->state]);
    c->state = S_OPEN;
    c->updated_at = nx_now_us();
    if (s_answer_state(self, rq, c, s, "reopen") < 0)
        return -1;
    s_emit(self, "work.reopened", c, NULL, s->id);
    return 0;
}

int nx_op_work_get(nx_broker_t *self, nx_request_t *rq)
{
    char key[NX_WORK_ID_MAX + 1];
    s_work_id(rq, key);
    s_claim_t *c = zhashx_lookup(s_self(self)->items, key);
    if (!c)
        return nx_request_fail(rq, NEXUS_ERR_NOT_FOUND, "no work item '%.120s'", key);
    nx_pack_str(nx_kv(rq), "claim");
    s_pack_claim(&rq->reply.pk, c);
    return 0;
}

static int s_id_cmp(const void *a, const void *b)
{
    return strcmp(((const s_claim_t *)a)->work_id, ((const s_claim_t *)b)->work_id);
}

int nx_op_work_list(nx_broker_t *self, nx_request_t *rq)
{
    const char *holder = NULL, *state = NULL, *prefix = NULL, *after = NULL;
    size_t holder_len = 0, state_len = 0, prefix_len = 0, after_len = 0;
    uint64_t limit = 1000;
    nx_map_str(rq->fields, "holder", &holder, &holder_len, NULL);
    nx_map_str(rq->fields, "state", &state, &state_len, NULL);
    nx_map_str(rq->fields, "prefix", &prefix, &prefix_len, NULL);
    nx_map_str(rq->fields, "after", &after, &after_len, NULL);
    nx_map_u64(rq->fields, "limit", &limit, NULL);
    int want = -1;
    for (int i = 0; state && i < 5; i++)
        if (strlen(s_state_names[i]) == state_len &&
            memcmp(s_state_names[i], state, state_len) == 0)
            want = i;
    char from[NX_WORK_ID_MAX + 1] = "";
    if (after)
        snprintf(from, sizeof from, "%.*s", (int)after_len, after);
    /*  The limit + 1 smallest ids that pass (nx_topk): one more than the
        limit tells whether the list is truncated.                          */
    zhashx_t *table = s_self(self)->items;
    size_t keep = zhashx_size(table) < limit + 1 ? zhashx_size(table) : (size_t)limit + 1;
    uint64_t matched = 0; /* on every page, whatever 'after' says */
    nx_topk_t kept;
    if (nx_topk_init(&kept, keep, s_id_cmp))
        return nx_request_fail(rq, NEXUS_ERR_NOMEM, "out of memory for the list");
    for (s_claim_t *c = zhashx_first(table); c && keep; c = zhashx_next(table)) {
        if (want >= 0 && (int)c->state != want)
            continue;
        if (holder && (strlen(c->holder) != holder_len || memcmp(c->holder, holder, holder_len)))
            continue;
        if (prefix && strncmp(c->work_id, prefix, prefix_len) != 0)
            continue;
        matched++;
        if (after && strcmp(c->work_id, from) <= 0)
            continue;
        nx_topk_offer(&kept, c);
    }
    nx_topk_sort(&kept);
    bool truncated = kept.n > limit;
    uint32_t count = truncated ? (uint32_t)limit : (uint32_t)kept.n;
    nx_pack_str(nx_kv(rq), "claims");
    msgpack_pack_array(&rq->reply.pk, count);
    for (uint32_t i = 0; i < count; i++)
        s_pack_claim(&rq->reply.pk, kept.items[i]);
    nx_topk_destroy(&kept);
    nx_pack_kv_bool(nx_kv(rq), "truncated", truncated);
    nx_pack_kv_u64(nx_kv(rq), "matched", matched);
    return 0;
}

/*  ---- Timers and session ends ------------------------------------------- */

/*  Renewals leave their old deadlines in the heap; when stale entries
    outnumber live claims three to one, the heap is built again from the
    claims (amortized: at least 3 x live pushes between two rebuilds).     */
static void s_heap_compact(struct _nx_claims_t *cs)
{
    if (cs->heap_len < 1024 || cs->heap_len < 4 * cs->live)
        return;
    for (size_t i = 0; i < cs->heap_len; i++)
        free(cs->heap[i].work_id);
    cs->heap_len = 0;
    for (s_claim_t *c = zhashx_first(cs->items); c; c = zhashx_next(cs->items))
        if (c->state == S_CLAIMED)
            s_heap_add(cs, c->work_id, c->expires_at, c->token);
}

void nx_claims_counts(nx_broker_t *self, uint64_t *items, uint64_t *claimed, uint64_t *deadlines)
{
    struct _nx_claims_t *cs = s_self(self);
    *items = cs ? zhashx_size(cs->items) : 0;
    *claimed = cs ? cs->live : 0;
    *deadlines = cs ? cs->heap_len : 0;
}

uint64_t nx_claims_tick(nx_broker_t *self, uint64_t now)
{
    struct _nx_claims_t *cs = s_self(self);
    s_heap_compact(cs);
    /*  Bounded per call so that a mass expiry cannot hold the loop; the
        rest go in the next turn, which comes at once.                      */
    for (int i = 0; i < 10000 && cs->heap_len && cs->heap[0].expires_at <= now; i++) {
        s_heap_item_t top = cs->heap[0];
        s_claim_t *c = zhashx_lookup(cs->items, top.work_id);
        if (c && c->state == S_CLAIMED && c->token == top.token && c->expires_at == top.expires_at)
            s_end(self, c, S_EXPIRED, "expired", NULL, now);
        s_heap_pop(cs);
    }
    return cs->heap_len ? cs->heap[0].expires_at : UINT64_MAX;
}

size_t nx_claims_on_session_gone(nx_broker_t *self, const char *session, bool release)
{
    struct _nx_claims_t *cs = s_self(self);
    if (!release || !zhashx_lookup(cs->held, session))
        return 0;
    size_t n = 0;
    uint64_t now = nx_now_us();
    for (s_claim_t *c = zhashx_first(cs->items); c; c = zhashx_next(cs->items))
        if (c->state == S_CLAIMED && strcmp(c->holder, session) == 0) {
            s_end(self, c, S_RELEASED, "holder_gone", NULL, now);
            n++;
        }
    return n;
}

void nx_claims_prune(nx_broker_t *self, uint64_t now)
{
    struct _nx_claims_t *cs = s_self(self);
    if (cs->forgot_early != cs->forgot_logged) {
        nx_warn("claims_max (%" PRIu64 ") reached: forgot %" PRIu64
                " released/expired work items before claims_retain to make room",
                self->cfg.claims_max, cs->forgot_early - cs->forgot_logged);
        cs->forgot_logged = cs->forgot_early;
    }
    size_t known = zhashx_size(cs->items);
    if (cs->ended.len > 2 * known + 1024)
        s_ring_compact(cs, &cs->ended);
    if (cs->done.len > 2 * known + 1024)
        s_ring_compact(cs, &cs->done);
    if (!self->cfg.claims_retain || now < self->cfg.claims_retain * 1000)
        return;
    /*  Oldest first, a bounded number per call: never a scan of every item,
        which at claims_max would hold up the loop for tens of ms.          */
    uint64_t before = now - self->cfg.claims_retain * 1000;
    size_t n = s_ring_prune(self, &cs->ended, before, S_PRUNE_MAX);
    s_ring_prune(self, &cs->done, before, S_PRUNE_MAX - n);
}

/*  For the snapshot: packs every claimed item as a msgpack array.          */
void nx_claims_pack_active(nx_broker_t *self, msgpack_packer *pk)
{
    struct _nx_claims_t *cs = s_self(self);
    uint32_t n = 0;
    for (s_claim_t *c = zhashx_first(cs->items); c; c = zhashx_next(cs->items))
        n += c->state == S_CLAIMED;
    msgpack_pack_array(pk, n);
    for (s_claim_t *c = zhashx_first(cs->items); c; c = zhashx_next(cs->items))
        if (c->state == S_CLAIMED)
            s_pack_claim(pk, c);
}

uint64_t nx_claims_fence(nx_broker_t *self)
{
    return s_self(self) ? s_self(self)->fence : 0;
}

void nx_claims_fence_floor(nx_broker_t *self, uint64_t fence)
{
    if (s_self(self) && fence > s_self(self)->fence)
        s_self(self)->fence = fence;
}
