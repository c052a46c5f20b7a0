/*  =========================================================================
    nx_auth - tokens: the shared one, and per-client ones from a file, with
    their names, sessions, CURVE keys and topic permissions. nx_auth.h is
    the contract. Comparison of secrets is constant-time so that a token
    cannot be guessed byte by byte from reply timing.
    =========================================================================
*/

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_auth.h"
#include "nx_topic.h"

#define S_LINE_MAX 4096

typedef struct {
    char **items; /* patterns                                              */
    size_t n;
    bool all; /* ">" (or "broadcast") is one of them                      */
} s_list_t;

typedef struct {
    char *token;                     /* the secret                                */
    size_t token_len;                /* bytes in token                            */
    char name[NX_AUTH_NAME_MAX + 1]; /* non-secret name: User-Id, source   */
    char key[41];                    /* CURVE public key (Z85), "" for none       */
    char **sessions;                 /* ids it may act as                         */
    size_t n_sessions;               /*                                           */
    bool any_session;                /* '*' among them                            */
    s_list_t pub, sub;               /* topic permissions                         */
    bool private_all;                /* reads every session's private topics      */
    int line;                        /* where it was read (0: not from a file)    */
} s_entry_t;

struct _nx_auth_t {
    bool shared_on;     /* the shared token is set                         */
    s_entry_t shared;   /* it, as an entry: sessions=* pub=> sub=>         */
    s_entry_t keyless;  /* a CURVE client no line names                    */
    s_entry_t *entries; /* tokens from the file                            */
    size_t n_entries;
    zhashx_t *by_name; /* name -> index + 1 in entries (the first one)    */
    zhashx_t *by_key;  /* CURVE key -> index + 1 in entries               */
};

static bool s_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
    return diff == 0;
}

/*  ---- Loading -------------------------------------------------------------- */

/*  The entry of that name or key (index + 1 in a table), or NULL.        */
static s_entry_t *s_lookup(nx_auth_t *self, zhashx_t *table, const char *key)
{
    uintptr_t i = (uintptr_t)zhashx_lookup(table, key);
    return i ? &self->entries[i - 1] : NULL;
}

static void s_list_free(s_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static void s_entry_free(s_entry_t *e)
{
    if (e->token) {
        /*  The secret does not outlive us in freed memory.                */
        memset(e->token, 0, e->token_len);
        free(e->token);
    }
    for (size_t k = 0; k < e->n_sessions; k++)
        free(e->sessions[k]);
    free(e->sessions);
    s_list_free(&e->pub);
    s_list_free(&e->sub);
    memset(e, 0, sizeof *e);
}

static int s_list_add(s_list_t *l, const char *item)
{
    char **more = realloc(l->items, (l->n + 1) * sizeof *more);
    if (!more)
        return -1;
    l->items = more;
    if (!(l->items[l->n] = strdup(item)))
        return -1;
    l->n++;
    if (nx_pattern_is_all(item, strlen(item)))
        l->all = true;
    return 0;
}

/*  Every session's private topics are readable: '*' in sessions, or a
    sub= grant of all of session.> (">" does not count: it names nothing). */
static void s_entry_settle(s_entry_t *e)
{
    e->private_all = e->any_session;
    for (size_t i = 0; i < e->sub.n && !e->private_all; i++) {
        const char *g = e->sub.items[i];
        e->private_all = strcmp(g, "session.>") == 0;
    }
}

static bool s_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NX_AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == ':' || c == '@' || c == '.'))
            return false;
    }
    return true;
}

static bool s_lists_equal(const s_list_t *a, const s_list_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i], b->items[i]) != 0)
            return false;
    return true;
}

/*  Same rights: two lines may share a name then (the first format's
    default names, one per session, repeat when a session has two tokens). */
static bool s_same_rights(const s_entry_t *a, const s_entry_t *b)
{
    if (a->n_sessions != b->n_sessions || !s_lists_equal(&a->pub, &b->pub) ||
        !s_lists_equal(&a->sub, &b->sub) || strcmp(a->key, b->key) != 0)
        return false;
    for (size_t i = 0; i < a->n_sessions; i++)
        if (strcmp(a->sessions[i], b->sessions[i]) != 0)
            return false;
    return true;
}

