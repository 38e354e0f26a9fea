/// The 512-byte little-endian header of a hosted sparse extent ("KDMV"), checked field by field.
///
/// The same layout is the footer of a streamOptimized stream whose header says the grain
/// directory is at the end. Offsets and sizes are in 512-byte sectors. Layout: docs/FORMAT.md,
/// "VMDK sources", and `/work/shared/research/encryption-and-vmdk.md` B.2.
struct VMDKSparseHeader: Equatable {
    static let magic: [UInt8] = Array("KDMV".utf8)
    static let size = 512
    /// gdOffset meaning "the grain directory is found through the footer" (streamOptimized).
    static let gdAtEnd = UInt64.max
    /// Grain tables always hold 512 entries in hosted sparse extents.
    static let entriesPerTable: UInt64 = 512
    /// The largest grain read: 16 MiB (VMware and QEMU write 64 KiB), so two grains fit in memory.
    static let maxGrainSectors: UInt64 = 1 << 15
    /// A sparse extent's largest capacity: 2^32 sectors (2 TiB), as QEMU's `VMDK_EXTENT_MAX_SECTORS`;
    /// 32-bit grain sectors cannot address more anyway.
    static let maxCapacity: UInt64 = 1 << 32
    /// Grain directories above this many entries are refused (2 TiB of 4 KiB grains; 4 MiB of directory).
    static let maxDirectoryEntries: UInt64 = 1 << 20

    static let flagNewlineTest: UInt32 = 1 << 0
    static let flagRedundantDirectory: UInt32 = 1 << 1
    static let flagZeroedGrain: UInt32 = 1 << 2
    static let flagCompressed: UInt32 = 1 << 16
    static let flagMarkers: UInt32 = 1 << 17
    static let knownFlags: UInt32 =
        flagNewlineTest | flagRedundantDirectory | flagZeroedGrain | flagCompressed | flagMarkers

    var version: UInt32
    var flags: UInt32
    var capacity: UInt64
    var grainSectors: UInt64
    var descriptorOffset: UInt64
    var descriptorSectors: UInt64
    var redundantDirectoryOffset: UInt64
    var directoryOffset: UInt64
    var overhead: UInt64
    var compressAlgorithm: UInt16

    var isCompressed: Bool { flags & Self.flagCompressed != 0 }
    var hasMarkers: Bool { flags & Self.flagMarkers != 0 }
    var hasZeroedGrains: Bool { flags & Self.flagZeroedGrain != 0 }
    var grainBytes: UInt64 { grainSectors * 512 }
    /// Sectors one grain table covers.
    var tableSpan: UInt64 { grainSectors * Self.entriesPerTable }
    /// Grain directory entries that cover `capacity`.
    var directoryEntries: UInt64 { capacity / tableSpan + (capacity % tableSpan == 0 ? 0 : 1) }

