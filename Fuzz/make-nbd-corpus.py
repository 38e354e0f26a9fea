#!/usr/bin/env python3
"""Seeds for the NBD fuzz targets, built from the protocol (NetworkBlockDevice/nbd doc/proto.md).

fuzz-nbd-client takes an options byte and then what a server sends; fuzz-nbd-server takes what a
client sends. Each seed is one whole conversation in the order the target's harness drives it
(see the targets' doc comments), so mutations start from sessions that reach transmission.

    python3 Fuzz/make-nbd-corpus.py Fuzz/Corpus
"""
import os
import struct
import sys

out = sys.argv[1]
NBDMAGIC, IHAVEOPT, REPMAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x0003E889045565A9
SIMPLE, STRUCTURED, REQUEST = 0x67446698, 0x668E33EF, 0x25609513


def put(target, name, data):
    os.makedirs(f"{out}/{target}", exist_ok=True)
    with open(f"{out}/{target}/{name}", "wb") as f:
        f.write(data)


# What a server sends (fuzz-nbd-client).
def greeting(flags=3):
    return struct.pack(">QQH", NBDMAGIC, IHAVEOPT, flags)


def rep(option, kind, data=b""):
    return struct.pack(">QIII", REPMAGIC, option, kind, len(data)) + data


def info_export(size, flags=0x0583):
    return rep(7, 3, struct.pack(">HQH", 0, size, flags))


def info_block_size(minimum=1, preferred=4096, maximum=32 << 20):
    return rep(7, 3, struct.pack(">HIII", 3, minimum, preferred, maximum))


def chunk(cookie, kind, payload, done=True):
    return struct.pack(">IHHQI", STRUCTURED, 1 if done else 0, kind, cookie, len(payload)) + payload


def meta(name, ident):
    return rep(10, 4, struct.pack(">I", ident) + name.encode())


def status(cookie, ident, extents):
    return chunk(cookie, 5, struct.pack(">I", ident) + b"".join(struct.pack(">II", n, f) for n, f in extents))


size = 64 << 10
pattern = bytes((i * 7 + 1) & 0xFF for i in range(4096))
structured_session = (
    greeting()
    + rep(8, 1)
    + meta("base:allocation", 1)
    + rep(10, 1)
    + info_export(size)
    + info_block_size()
    + rep(7, 1)
    + status(1, 1, [(4096, 0), (size - 4096, 3)])
    + chunk(2, 1, struct.pack(">Q", 0) + pattern, done=False)
    + chunk(2, 2, struct.pack(">QI", 4096, size - 4096))
    + chunk(3, 1, struct.pack(">Q", 700) + pattern[700:1000])
)
put("nbd-client", "structured", b"\0" + structured_session)
put(
    "nbd-client",
    "bitmap",
    b"\2"
    + greeting()
    + rep(8, 1)
    + meta("base:allocation", 7)
    + meta("qemu:dirty-bitmap:fuzz", 9)
    + rep(10, 1)
    + info_export(size)
    + info_block_size(512, 4096, 1 << 20)
    + rep(7, 1)
    + status(1, 7, [(size, 0)])
    + status(2, 9, [(8192, 1), (size - 8192, 0)])
    + chunk(3, 2, struct.pack(">QI", 0, size))
    + chunk(4, 1, struct.pack(">Q", 512) + bytes(1024)),
)
put(
    "nbd-client",
    "errors",
    b"\0"
    + greeting()
    + rep(8, 1)
    + rep(10, 0x80000001, b"no contexts here")
    + info_export(size)
    + rep(7, 1)
    + chunk(1, 0x8001, struct.pack(">IH", 5, 7) + b"damaged")
    + chunk(2, 0x8002, struct.pack(">IH", 5, 4) + b"bad!" + struct.pack(">Q", 800)),
)
small = 8192
put(
    "nbd-client",
    "simple-export-name",
    b"\1"
    + greeting()
    + rep(7, 0x80000001, b"GO is not supported")
    + struct.pack(">QH", small, 0x0003)
    + struct.pack(">IIQ", SIMPLE, 0, 1)
    + bytes(small)
    + struct.pack(">IIQ", SIMPLE, 0, 2)
    + bytes(300),
)


# What a client sends (fuzz-nbd-server).
def opt(option, data=b""):
    return struct.pack(">QII", IHAVEOPT, option, len(data)) + data


def name(text):
    return struct.pack(">I", len(text)) + text.encode()


def contexts(export, queries):
    return name(export) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries)


def request(command, cookie, offset, length, flags=0):
    return struct.pack(">IHHQQI", REQUEST, flags, command, cookie, offset, length)


export = "vm1@latest/disk.raw"
disk = 256 << 10
put(
    "nbd-server",
    "structured",
    struct.pack(">I", 3)
    + opt(8)
    + opt(10, contexts("", ["base:allocation"]))
    + opt(7, name("") + struct.pack(">HH", 1, 3))
    + request(0, 1, 0, 4096)
    + request(7, 2, 0, disk, flags=8)
    + request(7, 3, 0, disk)
    + request(0, 4, disk - 100, 4096)
    + request(1, 5, 0, 16)
    + bytes(16)
    + request(5, 6, 0, 4096)
    + request(0, 7, 190 << 10, 16 << 10)
    + request(2, 8, 0, 0),
)
put(
    "nbd-server",
    "list-info-export-name",
    struct.pack(">I", 1)
    + opt(3)
    + opt(6, name(export) + struct.pack(">HHHHH", 4, 0, 1, 2, 3))
    + opt(9, contexts(export, []))
    + opt(9, contexts(export, ["base:"]))
    + opt(5)
    + opt(99, b"xyz")
    + opt(1, export.encode())
    + request(0, 1, 0, 512)
    + request(4, 2, 0, 4096)
    + request(2, 3, 0, 0),
)
put("nbd-server", "abort", struct.pack(">I", 3) + opt(2))
