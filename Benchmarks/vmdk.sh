#!/usr/bin/env bash
# VMDK backup speed (issue 16): one disk as monolithicSparse and as streamOptimized VMDK, and the
# same disk as qcow2 (plain, and zlib-compressed for the stream comparison), each backed up into a
# fresh repository, in interleaved rounds; prints the median wall time of each and the speed
# ratios. Goal: each VMDK backs up at least 0.9 times as fast as its qcow2 (ratio >= 0.90).
#
#   Benchmarks/vmdk.sh [--disk RAW] [--size-mib N] [--rounds N] [--cairn BIN] [--work DIR]
#
# --disk: the raw disk to convert (default: the benchmark workload's base disk,
# Benchmarks/work/workload/wl-*/base.raw, which `Benchmarks/run.sh` builds; without one, a
# deterministic disk of --size-mib MiB (default 2048) of text, random bytes and holes is made).
# Needs qemu-utils and python3. Everything goes under --work (default a temporary directory),
# removed at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
disk=""
size_mib=2048
rounds=3
cairn=""
work=""
while [ $# -gt 0 ]; do
    case "$1" in
    --disk) disk="$2"; shift 2 ;;
    --size-mib) size_mib="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --cairn) cairn="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "vmdk.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done
if [ -z "$cairn" ]; then
    swift build -c release --package-path "$here/.." --product cairn >&2
    cairn="$(swift build -c release --package-path "$here/.." --show-bin-path)/cairn"
fi
if [ -z "$work" ]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-vmdk-bench.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
if [ -z "$disk" ]; then
    disk="$(ls -t "$here"/work/workload/wl-*/base.raw 2>/dev/null | head -1 || true)"
fi
if [ -z "$disk" ]; then
    disk="$work/disk.raw"
    echo "making a $size_mib MiB disk (text, random bytes, holes) in $disk" >&2
    python3 - "$disk" "$size_mib" <<'PY'
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
r = random.Random(16)
text = b"".join(b"%06d the quick brown fox jumps over the lazy dog\n" % i for i in range(30000))[: 1 << 20]
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for n in range(mib):
        kind = r.random()
        if kind < 0.30:
            continue  # a hole
        f.seek(n << 20)
        if kind < 0.65:
            f.write(text[r.randrange(1 << 19):] + text[: r.randrange(1 << 19)])
        else:
            f.write(r.randbytes(1 << 20))
PY
fi
echo "disk: $disk ($(du -h --apparent-size "$disk" | cut -f1), $(du -h "$disk" | cut -f1) allocated)" >&2

kinds=(qcow2 vmdk-sparse qcow2-zlib vmdk-stream)
declare -A convert=(
    [qcow2]="-O qcow2"
    [qcow2-zlib]="-c -O qcow2 -o compression_type=zlib"
    [vmdk-sparse]="-O vmdk -o subformat=monolithicSparse"
    [vmdk-stream]="-O vmdk -o subformat=streamOptimized"
)
declare -A ext=([qcow2]=qcow2 [qcow2-zlib]=qcow2 [vmdk-sparse]=vmdk [vmdk-stream]=vmdk)
for kind in "${kinds[@]}"; do
    image="$work/$kind.${ext[$kind]}"
    # shellcheck disable=SC2086
    qemu-img convert -f raw ${convert[$kind]} "$disk" "$image"
    echo "$kind: $(du -h "$image" | cut -f1)" >&2
done

declare -A times
for round in $(seq 1 "$rounds"); do
    for kind in "${kinds[@]}"; do
        repo="$work/repo-$kind"
        rm -rf "$repo"
        "$cairn" init --repo "$repo" >/dev/null
        sync
        start=$(date +%s.%N)
        "$cairn" backup --repo "$repo" --group "$kind" "$work/$kind.${ext[$kind]}" >/dev/null
        end=$(date +%s.%N)
        t=$(python3 -c "print(f'{$end - $start:.3f}')")
        times[$kind]="${times[$kind]:-} $t"
        echo "round $round: $kind backed up in $t s" >&2
        rm -rf "$repo"
    done
done

median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
printf '%-12s %10s\n' kind "median s"
for kind in "${kinds[@]}"; do
    # shellcheck disable=SC2086
    printf '%-12s %10s\n' "$kind" "$(median ${times[$kind]})"
done
ratio() {
    # shellcheck disable=SC2086
    python3 -c "print(f'{$(median ${times[$2]}) / $(median ${times[$1]}):.2f}')"
}
echo "speed ratio monolithicSparse / qcow2:      $(ratio vmdk-sparse qcow2) (goal >= 0.90)"
echo "speed ratio streamOptimized / zlib qcow2:  $(ratio vmdk-stream qcow2-zlib) (goal >= 0.90)"
