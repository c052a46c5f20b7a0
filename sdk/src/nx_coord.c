/*  =========================================================================
    nx_coord - sessions and claims (docs/protocol.md), and the
    records object their list operations return.
    =========================================================================
*/

#include <inttypes.h>
#include <string.h>

#include "nx_client.h"
#include "nx_jdump.h"

/*  A string field handed out by nexus_records_str, kept until the records
    go: one per field asked for (the object it was copied from).           */
typedef struct _s_str_t {
    struct _s_str_t *next;
    const msgpack_object *from;
    char text[];
} s_str_t;

struct _nexus_records_t {
    nx_reply_t reply;             /* owns the decoded reply                 */
    const msgpack_object *items;  /* the array of record maps, or NULL      */
    const msgpack_object *single; /* a reply carrying one record            */
    char **json;                  /* cached JSON text per record            */
    s_str_t **strs;               /* string fields handed out, per record   */
};

static nexus_records_t *s_records_new(nx_reply_t *rep, const char *array_key,
                                      const char *single_key)
{
    nexus_records_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    /*  Take the decoded reply over: the objects live in its zone, which
        moves with the struct; only the map pointer must be set again.     */
    self->reply = *rep;
    self->reply.map = &self->reply.unp.data;
    nx_reply_init(rep);
    const msgpack_object *v = nx_map_get(self->reply.map, array_key ? array_key : single_key);
    if (v && v->type == MSGPACK_OBJECT_ARRAY)
        self->items = v;
    else if (v && v->type == MSGPACK_OBJECT_MAP)
        self->single = v;
    size_t n = nexus_records_count(self);
    self->json = calloc(n + 1, sizeof *self->json);
    self->strs = calloc(n + 1, sizeof *self->strs);
    if (!self->json || !self->strs) {
        nexus_records_destroy(&self);
        return NULL;
    }
    return self;
}

void nexus_records_destroy(nexus_records_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nexus_records_t *self = *self_p;
    size_t n = nexus_records_count(self);
    for (size_t i = 0; i < n; i++) {
        if (self->json)
            free(self->json[i]);
        while (self->strs && self->strs[i]) {
            s_str_t *next = self->strs[i]->next;
            free(self->strs[i]);
            self->strs[i] = next;
        }
    }
    free(self->json);
    free(self->strs);
    nx_reply_destroy(&self->reply);
    free(self);
    *self_p = NULL;
}

int nexus_records_truncated(const nexus_records_t *self)
{
    return self && nx_obj_u64(self->reply.map, "truncated") != 0;
}

uint64_t nexus_records_matched(const nexus_records_t *self)
{
    return self ? nx_obj_u64(self->reply.map, "matched") : 0;
}

size_t nexus_records_count(const nexus_records_t *self)
{
    if (!self)
        return 0;
    if (self->items)
        return self->items->via.array.size;
    return self->single ? 1 : 0;
}

const struct msgpack_object *nexus_records_msgpack(const nexus_records_t *self, size_t index)
{
    if (index >= nexus_records_count(self))
        return NULL;
    return self->items ? &self->items->via.array.ptr[index] : self->single;
}

const char *nexus_records_str(nexus_records_t *self, size_t index, const char *field)
{
    const msgpack_object *rec = nexus_records_msgpack(self, index);
    const msgpack_object *v = rec ? nx_map_get(rec, field) : NULL;
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return NULL;
    for (s_str_t *c = self->strs[index]; c; c = c->next)
        if (c->from == v)
            return c->text;
    s_str_t *c = malloc(sizeof *c + v->via.str.size + 1);
    if (!c)
        return NULL;
    c->from = v;
    memcpy(c->text, v->via.str.ptr, v->via.str.size);
    c->text[v->via.str.size] = 0;
    c->next = self->strs[index];
    self->strs[index] = c;
    return c->text;
}

uint64_t nexus_records_u64(const nexus_records_t *self, size_t index, const char *field)
{
    const msgpack_object *rec = nexus_records_msgpack(self, index);
    return rec ? nx_obj_u64(rec, field) : 0;
}

const char *nexus_records_json(nexus_records_t *self, size_t index)
{
    const msgpack_object *rec = nexus_records_msgpack(self, index);
    if (!rec)
        return NULL;
    if (!self->json[index]) {
        json_t *j = nx_json_from_msgpack(rec);
        self->json[index] = j ? nx_json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
    }
    return self->json[index];
}

