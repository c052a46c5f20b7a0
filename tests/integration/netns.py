"""Test hosts on this machine: network namespaces joined by veth pairs.

Every address used lives on this machine, in a namespace a test made
itself; nothing leaves it. Tests that need another host (a subscriber
whose host vanishes, a client refused from outside loopback, two agents on
two machines, a standby broker) take `lock()` for their whole run: it
serialises every namespace test on the machine (ctest -j, or checkouts side
by side), so names and addresses never collide and whatever is left from a
killed run can be cleared safely.

    with netns.lock():
        why = netns.available()        # None, or why not (then skip: exit 77)
        a = netns.Host("a", 1)         # namespace nxaNNNN, 10.199.1.1 there
        a.create()
        a.run("ip", "addr")            # a command in the namespace
        a.prefix() + [...]             # argv prefix for Popen
        a.vanish(); a.destroy()
        r = a.link("r", 2, to=["10.199.5.1"])  # a second link, for some peers

Host k is joined to this namespace by its own /30: this side 10.199.k.2
(`here`), the namespace 10.199.k.1 (`there`). With `routed=True` the
namespace gets a default route through this side and this namespace
forwards between them, so hosts reach each other's `there` addresses; a
host's `cut()` takes its link down (its processes live on, unreachable),
`heal()` brings it back. `link()` gives a host more links of its own
(another /30 each) and routes the addresses named through it, so one link
can be cut (`Link.cut()`) while the others stay up: the addresses behind
a cut link are then unreachable, not reached another way.

Needs root (CAP_NET_ADMIN) and iproute2's `ip`.
"""

import contextlib
import fcntl
import os
import subprocess

LOCK_PATH = "/tmp/nexus-netns.lock"
TAG = "%04d" % (os.getpid() % 10000)
PREFIX = "nx"  # namespace nx<name><tag>, links nxh<name><tag> / nxt<name><tag>


def sh(*args, check=True, timeout=20):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r


