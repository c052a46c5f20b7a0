/*  =========================================================================
    nx_gw_replay - history replays to WebSocket clients, run in slices.

    A resume (the resume action, or ?since= with the first subscription)
    replays the history after a seq for the connection's patterns, then the
    live events held meanwhile (nx_gw_deliver holds them while the
    connection is replaying), each once and in seq order.

    The one worker serves every connection, so a replay never runs whole:
    each turn of the worker runs one command and then one slice of one
    replay (at most S_SLICE events, one history request), round robin.
    A replay run whole held everyone else's actions and HTTP requests for
    as long as its client took to read it: a client reading 60 000 events
    of 1 KiB slowly held them 6 s.

    A replay whose client's queue has no room parks: it costs nothing until
    the lws thread has written that queue down to half (nx_gw_replay_room),
    and the slow-client rule (slow_timeout) applies to it as to live
    events. Worker thread, unless a function says otherwise.
    =========================================================================
*/

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "nx_front.h"
#include "nx_front_event.h"
#include "nx_gw.h"
#include "nx_log.h"

/*  Events per slice: one history request. Large enough that a replay
    alone goes at the history's speed, small enough that a command waits
    for at most one slice.                                                  */
#define S_SLICE 500

/*  After a history request failed: the next try waits this long; the third
    failure in a row ends the replay with a gap.                           */
#define S_RETRY_US 200000

/*  Rounds of "the held events overflowed: read on from the history" before
    the replay gives up with a gap (the fabric outruns it).                */
#define S_ROUNDS_MAX 100

typedef struct {
    uint64_t conn;        /* the connection it replays to                  */
    uint64_t since;       /* every matching event <= this was handled      */
    size_t replayed;      /* events queued                                 */
    int failures;         /* history requests failed in a row              */
    int rounds;           /* history read again after held overflowed      */
    uint64_t not_before;  /* mono us: after a failure, the next try        */
    nx_gw_msg_t *pending; /* read, not queued for want of room (one ref)   */
    json_t *reply;        /* the resume's reply, sent at the end, or NULL  */
    bool tail;            /* the history is read: the held events go out   */
    unsigned store_gen;   /* gw->store_gen its seqs belong to              */
} s_job_t;

struct _nx_gw_replays_t {
    zlistx_t *run;       /* jobs that can go on (or wait for not_before)    */
    zlistx_t *parked;    /* jobs that wait for room in their client's queue */
    unsigned woken_seen; /* gw->replay_woken when parked was last looked at */
};

static void s_job_destroy(nx_gw_t *gw, s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (!job)
        return;
    if (job->pending) {
        pthread_mutex_lock(&gw->lock);
        nx_gw_msg_unref(&job->pending);
        pthread_mutex_unlock(&gw->lock);
    }
    json_decref(job->reply);
    free(job);
    *job_p = NULL;
}

/*  Sends the resume's reply, with what was replayed.                       */
static void s_job_answer(nx_gw_t *gw, s_job_t *job, bool superseded)
{
    if (!job->reply)
        return;
    json_object_set_new(job->reply, "replayed", json_integer((json_int_t)job->replayed));
    if (superseded)
        json_object_set_new(job->reply, "superseded", json_true());
    nx_gw_reply(gw, job->conn, job->reply); /* takes it */
    job->reply = NULL;
}

/*  Ends a replay that cannot finish (history unreadable, the fabric
    outrunning it): what it could not read is announced as a gap (after
    since, up to the first held event or the newest seq seen), then the
    held events go out and live events flow again. Never holds events for
    ever, never loses them silently.                                       */
static void s_abandon(nx_gw_t *gw, uint64_t conn_id, uint64_t since)
{
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
    if (conn) {
        /*  What it is told is a gap is not got (nor skipped: the gap may
            cover what was to be skipped, told again rather than lost).    */
        nx_gw_conn_got_reset(conn);
        uint64_t to = gw->last_seq;
        if (conn->n_held && !conn->held_overflow && conn->held[0]->seq > 0)
            to = conn->held[0]->seq - 1;
        if (to > since && to > conn->last_seq) {
            uint64_t from = since + 1 > conn->last_seq + 1 ? since + 1 : conn->last_seq + 1;
            if (!conn->lost_from || from < conn->lost_from)
                conn->lost_from = from;
            if (to > conn->lost_to)
                conn->lost_to = to;
            conn->last_seq = to; /* what comes next is past the gap */
        }
        for (size_t i = 0; i < conn->n_held; i++) {
            if (conn->held[i]->seq > conn->last_seq)
                nx_gw_conn_push(gw, conn, conn->held[i]);
            nx_gw_msg_unref(&conn->held[i]);
        }
        conn->n_held = 0;
        conn->held_overflow = false;
        conn->replaying = false;
        conn->replay_parked = false;
        nx_gw_conn_unref(gw, &conn);
    }
    pthread_mutex_unlock(&gw->lock);
    nx_gw_wake(gw);
}

