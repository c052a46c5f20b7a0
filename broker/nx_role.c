/*  =========================================================================
    nx_role - the role table. nx_role.h is the contract.

        state    event     condition              next     action
        standby  LEAD      -                      primary  PROMOTE
        standby  PROMOTE   -                      primary  PROMOTE (epoch+1)
        standby  FOLLOW    another endpoint       standby  FOLLOW
        primary  LEASE     -                      primary  (lease moves)
        primary  LOST      -                      fenced   FENCE
        primary  FOLLOW    -                      fenced   RESTART
        primary  FENCE     epoch > ours           fenced   RESTART
        primary  LEAD      -                      primary  (epoch moves)
        fenced   LEAD      -                      primary  RESUME
        fenced   FOLLOW    -                      fenced   RESTART
        fenced   FENCE     epoch > ours           fenced   RESTART
        any      older epoch than known           same     REFUSE
        other combinations                        same     NONE or REFUSE
    =========================================================================
*/

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nx_role.h"

#define S_FILE "role"
#define S_TMP  "role.tmp"

void nx_role_init(nx_role_state_t *st, nx_role_t role, uint64_t epoch, bool leased,
                  const char *primary)
{
    memset(st, 0, sizeof *st);
    st->role = role;
    st->epoch = epoch;
    st->leased = leased;
    st->lease_until = leased ? 0 : UINT64_MAX;
    snprintf(st->primary, sizeof st->primary, "%s", primary ? primary : "");
}

static void s_primary(nx_role_state_t *st, const char *endpoint)
{
    snprintf(st->primary, sizeof st->primary, "%s", endpoint ? endpoint : "");
}

nx_role_action_t nx_role_apply(nx_role_state_t *st, nx_role_event_t ev, uint64_t epoch,
                               const char *endpoint, uint64_t until)
{
    /*  An epoch older than one seen is a message from the past.          */
    if ((ev == NX_RE_LEAD || ev == NX_RE_FOLLOW || ev == NX_RE_FENCE) && epoch < st->epoch)
        return NX_RA_REFUSE;
    switch (st->role) {
    case NX_ROLE_STANDBY:
        switch (ev) {
        case NX_RE_LEAD:
            st->role = NX_ROLE_PRIMARY;
            st->epoch = epoch;
            st->primary[0] = 0;
            return NX_RA_PROMOTE;
        case NX_RE_PROMOTE:
            if (st->leased)
                return NX_RA_REFUSE; /* etcd decides */
            st->role = NX_ROLE_PRIMARY;
            st->epoch++;
            st->primary[0] = 0;
            return NX_RA_PROMOTE;
        case NX_RE_FOLLOW:
        case NX_RE_FENCE: {
            st->epoch = epoch;
            bool same = endpoint && strcmp(endpoint, st->primary) == 0;
            s_primary(st, endpoint);
            return same ? NX_RA_NONE : NX_RA_FOLLOW;
        }
        case NX_RE_LEASE:
        case NX_RE_LOST:
            return NX_RA_NONE;
        }
        break;
    case NX_ROLE_PRIMARY:
        switch (ev) {
        case NX_RE_LEASE:
            st->lease_until = until;
            return NX_RA_NONE;
        case NX_RE_LOST:
            if (!st->leased)
                return NX_RA_NONE;
            st->role = NX_ROLE_FENCED;
            st->lease_until = 0;
            return NX_RA_FENCE;
        case NX_RE_LEAD:
            st->epoch = epoch;
            return NX_RA_NONE;
        case NX_RE_PROMOTE:
            return NX_RA_REFUSE;
        case NX_RE_FENCE:
            if (epoch == st->epoch)
                return NX_RA_REFUSE; /* ours: only a newer one fences */
            /* fall through */
        case NX_RE_FOLLOW:
            st->role = NX_ROLE_FENCED;
            st->epoch = epoch;
            st->lease_until = 0;
            s_primary(st, endpoint);
            return NX_RA_RESTART;
        }
        break;
    case NX_ROLE_FENCED:
        switch (ev) {
        case NX_RE_LEAD:
            st->role = NX_ROLE_PRIMARY;
            st->epoch = epoch;
            st->primary[0] = 0;
            return NX_RA_RESUME;
        case NX_RE_FENCE:
            if (epoch == st->epoch)
                return NX_RA_REFUSE;
            /* fall through */
        case NX_RE_FOLLOW:
            st->epoch = epoch;
            s_primary(st, endpoint);
            return NX_RA_RESTART;
        case NX_RE_LEASE:
        case NX_RE_LOST:
            return NX_RA_NONE;
        case NX_RE_PROMOTE:
            return NX_RA_REFUSE;
        }
        break;
    }
    return NX_RA_REFUSE;
}

bool nx_role_writable(const nx_role_state_t *st, uint64_t now)
{
    return st->role == NX_ROLE_PRIMARY && (!st->leased || now < st->lease_until);
}

const char *nx_role_name(nx_role_t role)
{
    return role == NX_ROLE_PRIMARY ? "primary" : role == NX_ROLE_STANDBY ? "standby" : "fenced";
}

/*  ---- The role file ---------------------------------------------------------- */

int nx_role_file_read(const char *data_dir, nx_role_t *role, uint64_t *epoch, char *primary,
                      size_t size, char *err, size_t err_size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, S_FILE);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[600] = "";
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char word[16] = "", ep[NX_ROLE_ENDPOINT_MAX] = "";
    unsigned long long e = 0;
    if (got && sscanf(line, "%15s %llu", word, &e) == 2 && strcmp(word, "primary") == 0) {
        *role = NX_ROLE_PRIMARY;
        *epoch = e;
        if (size)
            primary[0] = 0;
        return 1;
    }
    if (got && sscanf(line, "%15s %255s %llu", word, ep, &e) == 3 && strcmp(word, "standby") == 0) {
        *role = NX_ROLE_STANDBY;
        *epoch = e;
        snprintf(primary, size, "%s", ep);
        return 1;
    }
    snprintf(err, err_size,
             "%s does not say 'primary EPOCH' or 'standby ENDPOINT EPOCH' (remove it to take "
             "the role the settings give)",
             path);
    return -1;
}

int nx_role_file_write(const char *data_dir, nx_role_t role, uint64_t epoch, const char *primary)
{
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/%s", data_dir, S_TMP);
    snprintf(path, sizeof path, "%s/%s", data_dir, S_FILE);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char line[600];
    int n = role == NX_ROLE_STANDBY ? snprintf(line, sizeof line, "standby %s %" PRIu64 "\n",
                                               primary && *primary ? primary : "-", epoch)
                                    : snprintf(line, sizeof line, "primary %" PRIu64 "\n", epoch);
    int rc = write(fd, line, (size_t)n) == n && fsync(fd) == 0 ? 0 : -1;
    int e = errno;
    close(fd);
    if (rc == 0)
        rc = rename(tmp, path);
    if (rc == 0) {
        int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        return 0;
    }
    unlink(tmp);
    errno = e;
    return -1;
}
