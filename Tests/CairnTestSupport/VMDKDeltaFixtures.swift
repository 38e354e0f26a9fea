import CairnCore
import Foundation

/// ESXi's snapshot delta formats, as the vmfsSparse and seSparse descriptors name them.
public enum VMDKDeltaFormat: String, Sendable, CaseIterable, CustomStringConvertible {
    /// COWD: VMFS 5 deltas of disks under 2 TB (`NAME-delta.vmdk`), 512-byte grains.
    case vmfsSparse
    /// SEsparse: every VMFS 6 delta (`NAME-sesparse.vmdk`), 4 KiB grains.
    case seSparse

    public var description: String { rawValue }

    /// The extent file a descriptor `NAME.vmdk` names.
    public func extentName(_ name: String) -> String {
        self == .vmfsSparse ? "\(name)-delta.vmdk" : "\(name)-sesparse.vmdk"
    }

    /// The grain size ESXi writes: one sector for COWD, 4 KiB for SEsparse.
    public var grainBytes: Int { self == .vmfsSparse ? 512 : 4096 }
}

/// What one grain of a hand-written delta holds.
public enum VMDKDeltaGrain: Sendable, Equatable {
    /// The grain's bytes (at most one grain; the rest of the grain is zeros).
    case data([UInt8])
    /// An SEsparse zero grain (type 2).
    case zero
    /// An SEsparse grain the guest unmapped (type 1), which reads as zeros.
    case unmapped
}

/// ESXi snapshot deltas written by hand, since qemu-img reads vmfsSparse and SEsparse but cannot
/// create them: a descriptor `NAME.vmdk` in ESXi's form and its extent, laid out as
/// docs/FORMAT.md ("VMDK sources") describes. QEMU is the read oracle (`qemu-img convert`).
extension VMDKFixtures {
    /// Makes a 'vmfs' base disk as ESXi keeps it: descriptor `NAME.vmdk` (createType "vmfs", a
    /// VMFS extent without offset) over `NAME-flat.vmdk`, with qemu-io patterns (see `make`).
    public static func makeVMFSBase(_ name: String, size: UInt64, in directory: String) throws {
        try make("\(name).vmdk", subformat: "monolithicFlat", size: size, in: directory)
        try editDescriptor("\(directory)/\(name).vmdk") { text in
            text.replacingOccurrences(of: "createType=\"monolithicFlat\"", with: "createType=\"vmfs\"")
                .replacingOccurrences(of: " FLAT \"\(name)-flat.vmdk\" 0", with: " VMFS \"\(name)-flat.vmdk\"")
        }
    }

    /// The CID a descriptor (a text file or the one a sparse file embeds) states.
    public static func contentID(_ path: String) throws -> UInt32 {
        let file = try File.open(path, .readOnly)
        var bytes = try file.readBytes(count: 1 << 20, at: 0)
        if bytes.starts(with: Array("KDMV".utf8)) {
            bytes = try file.readBytes(count: Int(try readU64(path, at: 36) * 512), at: try readU64(path, at: 28) * 512)
        }
        let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("CID=") {
            if let cid = UInt32(line.dropFirst(4), radix: 16) { return cid }
        }
        throw QemuToolError(message: "\(path) has no CID line")
    }