/*  Parses "a,b,c" into the sessions of e (checked in the new format; the
    first format took any text and still does).                           */
static int s_sessions(s_entry_t *e, char *list, bool check, char *why, size_t why_size)
{
    char *save = NULL;
    for (char *id = strtok_r(list, ",", &save); id; id = strtok_r(NULL, ",", &save)) {
        if (check && strcmp(id, "*") != 0 && !nx_session_id_valid(id, strlen(id))) {
            snprintf(why, why_size, "'%.64s' is not a session id (1..64 of [A-Za-z0-9_:@-]) or *",
                     id);
            return -1;
        }
        char **more = realloc(e->sessions, (e->n_sessions + 1) * sizeof *more);
        if (!more)
            return -1;
        e->sessions = more;
        if (!(e->sessions[e->n_sessions] = strdup(id)))
            return -1;
        e->n_sessions++;
        if (strcmp(id, "*") == 0)
            e->any_session = true;
    }
    return 0;
}

static int s_patterns(s_list_t *l, char *list, const char *field, char *why, size_t why_size)
{
    char *save = NULL;
    for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (!nx_pattern_valid(p, strlen(p))) {
            snprintf(why, why_size, "%s: '%.64s' is not a pattern", field, p);
            return -1;
        }
        if (s_list_add(l, p))
            return -1;
    }
    return 0;
}

/*  Parses the fields after the token. Returns 0, or -1 with why set.     */
static int s_fields(nx_auth_t *self, s_entry_t *e, char **fields, int n, char *why, size_t why_size)
{
    /*  The first format: TOKEN SESSION[,SESSION...], nothing else.        */
    if (n >= 1 && !strchr(fields[0], '=')) {
        if (n != 1) {
            snprintf(why, why_size,
                     "expected 'TOKEN SESSION[,SESSION...]' or 'TOKEN KEY=VALUE...' (name= "
                     "sessions= pub= sub= key=)");
            return -1;
        }
        if (s_sessions(e, fields[0], false, why, why_size) || s_list_add(&e->pub, ">") ||
            s_list_add(&e->sub, ">"))
            return -1;
        return 0;
    }
    if (n == 0) {
        snprintf(why, why_size,
                 "expected 'TOKEN SESSION[,SESSION...]' or 'TOKEN KEY=VALUE...' (name= sessions= "
                 "pub= sub= key=)");
        return -1;
    }
    bool seen_pub = false, seen_sub = false, seen_sessions = false, seen_name = false;
    for (int i = 0; i < n; i++) {
        char *eq = strchr(fields[i], '=');
        if (!eq) {
            snprintf(why, why_size, "'%.64s' is not KEY=VALUE", fields[i]);
            return -1;
        }
        *eq = 0;
        const char *key = fields[i];
        char *value = eq + 1;
        bool *seen = strcmp(key, "pub") == 0        ? &seen_pub
                     : strcmp(key, "sub") == 0      ? &seen_sub
                     : strcmp(key, "sessions") == 0 ? &seen_sessions
                     : strcmp(key, "name") == 0     ? &seen_name
                                                    : NULL;
        if (seen && *seen) {
            snprintf(why, why_size, "%s= given twice", key);
            return -1;
        }
        if (seen)
            *seen = true;
        int rc = 0;
        if (strcmp(key, "pub") == 0)
            rc = s_patterns(&e->pub, value, "pub", why, why_size);
        else if (strcmp(key, "sub") == 0)
            rc = s_patterns(&e->sub, value, "sub", why, why_size);
        else if (strcmp(key, "sessions") == 0)
            rc = s_sessions(e, value, true, why, why_size);
        else if (strcmp(key, "name") == 0) {
            if (!s_name_valid(value)) {
                snprintf(why, why_size,
                         "name '%.64s': 1..32 of [A-Za-z0-9_:@.-] (it is a source and a ZeroMQ "
                         "User-Id)",
                         value);
                rc = -1;
            } else
                snprintf(e->name, sizeof e->name, "%s", value);
        } else if (strcmp(key, "key") == 0) {
            uint8_t bin[32];
            if (e->key[0]) {
                snprintf(why, why_size, "key= given twice");
                rc = -1;
            } else if (strlen(value) != 40 || !zmq_z85_decode(bin, value)) {
                snprintf(why, why_size,
                         "key '%.64s' is not a CURVE public key (40 characters of Z85, as "
                         "'nexus keygen' prints)",
                         value);
                rc = -1;
            } else if (s_lookup(self, self->by_key, value)) {
                snprintf(why, why_size, "key %s is on another line too", value);
                rc = -1;
            } else
                snprintf(e->key, sizeof e->key, "%s", value);
        } else {
            snprintf(why, why_size, "unknown field '%.32s' (name= sessions= pub= sub= key=)", key);
            rc = -1;
        }
        if (rc)
            return -1;
    }
    if (!seen_pub && s_list_add(&e->pub, ">"))
        return -1;
    if (!seen_sub && s_list_add(&e->sub, ">"))
        return -1;
    return 0;
}

