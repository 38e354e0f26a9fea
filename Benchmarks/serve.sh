#!/usr/bin/env bash
# Benchmarks/serve.sh: `cairn serve` against `cairn restore` of the same restore point (issue 11).
#
#   Benchmarks/serve.sh [--cairn PATH] [--size-mib 2048] [--disk PATH] [--work DIR]
#
# Builds a guest disk (ext4 filled from /usr/share with mkfs.ext4 -d: files, metadata and free
# space, like a used guest filesystem; or --disk, e.g. run.sh's Benchmarks/work/workload/*/base.raw),
# backs it up, and times, best of 3 after one warm-up:
#   restore   cairn restore --to out.raw
#   convert   qemu-img convert -f raw -O raw URI out.raw          (goal: >= 0.8x restore's speed)
#   nbdcopy   nbdcopy --connections=4 URI out.raw                 (goal: >= restore's speed)
#   random    fio, libnbd engine, 4 KiB random reads, queue depth 16, over 1 GiB: cold then warm
# and the server's peak RSS (VmHWM). Every copy is checked with cmp. The disk and its
# repository are kept in --work and reused while the disk is unchanged. Needs qemu-utils,
# libnbd-bin, e2fsprogs, fio (random reads are skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
cairn="" size=2048 work="Benchmarks/work/serve" given=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cairn) cairn="$2"; shift 2 ;;
        --size-mib) size="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --disk) given="$(realpath "$2")"; shift 2 ;;
        *) sed -n '2,15p' "$0"; exit 64 ;;
    esac
done
if [ -z "$cairn" ]; then swift build -c release >&2; cairn="$(swift build -c release --show-bin-path)/cairn"; fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"
disk="$work/disk.raw" repo="$work/repo" sock="$work/serve.sock"

if [ -n "$given" ]; then
    ln -sfn "$given" "$disk"
    size=$(( $(stat -L -c %s "$disk") >> 20 ))
elif [ ! -e "$disk" ]; then
    truncate -s "${size}M" "$disk"
    # A disk too small for /usr/share would silently come out empty: refuse instead.
    mkfs.ext4 -q -F -E root_owner=0:0 -d /usr/share "$disk" || { rm -f "$disk"; echo "serve.sh: /usr/share does not fit in ${size} MiB: pass a larger --size-mib" >&2; exit 1; }
fi
rm -f "$sock"
if [ ! -e "$repo/config" ] || [ "$disk" -nt "$repo/config" ]; then
    rm -rf "$repo"
    "$cairn" init --repo "$repo" >/dev/null
    "$cairn" backup --repo "$repo" --group bench "$disk" >&2
fi
id="$("$cairn" list --repo "$repo" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"

best() {  # best wall time of 3 runs (after one warm-up) of "$@", in seconds
    local t b=""
    "$@" >/dev/null 2>&1
    for _ in 1 2 3; do
        t=$( { TIMEFORMAT=%R; time "$@" >/dev/null 2>/dev/null; } 2>&1 | tail -1)
        if [ -z "$b" ] || python3 -c "import sys; sys.exit(0 if $t < $b else 1)"; then b=$t; fi
    done
    echo "$b"
}
out="$work/out.raw"
t_restore=$(best "$cairn" restore --repo "$repo" "$id" --to "$out" --force)
cmp "$disk" "$out"

"$cairn" serve --repo "$repo" --socket "$sock" --json >"$work/serve.json" 2>"$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do [ -s "$work/serve.json" ] && break; sleep 0.1; done
uri="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["exports"][0]["uri"])' "$work/serve.json")"

t_convert=$(best bash -c "rm -f '$out'; qemu-img convert -f raw -O raw '$uri' '$out'")
cmp "$disk" "$out"
t_nbdcopy=$(best bash -c "rm -f '$out'; nbdcopy --connections=4 '$uri' '$out'")
cmp "$disk" "$out"

random=""
if command -v fio >/dev/null; then
    span=$(( size < 1024 ? size : 1024 ))
    fio_run() {
        fio --name=rand --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --iodepth=16 --size="${span}M" \
            --time_based --runtime="$1" --randrepeat=1 --output-format=json 2>/dev/null | sed -n '/^{/,$p' \
            | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
    }
    # A fresh server for the cold pass (nothing cached), with a cache that holds the region:
    # "warm" means every frame of it is in memory.
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill $pid; wait $pid 2>/dev/null || true
    rm -f "$work/serve.json"
    "$cairn" serve --repo "$repo" --socket "$sock" --json --cache-size 1536M >"$work/serve.json" 2>>"$work/serve.log" &
    pid=$!
    for _ in $(seq 300); do [ -s "$work/serve.json" ] && break; sleep 0.1; done
    cold=$(fio_run 5)
    warm=$(fio_run 10)
    random="random 4K reads, qd 16, ${span} MiB (--cache-size 1536M): cold (first 5 s) $cold IOPS, warm $warm IOPS"
    rss_random=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
else
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
fi
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT

mib=$(( $(stat -c %s "$disk") >> 20 ))
data=$(( $(du -B1M "$out" | cut -f1) ))
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "disk: $mib MiB ($data MiB allocated), restore point $id"
echo "restore:          ${t_restore} s"
echo "qemu-img convert: ${t_convert} s  ($(ratio "$t_restore" "$t_convert")x restore's speed; goal 0.8x)"
echo "nbdcopy -C 4:     ${t_nbdcopy} s  ($(ratio "$t_restore" "$t_nbdcopy")x restore's speed; goal 1.0x)"
[ -n "$random" ] && echo "$random"
echo "serve peak RSS:   $(( rss / 1024 )) MiB over restore, convert and nbdcopy (cache bound 256 MiB)"
[ -n "${rss_random:-}" ] && echo "serve peak RSS:   $(( rss_random / 1024 )) MiB over the random reads (cache bound 1536 MiB)"
echo "load average:     $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
