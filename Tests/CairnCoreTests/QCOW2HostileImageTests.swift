import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Malformed and hostile images, made at run time by patching a copy of a good fixture. Each must
/// be refused with one `.badImage` error that names the field or offset, quickly.
@Suite("qcow2 reader refuses hostile images", .timeLimit(.minutes(1)))
struct QCOW2HostileImageTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        /// Fixtures copied into the temporary directory (relative names kept); the first is opened
        /// unless `patch` returns another path.
        var fixtures: [String]
        /// What the error message must contain.
        var expected: String
        var patch: @Sendable (_ image: String, _ directory: String) throws -> String?
    }

    static let cases: [Case] = [
        Case(description: "truncated file", fixtures: ["c64k.qcow2"], expected: "beyond the end of the file") {
            image, _ in
            try QCOW2Patch.truncate(image, to: QCOW2Patch.size(image) - 65536)
            return nil
        },
        Case(
            description: "file cut inside a data cluster", fixtures: ["c64k.qcow2"], expected: "the image is truncated"
        ) { image, _ in
            try QCOW2Patch.truncate(image, to: QCOW2Patch.size(image) - 1000)
            return nil
        },
        Case(description: "truncated header", fixtures: ["c64k.qcow2"], expected: "header is truncated") { image, _ in
            try QCOW2Patch.truncate(image, to: 50)
            return nil
        },
        Case(description: "version 1", fixtures: ["c64k.qcow2"], expected: "is a qcow (version 1) image") { image, _ in
            try QCOW2Patch.u32(image, at: 4, 1)
            return nil
        },
        Case(description: "L1 beyond EOF", fixtures: ["c64k.qcow2"], expected: "L1 table at 0x1000000") { image, _ in
            try QCOW2Patch.u64(image, at: 40, 0x100_0000)
            return nil
        },
        Case(description: "L2 beyond EOF", fixtures: ["c64k.qcow2"], expected: "L2 table at 0x1000000") { image, _ in
            try QCOW2Patch.u64(image, at: QCOW2Patch.l1Offset(image), 1 << 63 | 0x100_0000)
            return nil
        },
        Case(description: "data cluster beyond EOF", fixtures: ["c64k.qcow2"], expected: "host offset 0x1000000") {
            image, _ in
            try QCOW2Patch.u64(image, at: QCOW2Patch.l2Offset(image), 1 << 63 | 0x100_0000)
            return nil
        },
        Case(description: "misaligned L1", fixtures: ["c64k.qcow2"], expected: "l1_table_offset") { image, _ in
            try QCOW2Patch.u64(image, at: 40, QCOW2Patch.l1Offset(image) + 512)
            return nil
        },
        Case(description: "misaligned L2", fixtures: ["c64k.qcow2"], expected: "not aligned") { image, _ in
            try QCOW2Patch.u64(image, at: QCOW2Patch.l1Offset(image), 1 << 63 | (QCOW2Patch.l2Offset(image) + 512))
            return nil
        },
        Case(description: "misaligned data cluster", fixtures: ["c64k.qcow2"], expected: "data cluster offset") {
            image, _ in
            let l2 = try QCOW2Patch.l2Offset(image)
            try QCOW2Patch.u64(image, at: l2, QCOW2Patch.readU64(image, at: l2) + 512)
            return nil
        },
        Case(description: "data cluster on the L1 table", fixtures: ["c64k.qcow2"], expected: "overlaps the L1 table") {
            image, _ in
            try QCOW2Patch.u64(image, at: QCOW2Patch.l2Offset(image), 1 << 63 | QCOW2Patch.l1Offset(image))
            return nil
        },
        Case(
            description: "L2 table on the refcount table", fixtures: ["c64k.qcow2"],
            expected: "overlaps the refcount table"
        ) {
            image, _ in
            try QCOW2Patch.u64(image, at: QCOW2Patch.l1Offset(image), 1 << 63 | QCOW2Patch.readU64(image, at: 48))
            return nil
        },
        Case(description: "huge l1_size", fixtures: ["c64k.qcow2"], expected: "l1_size") { image, _ in
            try QCOW2Patch.u32(image, at: 36, 0x7FFF_FFFF)
            return nil
        },
        Case(description: "l1_size too small", fixtures: ["c64k.qcow2"], expected: "l1_size") { image, _ in
            try QCOW2Patch.u32(image, at: 36, 0)
            return nil
        },
        Case(description: "cluster_bits 8", fixtures: ["c64k.qcow2"], expected: "cluster_bits") { image, _ in
            try QCOW2Patch.u32(image, at: 20, 8)
            return nil
        },
        Case(description: "cluster_bits 22", fixtures: ["c64k.qcow2"], expected: "cluster_bits") { image, _ in
            try QCOW2Patch.u32(image, at: 20, 22)
            return nil
        },
        Case(description: "header_length not a multiple of 8", fixtures: ["c64k.qcow2"], expected: "header_length") {
            image, _ in
            try QCOW2Patch.u32(image, at: 100, 105)
            return nil
        },
        Case(description: "header_length beyond the cluster", fixtures: ["c64k.qcow2"], expected: "header_length") {
            image, _ in
            try QCOW2Patch.u32(image, at: 100, 0x20000)
            return nil
        },
        Case(description: "header_length below 104", fixtures: ["c64k.qcow2"], expected: "header_length") { image, _ in
            try QCOW2Patch.u32(image, at: 100, 96)
            return nil
        },
        Case(description: "unknown incompatible bit", fixtures: ["c64k.qcow2"], expected: "unknown bit 20 set") {
            image, _ in
            try QCOW2Patch.u64(image, at: 72, 1 << 20)
            return nil
        },
        Case(
            description: "unknown incompatible bit named in the feature table", fixtures: ["c64k.qcow2"],
            expected: "bit 20 \"cairn test feature\""
        ) { image, _ in
            let table = try QCOW2Patch.findExtension(image, type: 0x6803_F857)
            try QCOW2Patch.bytes(image, at: table, [0, 20] + Array("cairn test feature".utf8) + [0])
            try QCOW2Patch.u64(image, at: 72, 1 << 20)
            return nil
        },
        Case(description: "corrupt bit", fixtures: ["c64k.qcow2"], expected: "corrupt") { image, _ in
            try QCOW2Patch.u64(image, at: 72, 2)
            return nil
        },
        Case(description: "reserved bits in an L1 entry", fixtures: ["c64k.qcow2"], expected: "L1 entry 0") {
            image, _ in
            let l1 = try QCOW2Patch.l1Offset(image)
            try QCOW2Patch.u64(image, at: l1, QCOW2Patch.readU64(image, at: l1) | 2)
            return nil
        },
        Case(description: "reserved bits in an L2 entry", fixtures: ["c64k.qcow2"], expected: "reserved bits") {
            image, _ in
            let l2 = try QCOW2Patch.l2Offset(image)
            try QCOW2Patch.u64(image, at: l2, QCOW2Patch.readU64(image, at: l2) | 1 << 56)
            return nil
        },
        Case(description: "snapshot table beyond EOF", fixtures: ["snap.qcow2"], expected: "snapshot table entry 0") {
            image, _ in
            try QCOW2Patch.u64(image, at: 64, 0x1000_0000)
            return nil
        },
        Case(description: "backing file is itself", fixtures: ["c64k.qcow2"], expected: "loop") { image, _ in
            try QemuTools.check("qemu-img", ["rebase", "-u", "-b", "c64k.qcow2", "-F", "qcow2", image])
            return nil
        },
        Case(description: "backing loop a -> b -> a", fixtures: ["c64k.qcow2", "v3.qcow2"], expected: "loop") {
            image, directory in
            try QemuTools.check("qemu-img", ["rebase", "-u", "-b", "v3.qcow2", "-F", "qcow2", image])
            try QemuTools.check(
                "qemu-img", ["rebase", "-u", "-b", "c64k.qcow2", "-F", "qcow2", directory + "/v3.qcow2"])
            return nil
        },
        Case(description: "missing backing file", fixtures: ["overlay-raw.qcow2"], expected: "\"base.raw\"") { _, _ in
            nil
        },
        Case(
            description: "backing file without a format", fixtures: ["overlay-raw.qcow2", "base.raw"],
            expected: "no backing format"
        ) { image, _ in
            try QCOW2Patch.u32(image, at: QCOW2Patch.findExtension(image, type: 0xE279_2ACA) - 8, 0x1234_5678)
            return nil
        },
        Case(description: "backing name too long", fixtures: ["overlay-raw.qcow2"], expected: "backing_file_size") {
            image, _ in
            try QCOW2Patch.u32(image, at: 16, 2000)
            return nil
        },
        Case(description: "missing external data file", fixtures: ["extdata.qcow2"], expected: "extdata.data") { _, _ in
            nil
        },
        Case(
            description: "compressed cluster inflates short", fixtures: ["deflate-v2.qcow2"],
            expected: "inflates to 4 bytes"
        ) {
            image, _ in
            // deflate-v2: 4 KiB clusters, guest cluster 16 compressed. A final stored block of 4 bytes.
            let entry = try QCOW2Patch.readU64(image, at: QCOW2Patch.l2Offset(image) + 16 * 8)
            let offset = entry & ((1 << 58) - 1)
            try QCOW2Patch.bytes(image, at: offset, [0x01, 0x04, 0x00, 0xFB, 0xFF, 1, 2, 3, 4])
            return nil
        },
        Case(
            description: "compressed data cut short by truncation", fixtures: ["zstd4k.qcow2"],
            expected: "compressed cluster"
        ) {
            image, _ in
            // zstd4k.qcow2 ends with a 19-byte compressed cluster: cut into it.
            try QCOW2Patch.truncate(image, to: QCOW2Patch.size(image) - 10)
            return nil
        },
        Case(
            description: "compressed data that is not deflate", fixtures: ["deflate-v2.qcow2"],
            expected: "does not decompress"
        ) {
            image, _ in
            let entry = try QCOW2Patch.readU64(image, at: QCOW2Patch.l2Offset(image) + 16 * 8)
            try QCOW2Patch.bytes(image, at: entry & ((1 << 58) - 1), [0xFF, 0xFF, 0xFF, 0xFF])
            return nil
        },
        Case(
            description: "extended L2 subcluster both allocated and zero", fixtures: ["extl2-solo.qcow2"],
            expected: "both allocated and zero"
        ) { image, _ in
            let bitmap = try QCOW2Patch.l2Offset(image) + 8
            try QCOW2Patch.u64(image, at: bitmap, QCOW2Patch.readU64(image, at: bitmap) | 1 | 1 << 32)
            return nil
        },
        Case(description: "chain deeper than 16", fixtures: ["c64k.qcow2"], expected: "deeper than 16") {
            image, directory in
            var below = "c64k.qcow2"
            for level in 1...17 {
                let name = "level\(level).qcow2"
                try QemuTools.check(
                    "qemu-img", ["create", "-q", "-f", "qcow2", "-b", below, "-F", "qcow2", name, "4M"], in: directory)
                below = name
            }
            return directory + "/" + below
        },
    ]

    @Test(arguments: cases)
    func refused(_ hostile: Case) throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        for fixture in hostile.fixtures {
            _ = try temporary.copy(QCOW2Fixtures.path(fixture), as: fixture)
        }
        let image = temporary.path + "/" + hostile.fixtures[0]
        let target = try hostile.patch(image, temporary.path) ?? image
        let error = try #require(throws: CairnError.self) {
            let opened = try DiskImageOpener.open(target)
            _ = try QCOW2Fixtures.guestDigest(opened)
            _ = try QCOW2Fixtures.checkZeroExtents(opened)
        }
        #expect(error.code == .badImage)
        #expect(error.message.contains(hostile.expected), "message: \(error.message)")
    }
}