/*  Gives e, the next entry, its name (the default when it set none).     */
static int s_index(nx_auth_t *self, s_entry_t *e, bool named, char *why, size_t why_size)
{
    if (!named) {
        /*  The one session it lists, when that makes a name; else its line. */
        bool sole = e->n_sessions == 1 && !e->any_session && s_name_valid(e->sessions[0]);
        snprintf(e->name, sizeof e->name, "%s", sole ? e->sessions[0] : "");
        s_entry_t *other = e->name[0] ? s_lookup(self, self->by_name, e->name) : NULL;
        if (!e->name[0] || strcmp(e->name, NX_AUTH_SHARED_NAME) == 0 ||
            (other && !s_same_rights(other, e)))
            snprintf(e->name, sizeof e->name, "token-L%d", e->line);
    }
    s_entry_t *other = s_lookup(self, self->by_name, e->name);
    if (strcmp(e->name, NX_AUTH_SHARED_NAME) == 0 || (other && !s_same_rights(other, e))) {
        snprintf(why, why_size, "name %s is taken%s%s", e->name,
                 other ? " by a line with other rights" : " (the shared token's)",
                 named ? "" : ": give this line a name=");
        return -1;
    }
    return 0;
}

static int s_load_file(nx_auth_t *self, const char *path, char *err_buf, size_t err_size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err_buf, err_size, "cannot read tokens_file '%s'", path);
        return -1;
    }
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        char why[300] = "out of memory";
        /*  Counted without its line end, as the limit always was.        */
        size_t text_len = (size_t)len;
        while (text_len && (line[text_len - 1] == '\n' || line[text_len - 1] == '\r'))
            text_len--;
        if (text_len > S_LINE_MAX - 2) {
            snprintf(err_buf, err_size, "%s:%d: line longer than %d bytes", path, lineno,
                     S_LINE_MAX - 2);
            rc = -1;
            break;
        }
        /*  The rest of the line would be cut off unseen.                  */
        if (memchr(line, 0, (size_t)len)) {
            snprintf(err_buf, err_size, "%s:%d: a NUL byte (is this a text file?)", path, lineno);
            rc = -1;
            break;
        }
        char *fields[64], *save = NULL;
        int n = 0;
        for (char *w = strtok_r(line, " \t\r\n", &save); w && n < 64;
             w = strtok_r(NULL, " \t\r\n", &save))
            fields[n++] = w;
        if (n == 0 || fields[0][0] == '#')
            continue;
        s_entry_t *grown = realloc(self->entries, (self->n_entries + 1) * sizeof *grown);
        if (!grown) {
            snprintf(err_buf, err_size, "out of memory");
            rc = -1;
            break;
        }
        self->entries = grown;
        s_entry_t e;
        memset(&e, 0, sizeof e);
        e.line = lineno;
        e.token_len = strlen(fields[0]);
        e.token = strdup(fields[0]);
        /*  A token on two lines (or the shared one's) would get the rights
            of the first only, or every right, in silence: more than the
            file says.                                                     */
        int twice = 0;
        for (size_t i = 0; e.token && !twice && i < self->n_entries; i++)
            if (s_equal(self->entries[i].token, self->entries[i].token_len, e.token, e.token_len))
                twice = self->entries[i].line;
        bool shared = e.token && self->shared_on &&
                      s_equal(self->shared.token, self->shared.token_len, e.token, e.token_len);
        if (twice)
            snprintf(why, sizeof why, "this token is on line %d too: one line a token", twice);
        else if (shared)
            snprintf(why, sizeof why,
                     "this token is the shared token (token=), which has every right: a line "
                     "cannot narrow it");
        if (!e.token || twice || shared || s_fields(self, &e, fields + 1, n - 1, why, sizeof why) ||
            s_index(self, &e, e.name[0] != 0, why, sizeof why)) {
            snprintf(err_buf, err_size, "%s:%d: %s", path, lineno, why);
            s_entry_free(&e);
            rc = -1;
            break;
        }
        s_entry_settle(&e);
        self->entries[self->n_entries++] = e;
        /*  Indexes hold positions: the table moves as it grows.           */
        uintptr_t at = self->n_entries;
        if (!zhashx_lookup(self->by_name, e.name))
            zhashx_insert(self->by_name, e.name, (void *)at);
        if (e.key[0])
            zhashx_insert(self->by_key, e.key, (void *)at);
    }
    free(line);
    fclose(f);
    /*  A file that says nothing (emptied, truncated, only comments) would
        leave the fabric open to anyone, while its operator believes it
        closed: refused, as a file that cannot be read is. Beside a shared
        token it closes nothing more (every per-session token revoked).    */
    if (rc == 0 && self->n_entries == 0 && !self->shared_on) {
        snprintf(err_buf, err_size,
                 "tokens_file '%s' holds no token: that would leave the fabric open to anyone; "
                 "add a line 'TOKEN SESSION' (or name=), or unset tokens_file to run open",
                 path);
        rc = -1;
    }
    return rc;
}

