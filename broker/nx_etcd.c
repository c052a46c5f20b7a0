/*  =========================================================================
    nx_etcd - etcd's v3 JSON API. nx_etcd.h is the contract.

    One libcurl easy handle, kept between calls (its connection is reused).
    A call goes to the URL that answered last; when that one cannot be
    reached or does not answer in time, the next, once round the list.
    =========================================================================
*/

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_base64.h"
#include "nx_etcd.h"

#define S_URLS_MAX 16
#define S_BODY_MAX (4u << 20) /* an answer larger than this is not etcd's */

struct _nx_etcd_t {
    char *urls[S_URLS_MAX]; /* client URLs, without a trailing slash        */
    size_t n_urls;          /* entries in urls                              */
    size_t cur;             /* the one that answered last                   */
    long timeout_ms;        /* per attempt                                  */
    CURL *curl;             /* the handle, reused                           */
    char *body;             /* the answer                                   */
    size_t len, cap;        /* bytes in body, allocated                     */
    char err[300];          /* the last error                               */
    /*  A watch's state (its answer is a stream of JSON objects).          */
    bool watching;          /* the write callback parses events             */
    bool got_event;         /* it found one                                 */
    nx_etcd_event_t *event; /* where it goes                                */
};

static void s_err(nx_etcd_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_err(nx_etcd_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->err, sizeof self->err, fmt, ap);
    va_end(ap);
}

static int s_global(void)
{
    static int done = 0;
    static CURLcode rc;
    /*  curl_global_init is not thread-safe; brokers start one elector, and
        the first call happens before the thread does anything else.       */
    if (!__atomic_exchange_n(&done, 1, __ATOMIC_SEQ_CST))
        rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    return rc == CURLE_OK ? 0 : -1;
}

nx_etcd_t *nx_etcd_new(const char *endpoints, long timeout_ms)
{
    if (!endpoints || s_global())
        return NULL;
    nx_etcd_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
    char *copy = strdup(endpoints);
    char *save = NULL;
    for (char *u = copy ? strtok_r(copy, ", ", &save) : NULL; u && self->n_urls < S_URLS_MAX;
         u = strtok_r(NULL, ", ", &save)) {
        size_t n = strlen(u);
        while (n && u[n - 1] == '/')
            u[--n] = 0;
        if (n && (self->urls[self->n_urls] = strdup(u)))
            self->n_urls++;
    }
    free(copy);
    self->curl = curl_easy_init();
    if (!self->n_urls || !self->curl) {
        nx_etcd_destroy(&self);
        return NULL;
    }
    return self;
}

void nx_etcd_destroy(nx_etcd_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_etcd_t *self = *self_p;
    for (size_t i = 0; i < self->n_urls; i++)
        free(self->urls[i]);
    if (self->curl)
        curl_easy_cleanup(self->curl);
    free(self->body);
    free(self);
    *self_p = NULL;
}

const char *nx_etcd_error(nx_etcd_t *self)
{
    return self->err;
}

const char *nx_etcd_endpoint(nx_etcd_t *self)
{
    return self->urls[self->cur];
}

/*  ---- JSON helpers ------------------------------------------------------- */

static char *s_b64(const char *s)
{
    return nx_base64_encode((const uint8_t *)s, strlen(s));
}

/*  A 64-bit number etcd sent as a string (or a number); 0 when absent.    */
static int64_t s_num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    return 0;
}

static void s_kv(json_t *kv, nx_etcd_kv_t *out)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(kv))
        return;
    out->found = true;
    out->create_rev = s_num(kv, "create_revision");
    out->mod_rev = s_num(kv, "mod_revision");
    out->lease = s_num(kv, "lease");
    const char *v = json_string_value(json_object_get(kv, "value"));
    if (v) {
        size_t n = 0;
        uint8_t *raw = nx_base64_decode(v, strlen(v), &n);
        if (raw) {
            if (n >= sizeof out->value)
                n = sizeof out->value - 1;
            memcpy(out->value, raw, n);
            out->len = n;
            free(raw);
        }
    }
    out->value[out->len] = 0;
}

/*  ---- Transport ------------------------------------------------------------- */

/*  A watch's answer: JSON objects, one per line; the first with an event
    ends the transfer (the write callback says so by taking nothing).    */
