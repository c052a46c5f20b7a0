/*  =========================================================================
    nx_hwm - byte-bounded high-water marks. nx_hwm.h is the contract.
    =========================================================================
*/

#include <zmq.h>

#include "nx_hwm.h"
#include "nx_log.h"

static int s_clamp(uint64_t v, uint64_t most)
{
    if (v > most)
        v = most;
    if (v > 1000000000)
        v = 1000000000;
    return v ? (int)v : 1;
}

int nx_hwm_fixed(uint64_t count, uint64_t budget, uint64_t largest)
{
    return s_clamp(budget / (largest + NX_HWM_MSG_OVERHEAD), count);
}

/*  Sets the mark when it is safe (nx_hwm.h); false when it is not yet.   */
static bool s_set(nx_hwm_t *self, int mark)
{
    if (self->now == mark && !self->fresh)
        return true;
    uint64_t now = nx_mono_us();
    if (self->drain)
        self->drain(self->drain_arg);
    if (now < self->settled)
        return false;
    /*  Reading ZMQ_EVENTS makes the socket take the connections whose
        handshake is done (their pipes wait in its mailbox): the mark then
        applies to them too.                                               */
    int events = 0;
    size_t size = sizeof events;
    zmq_getsockopt(self->sock, ZMQ_EVENTS, &events, &size);
    zmq_setsockopt(self->sock, self->option, &mark, sizeof mark);
    self->now = mark;
    self->fresh = false;
    self->set_at = now;
    return true;
}

void nx_hwm_init(nx_hwm_t *self, void *sock, int option, uint64_t count, uint64_t budget,
                 uint64_t largest)
{
    self->sock = sock;
    self->budget = budget;
    self->option = option;
    self->now = 0;
    self->fresh = false;
    self->set_at = 0;
    self->large_at = 0;
    self->settled = 0;
    self->waiting = false;
    self->wait_since = 0;
    self->over_mark = 0;
    self->drain = NULL;
    self->drain_arg = NULL;
    uint64_t small = count ? budget / count : budget;
    if (small < NX_HWM_SMALL_MIN)
        small = NX_HWM_SMALL_MIN;
    self->small = (size_t)small;
    self->high = s_clamp(budget / small, count);
    self->low = nx_hwm_fixed(count, budget, largest);
    /*  Every message is small: one level.                                 */
    if (largest + NX_HWM_MSG_OVERHEAD <= small || self->low >= self->high) {
        self->low = self->high;
        self->small = (size_t)-1 / 2;
    }
    s_set(self, self->low);
}

void nx_hwm_watch(nx_hwm_t *self, void (*drain)(void *arg), void *arg)
{
    self->drain = drain;
    self->drain_arg = arg;
    if (!drain)
        self->settled = UINT64_MAX;
}

bool nx_hwm_large(nx_hwm_t *self, size_t size)
{
    self->large_at = nx_mono_us();
    uint64_t round = 1;
    while (round < size + NX_HWM_MSG_OVERHEAD && round < (1ull << 40))
        round <<= 1;
    int mark = s_clamp(self->budget / round, (uint64_t)self->high);
    if (mark < self->low)
        mark = self->low;
    if (mark >= self->now || s_set(self, mark)) {
        self->waiting = false;
        return true;
    }
    /*  Blocked: the first message waits, and so the ones behind it; once
        it went out over the mark, the others do too, until a mark can be
        set again.                                                         */
    uint64_t now = nx_mono_us();
    if (!self->waiting) {
        self->waiting = true;
        self->wait_since = now;
    }
    if (now - self->wait_since < NX_HWM_WAIT_US)
        return false;
    self->over_mark++;
    return true;
}

void nx_hwm_connected(nx_hwm_t *self)
{
    self->fresh = true;
}

void nx_hwm_disconnected(nx_hwm_t *self, uint64_t now)
{
    self->settled = now + NX_HWM_SETTLE_US;
}

void nx_hwm_tick(nx_hwm_t *self, uint64_t now)
{
    if (now < self->settled || (self->fresh && now - self->set_at < NX_HWM_FRESH_US))
        return;
    if (self->now != self->high && now - self->large_at >= NX_HWM_QUIET_US)
        s_set(self, self->high);
    else if (self->fresh)
        s_set(self, self->now);
}