nx_auth_t *nx_auth_new(const char *shared, const char *file, char *err_buf, size_t err_size)
{
    nx_auth_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->by_name = zhashx_new();
    self->by_key = zhashx_new();
    if (!self->by_name || !self->by_key || s_list_add(&self->shared.pub, ">") ||
        s_list_add(&self->shared.sub, ">") || s_list_add(&self->keyless.pub, ">") ||
        s_list_add(&self->keyless.sub, ">")) {
        snprintf(err_buf, err_size, "out of memory");
        nx_auth_destroy(&self);
        return NULL;
    }
    snprintf(self->shared.name, sizeof self->shared.name, NX_AUTH_SHARED_NAME);
    self->shared.any_session = true;
    s_entry_settle(&self->shared);
    if (shared && *shared) {
        self->shared_on = true;
        self->shared.token = strdup(shared);
        self->shared.token_len = strlen(shared);
        if (!self->shared.token) {
            nx_auth_destroy(&self);
            return NULL;
        }
    }
    if (file && *file && s_load_file(self, file, err_buf, err_size)) {
        nx_auth_destroy(&self);
        return NULL;
    }
    return self;
}

void nx_auth_destroy(nx_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_auth_t *self = *self_p;
    for (size_t i = 0; i < self->n_entries; i++)
        s_entry_free(&self->entries[i]);
    free(self->entries);
    s_entry_free(&self->shared);
    s_entry_free(&self->keyless);
    zhashx_destroy(&self->by_name);
    zhashx_destroy(&self->by_key);
    free(self);
    *self_p = NULL;
}

bool nx_auth_enabled(nx_auth_t *self)
{
    return self->shared_on || self->n_entries;
}

