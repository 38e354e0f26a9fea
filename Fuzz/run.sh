#!/usr/bin/env bash
# Runs one fuzz target: Fuzz/run.sh TARGET [SECONDS] [-- LIBFUZZER-ARGS...]
#
#   Fuzz/run.sh pack 60                 # fuzz for 60 s (default 60), new inputs in Fuzz/work/pack/
#   Fuzz/run.sh pack -- crash-0123abcd  # replay one input (a crash file, a seed)
#   Fuzz/run.sh list                    # the targets
#
# Builds the targets first (release, -sanitize=fuzzer,address, CairnCore instrumented too) unless
# FUZZ_NO_BUILD=1. Inputs that crash, hang (-timeout) or exceed the memory limits are written to
# Fuzz/work/artifacts/ and the run exits non-zero. The committed seeds in Fuzz/Corpus/TARGET/ are
# read, never written: libFuzzer adds what it finds to Fuzz/work/TARGET/ (FUZZ_WORK moves it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
package="$here/Targets"
mapfile -t targets < <(ls "$package/Sources" | sed -n 's/^fuzz-//p')

usage() {
    echo "usage: Fuzz/run.sh TARGET [SECONDS] [-- LIBFUZZER-ARGS...]; targets: ${targets[*]}" >&2
    exit 64
}
[ $# -ge 1 ] || usage
target="$1"
shift
if [ "$target" = list ]; then
    printf '%s\n' "${targets[@]}"
    exit 0
fi
printf '%s\n' "${targets[@]}" | grep -qx -- "$target" || usage
seconds=60
if [ $# -ge 1 ] && [ "$1" != -- ]; then
    seconds="$1"
    shift
fi
[ $# -ge 1 ] && [ "$1" = -- ] && shift

build_flags=(-c release --package-path "$package" -Xswiftc -sanitize=fuzzer,address)
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    swift build "${build_flags[@]}" >&2
fi
bin="$(swift build "${build_flags[@]}" --show-bin-path)/fuzz-$target"

work="${FUZZ_WORK:-$here/work}"
mkdir -p "$work/$target" "$work/artifacts"
# The Swift runtime's own crash backtracer is slow and waits on a terminal; libFuzzer and ASan
# print the stack. Leak checking is off: the Swift runtime keeps caches for the process's life,
# and real growth across inputs is caught by -rss_limit_mb.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"

limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024)
if [ $# -ge 1 ] && [ -f "$1" ]; then
    exec "$bin" "${limits[@]}" "$@"
fi
corpora=("$work/$target")
[ -d "$here/Corpus/$target" ] && corpora+=("$here/Corpus/$target")
exec "$bin" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$target-" "$@" "${corpora[@]}"
