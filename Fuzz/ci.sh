#!/usr/bin/env bash
# CI's fuzz step: builds the targets once, then runs every target (every Targets/Sources/fuzz-NAME:
# qcow2, pack, index-segment, index-tree, manifest, config, archive, vmdk, nbd-client, nbd-server, keyfile, s3-xml, condemned-list) for FUZZ_SECONDS (default 30)
# from its committed seeds, two at a time (the CI machine has 2 cores). Fails if any target finds
# a crash, a hang or an allocation beyond the limits; the failing input is printed as a path
# (replay it with `Fuzz/run.sh TARGET -- PATH`). Runs from a fresh work directory each time, so
# a result depends on the committed seeds and the code only (FUZZ_KEEP=1 keeps its logs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds="${FUZZ_SECONDS:-30}"
parallel="${FUZZ_PARALLEL:-2}"
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-fuzz-ci.XXXXXX")"

swift build -c release --package-path "$here/Targets" -Xswiftc -sanitize=fuzzer,address
mapfile -t targets < <("$here/run.sh" list)
# Every parser of untrusted bytes must stay covered: a target that goes missing fails CI.
for required in qcow2 pack index-segment index-tree manifest config archive vmdk nbd-client nbd-server keyfile s3-xml condemned-list; do
    printf '%s\n' "${targets[@]}" | grep -qx "$required" || { echo "fuzz target $required is missing" >&2; exit 1; }
done

failed=()
run_one() {
    FUZZ_NO_BUILD=1 FUZZ_WORK="$work" "$here/run.sh" "$1" "$seconds" >"$work/$1.log" 2>&1
}
finish() {
    local target="$1" pid="$2"
    if wait "$pid"; then
        echo "fuzz $target: ok: $(grep -E '^#[0-9]+.*DONE' "$work/$target.log" | tail -1 | tr -s ' \t' ' ')"
    else
        echo "fuzz $target: FAILED" >&2
        tail -n 60 "$work/$target.log" >&2
        ls "$work/artifacts" >&2 || true
        failed+=("$target")
    fi
}
pids=()
names=()
for target in "${targets[@]}"; do
    run_one "$target" &
    pids+=($!)
    names+=("$target")
    if [ ${#pids[@]} -ge "$parallel" ]; then
        finish "${names[0]}" "${pids[0]}"
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do finish "${names[$i]}" "${pids[$i]}"; done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]}; their inputs are in $work/artifacts/" >&2
    exit 1
fi
if [ -n "${FUZZ_KEEP:-}" ]; then echo "logs and inputs kept in $work"; else rm -rf "$work"; fi
