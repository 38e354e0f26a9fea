import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Cairn's reader of qcow2 persistent dirty bitmaps, judged against QEMU's own reading of the same
/// bitmap (`qemu-nbd -B NAME` exporting it as `qemu:dirty-bitmap:NAME`, mapped by `nbdinfo`), and
/// hostile bitmap directories, each refused with a clear `.badImage` error instead of a trap.
@Suite("qcow2 persistent bitmaps", .timeLimit(.minutes(2)))
struct QCOW2BitmapTests {
    struct Layout: Sendable, CustomStringConvertible {
        var clusterSize: String
        var granularity: String
        var disabled = false
        var description: String { "cluster \(clusterSize), granularity \(granularity)\(disabled ? ", disabled" : "")" }
    }

    static let layouts: [Layout] = [
        Layout(clusterSize: "64K", granularity: "64K"),
        Layout(clusterSize: "64K", granularity: "4K"),
        Layout(clusterSize: "64K", granularity: "2M"),
        // 512-byte clusters and granularity: one bitmap data cluster covers only 2 MiB, so the
        // bitmap spans several data clusters and zero-table entries.
        Layout(clusterSize: "512", granularity: "512"),
        Layout(clusterSize: "2M", granularity: "64K"),
        Layout(clusterSize: "64K", granularity: "64K", disabled: true),
    ]