/*  ---- Sessions ------------------------------------------------------------*/

static nexus_err_t s_need_session(nexus_client_t *self)
{
    pthread_mutex_lock(&self->lock);
    bool have = self->session_id != NULL;
    pthread_mutex_unlock(&self->lock);
    if (!have)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "no session: register one or give its id (and secret)");
    return NEXUS_OK;
}

/*  Runs req; on success and when out is not NULL, wraps the reply.        */
static nexus_err_t s_call_records(nexus_client_t *self, nx_req_t *req, const char *array_key,
                                  const char *single_key, nexus_records_t **out)
{
    if (out)
        *out = NULL;
    nx_reply_t rep;
    nexus_err_t rc = nx_client_call(self, req, &rep);
    nx_req_destroy(req);
    if (rc == NEXUS_OK && out) {
        *out = s_records_new(&rep, array_key, single_key);
        if (!*out)
            rc = nx_client_fail(self, NEXUS_ERR_NOMEM, "out of memory");
    }
    nx_reply_destroy(&rep);
    return rc;
}

nexus_err_t nexus_session_status(nexus_client_t *self, const char *state, const char *current_work,
                                 const char *text)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!state)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "state is NULL: give \"available\", \"busy\" or \"away\"");
    nexus_err_t rc = s_need_session(self);
    if (rc)
        return rc;
    nx_req_t req;
    nx_req_init(&req, "session.status");
    nx_req_session(&req, self);
    nx_req_str(&req, "state", state);
    //  "" clears the field (nil on the wire): an empty work item is none.
    if (current_work && !*current_work)
        nx_req_nil(&req, "current_work");
    else
        nx_req_str(&req, "current_work", current_work);
    if (text && !*text)
        nx_req_nil(&req, "text");
    else
        nx_req_str(&req, "text", text);
    return s_call_records(self, &req, NULL, "session", NULL);
}

nexus_err_t nexus_session_unregister(nexus_client_t *self, uint64_t *released)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nexus_err_t rc = s_need_session(self);
    if (rc)
        return rc;
    nx_req_t req;
    nx_req_init(&req, "session.unregister");
    nx_req_session(&req, self);
    nx_reply_t rep;
    rc = nx_client_call(self, &req, &rep);
    nx_req_destroy(&req);
    if (rc == NEXUS_OK && released)
        *released = nx_obj_u64(rep.map, "released");
    nx_reply_destroy(&rep);
    if (rc == NEXUS_OK && self->actor) {
        pthread_mutex_lock(&self->pipe_lock);
        zstr_sendx(self->actor, "HEARTBEAT", "0", NULL);
        char *status = zstr_recv(self->actor);
        zstr_free(&status);
        pthread_mutex_unlock(&self->pipe_lock);
    }
    return rc;
}

nexus_err_t nexus_session_get(nexus_client_t *self, const char *session_id, nexus_records_t **out)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (!out)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "out is NULL: nowhere to put the record");
    *out = NULL;
    if (!session_id || !*session_id)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "session_id is NULL or empty");
    nx_req_t req;
    nx_req_init(&req, "session.get");
    nx_req_str(&req, "session", session_id);
    return s_call_records(self, &req, NULL, "session", out);
}

/*  The most records one list reply holds (the ops' bound on limit).        */
#define S_LIST_MAX 100000

/*  The arguments every list call shares: out to take the records, limit
    within what one reply holds. Refused here, with the bound named, since
    nothing would be sent.                                                  */
static nexus_err_t s_check_list(nexus_client_t *self, uint32_t limit, nexus_records_t **out)
{
    if (!out)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "out is NULL: nowhere to put the records");
    *out = NULL;
    if (limit > S_LIST_MAX)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "limit %" PRIu32 " is over %d (the most one reply holds; 0: the "
                              "broker's default)",
                              limit, S_LIST_MAX);
    return NEXUS_OK;
}

/*  A page asked for after an id must start past it: a broker older than
    the field ignores it and answers the first page again, which a caller
    paging until not truncated would take for ever.                         */
