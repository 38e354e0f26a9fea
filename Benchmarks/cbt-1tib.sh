#!/bin/bash
# Changed-block tracking on a big sparse disk (issue 10): a 1 TiB qcow2 holding 10 GiB of data,
# 20 MiB of it rewritten with qemu-io (so QEMU records it in the persistent bitmap), then one
# `cairn backup --cbt` night timed with GNU time (wall seconds, peak RSS).
#
#   Benchmarks/cbt-1tib.sh [CAIRN-BINARY]      (default: .build/release/cairn)
#
# Needs qemu-utils and time; writes 10 GiB under $CAIRN_BENCH_WORK (default /tmp/cairn-cbt-bench),
# removed at the end.
set -euo pipefail
cairn=${1:-.build/release/cairn}
work=${CAIRN_BENCH_WORK:-/tmp/cairn-cbt-bench}
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
image=$work/big.qcow2
repo=$work/repo
G=$((1 << 30))
extent=${CAIRN_BENCH_EXTENT_MIB:-1024}   # MiB per data extent (10 extents; 1024 = 10 GiB)
M=$((1 << 20))

qemu-img create -q -f qcow2 "$image" 1T
# 10 GiB of data: ten 1 GiB extents spread over the disk, each its own pattern.
for i in $(seq 0 9); do
    qemu-io -c "write -P $((0x20 + i)) $((i * 100 * G)) ${extent}M" "$image" >/dev/null
done
"$cairn" init --repo "$repo" >/dev/null
echo "night 0 (full read, starts the first bitmap):" >&2
/usr/bin/time -f "  %e s wall, %M KiB peak RSS" "$cairn" backup --repo "$repo" --group big --cbt "$image"

# 20 MiB changed: twenty 1 MiB writes, two in each data extent.
writes=()
for i in $(seq 0 9); do
    writes+=(-c "write -P 0xee $((i * 100 * G + extent * M * 3 / 10)) 1M" -c "write -P 0xef $((i * 100 * G + extent * M * 7 / 10)) 1M")
done
qemu-io "${writes[@]}" "$image" >/dev/null
echo "night 1 (--cbt: reads only what the bitmap marks dirty):" >&2
/usr/bin/time -f "  %e s wall, %M KiB peak RSS" "$cairn" backup --repo "$repo" --group big --cbt --json "$image"