nexus_err_t nx_auth_check(nx_auth_t *self, const char *token, size_t len, const void **handle)
{
    *handle = NULL;
    if (!nx_auth_enabled(self))
        return NEXUS_OK;
    if (!token)
        return NEXUS_ERR_UNAUTHORIZED;
    if (self->shared_on && s_equal(self->shared.token, self->shared.token_len, token, len))
        return NEXUS_OK;
    for (size_t i = 0; i < self->n_entries; i++)
        if (s_equal(self->entries[i].token, self->entries[i].token_len, token, len)) {
            *handle = &self->entries[i];
            return NEXUS_OK;
        }
    return NEXUS_ERR_UNAUTHORIZED;
}

/*  The entry behind a handle: NULL stands for the shared token, or with
    nothing configured for no restriction at all (returns NULL then).     */
static const s_entry_t *s_entry(nx_auth_t *self, const void *handle)
{
    if (handle)
        return handle;
    return nx_auth_enabled(self) ? &self->shared : NULL;
}

bool nx_auth_allows(nx_auth_t *self, const void *handle, const char *session, size_t len)
{
    const s_entry_t *e = handle;
    if (!e)
        return true;
    for (size_t i = 0; i < e->n_sessions; i++)
        if (strcmp(e->sessions[i], "*") == 0 ||
            (strlen(e->sessions[i]) == len && memcmp(e->sessions[i], session, len) == 0))
            return true;
    return false;
}

bool nx_auth_names(nx_auth_t *self, const void *handle, const char *session, size_t len)
{
    const s_entry_t *e = handle;
    if (!e)
        return false;
    for (size_t i = 0; i < e->n_sessions; i++)
        if (strlen(e->sessions[i]) == len && memcmp(e->sessions[i], session, len) == 0)
            return true;
    return false;
}

const char *nx_auth_sole(nx_auth_t *self, const void *handle)
{
    const s_entry_t *e = handle;
    if (!self || !e || e->n_sessions == 0)
        return NULL;
    for (size_t i = 0; i < e->n_sessions; i++)
        if (strcmp(e->sessions[i], "*") == 0 || strcmp(e->sessions[i], e->sessions[0]) != 0)
            return NULL;
    return e->sessions[0];
}

/*  ---- Identities ----------------------------------------------------------- */

const char *nx_auth_name(nx_auth_t *self, const void *handle)
{
    const s_entry_t *e = s_entry(self, handle);
    return e ? e->name : "";
}

bool nx_auth_by_key(nx_auth_t *self, const char *z85, const void **handle)
{
    const s_entry_t *e = z85 ? s_lookup(self, self->by_key, z85) : NULL;
    *handle = e;
    return e != NULL;
}

bool nx_auth_by_name(nx_auth_t *self, const char *name, const void **handle)
{
    *handle = NULL;
    if (!name || !*name)
        return false;
    if (strcmp(name, NX_AUTH_SHARED_NAME) == 0)
        return self->shared_on;
    const s_entry_t *e = s_lookup(self, self->by_name, name);
    /*  Names are at most 32 characters, so a 40-character identity is a
        CURVE key that no line names.                                       */
    if (!e && strlen(name) == 40)
        e = &self->keyless;
    *handle = e;
    return e != NULL;
}

/*  ---- Permissions ---------------------------------------------------------- */

/*  The session whose private namespace topic is in may be read by e.     */
static bool s_private_ok(const s_entry_t *e, const char *topic, size_t len)
{
    const char *owner;
    size_t owner_len;
    if (e->private_all || !nx_perm_private_owner(topic, len, &owner, &owner_len))
        return true;
    for (size_t i = 0; i < e->n_sessions; i++)
        if (strlen(e->sessions[i]) == owner_len && memcmp(e->sessions[i], owner, owner_len) == 0)
            return true;
    for (size_t i = 0; i < e->sub.n; i++) {
        const char *g = e->sub.items[i];
        if (nx_perm_names_first(g, strlen(g), topic, len) &&
            nx_pattern_match(g, strlen(g), topic, len))
            return true;
    }
    return false;
}