/*  The replay is past what the connection got before its resume
    (nx_gw_conn_resume_at): that run counts as sent (lock held).           */
static void s_skip_over(nx_gw_conn_t *conn)
{
    if (!conn->skip_from)
        return;
    if (conn->skip_to > conn->last_seq)
        conn->last_seq = conn->skip_to;
    conn->skip_from = conn->skip_to = 0;
}

typedef enum { S_QUEUED, S_GONE, S_NO_ROOM } s_push_t;

/*  Queues msg to the job's connection (lock held); a history event counts
    as replayed, a held live one does not. An event the queue could never
    take, even empty, goes the way of live events (a gap): waiting for room
    would wait for ever.                                                    */
static s_push_t s_push(nx_gw_t *gw, s_job_t *job, nx_gw_msg_t *msg, bool history)
{
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, job->conn);
    if (!conn)
        return S_GONE;
    s_push_t result = S_QUEUED;
    /*  Past the start of what the connection got already: skipped whole. */
    if (conn->skip_from && msg->seq >= conn->skip_from)
        s_skip_over(conn);
    if (conn->closed || conn->close_code)
        result = S_GONE;
    else if (msg->seq <= conn->last_seq)
        ; /* already sent (a resume asked again) */
    else if (nx_gw_conn_room(gw, conn, msg->len, msg->seq) || conn->q_count == 0) {
        if (nx_gw_conn_push(gw, conn, msg) == 0) {
            job->replayed += history;
            __atomic_add_fetch(&gw->stats.events_out, 1, __ATOMIC_RELAXED);
        }
    } else {
        nx_gw_conn_full(gw, conn); /* the slow-client clock runs */
        conn->replay_parked = true;
        result = S_NO_ROOM;
    }
    nx_gw_conn_unref(gw, &conn);
    return result;
}

typedef enum { S_DONE, S_MORE, S_PARKED, S_LATER } s_step_t;

/*  The history is read up to now: the live events held meanwhile go out,
    as many as the client's queue takes (the rest wait: S_PARKED). S_DONE
    when the replay is over; S_MORE when some were not held (too many), so
    that it reads on from the history.                                      */
static s_step_t s_catch_up(nx_gw_t *gw, s_job_t *job)
{
    s_step_t step = S_DONE;
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, job->conn);
    if (conn && conn->held_overflow) {
        for (size_t i = 0; i < conn->n_held; i++)
            nx_gw_msg_unref(&conn->held[i]);
        conn->n_held = 0;
        conn->held_overflow = false;
        job->since = conn->last_seq; /* read on from the history */
        job->tail = false;
        step = S_MORE;
    } else if (conn) {
        /*  The history is read to its end: what the connection got before
            the resume, and was to be skipped, is behind.                  */
        s_skip_over(conn);
        size_t i = 0;
        for (; i < conn->n_held && step == S_DONE; i++) {
            nx_gw_msg_t *msg = conn->held[i];
            if (msg->seq > conn->last_seq) {
                s_push_t p = s_push(gw, job, msg, false);
                if (p == S_NO_ROOM)
                    step = S_PARKED;
                else if (p == S_GONE)
                    step = S_DONE;
                if (p != S_QUEUED)
                    break;
            }
            nx_gw_msg_unref(&conn->held[i]);
        }
        /*  What the queue did not take stays held, in order.              */
        if (i && i < conn->n_held)
            memmove(conn->held, conn->held + i, (conn->n_held - i) * sizeof *conn->held);
        conn->n_held -= i;
        if (step == S_DONE && !conn->n_held)
            conn->replaying = false;
    }
    if (conn)
        nx_gw_conn_unref(gw, &conn);
    pthread_mutex_unlock(&gw->lock);
    nx_gw_wake(gw);
    return step;
}