static bool s_parse_watch(nx_etcd_t *self)
{
    char *start = self->body;
    char *nl;
    while ((nl = memchr(start, '\n', self->len - (size_t)(start - self->body)))) {
        json_error_t je;
        json_t *o = json_loadb(start, (size_t)(nl - start), 0, &je);
        start = nl + 1;
        json_t *events = json_object_get(json_object_get(o, "result"), "events");
        if (json_is_array(events) && json_array_size(events) > 0) {
            json_t *e = json_array_get(events, 0);
            const char *type = json_string_value(json_object_get(e, "type"));
            memset(self->event, 0, sizeof *self->event);
            self->event->deleted = type && strcmp(type, "DELETE") == 0;
            json_t *kv = json_object_get(e, "kv");
            s_kv(kv, &self->event->kv);
            self->event->revision = s_num(kv, "mod_revision");
            if (self->event->deleted)
                self->event->kv.found = false;
            self->got_event = true;
        }
        json_decref(o);
        if (self->got_event)
            return true;
    }
    /*  Keep the unfinished line.                                          */
    size_t left = self->len - (size_t)(start - self->body);
    memmove(self->body, start, left);
    self->len = left;
    return false;
}

static size_t s_write(char *data, size_t size, size_t nmemb, void *arg)
{
    nx_etcd_t *self = arg;
    size_t n = size * nmemb;
    if (self->len + n + 1 > S_BODY_MAX)
        return 0;
    if (self->len + n + 1 > self->cap) {
        size_t cap = self->cap ? self->cap : 4096;
        while (cap < self->len + n + 1)
            cap *= 2;
        char *grown = realloc(self->body, cap);
        if (!grown)
            return 0;
        self->body = grown;
        self->cap = cap;
    }
    memcpy(self->body + self->len, data, n);
    self->len += n;
    self->body[self->len] = 0;
    if (self->watching && s_parse_watch(self))
        return 0; /* enough: ends the transfer */
    return n;
}

/*  POSTs request (consumed) to path; *answer gets the parsed reply. With
    wait_ms (a watch) the transfer may run that long. Returns 0, or -1.    */
static int s_call(nx_etcd_t *self, const char *path, json_t *request, json_t **answer, long wait_ms)
{
    if (answer)
        *answer = NULL;
    char *text = json_dumps(request, JSON_COMPACT);
    json_decref(request);
    if (!text) {
        s_err(self, "out of memory");
        return -1;
    }
    int rc = -1;
    for (size_t attempt = 0; attempt < self->n_urls; attempt++) {
        size_t i = (self->cur + attempt) % self->n_urls;
        char url[600];
        snprintf(url, sizeof url, "%s%s", self->urls[i], path);
        self->len = 0;
        CURL *c = self->curl;
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, self);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, self->timeout_ms);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, wait_ms ? wait_ms : self->timeout_ms);
        /*  Only etcd's own URLs: no redirects, no proxies from the
            environment (http_proxy would route a VPN address elsewhere). */
        curl_easy_setopt(c, CURLOPT_PROXY, "");
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (self->watching && (self->got_event || cc == CURLE_OPERATION_TIMEDOUT) &&
            status == 200) {
            /*  A watch ends by our own hand or by its time: both fine.    */
            self->cur = i;
            rc = 0;
            break;
        }
        if (cc != CURLE_OK) {
            s_err(self, "%s: %s", url, curl_easy_strerror(cc));
            continue;
        }
        if (status != 200) {
            s_err(self, "%s: HTTP %ld: %.200s", url, status, self->len ? self->body : "");
            /*  A member that answers but refuses (no leader, out of its
                cluster) may be alone: another may serve.                  */
            continue;
        }
        json_error_t je;
        json_t *o = answer ? json_loadb(self->body, self->len, 0, &je) : NULL;
        if (answer && !json_is_object(o)) {
            json_decref(o);
            s_err(self, "%s: the answer is not JSON", url);
            continue;
        }
        if (answer)
            *answer = o;
        self->cur = i;
        rc = 0;
        break;
    }
    free(text);
    return rc;
}

/*  ---- Calls --------------------------------------------------------------------- */

int nx_etcd_grant(nx_etcd_t *self, int64_t ttl, int64_t *id, int64_t *granted)
{
    json_t *a = NULL;
    if (s_call(self, "/v3/lease/grant", json_pack("{s:I}", "TTL", (json_int_t)ttl), &a, 0))
        return -1;
    *id = s_num(a, "ID");
    *granted = s_num(a, "TTL");
    const char *e = json_string_value(json_object_get(a, "error"));
    int rc = 0;
    if (!*id || e) {
        s_err(self, "lease grant refused: %s", e ? e : "no ID");
        rc = -1;
    }
    json_decref(a);
    return rc;
}

int nx_etcd_keepalive(nx_etcd_t *self, int64_t id, int64_t *ttl)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    json_t *a = NULL;
    if (s_call(self, "/v3/lease/keepalive", json_pack("{s:s}", "ID", ids), &a, 0))
        return -1;
    /*  A stream of one: {"result": {...}}; no TTL means the lease is gone. */
    json_t *r = json_object_get(a, "result");
    *ttl = s_num(r ? r : a, "TTL");
    json_decref(a);
    return 0;
}