bool nx_auth_may_publish(nx_auth_t *self, const void *handle, const char *topic, size_t len)
{
    const s_entry_t *e = s_entry(self, handle);
    if (!e)
        return true;
    bool broker = nx_perm_broker_topic(topic, len);
    if (e->pub.all && !broker)
        return true; /* the hot path: one check of the topic's first bytes */
    for (size_t i = 0; i < e->pub.n; i++) {
        const char *g = e->pub.items[i];
        size_t gl = strlen(g);
        if ((!broker || nx_perm_names_first(g, gl, topic, len)) &&
            nx_pattern_match(g, gl, topic, len))
            return true;
    }
    return false;
}

bool nx_auth_may_source(nx_auth_t *self, const void *handle, const char *source, size_t len)
{
    const s_entry_t *e = s_entry(self, handle);
    if (!e || len == 0)
        return true;
    if (strlen(e->name) == len && memcmp(e->name, source, len) == 0)
        return true;
    return nx_session_id_valid(source, len) &&
           (e->any_session || nx_auth_allows(self, e, source, len));
}

bool nx_auth_may_subscribe(nx_auth_t *self, const void *handle, const char *pattern, size_t len)
{
    const s_entry_t *e = s_entry(self, handle);
    if (!e || e->sub.all)
        return true;
    for (size_t i = 0; i < e->sub.n; i++)
        if (nx_perm_within(e->sub.items[i], strlen(e->sub.items[i]), pattern, len))
            return true;
    return false;
}

bool nx_auth_may_read(nx_auth_t *self, const void *handle, const char *topic, size_t len)
{
    const s_entry_t *e = s_entry(self, handle);
    if (!e)
        return true;
    bool granted = e->sub.all;
    for (size_t i = 0; i < e->sub.n && !granted; i++)
        granted = nx_pattern_match(e->sub.items[i], strlen(e->sub.items[i]), topic, len);
    return granted && s_private_ok(e, topic, len);
}

bool nx_auth_sub_restricted(nx_auth_t *self, const void *handle)
{
    const s_entry_t *e = s_entry(self, handle);
    return e && !(e->sub.all && e->private_all);
}

/*  ---- Prefixes for ZeroMQ ----------------------------------------------------
    ZeroMQ selects events for a subscriber by byte prefix only. A token that
    may not read everything gets, for each prefix it asks for, the prefixes
    that select what it may read under it. In two steps:
      1. its sub= grants: a grant whose own prefix (nx_perm_grant_prefix)
         starts the asked one covers it whole; grants under it are taken
         one by one; a complete topic it may read is taken exactly (the
         topic and its NUL). Grants with a '*' have no prefix, so under
         them only exact topics can be had;
      2. other sessions' private topics, session.<id>.<more>, are cut out:
         a prefix above "session." becomes the prefixes of everything else
         (nx_perm_ladder) plus, under "session.", the broker's two session
         events and the sessions it may act as.                           */

typedef struct {
    char p[NX_PERM_PREFIX_MAX];
    size_t len;
} s_prefix_t;

#define S_CANDIDATES 80

static bool s_starts(const char *s, size_t slen, const char *with, size_t wlen)
{
    return slen >= wlen && memcmp(s, with, wlen) == 0;
}

/*  Calls emit for the prefixes under "session." that e may read, those
    that start with c: the broker's session events, the sessions it may act
    as, and its explicit session grants.                                  */
