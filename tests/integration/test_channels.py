#!/usr/bin/env python3
"""channels: the broker counts subscribers per subscription prefix.

Subscribers connect raw SUB sockets with prefixes; `channels` (and
`state`'s channels) list each prefix with its live subscriber count: two
subscribers of the same prefix count two (the XPUB reports every
subscription, not only a prefix's first), an unsubscribe and a
disconnect take theirs away, and a prefix nobody holds any more is gone.
"""

import sys

from harness import Broker, Checks, Client, subscriber, wait_until


def channels(b):
    with Client(b) as c:
        rep = c.request({"op": "channels"})
        assert rep["ok"], rep
        return {ch["prefix"]: ch["subscribers"] for ch in rep["channels"]}, rep


def main():
    t = Checks()
    with Broker() as b:
        t.eq(channels(b)[0], {}, "no subscribers, no channels")
        s1 = subscriber(b, "work.")
        s2 = subscriber(b, "work.", "repo.nexus.")
        s3 = subscriber(b, "")
        want = {"work.": 2, "repo.nexus.": 1, "": 1}
        t.check(wait_until(lambda: channels(b)[0] == want), "counted: %r" % (channels(b)[0],))
        _, rep = channels(b)
        t.eq(rep["subscribers"], 3, "three subscriber connections")
        t.eq([ch["prefix"] for ch in rep["channels"]][0], "work.", "most subscribed first")
        with Client(b) as c:
            st = c.request({"op": "state"})
        t.eq({ch["prefix"]: ch["subscribers"] for ch in st["channels"]}, want, "state lists them")
        import zmq
        s2.setsockopt(zmq.UNSUBSCRIBE, b"repo.nexus.")
        t.check(wait_until(lambda: channels(b)[0] == {"work.": 2, "": 1}),
                "an unsubscribe takes its count away: %r" % (channels(b)[0],))
        s1.close(0)
        t.check(wait_until(lambda: channels(b)[0] == {"work.": 1, "": 1}),
                "a disconnect takes its subscriptions away: %r" % (channels(b)[0],))
        s2.close(0)
        s3.close(0)
        t.check(wait_until(lambda: channels(b)[0] == {}), "all gone: %r" % (channels(b)[0],))
        with Client(b) as c:
            bad = c.request({"op": "channels", "auth": 5})
        t.check(bad["ok"], "channels takes no fields (unknown ones are ignored)")
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
