/*  =========================================================================
    fuzz_tokens - the tokens file and its permissions (sdk/proto/nx_auth.c,
    nx_perm.c): what a file says, and what the broker and the gateway then
    let each token do.

    Input: one byte (bit 0: a shared token is set too), then the file.
    Promises checked for every token of a file that loads:
      - its secret is accepted (nx_auth_check) and a wrong one is not;
      - the token behind its name (User-Id) has the same rights;
      - the ZeroMQ prefixes made for a subscription (nx_auth_sub_prefixes)
        never select an event the token may not read, nor one outside the
        prefix asked for: checked on topics taken from the file and on the
        broker's own (session.*, work.*);
    and a refused file says why, with its line.
    =========================================================================
*/

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "nx_auth.h"
#include "nx_topic.h"

#define S_TOPICS 64
#define S_TOKENS 4
#define S_PREFIX 300

typedef struct {
    char *items[S_TOPICS];
    size_t n;
} s_set_t;

static void s_add(s_set_t *set, const char *s, size_t len)
{
    if (set->n == S_TOPICS || len == 0 || len > NX_TOPIC_MAX || !nx_topic_valid(s, len))
        return;
    for (size_t i = 0; i < set->n; i++)
        if (strlen(set->items[i]) == len && memcmp(set->items[i], s, len) == 0)
            return;
    set->items[set->n++] = strndup(s, len);
}

/*  Topics a pattern matches: its wildcards filled in.                     */
static void s_add_pattern(s_set_t *set, const char *p, size_t len)
{
    static const char *const fills[][2] = {{"x", "x"}, {"s1", "y.z"}, {"direct", "direct"}};
    for (size_t f = 0; f < 3; f++) {
        char buf[S_PREFIX * 2];
        size_t n = 0;
        for (size_t i = 0; i < len && n + 8 < sizeof buf; i++) {
            const char *fill = p[i] == '*' ? fills[f][0] : p[i] == '>' ? fills[f][1] : NULL;
            if (fill) {
                memcpy(buf + n, fill, strlen(fill));
                n += strlen(fill);
            } else
                buf[n++] = p[i];
        }
        s_add(set, buf, n);
    }
}

/*  The prefixes emitted for one subscription, in a small open-addressing
    set: a topic's frame is selected when one of its own prefixes is in
    it (ZeroMQ's rule), found in O(frame length).                          */
#define S_SLOTS 8192
typedef struct {
    uint16_t len[S_SLOTS]; /* 0: empty; else length + 1                   */
    char p[S_SLOTS][S_PREFIX];
    uint32_t used[S_SLOTS / 2]; /* slots to clear for the next one      */
    size_t n;
} s_emitted_t;

static uint32_t s_hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h ^ (uint32_t)len;
}

static bool s_has(const s_emitted_t *e, const char *p, size_t len)
{
    for (uint32_t i = s_hash(p, len) % S_SLOTS;; i = (i + 1) % S_SLOTS) {
        if (!e->len[i])
            return false;
        if (e->len[i] == len + 1 && memcmp(e->p[i], p, len) == 0)
            return true;
    }
}

static const char *s_asked;
static size_t s_asked_len;

static bool s_starts(const char *s, size_t slen, const char *with, size_t wlen)
{
    return slen >= wlen && memcmp(s, with, wlen) == 0;
}

static void s_emit(void *arg, const char *prefix, size_t len)
{
    s_emitted_t *e = arg;
    FZ_CHECK(len < S_PREFIX, "a prefix of %zu bytes", len);
    /*  Each one selects only under what was asked for.                   */
    FZ_CHECK(s_starts(prefix, len, s_asked, s_asked_len),
             "subscribing '%.*s' made the prefix '%.*s', which selects outside it",
             (int)s_asked_len, s_asked, (int)len, prefix);
    if (e->n >= S_SLOTS / 2 || s_has(e, prefix, len))
        return;
    uint32_t i = s_hash(prefix, len) % S_SLOTS;
    while (e->len[i])
        i = (i + 1) % S_SLOTS;
    e->len[i] = (uint16_t)(len + 1);
    memcpy(e->p[i], prefix, len);
    e->used[e->n++] = i;
}

/*  What ZeroMQ would deliver for the prefixes made for `asked`: only
    events the token may read, and only under `asked`.                    */
static void s_check_prefixes(nx_auth_t *auth, const void *h, const char *asked, size_t alen,
                             const s_set_t *topics)
{
    static s_emitted_t emitted;
    s_emitted_t *e = &emitted;
    for (size_t i = 0; i < e->n; i++)
        e->len[e->used[i]] = 0;
    e->n = 0;
    s_asked = asked;
    s_asked_len = alen;
    nx_auth_sub_prefixes(auth, h, asked, alen, s_emit, e);
    for (size_t t = 0; t < topics->n && e->n; t++) {
        /*  The event frame starts with the topic and a NUL.               */
        char frame[NX_TOPIC_MAX + 2];
        size_t tlen = strlen(topics->items[t]);
        memcpy(frame, topics->items[t], tlen);
        frame[tlen] = 0;
        if (!s_starts(frame, tlen + 1, asked, alen))
            continue;
        bool selected = false;
        for (size_t k = alen; k <= tlen + 1 && !selected; k++)
            selected = s_has(e, frame, k);
        FZ_CHECK(!selected || nx_auth_may_read(auth, h, frame, tlen),
                 "token '%s': subscribing '%.*s' delivers '%s', which it may not read",
                 nx_auth_name(auth, h), (int)alen, asked, frame);
    }
}

