#!/usr/bin/env python3
"""free_ports.py N [N ...] - one base port per argument: the first of N
consecutive free loopback ports. All are held until all are found, so no
two runs overlap. For the bench scripts that start servers on free ports.

    read -r A B <<<"$(python3 bench/free_ports.py 3 1)"
"""
import socket
import sys

held = []


def take(n):
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        got = []
        try:
            for k in range(n):
                t = socket.socket()
                t.bind(("127.0.0.1", base + k))
                got.append(t)
            held.extend(got)
            return base
        except OSError:
            for t in got:
                t.close()
    raise SystemExit("free_ports.py: no free ports")


if len(sys.argv) < 2 or not all(a.isdigit() and int(a) > 0 for a in sys.argv[1:]):
    raise SystemExit(__doc__)
print(" ".join(str(take(int(a))) for a in sys.argv[1:]))
