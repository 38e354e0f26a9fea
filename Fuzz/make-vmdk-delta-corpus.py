#!/usr/bin/env python3
"""Seeds for fuzz-vmdk in ESXi's snapshot delta formats, which qemu-img reads but cannot make.

    Fuzz/make-vmdk-delta-corpus.py [CORPUS-DIR]     # default: Fuzz/Corpus next to this script

Most seeds are the target's two-file layout (options byte 1, a u16 descriptor length, the
descriptor `disk.vmdk`, then `extent.vmdk`): a vmfsSparse descriptor over a COWD extent, or a
seSparse one over an SEsparse extent, without a parent (holes read as zeros). The `-chain` seeds
use the three-file layout (options byte 3, lengths before the descriptor and the extent, then
`parent.vmdk`): the delta over a parent it names by `parentFileNameHint` and CID. The layouts are
those of docs/FORMAT.md, "VMDK sources"; the test helper Tests/CairnTestSupport/
VMDKDeltaFixtures.swift writes the same formats for the tests, and qemu-img reads both.
make-corpus.sh runs this after regenerating the rest.
"""
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "Corpus"), "vmdk")
os.makedirs(out, exist_ok=True)


def descriptor(create_type, sectors, extent_type, parent=False):
    parent_lines = 'parentCID=5eed0000\nparentFileNameHint="parent.vmdk"\n' if parent else "parentCID=ffffffff\n"
    return (
        '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=5eed0001\n' + parent_lines +
        f'isNativeSnapshot="no"\ncreateType="{create_type}"\n\n# Extent description\n'
        f'RW {sectors} {extent_type} "extent.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.longContentID = "0123456789abcdef0123456789abcdef"\n'
    ).encode()


def seed(name, text, extent):
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\1" + struct.pack("<H", len(text)) + text + extent)


def chain_seed(name, text, extent, parent):
    """The three-file layout (options 3): the delta's descriptor and extent, then its parent."""
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\3" + struct.pack("<H", len(text)) + text + struct.pack("<H", len(extent)) + extent + parent)


def flat_parent(sectors):
    """A parent of one ZERO extent (a descriptor alone), whose CID the deltas name."""
    return (
        '# Disk DescriptorFile\nversion=1\nCID=5eed0000\nparentCID=ffffffff\ncreateType="vmfs"\n\n'
        f'# Extent description\nRW {sectors} ZERO\n'
    ).encode()


def cowd(sectors, grain, grains):
    """Header (4 sectors), directory at sector 4, one 16 KiB table per used 4096 grains, grains."""
    span = 4096 * grain
    entries = (sectors + span - 1) // span
    nxt = 4 + (entries * 4 + 511) // 512
    directory = [0] * entries
    tables = {}
    for index in sorted(grains):
        if index // 4096 not in tables:
            tables[index // 4096] = [0] * 4096
            directory[index // 4096] = nxt
            nxt += 32
    data = {}
    for index in sorted(grains):
        tables[index // 4096][index % 4096] = nxt
        data[nxt] = grains[index].ljust(grain * 512, b"\0")
        nxt += grain
    image = bytearray(nxt * 512)
    image[0:32] = b"COWD" + struct.pack("<7I", 1, 3, sectors, grain, 4, entries, nxt)
    image[2048:2048 + entries * 4] = struct.pack(f"<{entries}I", *directory)
    for table, content in tables.items():
        at = directory[table] * 512
        image[at:at + 16384] = struct.pack("<4096I", *content)
    for sector, content in data.items():
        image[sector * 512:sector * 512 + len(content)] = content
    return bytes(image)


def sesparse(sectors, grains):
    """Const header, volatile header (1), journal header and journal (2, 3), directory (4), the
    table region, free bitmap, back map, then the grain region; grains maps an index to bytes,
    "zero" or "unmapped"."""
    entries = (sectors + 32767) // 32768
    directory_sectors = max(1, (entries * 8 + 511) // 512)
    tables_at = 4 + directory_sectors
    bitmap_at = tables_at + entries * 64
    grains_at = bitmap_at + 2
    used = sorted({index // 4096 for index in grains}, reverse=True)
    slot_of = {table: slot for slot, table in enumerate(used)}
    tables = {table: [0] * 4096 for table in used}
    stored = []
    for index in sorted(grains):
        content = grains[index]
        if content == "unmapped":
            entry = 1 << 60
        elif content == "zero":
            entry = 2 << 60
        else:
            slot = len(stored)
            entry = 3 << 60 | (slot & 0xFFF) << 48 | slot >> 12
            stored.append(content.ljust(4096, b"\0"))
        tables[index // 4096][index % 4096] = entry
    image = bytearray((grains_at + len(stored) * 8) * 512)
    fields = [0xCAFEBABE, 0x200000001, sectors, 8, 64, 0, 0, 0, 0, 0,
              1, 1, 2, 1, 3, 1, 4, directory_sectors, tables_at, entries * 64,
              bitmap_at, 1, bitmap_at + 1, 1, grains_at, (len(stored) + 16) * 8]
    image[0:208] = struct.pack("<26Q", *fields)
    image[512:544] = struct.pack("<4Q", 0xCAFECAFE, len(used), 1, 0)
    directory = [0] * entries
    for table, slot in slot_of.items():
        directory[table] = 1 << 60 | slot
    image[2048:2048 + entries * 8] = struct.pack(f"<{entries}Q", *directory)
    for table, content in tables.items():
        at = (tables_at + slot_of[table] * 64) * 512
        image[at:at + 32768] = struct.pack("<4096Q", *content)
    for slot, content in enumerate(stored):
        at = (grains_at + slot * 8) * 512
        image[at:at + 4096] = content
    return bytes(image)


# COWD of 1-sector grains (ESXi's) and of 8-sector ones, two tables, adjacent and lone grains.
seed("cowd", descriptor("vmfsSparse", 8000, "VMFSSPARSE"),
     cowd(8000, 1, {0: b"\x11" * 512, 1: b"\x12" * 512, 7: b"\x13" * 100, 4096: b"\x14" * 512, 7999: b"\x15"}))
seed("cowd-grain8", descriptor("vmfsSparse", 40000, "VMFSSPARSE"),
     cowd(40000, 8, {3: b"\x21" * 4096, 4: b"\x22" * 9, 4095: b"\x23" * 4096}))
# SEsparse: data grains, zero and unmapped grains, a last partial grain, two tables.
seed("sesparse", descriptor("seSparse", 36004, "SESPARSE"),
     sesparse(36004, {0: b"\x31" * 4096, 1: b"\x32" * 4096, 2: "zero", 3: "unmapped", 9: b"\x33" * 10,
                      4096: b"\x34" * 4096, 4500: b"\x35" * 4096}))
# The same deltas over a parent, as an ESXi snapshot chain.
chain_seed("cowd-chain", descriptor("vmfsSparse", 8000, "VMFSSPARSE", parent=True),
           cowd(8000, 1, {5: b"\x41" * 512, 6: b"\x42" * 512, 4100: b"\x43" * 512}), flat_parent(8000))
chain_seed("sesparse-chain", descriptor("seSparse", 8004, "SESPARSE", parent=True),
           sesparse(8004, {1: b"\x51" * 4096, 2: "zero", 1000: b"\x52" * 100}), flat_parent(8004))