static void s_check_token(nx_auth_t *auth, const void *h, const s_set_t *topics,
                          const s_set_t *asks)
{
    char buf[4096];
    nx_auth_describe(auth, h, true, buf, sizeof buf);
    nx_auth_describe(auth, h, false, buf, sizeof buf);
    /*  The same token, found by the name it authenticates as.            */
    const char *name = nx_auth_name(auth, h);
    const void *by_name = NULL;
    if (name[0] && nx_auth_by_name(auth, name, &by_name))
        for (size_t t = 0; t < topics->n; t++) {
            const char *topic = topics->items[t];
            size_t len = strlen(topic);
            FZ_CHECK(nx_auth_may_read(auth, h, topic, len) ==
                             nx_auth_may_read(auth, by_name, topic, len) &&
                         nx_auth_may_publish(auth, h, topic, len) ==
                             nx_auth_may_publish(auth, by_name, topic, len),
                     "token '%s' found by its name has other rights on '%s'", name, topic);
        }
    for (size_t t = 0; t < topics->n; t++) {
        const char *topic = topics->items[t];
        size_t len = strlen(topic);
        nx_auth_may_publish(auth, h, topic, len);
        nx_auth_may_source(auth, h, topic, len);
        nx_auth_may_subscribe(auth, h, topic, len);
        nx_auth_allows(auth, h, topic, len);
        nx_auth_names(auth, h, topic, len);
        nx_auth_prefix_shared(auth, h, topic, len);
    }
    for (size_t a = 0; a < asks->n; a++)
        s_check_prefixes(auth, h, asks->items[a], strlen(asks->items[a]), topics);
    /*  Prefixes of one topic: its first bytes, all of it, the frame's
        topic with its NUL.                                               */
    if (topics->n) {
        const char *t = topics->items[topics->n - 1];
        size_t len = strlen(t);
        for (size_t k = 1; k <= len + 1; k = k < 12 || k >= len ? k + 1 : len)
            s_check_prefixes(auth, h, t, k, topics);
    }
    nx_auth_sole(auth, h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool shared = data[0] & 1;
    data++;
    size--;
    char err[512] = "";
    nx_auth_t *auth =
        nx_auth_new(shared ? "shared-secret" : NULL, fz_file(data, size), err, sizeof err);
    if (!auth) {
        FZ_CHECK(err[0], "a tokens file refused without a message");
        return 0;
    }
    /*  The words of the file: secrets (first word of a line) and every
        value, as topics and as patterns.                                  */
    s_set_t topics = {{0}, 0}, asks = {{0}, 0};
    char *secrets[S_TOKENS];
    size_t n_secrets = 0;
    static const char *const fixed[] = {"work.x",
                                        "session.connected",
                                        "session.disconnected",
                                        "session.s1.direct",
                                        "session.s2.direct",
                                        "session.s1.x.y",
                                        "session.x",
                                        "build.1",
                                        "a",
                                        "message.direct"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        s_add(&topics, fixed[i], strlen(fixed[i]));
    char *text = fz_strndup(data, size);
    char *save_line = NULL;
    for (char *line = strtok_r(text, "\n", &save_line); line;
         line = strtok_r(NULL, "\n", &save_line)) {
        char *save = NULL;
        bool first = true;
        for (char *w = strtok_r(line, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
            if (first && w[0] != '#' && n_secrets < S_TOKENS)
                secrets[n_secrets++] = w;
            first = false;
            char *v = strchr(w, '=');
            v = v ? v + 1 : w;
            char *save_v = NULL;
            for (char *item = strtok_r(v, ",", &save_v); item;
                 item = strtok_r(NULL, ",", &save_v)) {
                size_t len = strlen(item);
                if (nx_pattern_valid(item, len)) {
                    s_add_pattern(&topics, item, len);
                    if (asks.n < 8)
                        asks.items[asks.n++] = strndup(item, nx_pattern_prefix(item, len));
                }
                s_add(&topics, item, len);
                char priv[S_PREFIX];
                int plen = snprintf(priv, sizeof priv, "session.%s.direct", item);
                if (plen > 0 && (size_t)plen < sizeof priv)
                    s_add(&topics, priv, (size_t)plen);
            }
        }
    }
    static const char *const asked[] = {"", "s", "session", "session.", "session.s1", "work.", "w"};
    for (size_t i = 0; i < sizeof asked / sizeof asked[0] && asks.n < 16; i++)
        asks.items[asks.n++] = strdup(asked[i]);

    for (size_t i = 0; i < n_secrets; i++) {
        const void *h = NULL;
        if (nx_auth_check(auth, secrets[i], strlen(secrets[i]), &h) == NEXUS_OK)
            s_check_token(auth, h, &topics, &asks);
    }
    const void *h = NULL;
    if (shared) {
        FZ_CHECK(nx_auth_check(auth, "shared-secret", 13, &h) == NEXUS_OK,
                 "the shared token is refused");
        s_check_token(auth, h, &topics, &asks);
    }
    FZ_CHECK(nx_auth_check(auth, "not-a-token-of-the-file\x01", 24, &h) != NEXUS_OK ||
                 !nx_auth_enabled(auth),
             "a token no line has is accepted");
    FZ_CHECK(nx_auth_check(auth, NULL, 0, &h) != NEXUS_OK || !nx_auth_enabled(auth),
             "no token is accepted");
    free(text);
    for (size_t i = 0; i < topics.n; i++)
        free(topics.items[i]);
    for (size_t i = 0; i < asks.n; i++)
        free(asks.items[i]);
    nx_auth_destroy(&auth);
    return 0;
}