@contextlib.contextmanager
def lock(timeout=600):
    """Holds the machine-wide lock of namespace tests; clears leftovers of
    killed runs once it has it (no other namespace test can be running)."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        import time
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError("another namespace test held %s for %d s" %
                                       (LOCK_PATH, timeout))
                time.sleep(0.2)
        if os.geteuid() == 0:
            clear_leftovers()
        yield
    finally:
        os.close(fd)


def _ours(name, tag_len=4):
    """Is this a namespace or link name of this module (any run)?"""
    return name.startswith(PREFIX) and len(name) > len(PREFIX) + tag_len and \
        name[-tag_len:].isdigit()


def clear_leftovers():
    """Namespaces and links that runs killed before their cleanup left
    behind. Only called under lock(), when no other run can own them."""
    r = sh("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if _ours(name):
            sh("ip", "netns", "del", name, check=False)
    r = sh("ip", "-o", "link", "show", check=False)
    for line in r.stdout.splitlines():
        parts = line.split(":")
        dev = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if dev.startswith(PREFIX + "h") and _ours(dev):
            sh("ip", "link", "del", dev, check=False)


class Host:
    """A namespace joined to this one by a veth pair: `here` is this
    side's address, `there` the namespace's."""

    def __init__(self, name, net, routed=False):
        assert 1 <= net <= 254 and len(name) <= 6
        self.name = name
        self.links = []
        self.ns = "%s%s%s" % (PREFIX, name, TAG)
        self.dev_here = "%sh%s%s" % (PREFIX, name, TAG)
        self.dev_there = "%st%s%s" % (PREFIX, name, TAG)
        self.here = "10.199.%d.2" % net
        self.there = "10.199.%d.1" % net
        self.routed = routed
        self.up = False

    def create(self):
        sh("ip", "netns", "add", self.ns)
        self.up = True
        sh("ip", "link", "add", self.dev_here, "type", "veth", "peer", "name", self.dev_there)
        sh("ip", "link", "set", self.dev_there, "netns", self.ns)
        sh("ip", "addr", "add", self.here + "/30", "dev", self.dev_here)
        sh("ip", "link", "set", self.dev_here, "up")
        self.run("ip", "addr", "add", self.there + "/30", "dev", self.dev_there)
        self.run("ip", "link", "set", self.dev_there, "up")
        self.run("ip", "link", "set", "lo", "up")
        if self.routed:
            self.run("ip", "route", "add", "10.199.0.0/16", "via", self.here)
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")
        return self

    def run(self, *args, check=True):
        return sh("ip", "netns", "exec", self.ns, *args, check=check)

    def prefix(self):
        return ["ip", "netns", "exec", self.ns]

    def cut(self):
        """Takes the link down: no FIN or RST gets out, nothing gets in."""
        if self.up:
            self.run("ip", "link", "set", self.dev_there, "down", check=False)

    def heal(self):
        if self.up:
            self.run("ip", "link", "set", self.dev_there, "up")
            if self.routed:
                self.run("ip", "route", "replace", "10.199.0.0/16", "via", self.here)

    def link(self, suffix, net, to=()):
        """Another link between this namespace and this one, 10.199.net.1
        there and .2 here; the addresses in `to` are reached through it
        (/32 routes). Call after create()."""
        link = Link(self, suffix, net, to).create()
        self.links.append(link)
        return link

    def vanish(self):
        """As a host that is switched off: link down first, then the caller
        kills its processes and destroys it."""
        self.cut()

    def destroy(self):
        if self.up:
            sh("ip", "netns", "del", self.ns, check=False)  # takes the veth pair along
            self.up = False
        sh("ip", "link", "del", self.dev_here, check=False)
        for link in self.links:
            sh("ip", "link", "del", link.dev_here, check=False)


class Link:
    """A second (third, ...) veth pair of a Host. cut() takes the
    namespace's end down; the addresses behind the link then hit an
    unreachable route (put in place at create), so what goes to them is
    refused there, not sent another way; and this side keeps its own route
    to the link (no carrier), so nothing goes elsewhere either."""

    def __init__(self, host, suffix, net, to):
        assert 1 <= net <= 254 and len(host.name + suffix) <= 7
        self.host = host
        self.dev_here = "%sh%s%s%s" % (PREFIX, host.name, suffix, TAG)
        self.dev_there = "%st%s%s%s" % (PREFIX, host.name, suffix, TAG)
        self.here = "10.199.%d.2" % net
        self.there = "10.199.%d.1" % net
        self.to = list(to)

    def create(self):
        sh("ip", "link", "add", self.dev_here, "type", "veth", "peer", "name", self.dev_there)
        sh("ip", "link", "set", self.dev_there, "netns", self.host.ns)
        sh("ip", "addr", "add", self.here + "/30", "dev", self.dev_here)
        sh("ip", "link", "set", self.dev_here, "up")
        self.host.run("ip", "addr", "add", self.there + "/30", "dev", self.dev_there)
        self.host.run("ip", "link", "set", self.dev_there, "up")
        for addr in self.to:
            self.host.run("ip", "route", "add", "unreachable", addr + "/32", "metric", "1000")
        self._routes()
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        return self

    def _routes(self):
        for addr in self.to:
            self.host.run("ip", "route", "replace", addr + "/32", "via", self.here, "metric", "0")

    def cut(self):
        self.host.run("ip", "link", "set", self.dev_there, "down", check=False)

    def heal(self):
        self.host.run("ip", "link", "set", self.dev_there, "up", check=False)
        self._routes()


def available():
    """None when namespaces can be made here, else why not. Call under
    lock()."""
    if os.geteuid() != 0:
        return "not root"
    probe = Host("p", 254)
    try:
        probe.create()
    except (RuntimeError, FileNotFoundError, subprocess.TimeoutExpired) as e:
        return str(e)
    finally:
        try:
            probe.destroy()
        except (RuntimeError, FileNotFoundError):
            pass
    return None
