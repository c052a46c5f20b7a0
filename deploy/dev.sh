#!/usr/bin/env bash
# deploy/dev.sh - the two entry points of the README, for a fresh Debian 12:
#   run   install what is missing, build, run the fabric with data in ./nexus-data
#   test  install what is missing, build with ASan+UBSan, run the whole suite,
#         then build the fuzz targets with clang and run each for a short
#         bounded time on its corpus (docs/testing.md; skipped when arguments
#         pick a part of the suite, e.g. `deploy/dev.sh test -R gateway`)
# Each step says what it does; nothing is downloaded but Debian and npm packages.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

build_pkgs=(build-essential cmake pkg-config libzmq3-dev libczmq-dev libmsgpack-dev
            liblmdb-dev lmdb-utils libwebsockets-dev libjansson-dev libsodium-dev zlib1g-dev
            libcurl4-openssl-dev)
test_pkgs=(python3 python3-zmq python3-msgpack strace iproute2 etcd-server etcd-client)
# libFuzzer: clang and its runtime (libclang_rt.fuzzer).
fuzz_pkgs=(clang libclang-rt-14-dev)

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages in "$@" that are not installed yet.
install_missing() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dev.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build() {
    local dir=$1; shift
    cmake -S . -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
}

case "${1:-}" in
run)
    shift
    install_missing "${build_pkgs[@]}"
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    mkdir -p nexus-data
    echo "dev.sh: starting the broker and the gateway (dashboard: http://localhost:8450," \
         "data in $here/nexus-data); Ctrl-C stops both"
    exec ./build/sdk/nexus up --data-dir "$here/nexus-data" "$@"
    ;;
test)
    shift
    subset=$#
    install_missing "${build_pkgs[@]}" "${test_pkgs[@]}" "${fuzz_pkgs[@]}"
    # CI runs the sanitizer build: every test runs under ASan + UBSan.
    build build-asan -DCMAKE_BUILD_TYPE=Debug -DNEXUS_SANITIZE=ON -DNEXUS_FAULTS=ON
    (cd build-asan &&
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            ctest --output-on-failure -j 2 "$@")
    [ "$subset" -gt 0 ] && exit 0
    # The fuzz targets (tests/fuzz): built by clang with libFuzzer, ASan and
    # UBSan, each run NEXUS_FUZZ_SECONDS (15) on its seed corpus, crash
    # reproducers included; new inputs stay in build-fuzz.
    echo "dev.sh: fuzz targets, 15 s each"
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DNEXUS_FUZZ=ON \
        -DNEXUS_BUILD_TESTS=OFF -DNEXUS_BUILD_BENCH=OFF >/dev/null
    cmake --build build-fuzz -j "$(nproc)" --target fuzz_all
    (cd build-fuzz && ctest --output-on-failure -j 2 -R '^fuzz\.')
    ;;
*)
    echo "usage: deploy/dev.sh run|test [args]" >&2
    exit 2
    ;;
esac