    /// Writes delta `NAME.vmdk` of `sectors` sectors in `format` over `parent` (a descriptor in
    /// the same directory; its CID becomes parentCID), or without a parent. `grains` maps grain
    /// indexes to what they hold; other grains are unallocated (the parent's bytes). COWD grains
    /// are `cowdGrainSectors` sectors.
    ///
    /// The layout puts the readers to work: SEsparse tables get their region's slots in reverse
    /// order and grains sit 4099 slots apart (the file stays sparse), so a table's slot is not
    /// its directory index and grain indexes use both halves of an entry's split index field.
    public static func writeDelta(
        _ format: VMDKDeltaFormat, named name: String, sectors: UInt64, grains: [UInt64: VMDKDeltaGrain],
        parent: String? = nil, cowdGrainSectors: UInt64 = 1, in directory: String
    ) throws {
        let extent = format.extentName(name)
        let path = "\(directory)/\(extent)"
        switch format {
        case .vmfsSparse:
            try writeCOWD(path, sectors: sectors, grainSectors: cowdGrainSectors, grains: grains, parent: parent)
        case .seSparse:
            try writeSESparse(path, sectors: sectors, grains: grains)
        }
        let parentCID = try parent.map { try contentID("\(directory)/\($0)") }
        // A content id from the name (FNV-1a), so that runs are repeatable.
        let cid = name.utf8.reduce(UInt32(0x811C_9DC5)) { ($0 ^ UInt32($1)) &* 0x0100_0193 } & 0x7FFF_FFFF
        let descriptor = """
            # Disk DescriptorFile
            version=1
            encoding="UTF-8"
            CID=\(String(cid, radix: 16))
            parentCID=\(parentCID.map { String($0, radix: 16) } ?? "ffffffff")
            isNativeSnapshot="no"
            createType="\(format.rawValue)"
            \(parent.map { "parentFileNameHint=\"\($0)\"" } ?? "")

            # Extent description
            RW \(sectors) \(format == .vmfsSparse ? "VMFSSPARSE" : "SESPARSE") "\(extent)"

            # The Disk Data Base
            #DDB

            ddb.longContentID = "8a2c2f2e5b5f4d3a9b3e1c0d\(String(cid, radix: 16))"

            """
        try Data(descriptor.utf8).write(to: URL(fileURLWithPath: "\(directory)/\(name).vmdk"))
    }

    private static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    private static func grainBytes(_ grain: VMDKDeltaGrain, size: Int) -> [UInt8] {
        guard case .data(let bytes) = grain else { return [] }
        precondition(bytes.count <= size, "a grain holds at most \(size) bytes")
        return bytes + [UInt8](repeating: 0, count: size - bytes.count)
    }

    /// COWD: the 2048-byte header, the grain directory at sector 4, the tables (16 KiB each) in
    /// directory order, then the grains in index order.
    private static func writeCOWD(
        _ path: String, sectors: UInt64, grainSectors: UInt64, grains: [UInt64: VMDKDeltaGrain], parent: String?
    ) throws {
        let span = 4096 * grainSectors
        let entries = (sectors + span - 1) / span
        let directoryOffset: UInt64 = 4
        var next = directoryOffset + (entries * 4 + 511) / 512
        var directory = [UInt32](repeating: 0, count: Int(entries))
        var tables: [UInt64: [UInt32]] = [:]
        for grain in grains.keys.sorted() where tables[grain / 4096] == nil {
            precondition(grain * grainSectors < sectors, "grain \(grain) is beyond the disk")
            tables[grain / 4096] = [UInt32](repeating: 0, count: 4096)
            directory[Int(grain / 4096)] = UInt32(next)
            next += 32
        }
        let file = try File.open(path, .createOrTruncate)
        for (grain, content) in grains.sorted(by: { $0.key < $1.key }) {
            precondition(content != .zero && content != .unmapped, "COWD has no zero or unmapped grains")
            tables[grain / 4096]![Int(grain % 4096)] = UInt32(next)
            try file.write(grainBytes(content, size: Int(grainSectors) * 512), at: next * 512)
            next += grainSectors
        }
        for (index, table) in tables {
            try file.write(table.flatMap { le($0) }, at: UInt64(directory[Int(index)]) * 512)
        }
        try file.write(directory.flatMap { le($0) }, at: directoryOffset * 512)
        var header = Array("COWD".utf8) + le(UInt32(1)) + le(UInt32(3)) + le(UInt32(sectors))
        header += le(UInt32(grainSectors)) + le(UInt32(directoryOffset)) + le(UInt32(entries)) + le(UInt32(next))
        // A child names its parent at offset 32 (QEMU and Cairn read the descriptor's hint instead).
        header += Array((parent ?? "").utf8.prefix(1023))
        header += [UInt8](repeating: 0, count: 2048 - header.count)
        try file.write(header, at: 0)
        try file.truncate(to: max(next, directoryOffset + 1) * 512)
    }