    /// Parses and checks the header at `offset` of `file` (`what` is "header" or "footer").
    static func parse(
        _ file: File, at offset: UInt64, fileSize: UInt64, what: String = "header"
    ) throws(CairnError) -> VMDKSparseHeader {
        let path = file.path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): vmdk sparse \(what) \(message)") }
        guard offset <= fileSize, fileSize - offset >= UInt64(size) else {
            throw bad("at offset \(offset) is truncated: the file is \(fileSize) bytes")
        }
        // The 512 bytes are all there, so the reader below cannot run short.
        var reader = ByteReader(try file.readBytes(count: size, at: offset), context: "\(path): vmdk sparse \(what)")
        guard try reader.bytes(4) == Self.magic else { throw bad("magic at offset 0 is not KDMV") }
        let version: UInt32 = try reader.le()
        let flags: UInt32 = try reader.le()
        let capacity: UInt64 = try reader.le()
        let grainSectors: UInt64 = try reader.le()
        let descriptorOffset: UInt64 = try reader.le()
        let descriptorSectors: UInt64 = try reader.le()
        let tableEntries: UInt32 = try reader.le()
        let redundantDirectoryOffset: UInt64 = try reader.le()
        let directoryOffset: UInt64 = try reader.le()
        let overhead: UInt64 = try reader.le()
        try reader.skip(1)  // uncleanShutdown: set while VMware has the disk open; reading is still safe
        let newline = try reader.bytes(4)
        let compressAlgorithm: UInt16 = try reader.le()
        guard UInt64(tableEntries) == entriesPerTable else {
            throw bad("numGTEsPerGT at offset 44 is \(tableEntries): hosted sparse extents have 512")
        }
        if flags & flagNewlineTest != 0 && newline != [0x0A, 0x20, 0x0D, 0x0A] {
            throw bad("newline test bytes at offset 73 are mangled: the file was copied in text mode")
        }
        let header = VMDKSparseHeader(
            version: version, flags: flags, capacity: capacity, grainSectors: grainSectors,
            descriptorOffset: descriptorOffset, descriptorSectors: descriptorSectors,
            redundantDirectoryOffset: redundantDirectoryOffset, directoryOffset: directoryOffset, overhead: overhead,
            compressAlgorithm: compressAlgorithm)
        try header.check(bad, fileSize: fileSize)
        return header
    }

    private func check(_ bad: (String) -> CairnError, fileSize: UInt64) throws(CairnError) {
        guard (1...3).contains(version) else {
            throw bad("version at offset 4 is \(version): only 1, 2 and 3 are known")
        }
        guard flags & ~Self.knownFlags == 0 else {
            throw bad(
                "flags at offset 8 are 0x\(String(flags, radix: 16)): bits 0x\(String(flags & ~Self.knownFlags, radix: 16)) are unknown"
            )
        }
        if hasZeroedGrains && version < 2 {
            throw bad("flags at offset 8 ask for zeroed grains, which version 1 does not have")
        }
        guard grainSectors >= 8, grainSectors <= Self.maxGrainSectors, grainSectors & (grainSectors - 1) == 0 else {
            throw bad(
                "grainSize at offset 20 is \(grainSectors) sectors: it must be a power of two from 8 to \(Self.maxGrainSectors)"
            )
        }
        switch compressAlgorithm {
        case 0:
            guard !isCompressed else {
                throw bad("flags at offset 8 say compressed but compressAlgorithm at offset 77 is 0")
            }
        case 1:
            guard isCompressed else {
                throw bad("compressAlgorithm at offset 77 is deflate but the compressed flag is clear")
            }
        default:
            throw bad("compressAlgorithm at offset 77 is \(compressAlgorithm): only 0 (none) and 1 (deflate) are known")
        }
        if hasMarkers && !isCompressed { throw bad("flags at offset 8 ask for markers without compression") }
        // Capacity: at most 2^40 sectors, so the sums and products below cannot overflow.
        guard capacity <= 1 << 40 else {
            throw bad("capacity at offset 12 is \(capacity) sectors: at most 2^40 are read")
        }
        guard directoryEntries <= Self.maxDirectoryEntries else {
            throw bad(
                "capacity at offset 12 needs \(directoryEntries) grain directory entries: at most \(Self.maxDirectoryEntries) are read"
            )
        }
        let fileSectors = fileSize / 512
        guard overhead <= fileSectors else {
            throw bad(
                "overHead at offset 64 is \(overhead) sectors, beyond the end of the file (\(fileSectors) sectors): the file is truncated"
            )
        }
        if descriptorOffset != 0 || descriptorSectors != 0 {
            guard descriptorSectors <= UInt64(VMDKDescriptor.maxBytes / 512), descriptorOffset >= 1,
                descriptorOffset <= fileSectors, descriptorSectors <= fileSectors - descriptorOffset
            else {
                throw bad(
                    "descriptor at sector \(descriptorOffset) (\(descriptorSectors) sectors, offsets 28 and 36) lies beyond the file or exceeds 1 MiB"
                )
            }
        }
        if directoryOffset != Self.gdAtEnd {
            guard directoryOffset >= 1, directoryOffset <= fileSectors else {
                throw bad(
                    "gdOffset at offset 56 is sector \(directoryOffset), beyond the end of the file (\(fileSectors) sectors)"
                )
            }
        } else if !hasMarkers {
            throw bad(
                "gdOffset at offset 56 says the grain directory is at the end, which only streamOptimized extents may")
        }
        if flags & Self.flagRedundantDirectory != 0 && directoryOffset != Self.gdAtEnd {
            guard redundantDirectoryOffset >= 1, redundantDirectoryOffset <= fileSectors else {
                throw bad(
                    "rgdOffset at offset 48 is sector \(redundantDirectoryOffset), beyond the end of the file (\(fileSectors) sectors)"
                )
            }
        }
    }
}