static size_t s_emit_private(const s_entry_t *e, const char *c, size_t clen, nx_perm_emit_fn *emit,
                             void *arg)
{
    static const char *const events[] = {"session.connected", "session.disconnected"};
    char buf[NX_PERM_PREFIX_MAX];
    size_t n = 0;
    for (size_t i = 0; i < 2; i++) {
        size_t len = strlen(events[i]);
        memcpy(buf, events[i], len);
        buf[len] = 0; /* exactly: session.connected.x would be a session's */
        if (s_starts(buf, len + 1, c, clen)) {
            emit(arg, buf, len + 1);
            n++;
        }
    }
    for (size_t i = 0; i < e->n_sessions; i++) {
        size_t id = strlen(e->sessions[i]);
        /*  The first format takes any text as a session; one that is not
            an id ("a.b") owns no namespace, and would open another's.    */
        if (!nx_session_id_valid(e->sessions[i], id) || NX_PERM_PRIVATE_LEN + id + 1 > sizeof buf)
            continue;
        memcpy(buf, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN);
        memcpy(buf + NX_PERM_PRIVATE_LEN, e->sessions[i], id);
        for (int end = 0; end < 2; end++) {
            buf[NX_PERM_PRIVATE_LEN + id] = end ? '.' : 0;
            if (s_starts(buf, NX_PERM_PRIVATE_LEN + id + 1, c, clen)) {
                emit(arg, buf, NX_PERM_PRIVATE_LEN + id + 1);
                n++;
            }
        }
    }
    for (size_t i = 0; i < e->sub.n; i++) {
        size_t len = 0;
        const char *g = e->sub.items[i];
        if (nx_perm_grant_prefix(g, strlen(g), buf, &len) &&
            s_starts(buf, len, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN) && len > NX_PERM_PRIVATE_LEN &&
            memchr(buf + NX_PERM_PRIVATE_LEN, '.', len - NX_PERM_PRIVATE_LEN) &&
            s_starts(buf, len, c, clen)) {
            emit(arg, buf, len);
            n++;
        }
    }
    return n;
}

/*  Step 2 for one prefix c that e may read apart from privacy.           */
static size_t s_refine(nx_auth_t *self, const s_entry_t *e, const char *c, size_t clen,
                       nx_perm_emit_fn *emit, void *arg)
{
    if (e->private_all) {
        emit(arg, c, clen);
        return 1;
    }
    if (clen && c[clen - 1] == 0) { /* an exact topic                        */
        if (!s_private_ok(e, c, clen - 1))
            return 0;
        emit(arg, c, clen);
        return 1;
    }
    if (clen < NX_PERM_PRIVATE_LEN && memcmp(NX_PERM_PRIVATE, c, clen) == 0)
        return nx_perm_ladder(NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN, clen, emit, arg) +
               s_emit_private(e, c, clen, emit, arg);
    if (!s_starts(c, clen, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN)) {
        emit(arg, c, clen);
        return 1;
    }
    const char *rest = c + NX_PERM_PRIVATE_LEN;
    const char *dot = memchr(rest, '.', clen - NX_PERM_PRIVATE_LEN);
    if (!dot) /* the session id is not complete yet                         */
        return s_emit_private(e, c, clen, emit, arg);
    /*  Under one session's namespace: its own, or an explicit grant.      */
    for (size_t i = 0; i < e->n_sessions; i++)
        if (strlen(e->sessions[i]) == (size_t)(dot - rest) &&
            memcmp(e->sessions[i], rest, (size_t)(dot - rest)) == 0) {
            emit(arg, c, clen);
            return 1;
        }
    char buf[NX_PERM_PREFIX_MAX];
    for (size_t i = 0; i < e->sub.n; i++) {
        size_t len = 0;
        const char *g = e->sub.items[i];
        if (nx_perm_grant_prefix(g, strlen(g), buf, &len) &&
            s_starts(buf, len, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN) &&
            s_starts(c, clen, buf, len)) {
            emit(arg, c, clen);
            return 1;
        }
    }
    /*  A grant with a '*' (session.*.direct) has no prefix: the one topic
        asked for, exactly, when it grants that.                           */
    if (nx_topic_valid(c, clen) && s_private_ok(e, c, clen) && clen + 1 <= sizeof buf) {
        memcpy(buf, c, clen);
        buf[clen] = 0;
        emit(arg, buf, clen + 1);
        return 1;
    }
    (void)self;
    return 0;
}