static nexus_err_t s_check_after(nexus_client_t *self, nexus_err_t rc, const char *after,
                                 const char *key, nexus_records_t **out)
{
    if (rc || !after || !*after || !nexus_records_count(*out))
        return rc;
    const char *first = nexus_records_str(*out, 0, key);
    if (first && strcmp(first, after) > 0)
        return rc;
    nexus_records_destroy(out);
    return nx_client_fail(self, NEXUS_ERR_BAD_REQUEST,
                          "the broker ignored 'after' (it is older than this library): it cannot "
                          "give the next page");
}

/*  Sends a list op's page (after, limit) and checks that it starts past
    after.                                                                  */
static nexus_err_t s_call_page(nexus_client_t *self, nx_req_t *req, const char *after,
                               uint32_t limit, const char *array_key, const char *id_key,
                               nexus_records_t **out)
{
    if (after && *after)
        nx_req_str(req, "after", after);
    if (limit)
        nx_req_u64(req, "limit", limit);
    return s_check_after(self, s_call_records(self, req, array_key, NULL, out), after, id_key, out);
}

nexus_err_t nexus_sessions_list_after(nexus_client_t *self, int all, const char *after,
                                      uint32_t limit, nexus_records_t **out)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nexus_err_t rc = s_check_list(self, limit, out);
    if (rc)
        return rc;
    nx_req_t req;
    nx_req_init(&req, "session.list");
    if (all)
        nx_req_bool(&req, "all", true);
    return s_call_page(self, &req, after, limit, "sessions", "session", out);
}

nexus_err_t nexus_sessions_list(nexus_client_t *self, int all, nexus_records_t **out)
{
    /*  "Every session" as before the lists had pages, up to what one reply
        may hold; truncated says when there are more.                       */
    return nexus_sessions_list_after(self, all, NULL, S_LIST_MAX, out);
}

nexus_err_t nexus_sessions_find(nexus_client_t *self, const char *csv, int available,
                                nexus_records_t **out)
{
    return nexus_sessions_find_after(self, csv, available, NULL, S_LIST_MAX, out);
}

nexus_err_t nexus_sessions_find_after(nexus_client_t *self, const char *csv, int available,
                                      const char *after, uint32_t limit, nexus_records_t **out)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nexus_err_t rc = s_check_list(self, limit, out);
    if (rc)
        return rc;
    if ((!csv || !*csv) && !available)
        return nx_client_fail(self, NEXUS_ERR_INVALID,
                              "csv is NULL or empty and available is 0: name a capability, or "
                              "ask for the available sessions");
    char *copy = csv ? strdup(csv) : NULL;
    if (csv && !copy)
        return nx_client_fail(self, NEXUS_ERR_NOMEM, "out of memory");
    char *items[NX_PATTERNS_MAX];
    size_t n = 0;
    char *save = NULL;
    for (char *t = copy ? strtok_r(copy, ", ", &save) : NULL; t && n < NX_PATTERNS_MAX;
         t = strtok_r(NULL, ", ", &save))
        items[n++] = t;
    nx_req_t req;
    nx_req_init(&req, "session.find");
    if (n)
        nx_req_strs(&req, "capabilities", items, n);
    if (available)
        nx_req_bool(&req, "available", true);
    free(copy);
    return s_call_page(self, &req, after, limit, "sessions", "session", out);
}

/*  ---- Claims --------------------------------------------------------------*/

static nexus_err_t s_check_work(nexus_client_t *self, const char *work_id)
{
    if (!work_id || !*work_id || strlen(work_id) > 256)
        return nx_client_fail(self, NEXUS_ERR_INVALID, "work id must be 1..256 bytes");
    return s_need_session(self);
}

