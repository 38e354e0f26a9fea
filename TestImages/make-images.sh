#!/usr/bin/env bash
# Regenerates the qcow2 test fixtures in this folder and their MANIFEST.
#
# Needs qemu-img and qemu-io (Debian qemu-utils 7.2). Every image is small (1-4 MiB virtual, a few
# written clusters) so the folder stays well under 5 MiB. MANIFEST has one line per readable image:
#   NAME SHA256-OF-GUEST-VIEW VIRTUAL-SIZE
# where the guest view is `qemu-img convert -O raw` of the image (for NAME@SNAP: of the image
# after `qemu-img snapshot -a SNAP`, i.e. with the snapshot's own size). Encrypted images are not
# made by the tests at run time (a LUKS header alone is 2 MiB): they only need to be refused.
# 2 MiB-cluster images are ~14 MiB each, so the tests build those at run time instead.
set -euo pipefail
cd "$(dirname "$0")"
rm -f ./*.qcow2 ./*.raw ./*.data sub/*.qcow2 MANIFEST
mkdir -p sub

create() { qemu-img create -q -f qcow2 "$@"; }
io() { local img=$1; shift; local args=(); for c in "$@"; do args+=(-c "$c"); done; qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null; }

# Version 2 (compat=0.10): no zero flag, no extensions.
create -o compat=0.10 v2.qcow2 2M
io v2.qcow2 "write -P 0x11 0 64k" "write -P 0x22 1M 4k" "write -P 0x23 1536k 512"

# Version 3 with zero clusters (allocated and plain) and a discard; size not a multiple of 64 KiB.
create -o compat=1.1 v3.qcow2 3000k
io v3.qcow2 "write -P 0x31 0 128k" "write -z 64k 64k" "write -P 0x32 1M 64k" "discard 1M 64k" \
    "write -P 0x33 2M 8k" "write -z -u 2M 64k" "write -P 0x34 2944k 56k"

# Cluster sizes.
create -o cluster_size=512 c512.qcow2 1M
io c512.qcow2 "write -P 0x51 0 1536" "write -P 0x52 700k 3k" "write -z 1k 512"
create -o cluster_size=4k c4k.qcow2 2M
io c4k.qcow2 "write -P 0x41 4k 12k" "write -P 0x42 1M 100k" "write -z 1040k 8k"
create -o cluster_size=64k c64k.qcow2 4M
io c64k.qcow2 "write -P 0x61 0 64k" "write -P 0x62 3M 1k"

# Extended L2 entries with subclusters (64 KiB clusters, 2 KiB subclusters), over a backing file
# so that unallocated subclusters fall through to it.
create -o cluster_size=16k extl2-base.qcow2 1M
io extl2-base.qcow2 "write -P 0xb1 0 64k" "write -P 0xb2 480k 64k"
create -o cluster_size=16k,extended_l2=on -b extl2-base.qcow2 -F qcow2 extl2.qcow2 1M
io extl2.qcow2 "write -P 0xe1 1k 1k" "write -P 0xe2 5k 3k" "write -z 16k 2k" "write -P 0xe3 128k 16k" \
    "discard 320k 16k" "write -z 400k 512" "write -P 0xe6 500k 1536"
create -o cluster_size=32k,extended_l2=on extl2-solo.qcow2 1M
io extl2-solo.qcow2 "write -P 0xe4 0 1k" "write -P 0xe5 31k 1k" "write -z 64k 32k"

# Compressed clusters: deflate (v2 and v3) and zstd, one incompressible cluster among them.
head -c 65536 /dev/urandom > /tmp/cairn-random-cluster.$$
create -o compat=1.1 deflate.qcow2 1M
io deflate.qcow2 "write -c -P 0xd1 0 64k" "write -c -P 0xd2 128k 128k" "write -P 0xd3 512k 4k"
qemu-io -f qcow2 -c "write -c -s /tmp/cairn-random-cluster.$$ 256k 64k" deflate.qcow2 >/dev/null 2>&1 || true
create -o compat=0.10,cluster_size=4k deflate-v2.qcow2 1M
io deflate-v2.qcow2 "write -c -P 0xd4 64k 8k"
create -o compression_type=zstd,cluster_size=16k zstd.qcow2 1M
io zstd.qcow2 "write -c -P 0x5d 0 16k" "write -c -P 0x5e 192k 32k" "write -P 0x5f 640k 4k"
create -o compression_type=zstd,cluster_size=4k zstd4k.qcow2 1M
io zstd4k.qcow2 "write -c -P 0x6d 8k 4k"
rm -f /tmp/cairn-random-cluster.$$

# Backing chain with relative names: sub/top.qcow2 -> sub/mid.qcow2 -> base.qcow2, the base
# smaller than the overlays (reads past its end are zeros) and the top smaller than the middle.
create -o cluster_size=4k base.qcow2 1M
io base.qcow2 "write -P 0xa1 0 160k" "write -P 0xa0 1020k 4k"
create -o cluster_size=4k -b ../base.qcow2 -F qcow2 sub/mid.qcow2 3M
io sub/mid.qcow2 "write -P 0xa2 64k 8k" "write -z 96k 16k" "write -P 0xa3 2M 4k"
create -o cluster_size=4k -b mid.qcow2 -F qcow2 sub/top.qcow2 2560k
io sub/top.qcow2 "write -P 0xa4 128k 4k" "discard 64k 4k" "discard 144k 4k" "write -P 0xa5 2304k 4k"
create -o compat=0.10,cluster_size=4k -b base.qcow2 -F qcow2 overlay-v2.qcow2 1M
io overlay-v2.qcow2 "write -P 0xa6 0 4k" "write -z 64k 8k"

# Raw backing file, declared raw by the backing format extension.
head -c 256k /dev/zero | tr '\0' '\141' > base.raw
create -o cluster_size=4k -b base.raw -F raw overlay-raw.qcow2 2M
io overlay-raw.qcow2 "write -P 0xa7 4k 4k" "write -z 128k 8k"

# External data files (names relative: QEMU resolves them against the working directory).
create -o data_file=extdata.data,cluster_size=4k extdata.qcow2 256k
io extdata.qcow2 "write -P 0xdf 0 16k" "write -P 0xde 192k 4k" "write -z 0 4k"
create -o data_file=extraw.data,data_file_raw=on,cluster_size=4k extraw.qcow2 256k
io extraw.qcow2 "write -P 0xdd 64k 8k"

# Internal snapshot: written, snapshotted, then overwritten and grown.
create -o cluster_size=4k snap.qcow2 1M
io snap.qcow2 "write -P 0xc1 0 16k" "write -P 0xc2 512k 4k"
qemu-img snapshot -c s1 snap.qcow2
io snap.qcow2 "write -P 0xc3 8k 4k" "write -z 512k 4k"
qemu-img resize -q snap.qcow2 2M
io snap.qcow2 "write -P 0xc4 1536k 4k"

# Preallocation.
create -o preallocation=metadata,cluster_size=4k prealloc-metadata.qcow2 256k
io prealloc-metadata.qcow2 "write -P 0x9a 64k 4k"
create -o preallocation=full,cluster_size=4k prealloc-full.qcow2 256k
io prealloc-full.qcow2 "write -P 0x9b 0 4k"

sha() { qemu-img convert -O raw "$1" /tmp/cairn-manifest.$$.raw && sha256sum < /tmp/cairn-manifest.$$.raw | cut -d' ' -f1; }
vsize() { qemu-img info --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1; }
for img in v2 v3 c512 c4k c64k extl2-base extl2 extl2-solo deflate deflate-v2 zstd zstd4k base sub/mid sub/top \
    overlay-v2 overlay-raw extdata extraw snap prealloc-metadata prealloc-full; do
    echo "$img.qcow2 $(sha "$img.qcow2") $(vsize "$img.qcow2")" >> MANIFEST
done
cp snap.qcow2 /tmp/cairn-snap.$$.qcow2
qemu-img snapshot -a s1 /tmp/cairn-snap.$$.qcow2
echo "snap.qcow2@s1 $(sha /tmp/cairn-snap.$$.qcow2) $(vsize /tmp/cairn-snap.$$.qcow2)" >> MANIFEST
rm -f /tmp/cairn-snap.$$.qcow2 /tmp/cairn-manifest.$$.raw
du -sh .
