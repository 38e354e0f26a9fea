#!/usr/bin/env bash
# Regenerates the seed corpora in Fuzz/Corpus/TARGET/ from a real cairn run: a small disk backed
# up into a 4 KiB-block repository and written to an archive, plus tiny qcow2 images from
# qemu-img and TestImages/. Every seed is a few KiB to a few tens of KiB. Needs qemu-utils.
#
#   Fuzz/make-corpus.sh
#
# Targets that take an options byte first (see each target's doc comment) get each file with
# the byte 0 (as is) and with the byte set (checksums repaired, more paths on).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
swift build --package-path "$root" --product cairn >&2
cairn="$(swift build --package-path "$root" --show-bin-path)/cairn"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/cairn-corpus.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# A 40 KiB disk: text, a repeated block, a hole and bytes that do not compress (deterministic).
python3 - "$tmp/disk.img" <<'PY'
import random, sys
r = random.Random(18)
text = b"".join(b"line %05d of a guest file system\n" % i for i in range(200))[:8192]
noise = bytes(r.randrange(256) for _ in range(8192))
block = bytes([0x5A]) * 4096
open(sys.argv[1], "wb").write(text + block + block + bytes(8192) + noise + block[:4096])
PY
"$cairn" init --repo "$tmp/repo" --block-size 4K >/dev/null
"$cairn" backup --repo "$tmp/repo" --group vm "$tmp/disk.img" >/dev/null
"$cairn" archive write --repo "$tmp/repo" vm@latest --to "$tmp/archive" --block-size 64K >/dev/null

qemu-img create -q -f qcow2 -o cluster_size=16384,extended_l2=on "$tmp/extl2.qcow2" 64K
qemu-io -f qcow2 -c 'write -P 0x61 0 6k' -c 'write -z 16k 8k' "$tmp/extl2.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096,compat=0.10 "$tmp/v2.qcow2" 64K
qemu-io -f qcow2 -c 'write -P 0x62 4k 4k' "$tmp/v2.qcow2" >/dev/null
qemu-img convert -q -c -O qcow2 -o cluster_size=4096,compression_type=zlib "$tmp/disk.img" "$tmp/compressed.qcow2"

# VMDK seeds (see Sources/fuzz-vmdk for the input layout): QEMU's sparse extents (with and without
# zeroed grains), QEMU's stream, and Cairn's own monolithicSparse and VMware-layout stream.
vmdk_seeds() {
    qemu-img create -q -f vmdk "$tmp/sparse.vmdk" 256K
    qemu-io -f vmdk -c 'write -P 0x63 0 4k' -c 'write -P 0x64 6k 2k' "$tmp/sparse.vmdk" >/dev/null
    qemu-img create -q -f vmdk -o zeroed_grain=on "$tmp/zeroed.vmdk" 256K
    qemu-io -f vmdk -c 'write -P 0x65 4k 4k' -c 'write -z 64k 64k' "$tmp/zeroed.vmdk" >/dev/null
    qemu-img convert -q -O vmdk -o subformat=streamOptimized "$tmp/disk.img" "$tmp/stream.vmdk"
    "$cairn" restore --repo "$tmp/repo" vm@latest --to "$tmp/cairn-sparse.vmdk" --format vmdk >/dev/null
    "$cairn" restore --repo "$tmp/repo" vm@latest --to "$tmp/cairn-stream.vmdk" --format vmdk \
        --subformat streamOptimized >/dev/null
}
vmdk_seeds

python3 - "$tmp" "$root" "$here/Corpus" <<'PY'
import glob, hashlib, os, shutil, struct, sys
tmp, root, out = sys.argv[1:4]
repo = tmp + "/repo"

def put(target, name, data):
    os.makedirs(f"{out}/{target}", exist_ok=True)
    open(f"{out}/{target}/{name}", "wb").write(data)

for target in ["qcow2", "pack", "index-segment", "index-tree", "manifest", "config", "archive", "vmdk"]:
    shutil.rmtree(f"{out}/{target}", ignore_errors=True)

for name in ["c512.qcow2", "zstd4k.qcow2", "deflate-v2.qcow2"]:
    put("qcow2", name, open(f"{root}/TestImages/{name}", "rb").read())
for name in ["extl2.qcow2", "v2.qcow2", "compressed.qcow2"]:
    put("qcow2", name, open(f"{tmp}/{name}", "rb").read())

for n, path in enumerate(sorted(glob.glob(f"{repo}/packs/*/*.pack"))):
    data = open(path, "rb").read()
    put("pack", f"pack{n}", b"\0" + data)
    put("pack", f"pack{n}-repair", b"\1" + data)
for n, path in enumerate(sorted(glob.glob(f"{repo}/index/*.idx"))):
    data = open(path, "rb").read()
    put("index-segment", f"segment{n}", b"\0" + data)
    put("index-segment", f"segment{n}-repair", b"\1" + data)
config = open(f"{repo}/config", "rb").read()
for options in [0, 1, 3, 5, 9]:
    put("config", f"config-{options}", bytes([options]) + config)

for n, path in enumerate(sorted(glob.glob(f"{repo}/points/*/*.manifest"))):
    data = open(path, "rb").read()
    put("manifest", f"manifest{n}", b"\0" + data)
    put("manifest", f"manifest{n}-line", b"\1" + data.split(b"\n")[0])