size_t nx_auth_sub_prefixes(nx_auth_t *self, const void *handle, const char *prefix, size_t len,
                            nx_perm_emit_fn *emit, void *arg)
{
    const s_entry_t *e = s_entry(self, handle);
    if (!e || (e->sub.all && e->private_all)) {
        emit(arg, prefix, len);
        return 1;
    }
    if (len + 1 > NX_PERM_PREFIX_MAX)
        return 0;
    /*  A prefix with a NUL asks for one topic exactly (the frame's topic
        ends with one); anything after it selects nothing we send.        */
    const char *nul = memchr(prefix, 0, len);
    if (nul) {
        size_t tlen = (size_t)(nul - prefix);
        if (tlen + 1 != len || !nx_topic_valid(prefix, tlen) ||
            !nx_auth_may_read(self, e, prefix, tlen))
            return 0;
        emit(arg, prefix, len);
        return 1;
    }
    s_prefix_t *cand = calloc(S_CANDIDATES, sizeof *cand);
    if (!cand)
        return 0;
    size_t n = 0;
    bool covered = false;
    char q[NX_PERM_PREFIX_MAX];
    for (size_t i = 0; i < e->sub.n && !covered; i++) {
        size_t qlen = 0;
        const char *g = e->sub.items[i];
        if (!nx_perm_grant_prefix(g, strlen(g), q, &qlen))
            continue;
        if (s_starts(prefix, len, q, qlen))
            covered = true;
        else if (s_starts(q, qlen, prefix, len) && n < S_CANDIDATES) {
            memcpy(cand[n].p, q, qlen);
            cand[n++].len = qlen;
        }
    }
    if (covered) {
        memcpy(cand[0].p, prefix, len);
        cand[0].len = len;
        n = 1;
    } else if (nx_topic_valid(prefix, len) && n < S_CANDIDATES) {
        bool granted = false;
        for (size_t i = 0; i < e->sub.n && !granted; i++)
            granted = nx_pattern_match(e->sub.items[i], strlen(e->sub.items[i]), prefix, len);
        if (granted) {
            memcpy(cand[n].p, prefix, len);
            cand[n].p[len] = 0;
            cand[n++].len = len + 1;
        }
    }
    size_t emitted = 0;
    for (size_t i = 0; i < n; i++) {
        /*  A candidate under another one adds nothing.                    */
        bool under = false;
        for (size_t k = 0; k < n && !under; k++)
            under = k != i && s_starts(cand[i].p, cand[i].len, cand[k].p, cand[k].len) &&
                    (cand[k].len < cand[i].len || k < i);
        if (!under)
            emitted += s_refine(self, e, cand[i].p, cand[i].len, emit, arg);
    }
    free(cand);
    return emitted;
}

bool nx_auth_prefix_shared(nx_auth_t *self, const void *handle, const char *prefix, size_t len)
{
    const s_entry_t *e = s_entry(self, handle);
    if (!e || (e->sub.all && e->private_all))
        return false;
    if (len && prefix[len - 1] == 0)
        return true; /* an exact topic: also made from the topic itself     */
    if (len >= 1 && len <= NX_PERM_PRIVATE_LEN && memcmp(prefix, NX_PERM_PRIVATE, len - 1) == 0)
        return true; /* a rung of the ladder                               */
    if (s_starts(prefix, len, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN))
        return true; /* made for a shorter prefix above "session."           */
    char q[NX_PERM_PREFIX_MAX];
    for (size_t i = 0; i < e->sub.n; i++) {
        size_t qlen = 0;
        const char *g = e->sub.items[i];
        if (nx_perm_grant_prefix(g, strlen(g), q, &qlen) && qlen == len &&
            memcmp(q, prefix, len) == 0)
            return true; /* a grant's prefix, made for any prefix above it  */
    }
    return false;
}

const char *nx_auth_describe(nx_auth_t *self, const void *handle, bool sub, char *buf, size_t size)
{
    const s_entry_t *e = s_entry(self, handle);
    buf[0] = 0;
    if (!e) {
        snprintf(buf, size, ">");
        return buf;
    }
    const s_list_t *l = sub ? &e->sub : &e->pub;
    size_t used = 0;
    for (size_t i = 0; i < l->n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? "," : "", l->items[i]);
    return buf;
}