    /// SEsparse: const header (sector 0), volatile header (1), journal header and journal (2, 3),
    /// the grain directory (4), the grain table region, free bitmap and back map, then the grain
    /// region.
    private static func writeSESparse(_ path: String, sectors: UInt64, grains: [UInt64: VMDKDeltaGrain]) throws {
        let span: UInt64 = 4096 * 8
        let entries = (sectors + span - 1) / span
        let directoryOffset: UInt64 = 4
        let directorySectors = max(1, (entries * 8 + 511) / 512)
        let tablesOffset = directoryOffset + directorySectors
        let tablesSectors = entries * 64
        let bitmapOffset = tablesOffset + tablesSectors
        let backMapOffset = bitmapOffset + 1
        let grainsOffset = backMapOffset + 1

        let used = Set(grains.keys.map { $0 / 4096 }).sorted(by: >)
        var tableSlot: [UInt64: UInt64] = [:]
        for (slot, table) in used.enumerated() { tableSlot[table] = UInt64(slot) }
        var tables: [UInt64: [UInt64]] = [:]
        for table in used { tables[table] = [UInt64](repeating: 0, count: 4096) }

        let file = try File.open(path, .createOrTruncate)
        var nextGrainSlot: UInt64 = 1
        var lastSlot: UInt64?
        for (grain, content) in grains.sorted(by: { $0.key < $1.key }) {
            precondition(grain * 8 < sectors, "grain \(grain) is beyond the disk")
            let entry: UInt64
            switch content {
            case .unmapped: entry = 0x1000_0000_0000_0000
            case .zero: entry = 0x2000_0000_0000_0000
            case .data:
                let slot = nextGrainSlot
                entry = 0x3000_0000_0000_0000 | (slot & 0xFFF) << 48 | slot >> 12
                try file.write(grainBytes(content, size: 4096), at: (grainsOffset + slot * 8) * 512)
                lastSlot = slot
                nextGrainSlot += 4099
            }
            tables[grain / 4096]![Int(grain % 4096)] = entry
        }
        for (table, content) in tables {
            try file.write(content.flatMap { le($0) }, at: (tablesOffset + tableSlot[table]! * 64) * 512)
        }
        var directory = [UInt64](repeating: 0, count: Int(entries))
        for (table, slot) in tableSlot { directory[Int(table)] = 0x1000_0000_0000_0000 | slot }
        try file.write(directory.flatMap { le($0) }, at: directoryOffset * 512)

        let grainsSectors = ((lastSlot ?? 0) + 1 + 4099) * 8
        let fields: [UInt64] = [
            0xCAFE_BABE, 0x0000_0002_0000_0001, sectors, 8, 64, 0, 0, 0, 0, 0,
            1, 1, 2, 1, 3, 1, directoryOffset, directorySectors, tablesOffset, tablesSectors,
            bitmapOffset, 1, backMapOffset, 1, grainsOffset, grainsSectors,
        ]
        var header = fields.flatMap { le($0) }
        header += [UInt8](repeating: 0, count: 512 - header.count)
        try file.write(header, at: 0)
        var volatile = le(UInt64(0xCAFE_CAFE)) + le(UInt64(used.count)) + le(UInt64(1)) + le(UInt64(0))
        volatile += [UInt8](repeating: 0, count: 512 - volatile.count)
        try file.write(volatile, at: 512)
        // The file ends after the last grain written, as ESXi grows it; the grain region is larger.
        try file.truncate(to: (grainsOffset + (lastSlot.map { $0 * 8 + 8 } ?? 0)) * 512)
    }
}