# A manifest naming the tree the manifest target stores (a leaf page listing blocks "a" and "b").
page = hashlib.sha256(b"a" * 4096).digest() + hashlib.sha256(b"b" * 4096).digest()
line = ('{"blockSize":4096,"disks":[{"blockCount":2,"changedBlocks":0,"depth":1,"name":"disk",'
        f'"root":"{hashlib.sha256(page).hexdigest()}","size":8192,'
        '"source":{"format":"raw","path":"/fuzz/disk","virtualSize":8192},"zeroBlocks":0}],"format":1,'
        '"group":"g","id":"g@2026-11-26T03:00:00Z","repository":"00000000000000000000000000000000",'
        '"stats":{"bytesNew":0,"bytesRead":0,"bytesStored":0,"chunksNew":0,"seconds":0},'
        '"time":"2026-11-26T03:00:00Z","tool":"cairn fuzz"}').encode()
put("manifest", "tree-line", b"\1" + line)
put("manifest", "tree-line-qcow2", b"\5" + line)

# Archives in compact form: each block's header and payload, without the padding.
compact = b""
for path in sorted(glob.glob(f"{tmp}/archive.*")):
    data = open(path, "rb").read()
    at = 0
    while at + 64 <= len(data):
        block_size, = struct.unpack_from("<I", data, at + 12)
        length, = struct.unpack_from("<I", data, at + 48)
        compact += data[at:at + 64 + length]
        at += block_size
put("archive", "archive", b"\0" + compact)
put("archive", "archive-restore", b"\3" + compact)
put("archive", "archive-import", b"\5" + compact)

# Index trees in the target's own input form (Sources/fuzz-index-tree).
def ref(kind, n):
    return bytes([0xFF, kind, n]) + bytes(29)
def tree(options, count, adjust, pages):
    body = b"".join(struct.pack(">H", len(p)) + p for p in pages)
    return bytes([options]) + struct.pack("<I", count) + struct.pack(">H", adjust) + body
put("index-tree", "leaf", tree(0, 3, 0, [ref(0xFE, 0) + ref(0xFE, 1) + ref(0xFD, 0)]))
put("index-tree", "short-tail", tree(0x10, 2, 3000, [ref(0xFE, 2) + ref(0xFE, 3)]))
put("index-tree", "two-levels", tree(1, 1030, 0, [ref(0xFF, 0) + ref(0xFF, 1),
                                                  b"".join(ref(0xFE, i % 3) for i in range(1024)),
                                                  ref(0xFD, 0) * 6]))
put("index-tree", "qcow2", tree(0x30, 4, 0, [ref(0xFE, 0) + bytes(32) + ref(0xFD, 0) + ref(0xFE, 1)]))

# VMDK: single files (byte 0 = 0), and a descriptor file plus its extent (byte 0 = 1).
for name in ["sparse.vmdk", "zeroed.vmdk", "stream.vmdk", "cairn-sparse.vmdk", "cairn-stream.vmdk"]:
    put("vmdk", name, b"\0" + open(f"{tmp}/{name}", "rb").read())
def descriptor(create_type, extents, extra=""):
    return (f'# Disk DescriptorFile\nversion=1\nCID=0a0b0c0d\nparentCID=ffffffff\n{extra}'
            f'createType="{create_type}"\n\n# Extent description\n{extents}\n\n#DDB\n'
            'ddb.adapterType = "lsilogic"\n').encode()
def pair(text, extent):
    return b"\1" + struct.pack("<H", len(text)) + text + extent
flat = open(f"{tmp}/disk.img", "rb").read()[:16384]
put("vmdk", "flat", pair(descriptor("monolithicFlat", 'RW 32 FLAT "extent.vmdk" 0'), flat))
put("vmdk", "vmfs-zero-rdonly", pair(descriptor(
    "vmfs", 'RDONLY 16 VMFS "extent.vmdk"\nRW 9 ZERO\nRW 8 FLAT "extent.vmdk" 16'), flat))
sparse = open(f"{tmp}/sparse.vmdk", "rb").read()
put("vmdk", "descriptor-sparse", pair(descriptor("twoGbMaxExtentSparse", 'RW 512 SPARSE "extent.vmdk"'), sparse))
put("vmdk", "descriptor-alone", b"\0" + descriptor("monolithicFlat", "RW 64 ZERO"))
PY
# Key files: a real one of an encrypted repository (byte 0 = 0) and its paper form (byte 0 = 1).
printf 'corpus passphrase\n' > "$tmp/pass"
CAIRN_PASSWORD_FILE="$tmp/pass" "$cairn" init --repo "$tmp/crypt" --encryption >/dev/null
key="$(ls "$tmp/crypt/keys" | head -1)"
mkdir -p "$here/Corpus/keyfile"
{ printf '\0'; cat "$tmp/crypt/keys/$key"; } > "$here/Corpus/keyfile/key-file"
{ printf '\1'; CAIRN_PASSWORD_FILE="$tmp/pass" "$cairn" key export --repo "$tmp/crypt" "$key" --paper; } \
    > "$here/Corpus/keyfile/paper-key"
# The same key file with its format given twice, the second copy wrong (a fuzz finding: two
# parsers once kept different copies).
{ printf '\0'; sed 's/^  "format" : "cairn-key",$/&\n  "format" : "cairn-kex",/' "$tmp/crypt/keys/$key"; } \
    > "$here/Corpus/keyfile/field-twice"
# ESXi's delta formats (vmfsSparse, SEsparse), which qemu-img cannot make: written by hand.
python3 "$here/make-vmdk-delta-corpus.py" "$here/Corpus"
du -sh "$here/Corpus"/* >&2
# The NBD targets' seeds are whole protocol conversations, built from the spec.
python3 "$here/make-nbd-corpus.py" "$here/Corpus"
