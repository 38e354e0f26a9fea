#!/usr/bin/env bash
# libvirt nights (issue 12): night-1 time and bytes read with and without checkpoints, on a running
# domain whose disk is the benchmark disk (bench.py's workload: GPT + ext4 ~60% full of real files,
# as qcow2; night 1 rewrites ~1% of it in scattered 4 KiB..1 MiB extents).
#
#   Benchmarks/libvirt.sh [--scale S] [--cairn BIN] [--work DIR]
#       --scale S   disk size factor as bench.py's (default 1: a 2 GiB disk; 0.0625 for a smoke run)
#       --cairn BIN the cairn binary (default .build/release/cairn)
#       --work DIR  where the workload is cached (default Benchmarks/work, as run.sh)
#
# Steps: starts libvirtd (Tests/libvirt/libvirtd-ctl, as the tests) unless one runs; defines and
# starts a domain with no guest OS on a copy of base.qcow2; night 0 is `cairn backup --domain` (a
# full read that creates the first checkpoint); then night 1's writes are made as guest writes
# through QEMU's monitor (qemu-io `write -s`, the bytes of night1.raw, so the bitmap records them);
# then night 1 is backed up twice from the same state: incremental from night 0's checkpoint, and
# in full (`--full-every 1`, as without checkpoints). Each backup is timed with GNU time (wall
# seconds, peak RSS); bytes read come from its --json summary. The last restore point is restored
# and compared with night1.raw (qemu-img compare). Needs root, libvirt-daemon-system,
# qemu-system-x86, time, and bench.py's tools (gdisk e2fsprogs qemu-utils openssl).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
scale=1
cairn="$root/.build/release/cairn"
work="${CAIRN_BENCH_WORK:-$here/work}"
while [ $# -gt 0 ]; do
    case "$1" in
    --scale) scale=$2; shift 2 ;;
    --cairn) cairn=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "libvirt.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done
[ -x "$cairn" ] || { echo "libvirt.sh: no cairn binary at $cairn (swift build -c release)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "libvirt.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
cairn="$(cd "$(dirname "$cairn")" && pwd)/$(basename "$cairn")"

echo "workload (scale $scale):" >&2
wl_dir=$(python3 "$here/bench.py" --workload-only --scale "$scale" --work "$work" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["dir"])')

ctl="$root/Tests/libvirt/libvirtd-ctl"
# One system libvirtd: wait for the libvirt tests (LibvirtHost takes the same lock).
exec 9>/run/lock/cairn-libvirt-tests.lock
flock 9
state=/run/cairn-bench-libvirtd
started=$("$ctl" start "$state") || { echo "libvirt.sh: $started" >&2; exit 2; }
virsh() { command virsh -q -c qemu:///system "$@"; }
domain="cairn-bench-$$"
run=$(mktemp -d /var/tmp/cairn-bench-libvirt.XXXXXX)
chmod 755 "$run"
cleanup() {
    virsh destroy "$domain" >/dev/null 2>&1 || true
    virsh undefine "$domain" --checkpoints-metadata >/dev/null 2>&1 || true
    [ "$started" = started ] && "$ctl" stop "$state"
    rm -rf "$run"
}
trap cleanup EXIT

disk="$run/vda.qcow2"
cp --sparse=always "$wl_dir/base.qcow2" "$disk"
for type in kvm qemu; do
    cat >"$run/domain.xml" <<XML
<domain type='$type'>
  <name>$domain</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bios rebootTimeout='-1'/></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$disk'/><target dev='vda' bus='virtio'/></disk>
    <controller type='usb' model='none'/>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
XML
    virsh define "$run/domain.xml" >/dev/null
    if virsh start "$domain" >/dev/null 2>&1; then break; fi
    virsh undefine "$domain" >/dev/null
    [ "$type" = qemu ] && { echo "libvirt.sh: the domain does not start" >&2; exit 1; }
done
"$cairn" init --repo "$run/repo" >/dev/null

# night LABEL EXTRA-ARGS...: one timed backup; prints "label seconds bytes-read peak-KiB bitmap-used"
night() {
    local label=$1
    shift
    /usr/bin/time -o "$run/$label.time" -f "%e %M" \
        "$cairn" backup --repo "$run/repo" --domain "$domain" --scratch-dir "$run" --json "$@" >"$run/$label.json"
    python3 - "$label" "$run/$label.json" "$run/$label.time" <<'PY'
import json, sys
label, summary, timing = sys.argv[1:4]
s = json.load(open(summary))
seconds, rss = open(timing).read().split()[-2:]
used = any((d.get("cbt") or {}).get("used") for d in s["disks"])
print(label, seconds, s["bytesRead"], rss, "yes" if used else "no")
PY
}

results=$run/results.txt
night night0 >>"$results"

# Night 1's writes, as the guest would make them: each extent's final bytes from night1.raw.
mkdir -p "$run/writes"
chmod 755 "$run/writes"
python3 - "$wl_dir" "$run/writes" >"$run/writes.txt" <<'PY'
import json, os, sys
wl, out = sys.argv[1:3]
extents = json.load(open(os.path.join(wl, "night1-writes.json")))
fd = os.open(os.path.join(wl, "night1.raw"), os.O_RDONLY)
for i, e in enumerate(extents):
    path = os.path.join(out, f"{i}.bin")
    with open(path, "wb") as f:
        f.write(os.pread(fd, e["length"], e["offset"]))
    os.chmod(path, 0o644)
    print(path, e["offset"], e["length"])
PY
while read -r file offset length; do
    out=$(virsh qemu-monitor-command "$domain" --hmp "qemu-io -d virtio-disk0/virtio-backend \"write -s $file $offset $length\"")
    [ -z "$out" ] || { echo "libvirt.sh: guest write failed: $out" >&2; exit 1; }
done <"$run/writes.txt"
echo "night 1: $(wc -l <"$run/writes.txt") guest writes, $(awk '{s += $3} END {print s}' "$run/writes.txt") bytes" >&2

virsh suspend "$domain" >/dev/null   # both night-1 reads see the same state
night night1-checkpoint >>"$results"
night night1-full --full-every 1 >>"$results"
virsh resume "$domain" >/dev/null

id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$run/night1-full.json")
"$cairn" restore --repo "$run/repo" --domain "$id" --to-dir "$run/restored" >/dev/null
qemu-img compare -q "$wl_dir/night1.raw" "$run/restored/$domain-vda.qcow2" ||
    { echo "libvirt.sh: !!! the restored night 1 differs from night1.raw" >&2; exit 1; }
id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$run/night1-checkpoint.json")
"$cairn" restore --repo "$run/repo" --domain "$id" --to-dir "$run/restored-cp" >/dev/null
qemu-img compare -q "$wl_dir/night1.raw" "$run/restored-cp/$domain-vda.qcow2" ||
    { echo "libvirt.sh: !!! the incremental night 1 differs from night1.raw" >&2; exit 1; }

disk_bytes=$(qemu-img info -U --output=json "$disk" | python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])')
echo "disk: $disk_bytes bytes virtual; both night-1 restore points equal night1.raw"
printf '%-18s %10s %14s %12s %s\n' night seconds "bytes read" "peak KiB" "bitmap used"
while read -r label seconds bytes rss incremental; do
    printf '%-18s %10s %14s %12s %s\n' "$label" "$seconds" "$bytes" "$rss" "$incremental"
done <"$results"
