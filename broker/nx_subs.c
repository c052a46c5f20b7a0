/*  =========================================================================
    nx_subs - subscriptions on the XPUB under tokens. nx_subs.h is the
    contract.
    =========================================================================
*/

#include <string.h>

#include "nx_auth.h"
#include "nx_broker.h"
#include "nx_log.h"
#include "nx_subs.h"

typedef struct {
    void *xpub; /* the XPUB socket                                       */
    int option; /* ZMQ_SUBSCRIBE or ZMQ_UNSUBSCRIBE                      */
    bool as_is; /* the one prefix emitted is the one asked               */
    const unsigned char *asked;
    size_t asked_len;
    size_t count; /* prefixes emitted                                      */
} s_apply_t;

static void s_set(void *arg, const char *prefix, size_t len)
{
    s_apply_t *a = arg;
    a->count++;
    a->as_is = a->count == 1 && len == a->asked_len && memcmp(prefix, a->asked, len) == 0;
    if (a->option == ZMQ_SUBSCRIBE)
        zmq_setsockopt(a->xpub, ZMQ_SUBSCRIBE, prefix, len);
}

/*  The prefix as text for the log: printable bytes, others as '?'.       */
static void s_shown(const unsigned char *p, size_t len, char *out, size_t size)
{
    size_t n = len < size - 1 ? len : size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    out[n] = 0;
}

void nx_subs_apply(nx_broker_t *self, zmq_msg_t *msg, const unsigned char *data, size_t size)
{
    bool subscribe = data[0] == 1;
    const unsigned char *prefix = data + 1;
    size_t len = size - 1;
    /*  A connection that went: ZeroMQ already took its prefixes away (its
        unsubscribes come without metadata, for the count).               */
    const char *who = zmq_msg_gets(msg, "User-Id");
    const void *handle = NULL;
    bool known = who && nx_auth_by_name(self->auth, who, &handle);
    if (!subscribe && !who)
        return;
    if (!known) {
        if (subscribe) {
            self->count.sub_refused++;
            nx_log_limited(&self->sub_log, NX_LOG_WARN,
                           "refused subscription on events-out: the connection has no identity");
        }
        return;
    }
    s_apply_t a = {
        self->h_xpub, subscribe ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE, false, prefix, len, 0};
    if (!nx_auth_sub_restricted(self->auth, handle)) {
        zmq_setsockopt(self->h_xpub, a.option, prefix, len);
        return;
    }
    nx_auth_sub_prefixes(self->auth, handle, (const char *)prefix, len, s_set, &a);
    if (subscribe && a.count == 0) {
        char shown[80], sub[160];
        s_shown(prefix, len, shown, sizeof shown);
        self->count.sub_refused++;
        nx_log_limited(&self->sub_log, NX_LOG_WARN,
                       "refused subscription on events-out: %s may not read what prefix '%s' "
                       "selects (its sub: %s)",
                       who, shown, nx_auth_describe(self->auth, handle, true, sub, sizeof sub));
    }
    /*  What was applied as asked, and cannot have come from another of its
        subscriptions, goes; anything else stays until it disconnects.     */
    if (!subscribe && a.count == 1 && a.as_is &&
        !nx_auth_prefix_shared(self->auth, handle, (const char *)prefix, len))
        zmq_setsockopt(self->h_xpub, ZMQ_UNSUBSCRIBE, prefix, len);
}
