/*  =========================================================================
    nx_auth - control-plane tokens: shared, or per-session from a file.
    Comparison is constant-time so that a token cannot be guessed byte by
    byte from reply timing.
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_auth.h"

typedef struct {
    char *token;     /* the secret                                         */
    char **sessions; /* ids it may act as; "*" = any                       */
    size_t n_sessions;
} s_entry_t;

struct _nx_auth_t {
    char *shared;       /* shared token, NULL when none                     */
    s_entry_t *entries; /* tokens from the file                             */
    size_t n_entries;
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

static int s_load_file(nx_auth_t *self, const char *path, char *err_buf, size_t err_size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err_buf, err_size, "cannot read tokens_file '%s'", path);
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *save = NULL;
        char *token = strtok_r(line, " \t\r\n", &save);
        if (!token || *token == '#')
            continue;
        char *list = strtok_r(NULL, " \t\r\n", &save);
        if (!list || strtok_r(NULL, " \t\r\n", &save)) {
            snprintf(err_buf, err_size, "%s:%d: expected 'TOKEN SESSION[,SESSION...]'", path,
                     lineno);
            rc = -1;
            break;
        }
        s_entry_t *grown = realloc(self->entries, (self->n_entries + 1) * sizeof *grown);
        if (!grown) {
            rc = -1;
            break;
        }
        self->entries = grown;
        s_entry_t *e = &self->entries[self->n_entries++];
        memset(e, 0, sizeof *e);
        e->token = strdup(token);
        char *save2 = NULL;
        for (char *id = strtok_r(list, ",", &save2); id; id = strtok_r(NULL, ",", &save2)) {
            char **more = realloc(e->sessions, (e->n_sessions + 1) * sizeof *more);
            if (!more)
                break;
            e->sessions = more;
            e->sessions[e->n_sessions++] = strdup(id);
        }
    }
    fclose(f);
    return rc;
}

nx_auth_t *nx_auth_new(const char *shared, const char *file, char *err_buf, size_t err_size)
{
    nx_auth_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (shared && *shared)
        self->shared = strdup(shared);
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
    for (size_t i = 0; i < self->n_entries; i++) {
        free(self->entries[i].token);
        for (size_t k = 0; k < self->entries[i].n_sessions; k++)
            free(self->entries[i].sessions[k]);
        free(self->entries[i].sessions);
    }
    free(self->entries);
    free(self->shared);
    free(self);
    *self_p = NULL;
}

bool nx_auth_enabled(nx_auth_t *self)
{
    return self->shared || self->n_entries;
}

nexus_err_t nx_auth_check(nx_auth_t *self, const char *token, size_t len, const void **handle)
{
    *handle = NULL;
    if (!nx_auth_enabled(self))
        return NEXUS_OK;
    if (!token)
        return NEXUS_ERR_UNAUTHORIZED;
    if (self->shared && s_equal(self->shared, strlen(self->shared), token, len))
        return NEXUS_OK;
    for (size_t i = 0; i < self->n_entries; i++)
        if (s_equal(self->entries[i].token, strlen(self->entries[i].token), token, len)) {
            *handle = &self->entries[i];
            return NEXUS_OK;
        }
    return NEXUS_ERR_UNAUTHORIZED;
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