int nx_etcd_revoke(nx_etcd_t *self, int64_t id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    json_t *a = NULL;
    int rc = s_call(self, "/v3/lease/revoke", json_pack("{s:s}", "ID", ids), &a, 0);
    json_decref(a);
    return rc;
}

int nx_etcd_get(nx_etcd_t *self, const char *key, nx_etcd_kv_t *kv, int64_t *revision)
{
    char *k = s_b64(key);
    json_t *a = NULL;
    int rc = k ? s_call(self, "/v3/kv/range", json_pack("{s:s}", "key", k), &a, 0) : -1;
    free(k);
    if (rc)
        return -1;
    json_t *kvs = json_object_get(a, "kvs");
    s_kv(json_array_get(kvs, 0), kv);
    if (revision)
        *revision = s_num(json_object_get(a, "header"), "revision");
    json_decref(a);
    return 0;
}

static json_t *s_put_request(const char *key, const char *value, int64_t lease)
{
    char *k = s_b64(key), *v = s_b64(value ? value : "");
    json_t *o = k && v ? json_pack("{s:s,s:s}", "key", k, "value", v) : NULL;
    if (o && lease) {
        char ls[32];
        snprintf(ls, sizeof ls, "%" PRId64, lease);
        json_object_set_new(o, "lease", json_string(ls));
    }
    free(k);
    free(v);
    return o;
}

int nx_etcd_put(nx_etcd_t *self, const char *key, const char *value, int64_t lease)
{
    json_t *req = s_put_request(key, value, lease);
    json_t *a = NULL;
    int rc = req ? s_call(self, "/v3/kv/put", req, &a, 0) : -1;
    json_decref(a);
    return rc;
}

int nx_etcd_del(nx_etcd_t *self, const char *key)
{
    char *k = s_b64(key);
    json_t *a = NULL;
    int rc = k ? s_call(self, "/v3/kv/deleterange", json_pack("{s:s}", "key", k), &a, 0) : -1;
    free(k);
    json_decref(a);
    return rc;
}

int nx_etcd_txn(nx_etcd_t *self, const nx_etcd_cmp_t *cmps, size_t n_cmps, const nx_etcd_op_t *ops,
                size_t n_ops, bool *succeeded)
{
    *succeeded = false;
    json_t *compare = json_array(), *success = json_array();
    for (size_t i = 0; i < n_cmps && i < 8; i++) {
        char *k = s_b64(cmps[i].key);
        json_t *c = json_pack("{s:s,s:s}", "key", k ? k : "", "result", "EQUAL");
        free(k);
        char num[32];
        snprintf(num, sizeof num, "%" PRId64, cmps[i].num);
        if (cmps[i].target == NX_ETCD_CREATE) {
            json_object_set_new(c, "target", json_string("CREATE"));
            json_object_set_new(c, "create_revision", json_string(num));
        } else if (cmps[i].target == NX_ETCD_MOD) {
            json_object_set_new(c, "target", json_string("MOD"));
            json_object_set_new(c, "mod_revision", json_string(num));
        } else {
            char *v = s_b64(cmps[i].value ? cmps[i].value : "");
            json_object_set_new(c, "target", json_string("VALUE"));
            json_object_set_new(c, "value", json_string(v ? v : ""));
            free(v);
        }
        json_array_append_new(compare, c);
    }
    for (size_t i = 0; i < n_ops && i < 8; i++) {
        if (ops[i].del) {
            char *k = s_b64(ops[i].key);
            json_array_append_new(
                success, json_pack("{s:{s:s}}", "request_delete_range", "key", k ? k : ""));
            free(k);
        } else
            json_array_append_new(success,
                                  json_pack("{s:o}", "request_put",
                                            s_put_request(ops[i].key, ops[i].value, ops[i].lease)));
    }
    json_t *a = NULL;
    int rc = s_call(self, "/v3/kv/txn",
                    json_pack("{s:o,s:o}", "compare", compare, "success", success), &a, 0);
    if (rc)
        return -1;
    *succeeded = json_is_true(json_object_get(a, "succeeded"));
    json_decref(a);
    return 0;
}

int nx_etcd_watch(nx_etcd_t *self, const char *key, int64_t from, long wait_ms, nx_etcd_event_t *ev)
{
    char *k = s_b64(key);
    if (!k)
        return -1;
    json_t *create = json_pack("{s:s}", "key", k);
    free(k);
    if (from > 0) {
        char num[32];
        snprintf(num, sizeof num, "%" PRId64, from);
        json_object_set_new(create, "start_revision", json_string(num));
    }
    self->watching = true;
    self->got_event = false;
    self->event = ev;
    int rc = s_call(self, "/v3/watch", json_pack("{s:o}", "create_request", create), NULL, wait_ms);
    self->watching = false;
    if (rc)
        return -1;
    return self->got_event ? 1 : 0;
}
