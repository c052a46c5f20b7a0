#!/bin/sh
# tests/fuzz/run.sh - runs one fuzz target locally, for long (docs/testing.md).
#   sh tests/fuzz/run.sh BUILD_DIR TARGET [RUNS] [extra libFuzzer flags...]
# e.g. sh tests/fuzz/run.sh build-fuzz control 10000000
# One process (-jobs=1), niced; new inputs go to BUILD_DIR/tests/fuzz/work/
# TARGET (the seed corpus in the tree is read, never written), crashes to
# BUILD_DIR/tests/fuzz/artifacts/. The last lines say how many inputs ran,
# how fast, the coverage and the corpus size.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$1
name=$2
runs=${3:-10000000}
shift 2
[ $# -gt 0 ] && shift
bin=$build/tests/fuzz/fuzz_$name
work=$build/tests/fuzz/work/$name
art=$build/tests/fuzz/artifacts
mkdir -p "$work" "$art"
dict=
[ -f "$here/$name/dict" ] && dict=-dict=$here/$name/dict
max_len=
case $name in
control | events | gateway | sdk | json) max_len=-max_len=65536 ;;
esac
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
start=$(date +%s)
nice -n 10 "$bin" -runs="$runs" -print_final_stats=1 -artifact_prefix="$art/$name-" \
    $dict $max_len "$@" "$work" "$here/$name/corpus"
echo "fuzz $name: $(($(date +%s) - start)) s; corpus $(ls "$work" | wc -l) files in $work"