nexus_err_t nexus_claim(nexus_client_t *self, const char *work_id, uint64_t ttl_ms,
                        const char *description, nexus_claim_result_t *result)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    if (result)
        memset(result, 0, sizeof *result);
    nexus_err_t rc = s_check_work(self, work_id);
    if (rc)
        return rc;
    nx_req_t req;
    nx_req_init(&req, "work.claim");
    nx_req_session(&req, self);
    nx_req_str(&req, "work_id", work_id);
    if (ttl_ms)
        nx_req_u64(&req, "ttl_ms", ttl_ms);
    nx_req_str(&req, "description", description);
    nx_reply_t rep;
    rc = nx_client_call(self, &req, &rep);
    nx_req_destroy(&req);
    if ((rc == NEXUS_OK || rc == NEXUS_ERR_DENIED) && result && rep.map) {
        if (rc == NEXUS_OK)
            result->token = nx_obj_u64(rep.map, "token");
        result->expires_at = nx_obj_u64(rep.map, "expires_at");
        nx_obj_str(rep.map, "holder", result->holder, sizeof result->holder);
        nx_obj_str(rep.map, "state", result->state, sizeof result->state);
        if (rc == NEXUS_OK && !result->state[0])
            snprintf(result->state, sizeof result->state, "claimed");
    }
    if (rc == NEXUS_ERR_DENIED && rep.map) {
        char holder[NEXUS_ID_MAX], state[32];
        nx_obj_str(rep.map, "holder", holder, sizeof holder);
        nx_obj_str(rep.map, "state", state, sizeof state);
        nx_client_fail(self, rc, "'%s' is %s by %s", work_id, state[0] ? state : "held",
                       holder[0] ? holder : "another session");
    }
    nx_reply_destroy(&rep);
    return rc;
}

static nexus_err_t s_token_op(nexus_client_t *self, const char *op, const char *work_id,
                              uint64_t token, nx_req_t *req)
{
    nexus_err_t rc = s_check_work(self, work_id);
    if (rc)
        return rc;
    nx_req_init(req, op);
    nx_req_session(req, self);
    nx_req_str(req, "work_id", work_id);
    nx_req_u64(req, "token", token);
    return NEXUS_OK;
}

nexus_err_t nexus_renew(nexus_client_t *self, const char *work_id, uint64_t token, uint64_t ttl_ms,
                        uint64_t *expires_at)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nx_req_t req;
    nexus_err_t rc = s_token_op(self, "work.renew", work_id, token, &req);
    if (rc)
        return rc;
    if (ttl_ms)
        nx_req_u64(&req, "ttl_ms", ttl_ms);
    nx_reply_t rep;
    rc = nx_client_call(self, &req, &rep);
    nx_req_destroy(&req);
    if (rc == NEXUS_OK && expires_at)
        *expires_at = nx_obj_u64(rep.map, "expires_at");
    nx_reply_destroy(&rep);
    return rc;
}

nexus_err_t nexus_release(nexus_client_t *self, const char *work_id, uint64_t token,
                          const char *reason)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nx_req_t req;
    nexus_err_t rc = s_token_op(self, "work.release", work_id, token, &req);
    if (rc)
        return rc;
    nx_req_str(&req, "reason", reason);
    return s_call_records(self, &req, NULL, NULL, NULL);
}

nexus_err_t nexus_complete(nexus_client_t *self, const char *work_id, uint64_t token,
                           const char *result_json)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    msgpack_sbuffer result;
    msgpack_sbuffer_init(&result);
    char err[256];
    if (result_json && *result_json &&
        nx_json_text_to_msgpack(result_json, &result, err, sizeof err)) {
        msgpack_sbuffer_destroy(&result);
        return nx_client_fail(self, NEXUS_ERR_INVALID, "result: %s", err);
    }
    nx_req_t req;
    nexus_err_t rc = s_token_op(self, "work.complete", work_id, token, &req);
    if (rc) {
        msgpack_sbuffer_destroy(&result);
        return rc;
    }
    if (result.size)
        nx_req_raw(&req, "result", result.data, result.size);
    msgpack_sbuffer_destroy(&result);
    return s_call_records(self, &req, NULL, NULL, NULL);
}

nexus_err_t nexus_claims_list_after(nexus_client_t *self, const char *holder, const char *state,
                                    const char *prefix, const char *after, uint32_t limit,
                                    nexus_records_t **out)
{
    if (!self)
        return NEXUS_ERR_INVALID;
    nexus_err_t rc = s_check_list(self, limit, out);
    if (rc)
        return rc;
    nx_req_t req;
    nx_req_init(&req, "work.list");
    nx_req_str(&req, "holder", holder);
    nx_req_str(&req, "state", state);
    nx_req_str(&req, "prefix", prefix);
    return s_call_page(self, &req, after, limit, "claims", "work_id", out);
}

nexus_err_t nexus_claims_list(nexus_client_t *self, const char *holder, const char *state,
                              const char *prefix, uint32_t limit, nexus_records_t **out)
{
    return nexus_claims_list_after(self, holder, state, prefix, NULL, limit, out);
}
