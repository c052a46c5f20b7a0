/*  =========================================================================
    nx_etcd - a small client of etcd's v3 API in its JSON form (the gRPC
    gateway every etcd 3.4 serves on its client URLs: POST /v3/kv/range,
    /v3/kv/put, /v3/kv/txn, /v3/kv/deleterange, /v3/lease/grant,
    /v3/lease/keepalive, /v3/lease/revoke, /v3/watch; keys and values in
    base64, 64-bit numbers as strings), over libcurl, with jansson.

    It knows several client URLs: a call that cannot reach one (or gets no
    answer within the timeout) tries the next, so one etcd member down or
    cut off costs one timeout, not the call. What etcd answers is taken as
    it is: a transaction that did not succeed is not an error.

    Blocking calls: for a thread of its own (nx_elector), never the loop.
    Errors: every call returns 0, or -1 with the reason in nx_etcd_error
    (valid until the next call).
    =========================================================================
*/

#ifndef NX_ETCD_H_INCLUDED
#define NX_ETCD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _nx_etcd_t nx_etcd_t;

/*  A key's value as etcd has it.                                          */
typedef struct {
    bool found;         /* the key exists                                 */
    char value[1024];   /* its value, NUL-terminated (cut to fit)         */
    size_t len;         /* bytes in value                                 */
    int64_t create_rev; /* revision that created it                       */
    int64_t mod_rev;    /* revision that last changed it                  */
    int64_t lease;      /* the lease it lives under, 0: none              */
} nx_etcd_kv_t;

/*  A comparison of a transaction.                                         */
typedef enum {
    NX_ETCD_CREATE = 0, /* create_revision == num (0: the key is absent)   */
    NX_ETCD_MOD,        /* mod_revision == num                              */
    NX_ETCD_VALUE       /* value == value                                   */
} nx_etcd_target_t;

typedef struct {
    const char *key;
    nx_etcd_target_t target;
    int64_t num;
    const char *value;
} nx_etcd_cmp_t;

/*  An operation of a transaction.                                         */
typedef struct {
    bool del; /* delete the key (else put)                         */
    const char *key;
    const char *value; /* put: the value                                    */
    int64_t lease;     /* put: under this lease (0: none)                   */
} nx_etcd_op_t;

/*  What a watch saw.                                                      */
typedef struct {
    bool deleted;     /* the key went (else it was put)                    */
    nx_etcd_kv_t kv;  /* the key after a put                               */
    int64_t revision; /* the event's revision                              */
} nx_etcd_event_t;

/*  endpoints: client URLs, comma-separated (http://host:2379,...).
    timeout_ms: per attempt at one URL. NULL when there is no URL or no
    memory.                                                                */
nx_etcd_t *nx_etcd_new(const char *endpoints, long timeout_ms);
void nx_etcd_destroy(nx_etcd_t **self_p);

const char *nx_etcd_error(nx_etcd_t *self);

/*  The URL that answered last.                                            */
const char *nx_etcd_endpoint(nx_etcd_t *self);

/*  Grants a lease of ttl seconds: *id and the TTL etcd gave (it may raise
    a short one).                                                          */
int nx_etcd_grant(nx_etcd_t *self, int64_t ttl, int64_t *id, int64_t *granted);

/*  Renews the lease: *ttl gets what is left (0: the lease is gone).       */
int nx_etcd_keepalive(nx_etcd_t *self, int64_t id, int64_t *ttl);

int nx_etcd_revoke(nx_etcd_t *self, int64_t id);

/*  Reads key: kv->found says whether it exists; *revision (may be NULL)
    the store's revision when it was read.                                 */
int nx_etcd_get(nx_etcd_t *self, const char *key, nx_etcd_kv_t *kv, int64_t *revision);

int nx_etcd_put(nx_etcd_t *self, const char *key, const char *value, int64_t lease);

int nx_etcd_del(nx_etcd_t *self, const char *key);

/*  If every comparison holds, runs the operations, atomically: *succeeded
    says which. Up to 8 of each.                                           */
int nx_etcd_txn(nx_etcd_t *self, const nx_etcd_cmp_t *cmps, size_t n_cmps, const nx_etcd_op_t *ops,
                size_t n_ops, bool *succeeded);

/*  Watches key from revision from (changes made at or after it, so none
    is missed between two calls) for up to wait_ms. Returns 1 with the
    first event, 0 when none came in time, -1 on an error.                 */
int nx_etcd_watch(nx_etcd_t *self, const char *key, int64_t from, long wait_ms,
                  nx_etcd_event_t *ev);

#endif