/*  A history query for the connection's patterns now; NULL when it is
    gone (*gone), has none left (*none: unsubscribed meanwhile, nothing
    to replay), or out of memory.                                          */
static nexus_history_t *s_query(nx_gw_t *gw, s_job_t *job, char *session, const void **auth,
                                bool *gone, bool *none)
{
    nexus_history_t *h = nexus_history_new(gw->client);
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, job->conn);
    *gone = !conn;
    size_t n = 0;
    bool failed = false;
    if (conn && h) {
        bool direct = false;
        n = conn->n_patterns;
        for (size_t i = 0; i < n; i++) {
            failed |= nexus_history_add_pattern(h, conn->patterns[i]) != NEXUS_OK;
            direct |= nx_front_wants_direct(conn->patterns[i]);
        }
        /*  Direct messages live on their targets' topics (a 65th pattern
            fails: the replay cannot say what it would leave out).         */
        if (direct)
            failed |= nexus_history_add_pattern(h, "session.*.direct") != NEXUS_OK;
        *auth = conn->auth;
        snprintf(session, NX_GW_SESSION_MAX + 1, "%s", conn->session);
    }
    if (conn)
        nx_gw_conn_unref(gw, &conn);
    pthread_mutex_unlock(&gw->lock);
    *none = conn && !n;
    if (!n || failed) /* no pattern would be every topic */
        nexus_history_destroy(&h);
    return h;
}

/*  The history is read: the held events, then the end, or a new round.  */
static s_step_t s_tail(nx_gw_t *gw, s_job_t *job)
{
    s_step_t step = s_catch_up(gw, job);
    if (step == S_MORE && ++job->rounds >= S_ROUNDS_MAX) {
        s_abandon(gw, job->conn, job->since); /* the fabric outran us */
        return S_DONE;
    }
    return step;
}

/*  One slice of job: the event it could not queue last time, then at most
    S_SLICE events of the history.                                          */