    /// An image with data, a bitmap added after it, and writes QEMU records in the bitmap.
    static func makeImage(_ layout: Layout, in dir: TemporaryDirectory) throws -> String {
        let image = dir.file("d.qcow2")
        try QemuTools.check(
            "qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=\(layout.clusterSize)", image, "40M"])
        try QemuTools.check("qemu-io", ["-c", "write -P 0x11 0 8M", image])
        try QemuTools.check(
            "qemu-img",
            ["bitmap", "--add", "-g", layout.granularity] + (layout.disabled ? ["--disable"] : []) + [image, "b0"])
        try QemuTools.check(
            "qemu-io",
            [
                "-c", "write -P 0x22 1M 64k", "-c", "write 5M 4k", "-c", "write -P 0x33 17M 1M", "-c", "write 30M 512",
                "-c", "write -z 36M 2M", image,
            ])
        return image
    }

    /// Dirty ranges as (offset, length), adjacent ones merged.
    static func merged(_ ranges: [(UInt64, UInt64)]) -> [[UInt64]] {
        var out: [[UInt64]] = []
        for (offset, length) in ranges where length > 0 {
            if let last = out.last, last[0] + last[1] == offset {
                out[out.count - 1][1] += length
            } else {
                out.append([offset, length])
            }
        }
        return out
    }

    static func cairnDirtyRanges(_ map: any ChangedBlockMap, size: UInt64) throws -> [[UInt64]] {
        var ranges: [(UInt64, UInt64)] = []
        var offset: UInt64 = 0
        while offset < size {
            let extent = try map.changes(at: offset, maxLength: size - offset)
            #expect(extent.length > 0 && extent.length <= size - offset)
            if extent.isDirty { ranges.append((offset, extent.length)) }
            offset += extent.length
        }
        return merged(ranges)
    }

    /// QEMU's view: qemu-nbd exports the bitmap, nbdinfo maps it (nbdinfo starts and stops qemu-nbd).
    static func qemuDirtyRanges(_ image: String) throws -> [[UInt64]] {
        let text = try QemuTools.check(
            "nbdinfo",
            [
                "--map=qemu:dirty-bitmap:b0", "--json", "--", "[", "qemu-nbd", "-r", "-f", "qcow2", "-B", "b0", image,
                "]",
            ])
        let rows = Fixture.jsonArray(text)
        #expect(!rows.isEmpty, "nbdinfo printed \(text)")
        return merged(
            rows.compactMap { row in
                guard (row["type"] as? Int) == 1, let offset = row["offset"] as? UInt64,
                    let length = row["length"] as? UInt64
                else { return nil }
                return (offset, length)
            })
    }

    @Test(arguments: layouts)
    func dirtyRangesMatchQemu(_ layout: Layout) throws {
        let dir = TemporaryDirectory("cairn-bitmap")
        let image = try Self.makeImage(layout, in: dir)
        let opened = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
        let directory = try #require(try opened.bitmapDirectory())
        #expect(directory.isConsistent)
        let entry = try #require(directory.entry(named: "b0"))
        #expect(entry.isEnabled == !layout.disabled)
        #expect(!entry.isInUse)
        let bitmap = try opened.dirtyBitmap(named: "b0")
        let ours = try Self.cairnDirtyRanges(bitmap, size: opened.virtualSize)
        let theirs = try Self.qemuDirtyRanges(image)
        #expect(ours == theirs)
        if layout.disabled {
            #expect(ours.isEmpty, "a disabled bitmap records nothing")
        } else {
            #expect(!ours.isEmpty)
            // Every write lies in a dirty range.
            for (offset, length) in [(1 << 20, 65536), (17 << 20, 1 << 20), (30 << 20, 512)] as [(UInt64, UInt64)] {
                #expect(ours.contains { $0[0] <= offset && offset + length <= $0[0] + $0[1] })
            }
        }
    }

    @Test func imageWithoutBitmapsSaysSo() throws {
        let dir = TemporaryDirectory("cairn-bitmap")
        let image = dir.file("plain.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"])
        let opened = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
        #expect(try opened.bitmapDirectory() == nil)
        let error = try #require(throws: CairnError.self) { try opened.dirtyBitmap(named: "b0") }
        #expect(error.message.contains("no persistent bitmaps"))
        try QemuTools.check("qemu-img", ["bitmap", "--add", image, "other"])
        let reopened = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
        let missing = try #require(throws: CairnError.self) { try reopened.dirtyBitmap(named: "b0") }
        #expect(missing.message.contains("\"other\""), "names the bitmaps there are: \(missing.message)")
    }

    // MARK: Hostile bitmap directories

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var expected: String
        var patch: @Sendable (_ image: String, _ extensionData: UInt64, _ directory: UInt64) throws -> Void
    }

    static let hostile: [Case] = [
        Case(description: "nb_bitmaps 0", expected: "counts 0 bitmaps") { image, ext, _ in
            try QCOW2Patch.u32(image, at: ext, 0)
        },
        Case(description: "nb_bitmaps too large", expected: "counts") { image, ext, _ in
            try QCOW2Patch.u32(image, at: ext, 0xFFFF_FFFF)
        },
        Case(description: "nb_bitmaps more than the directory holds", expected: "bitmap") { image, ext, _ in
            try QCOW2Patch.u32(image, at: ext, 2)
        },
        Case(description: "reserved field", expected: "reserved field") { image, ext, _ in
            try QCOW2Patch.u32(image, at: ext + 4, 1)
        },
        Case(description: "directory size huge", expected: "bitmap directory") { image, ext, _ in
            try QCOW2Patch.u64(image, at: ext + 8, UInt64.max)
        },
        Case(description: "directory size too small", expected: "bitmap_directory_size") { image, ext, _ in
            try QCOW2Patch.u64(image, at: ext + 8, 8)
        },
        Case(description: "directory size cuts the entry", expected: "runs past the end of the directory") {
            image, ext, _ in
            try QCOW2Patch.u64(image, at: ext + 8, 24)
        },
        Case(description: "directory misaligned", expected: "bitmap directory at") { image, ext, directory in
            try QCOW2Patch.u64(image, at: ext + 16, directory + 8)
        },
        Case(description: "extra_data_size huge", expected: "extra_data_size 4294967295") { image, _, directory in
            try QCOW2Patch.u32(image, at: directory + 20, 0xFFFF_FFFF)
        },
        Case(description: "name_size 0", expected: "name_size 0") { image, _, directory in
            try QCOW2Patch.bytes(image, at: directory + 18, [0, 0])
        },
        Case(description: "name_size huge", expected: "name_size 65535") { image, _, directory in
            try QCOW2Patch.bytes(image, at: directory + 18, [0xFF, 0xFF])
        },
        Case(description: "table size 0", expected: "bitmap_table_size 0") { image, _, directory in
            try QCOW2Patch.u32(image, at: directory + 8, 0)
        },
        Case(description: "table size huge", expected: "bitmap_table_size 4294967295") { image, _, directory in
            try QCOW2Patch.u32(image, at: directory + 8, 0xFFFF_FFFF)
        },
        Case(description: "table size wrong for the disk", expected: "needs 1") { image, _, directory in
            try QCOW2Patch.u32(image, at: directory + 8, 2)
        },
        Case(description: "table beyond EOF", expected: "beyond the end") { image, _, directory in
            try QCOW2Patch.u64(image, at: directory, 0x10_0000_0000)
        },
        Case(description: "table misaligned", expected: "bitmap_table_offset") { image, _, directory in
            try QCOW2Patch.u64(image, at: directory, QCOW2Patch.readU64(image, at: directory) + 512)
        },
        Case(description: "granularity 0", expected: "granularity_bits 0") { image, _, directory in
            try QCOW2Patch.bytes(image, at: directory + 17, [0])
        },
        Case(description: "granularity 63", expected: "granularity_bits 63") { image, _, directory in
            try QCOW2Patch.bytes(image, at: directory + 17, [63])
        },
        Case(description: "type 2", expected: "type 2") { image, _, directory in
            try QCOW2Patch.bytes(image, at: directory + 16, [2])
        },
        Case(description: "reserved flag", expected: "reserved flag bits") { image, _, directory in
            try QCOW2Patch.u32(image, at: directory + 12, 0x2 | 0x8)
        },
        Case(description: "padding not zero", expected: "padding") { image, _, directory in
            // name "b0" ends at entry byte 26; bytes 26..<32 are padding.
            try QCOW2Patch.bytes(image, at: directory + 30, [0x55])
        },
        Case(description: "table entry reserved bits", expected: "reserved bits") { image, _, directory in
            let table = try QCOW2Patch.readU64(image, at: directory)
            try QCOW2Patch.u64(image, at: table, 1 << 60)
        },
        Case(description: "table entry data beyond EOF", expected: "beyond the end of the file") {
            image, _, directory in
            let table = try QCOW2Patch.readU64(image, at: directory)
            try QCOW2Patch.u64(image, at: table, 0x10_0000_0000)
        },
        Case(description: "table entry on the header cluster", expected: "header cluster") { image, _, directory in
            let table = try QCOW2Patch.readU64(image, at: directory)
            try QCOW2Patch.u64(image, at: table, 0x200)
        },
        Case(description: "tail bits set", expected: "past the end of the disk") { image, _, directory in
            let table = try QCOW2Patch.readU64(image, at: directory)
            let data = try QCOW2Patch.readU64(image, at: table) & 0x00FF_FFFF_FFFF_FE00
            // 8 MiB at 64 KiB: 128 bits = 16 bytes; byte 20 lies past the end.
            try QCOW2Patch.bytes(image, at: data + 20, [0x01])
        },
    ]

    @Test(arguments: hostile)
    func hostileDirectoryIsRefused(_ hostile: Case) throws {
        let dir = TemporaryDirectory("cairn-bitmap")
        let image = dir.file("h.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"])
        try QemuTools.check("qemu-img", ["bitmap", "--add", image, "b0"])
        try QemuTools.check("qemu-io", ["-c", "write -P 0x44 1M 64k", image])
        let ext = try QCOW2Patch.findExtension(image, type: 0x2385_2875)
        let directory = try QCOW2Patch.readU64(image, at: ext + 16)
        try hostile.patch(image, ext, directory)
        let error = try #require(throws: CairnError.self) {
            let opened = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
            let bitmap = try opened.dirtyBitmap(named: "b0")
            _ = try Self.cairnDirtyRanges(bitmap, size: opened.virtualSize)
        }
        #expect(error.code == .badImage)
        #expect(error.message.contains(hostile.expected), "message: \(error.message)")
        #expect(!error.message.contains("\n"))
    }

    @Test func allOnesTableEntryIsDirty() throws {
        let dir = TemporaryDirectory("cairn-bitmap")
        let image = dir.file("ones.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"])
        try QemuTools.check("qemu-img", ["bitmap", "--add", image, "b0"])
        let ext = try QCOW2Patch.findExtension(image, type: 0x2385_2875)
        let table = try QCOW2Patch.readU64(image, at: QCOW2Patch.readU64(image, at: ext + 16))
        #expect(try QCOW2Patch.readU64(image, at: table) == 0, "an empty bitmap's table entry is 0")
        let opened = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
        #expect(try Self.cairnDirtyRanges(opened.dirtyBitmap(named: "b0"), size: 8 << 20).isEmpty)
        try QCOW2Patch.u64(image, at: table, 1)
        let patched = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
        #expect(try Self.cairnDirtyRanges(patched.dirtyBitmap(named: "b0"), size: 8 << 20) == [[0, 8 << 20]])
    }

    @Test func inUseAndStaleBitmapsAreRefused() throws {
        let dir = TemporaryDirectory("cairn-bitmap")
        let image = dir.file("crash.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"])
        try QemuTools.check("qemu-img", ["bitmap", "--add", image, "b0"])
        let stale = dir.file("stale.qcow2")
        try FileManager.default.copyItem(atPath: image, toPath: stale)
        _ = try QemuTools.run("qemu-io", ["-c", "write 0 64k", "-c", "abort", image])
        let crashed = try #require(try DiskImageOpener.open(image) as? QCOW2Image)
        #expect(try crashed.bitmapDirectory()?.entry(named: "b0")?.isInUse == true)
        let inUse = try #require(throws: CairnError.self) { try crashed.dirtyBitmap(named: "b0") }
        #expect(inUse.message.contains("in use"))

        try Fixture.flip(stale, at: 95, mask: 0x01)  // autoclear bit 0
        let opened = try #require(try DiskImageOpener.open(stale) as? QCOW2Image)
        #expect(try opened.bitmapDirectory()?.isConsistent == false)
        let error = try #require(throws: CairnError.self) { try opened.dirtyBitmap(named: "b0") }
        #expect(error.message.contains("autoclear"))
    }
}