/// Byte patches on image copies.
enum QCOW2Patch {
    static func size(_ path: String) throws -> UInt64 {
        try File.open(path, .readOnly).size()
    }

    static func truncate(_ path: String, to size: UInt64) throws {
        try File.open(path, .readWrite).truncate(to: size)
    }

    static func bytes(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
        try File.open(path, .readWrite).write(bytes, at: offset)
    }

    static func u64(_ path: String, at offset: UInt64, _ value: UInt64) throws {
        var w = ByteWriter()
        w.be(value)
        try bytes(path, at: offset, w.bytes)
    }

    static func u32(_ path: String, at offset: UInt64, _ value: UInt32) throws {
        var w = ByteWriter()
        w.be(value)
        try bytes(path, at: offset, w.bytes)
    }

    static func readU64(_ path: String, at offset: UInt64) throws -> UInt64 {
        var r = ByteReader(try File.open(path, .readOnly).readBytes(count: 8, at: offset), context: path)
        return try r.be()
    }

    static func l1Offset(_ path: String) throws -> UInt64 { try readU64(path, at: 40) }

    /// The first L2 table (of L1 entry 0).
    static func l2Offset(_ path: String) throws -> UInt64 {
        try readU64(path, at: l1Offset(path)) & 0x00FF_FFFF_FFFF_FE00
    }