static s_step_t s_slice(nx_gw_t *gw, s_job_t *job)
{
    /*  The broker serves another store since this replay began (the
        clients were told, and conn's seqs and held events forgotten, by
        nx_gw_deliver): its seqs mean nothing now; start over there.       */
    pthread_mutex_lock(&gw->lock);
    if (job->store_gen != gw->store_gen) {
        job->store_gen = gw->store_gen;
        job->since = 0;
        job->tail = false;
        nx_gw_msg_unref(&job->pending);
    }
    pthread_mutex_unlock(&gw->lock);
    if (job->pending) {
        pthread_mutex_lock(&gw->lock);
        s_push_t p = s_push(gw, job, job->pending, true);
        if (p == S_QUEUED) {
            job->since = job->pending->seq;
            nx_gw_msg_unref(&job->pending);
        }
        pthread_mutex_unlock(&gw->lock);
        if (p != S_QUEUED)
            return p == S_GONE ? S_DONE : S_PARKED;
        nx_gw_wake(gw);
    }
    if (job->tail)
        return s_tail(gw, job);
    char session[NX_GW_SESSION_MAX + 1] = "";
    const void *auth = NULL;
    bool gone = false, none = false;
    nexus_history_t *h = s_query(gw, job, session, &auth, &gone, &none);
    if (gone)
        return S_DONE;
    if (!h && !none) {
        /*  Out of memory, or a pattern the query cannot take: a gap, never
            a hold.                                                         */
        s_abandon(gw, job->conn, job->since);
        return S_DONE;
    }
    if (!h) {
        job->tail = true;
        return s_tail(gw, job);
    }
    /*  The link is down: not a query that would hold the worker for
        broker_timeout, a failed try (three of them: a gap).              */
    if (!nexus_client_is_connected(gw->client)) {
        nexus_history_destroy(&h);
        if (++job->failures >= 3) {
            s_abandon(gw, job->conn, job->since);
            return S_DONE;
        }
        job->not_before = nx_gw_mono() + S_RETRY_US;
        return S_LATER;
    }
    /*  What the connection got before the resume is not read at all: a
        page stops before it, and the next one starts after it.            */
    uint64_t until = 0;
    pthread_mutex_lock(&gw->lock);
    nx_gw_conn_t *conn = nx_gw_conn_get(gw, job->conn);
    if (conn && conn->skip_from) {
        if (job->since + 1 >= conn->skip_from) {
            if (job->since < conn->skip_to)
                job->since = conn->skip_to;
            s_skip_over(conn);
        } else
            until = conn->skip_from - 1;
    }
    if (conn)
        nx_gw_conn_unref(gw, &conn);
    pthread_mutex_unlock(&gw->lock);
    nexus_history_set_seq_range(h, job->since, until);
    nexus_history_set_page(h, S_SLICE, 0);
    /*  One request per slice: a page read ahead would be dropped with the
        iterator, read by the broker for nothing.                          */
    nexus_history_set_read_ahead(h, 0);
    size_t count = 0;
    int more = 0;
    nexus_err_t err = nexus_history_fetch(h, &count, &more);
    s_step_t step = S_MORE;
    bool queued = false;
    for (size_t i = 0; err == NEXUS_OK && i < count; i++) {
        nexus_event_t *ev = NULL;
        if ((err = nexus_history_next_view(h, &ev)) != NEXUS_OK || !ev)
            break;
        size_t len;
        char *text = nx_front_event_json(ev, &len);
        uint64_t seq = nexus_event_seq(ev);
        nx_gw_msg_t *msg =
            text && nx_front_event_text_visible(text, len, session) &&
                    nx_gw_may_read(gw, auth, nx_front_event_type(nexus_event_topic(ev)))
                ? nx_gw_msg_new(text, len, seq)
                : NULL;
        free(text);
        if (!msg) {
            job->since = seq;
            continue;
        }
        pthread_mutex_lock(&gw->lock);
        s_push_t p = s_push(gw, job, msg, true);
        if (p == S_NO_ROOM)
            job->pending = msg; /* the next slice starts with it */
        else {
            job->since = seq;
            nx_gw_msg_unref(&msg);
        }
        pthread_mutex_unlock(&gw->lock);
        queued |= p == S_QUEUED;
        if (p != S_QUEUED) {
            step = p == S_GONE ? S_DONE : S_PARKED;
            break;
        }
    }
    if (err == NEXUS_OK && step == S_MORE) {
        /*  Past what the broker looked at for this page, matching or not. */
        uint64_t pos = nexus_history_position(h);
        if (pos > job->since)
            job->since = pos;
    }
    nexus_history_destroy(&h);
    if (queued)
        nx_gw_wake(gw);
    if (step != S_MORE)
        return step;
    if (err != NEXUS_OK) {
        /*  The broker is busy or away: try again a little later, then
            give up with a gap rather than hold live events for ever.      */
        nx_warn("replay for connection %" PRIu64 " after seq %" PRIu64 ": %s", job->conn,
                job->since, nexus_strerror(err));
        if (++job->failures >= 3) {
            s_abandon(gw, job->conn, job->since);
            return S_DONE;
        }
        job->not_before = nx_gw_mono() + S_RETRY_US;
        return S_LATER;
    }
    job->failures = 0;
    if (more)
        return S_MORE;
    if (until) {
        /*  Read up to what it got: the next slice skips that.             */
        if (job->since < until)
            job->since = until;
        return S_MORE;
    }
    job->tail = true;
    return s_tail(gw, job);
}

/*  The job of conn_id, taken out of its list, or NULL.                     */
static s_job_t *s_take(zlistx_t *list, uint64_t conn_id)
{
    for (s_job_t *job = zlistx_first(list); job; job = zlistx_next(list))
        if (job->conn == conn_id) {
            zlistx_detach_cur(list);
            return job;
        }
    return NULL;
}

