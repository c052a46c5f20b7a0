"""Installs libnexus into a temporary prefix (cmake --install) and builds
the examples against it the way a user would: with pkg-config and with
CMake find_package(nexus). Then runs the built subscriber, publisher and
worker against a real nexusd, their errors (exit codes, words) included.
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Broker, Checks  # noqa: E402

BUILD = os.path.abspath(os.environ.get("NEXUS_BUILD_DIR", "build"))
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
t = Checks()
tmp = tempfile.mkdtemp(prefix="nexus-install-")
prefix = os.path.join(tmp, "prefix")


def sh(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=240, **kw)
    if p.returncode != 0:
        sys.stderr.write("$ %s\n%s%s" % (" ".join(args), p.stdout[-3000:], p.stderr[-3000:]))
    return p


try:
    p = sh(["cmake", "--install", BUILD, "--prefix", prefix, "--component", "sdk"])
    t.eq(p.returncode, 0, "cmake --install")
    libdir = None
    for cand in ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu"):
        if os.path.exists(os.path.join(prefix, cand, "pkgconfig", "nexus.pc")):
            libdir = os.path.join(prefix, cand)
    t.check(libdir is not None, "nexus.pc installed")
    t.check(os.path.exists(os.path.join(prefix, "include", "nexus.h")), "nexus.h installed")
    t.check(libdir and os.path.exists(os.path.join(libdir, "libnexus.a")), "static library")
    t.check(libdir and os.path.exists(os.path.join(libdir, "libnexus.so")), "shared library")
    t.check(libdir and os.path.exists(os.path.join(libdir, "cmake", "nexus", "nexusConfig.cmake")),
            "CMake package")

    # ---- pkg-config, as a user would
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir or prefix, "pkgconfig"))
    flags = sh(["pkg-config", "--cflags", "--libs", "nexus"], env=env)
    t.eq(flags.returncode, 0, "pkg-config nexus")
    exe_pc = os.path.join(tmp, "publisher-pc")
    p = sh(["cc", "-o", exe_pc, os.path.join(SRC, "sdk", "examples", "publisher.c")]
           + flags.stdout.split() + ["-Wl,-rpath," + (libdir or "")], env=env)
    t.eq(p.returncode, 0, "publisher builds with pkg-config")

    # ---- find_package, as a user would
    proj = os.path.join(tmp, "proj")
    os.makedirs(proj)
    for f in ("subscriber.c", "worker.c"):
        shutil.copy(os.path.join(SRC, "sdk", "examples", f), proj)
    with open(os.path.join(proj, "CMakeLists.txt"), "w") as f:
        f.write("cmake_minimum_required(VERSION 3.16)\n"
                "project(user C)\n"
                "find_package(nexus 0.1 REQUIRED)\n"
                "add_executable(subscriber subscriber.c)\n"
                "target_link_libraries(subscriber PRIVATE nexus::nexus)\n"
                "add_executable(worker worker.c)\n"
                "target_link_libraries(worker PRIVATE nexus::nexus_static)\n")
    p = sh(["cmake", "-S", proj, "-B", os.path.join(proj, "b"), "-DCMAKE_PREFIX_PATH=" + prefix])
    t.eq(p.returncode, 0, "find_package(nexus) configures")
    p = sh(["cmake", "--build", os.path.join(proj, "b")])
    t.eq(p.returncode, 0, "examples build against nexus::nexus and nexus::nexus_static")

    # ---- and they work
    with Broker() as b:
        env = dict(os.environ, NEXUS_ENDPOINT=b.control, NEXUS_COUNT="3")
        sub = subprocess.Popen([os.path.join(proj, "b", "subscriber"), "example.>"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        import time
        time.sleep(0.8)
        p = sh([exe_pc, "example.numbers", "3"], env=env)
        t.check(p.returncode == 0 and len(p.stdout.split()) == 3, "publisher runs")
        try:
            out, err = sub.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            sub.kill()
            out, err = sub.communicate()
        t.eq(len(out.splitlines()), 3, "subscriber got the three events: %r" % err)
        p = sh([os.path.join(proj, "b", "worker"), "item-1", "item-2"], env=env)
        t.check(p.returncode == 0 and "item-2: done" in p.stdout, "worker claims and completes")
        # A completed item is said to be completed, not "held by".
        p = sh([os.path.join(proj, "b", "worker"), "item-1"], env=env)
        t.check(p.returncode == 1 and "item-1: already completed" in p.stdout
                and "held by" not in p.stdout,
                "worker on a completed item says so: %r" % p.stdout)
        # A failed publish is a failed run, for a script that runs it.
        p = sh([exe_pc, "bad..topic", "1"], env=env)
        t.check(p.returncode != 0 and "invalid topic" in p.stderr,
                "publisher with a bad topic exits non-zero: %d %r" % (p.returncode, p.stderr))
        # Without a pattern nothing could arrive: usage, at once.
        try:
            p = subprocess.run([os.path.join(proj, "b", "subscriber")], env=env,
                               capture_output=True, text=True, timeout=10)
            t.check(p.returncode == 2 and "usage" in p.stderr,
                    "subscriber without patterns: usage, exit 2: %d %r"
                    % (p.returncode, p.stderr))
        except subprocess.TimeoutExpired:
            t.check(False, "subscriber without patterns waits instead of saying usage")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

t.done()
