import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Images that QEMU refuses and an earlier Cairn read as something (issue 18, defect 8), made at
/// run time by patching a copy of a fixture. Each must be refused with one `.badImage` error naming
/// the field, and QEMU itself must refuse it too: `qemu-img convert` fails on it, or, where
/// QEMU only finds the damage when it checks the whole image, `qemu-img check` reports it.
@Suite("qcow2 reader is as strict as QEMU", .timeLimit(.minutes(1)))
struct QCOW2StrictAsQemuTests {
    enum Oracle: Sendable {
        /// `qemu-img convert -O raw` fails.
        case convert
        /// `qemu-img check` reports errors (qemu-img convert of the active layer does not look there).
        case check
    }

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var fixtures: [String]
        var expected: String
        var oracle: Oracle = .convert
        var patch: @Sendable (_ image: String) throws -> Void
    }

    /// L2 entry `index` of the first L2 table.
    static func l2Entry(_ image: String, _ index: UInt64) throws -> UInt64 {
        try QCOW2Patch.l2Offset(image) + index * 8
    }

    static let cases: [Case] = [
        Case(
            description: "zstd image with cluster_bits 14 changed to 13", fixtures: ["zstd.qcow2"],
            expected: "frame holds more than the 8192 bytes"
        ) { image in
            // Each 16 KiB cluster's zstd frame now inflates past the 8 KiB cluster it is read into.
            try QCOW2Patch.u32(image, at: 20, 13)
        },
        Case(
            description: "zstd compressed cluster offset moved by one byte", fixtures: ["zstd.qcow2"],
            expected: "does not decompress (zstd)"
        ) { image in
            let entry = try l2Entry(image, 12)  // guest 192 KiB, compressed
            try QCOW2Patch.u64(image, at: entry, QCOW2Patch.readU64(image, at: entry) + 1)
        },
        Case(
            description: "deflate compressed cluster offset moved by one byte", fixtures: ["deflate.qcow2"],
            expected: "does not decompress (deflate)"
        ) { image in
            let entry = try l2Entry(image, 2)  // guest 128 KiB, compressed
            try QCOW2Patch.u64(image, at: entry, QCOW2Patch.readU64(image, at: entry) - 1)
        },
        Case(
            description: "external data file cluster not at its guest offset",
            fixtures: ["extdata.qcow2", "extdata.data"], expected: "not at the guest offset"
        ) { image in
            // Guest cluster 1 (4 KiB clusters) mapped to data file offset 0x2000 instead of 0x1000.
            try QCOW2Patch.u64(image, at: l2Entry(image, 1), 1 << 63 | 0x2000)
        },
        Case(
            description: "preallocated zero cluster at an unaligned host offset", fixtures: ["c64k.qcow2"],
            expected: "data cluster offset 0x50200 for guest offset 0x0"
        ) { image in
            try QCOW2Patch.u64(image, at: l2Entry(image, 0), 1 << 63 | 0x50200 | 1)
        },
        Case(
            description: "extended L2 entry with nothing allocated at an unaligned host offset",
            fixtures: ["extl2-solo.qcow2"], expected: "data cluster offset 0x200 for guest offset 0x8000"
        ) { image in
            // 16-byte entries: entry 1 (guest 32 KiB) is unallocated; give it a host offset of 0x200.
            try QCOW2Patch.u64(image, at: QCOW2Patch.l2Offset(image) + 16, 0x200)
        },
        Case(
            description: "external data file zero cluster not at its guest offset",
            fixtures: ["extdata.qcow2", "extdata.data"], expected: "not at the guest offset"
        ) { image in
            try QCOW2Patch.u64(image, at: l2Entry(image, 1), 1 << 63 | 0x2000 | 1)
        },
        Case(
            description: "zero flag (reserved in v2) on an allocated cluster of a v2 image", fixtures: ["v2.qcow2"],
            expected: "zero flag (bit 0) set, which a version 2 image cannot have"
        ) { image in
            let entry = try l2Entry(image, 0)
            try QCOW2Patch.u64(image, at: entry, QCOW2Patch.readU64(image, at: entry) | 1)
        },
        Case(
            description: "zero flag alone in a v2 image", fixtures: ["v2.qcow2"],
            expected: "zero flag (bit 0) set, which a version 2 image cannot have"
        ) { image in
            try QCOW2Patch.u64(image, at: l2Entry(image, 0), 1)
        },
        Case(
            description: "size grown 100 bytes past what the L1 table covers", fixtures: ["c64k.qcow2"],
            expected: "l1_size is 1 entries, fewer than the 2"
        ) { image in
            // One L1 entry covers 512 MiB with 64 KiB clusters; the odd 100 bytes need a second.
            try QCOW2Patch.u64(image, at: 24, (512 << 20) + 100)
        },
        Case(
            description: "snapshot table offset unaligned with no snapshots", fixtures: ["c64k.qcow2"],
            expected: "snapshots_offset at offset 64 is 0x12345"
        ) { image in
            try QCOW2Patch.u64(image, at: 64, 0x12345)
        },
        Case(
            description: "snapshot table offset past any file offset", fixtures: ["c64k.qcow2"],
            expected: "snapshots_offset at offset 64 is 0x8000000000000000"
        ) { image in
            try QCOW2Patch.u64(image, at: 64, 0x8000_0000_0000_0000)
        },
        Case(
            description: "empty L1 table at an unaligned offset", fixtures: ["c64k.qcow2"],
            expected: "l1_table_offset at offset 40 is 0x30001"
        ) { image in
            try QCOW2Patch.u64(image, at: 24, 0)
            try QCOW2Patch.u32(image, at: 36, 0)
            try QCOW2Patch.u64(image, at: 40, 0x30001)
        },
        Case(description: "no refcount table", fixtures: ["c64k.qcow2"], expected: "refcount_table_clusters") {
            image in
            try QCOW2Patch.u32(image, at: 56, 0)
        },
        Case(
            description: "header extensions running into the backing file name", fixtures: ["c64k.qcow2"],
            expected: "runs into the backing file name"
        ) { image in
            // backing_file_offset 0x100 (length 0): the feature name table runs past it.
            try QCOW2Patch.u64(image, at: 8, 0x100)
        },
        Case(
            description: "encryption header extension without encryption", fixtures: ["c64k.qcow2"],
            expected: "full disk encryption header extension"
        ) { image in
            let end = try QCOW2Patch.extensionsEnd(image)
            var w = ByteWriter()
            w.be(UInt32(0x0537_BE77))
            w.be(UInt32(16))
            w.be(UInt64(0x10000))
            w.be(UInt64(0x10000))
            w.be(UInt64(0))  // end marker
            try QCOW2Patch.bytes(image, at: end, w.bytes)
        },
        Case(
            description: "refcount block offset unaligned", fixtures: ["c64k.qcow2"],
            expected: "refcount table entry 0 (at 0x10000) is 0x20200", oracle: .check
        ) { image in
            let table = try QCOW2Patch.readU64(image, at: 48)
            try QCOW2Patch.u64(image, at: table, QCOW2Patch.readU64(image, at: table) + 0x200)
        },
        Case(
            description: "refcount block beyond the end of the file", fixtures: ["c64k.qcow2"],
            expected: "refcount table entry 0 (at 0x10000) places a refcount block at 0x1000000", oracle: .check
        ) { image in
            try QCOW2Patch.u64(image, at: QCOW2Patch.readU64(image, at: 48), 0x100_0000)
        },
        Case(
            description: "snapshot L1 table unaligned", fixtures: ["snap.qcow2"], expected: "snapshot table entry 0",
            oracle: .check
        ) { image in
            let entry = try QCOW2Patch.readU64(image, at: 64)
            try QCOW2Patch.u64(image, at: entry, QCOW2Patch.readU64(image, at: entry) + 8)
        },
        Case(
            description: "snapshot L1 table beyond the end of the file", fixtures: ["snap.qcow2"],
            expected: "snapshot table entry 0", oracle: .check
        ) { image in
            try QCOW2Patch.u64(image, at: QCOW2Patch.readU64(image, at: 64), 0x1000_0000)
        },
        Case(
            description: "snapshot L1 table too large", fixtures: ["snap.qcow2"],
            expected: "larger than the 4194304 entries allowed", oracle: .check
        ) { image in
            try QCOW2Patch.u32(image, at: QCOW2Patch.readU64(image, at: 64) + 8, 0x1000_0000)
        },
        Case(
            description: "v3 snapshot entry without the disk size", fixtures: ["snap.qcow2"],
            expected: "a version 3 image needs at least 16", oracle: .check
        ) { image in
            try QCOW2Patch.u32(image, at: QCOW2Patch.readU64(image, at: 64) + 36, 0)
        },
    ]

    @Test(arguments: cases)
    func refusedAsQemuRefuses(_ hostile: Case) throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        for fixture in hostile.fixtures {
            _ = try temporary.copy(QCOW2Fixtures.path(fixture), as: fixture)
        }
        let image = temporary.path + "/" + hostile.fixtures[0]
        try hostile.patch(image)

        let error = try #require(throws: CairnError.self) {
            let opened = try DiskImageOpener.open(image)
            _ = try QCOW2Fixtures.guestDigest(opened)
            _ = try QCOW2Fixtures.checkZeroExtents(opened)
        }
        #expect(error.code == .badImage)
        #expect(error.message.contains(hostile.expected), "message: \(error.message)")
        #expect(!error.message.contains("\n"))

        let oracle: QemuTools.Output
        switch hostile.oracle {
        case .convert:
            oracle = try QemuTools.run(
                "qemu-img", ["convert", "-O", "raw", image, temporary.path + "/guest.raw"], in: temporary.path)
        case .check:
            oracle = try QemuTools.run("qemu-img", ["check", image], in: temporary.path)
        }
        #expect(oracle.status != 0, "qemu-img accepted it: \(oracle.standardOutput)")
    }
}