void nx_gw_replay_start(nx_gw_t *gw, uint64_t conn_id, uint64_t since, json_t *reply)
{
    nx_gw_replays_t *r = gw->replays;
    s_job_t *job = calloc(1, sizeof *job);
    if (!r || !job) {
        free(job);
        json_decref(reply);
        s_abandon(gw, conn_id, since); /* out of memory: a gap, never a hold */
        return;
    }
    /*  A resume while one runs on the same connection takes its place:
        the earlier one is answered with what it replayed.                 */
    s_job_t *old = s_take(r->run, conn_id);
    if (!old)
        old = s_take(r->parked, conn_id);
    if (old) {
        s_job_answer(gw, old, true);
        s_job_destroy(gw, &old);
        pthread_mutex_lock(&gw->lock);
        nx_gw_conn_t *conn = nx_gw_conn_get(gw, conn_id);
        if (conn) {
            conn->replay_parked = false;
            nx_gw_conn_unref(gw, &conn);
        }
        pthread_mutex_unlock(&gw->lock);
    } else
        __atomic_add_fetch(&gw->stats.replays, 1, __ATOMIC_RELAXED);
    job->conn = conn_id;
    job->since = since;
    job->reply = reply;
    pthread_mutex_lock(&gw->lock);
    job->store_gen = gw->store_gen;
    pthread_mutex_unlock(&gw->lock);
    zlistx_add_end(r->run, job);
}

/*  Parked jobs whose client has read (or gone) can go on.                 */
static void s_unpark(nx_gw_t *gw, nx_gw_replays_t *r)
{
    pthread_mutex_lock(&gw->lock);
    unsigned woken = gw->replay_woken;
    if (woken != r->woken_seen) {
        r->woken_seen = woken;
        s_job_t *job = zlistx_first(r->parked);
        while (job) {
            nx_gw_conn_t *conn = nx_gw_conn_get(gw, job->conn);
            bool go = !conn || !conn->replay_parked;
            if (conn)
                nx_gw_conn_unref(gw, &conn);
            if (go) {
                zlistx_detach_cur(r->parked);
                zlistx_add_end(r->run, job);
            }
            job = zlistx_next(r->parked); /* detach_cur moved the cursor back */
        }
    }
    pthread_mutex_unlock(&gw->lock);
}

uint64_t nx_gw_replay_service(nx_gw_t *gw)
{
    nx_gw_replays_t *r = gw->replays;
    if (!r || (!zlistx_size(r->run) && !zlistx_size(r->parked)))
        return UINT64_MAX;
    s_unpark(gw, r);
    uint64_t now = nx_gw_mono(), next = UINT64_MAX;
    s_job_t *job = zlistx_first(r->run);
    while (job && job->not_before > now) {
        if (job->not_before < next)
            next = job->not_before;
        job = zlistx_next(r->run);
    }
    if (!job)
        return next;
    zlistx_detach_cur(r->run);
    switch (s_slice(gw, job)) {
    case S_DONE:
        s_job_answer(gw, job, false);
        s_job_destroy(gw, &job);
        __atomic_sub_fetch(&gw->stats.replays, 1, __ATOMIC_RELAXED);
        break;
    case S_PARKED:
        zlistx_add_end(r->parked, job);
        break;
    case S_MORE:
    case S_LATER:
        zlistx_add_end(r->run, job); /* round robin */
        break;
    }
    return zlistx_size(r->run) ? 0 : UINT64_MAX;
}

/*  lws thread (or any), gw->lock held.                                     */
void nx_gw_replay_room(nx_gw_t *gw, nx_gw_conn_t *conn)
{
    if (!conn->replay_parked)
        return;
    conn->replay_parked = false;
    gw->replay_woken++;
    char b = 1;
    if (gw->wake[1] > 0 && write(gw->wake[1], &b, 1) < 0) {
        /*  Full: the worker has a wake to read already.                   */
    }
}

int nx_gw_replay_init(nx_gw_t *gw)
{
    nx_gw_replays_t *r = calloc(1, sizeof *r);
    if (!r || !(r->run = zlistx_new()) || !(r->parked = zlistx_new())) {
        if (r) {
            zlistx_destroy(&r->run);
            free(r);
        }
        return -1;
    }
    gw->replays = r;
    return 0;
}

void nx_gw_replay_stop(nx_gw_t *gw)
{
    nx_gw_replays_t *r = gw->replays;
    if (!r)
        return;
    zlistx_t *lists[2] = {r->run, r->parked};
    for (int i = 0; i < 2; i++) {
        for (s_job_t *job = zlistx_first(lists[i]); job; job = zlistx_next(lists[i])) {
            s_job_destroy(gw, &job);
            __atomic_sub_fetch(&gw->stats.replays, 1, __ATOMIC_RELAXED);
        }
        zlistx_destroy(&lists[i]);
    }
    free(r);
    gw->replays = NULL;
}