    /// The file offset of the end marker of the header extensions.
    static func extensionsEnd(_ path: String) throws -> UInt64 {
        let header = try File.open(path, .readOnly).readBytes(count: 4096, at: 0)
        var r = ByteReader(header, context: path, position: 100)
        var position = Int(try r.be(UInt32.self))
        while position + 8 <= header.count {
            var e = ByteReader(header, context: path, position: position)
            let found: UInt32 = try e.be()
            let length: UInt32 = try e.be()
            if found == 0 { return UInt64(position) }
            position += 8 + (Int(length) + 7) / 8 * 8
        }
        throw QemuToolError(message: "no end of the header extensions in \(path)")
    }

    /// The file offset of the data of header extension `type`.
    static func findExtension(_ path: String, type: UInt32) throws -> UInt64 {
        let header = try File.open(path, .readOnly).readBytes(count: 4096, at: 0)
        var r = ByteReader(header, context: path, position: 100)
        var position = Int(try r.be(UInt32.self))
        while position + 8 <= header.count {
            var e = ByteReader(header, context: path, position: position)
            let found: UInt32 = try e.be()
            let length: UInt32 = try e.be()
            if found == type { return UInt64(position + 8) }
            if found == 0 { break }
            position += 8 + (Int(length) + 7) / 8 * 8
        }
        throw QemuToolError(message: "no header extension 0x\(String(type, radix: 16)) in \(path)")
    }
}
