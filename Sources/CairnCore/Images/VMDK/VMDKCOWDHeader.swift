/// The 2048-byte little-endian header of a vmfsSparse extent ("COWD"), checked field by field.
///
/// vmfsSparse is the delta (`-delta.vmdk`) of an ESXi snapshot on VMFS 5 for disks under 2 TB,
/// named by a `createType="vmfsSparse"` descriptor's VMFSSPARSE extent. Offsets and sizes are u32
/// 512-byte sectors; a grain table holds 4096 u32 grain sectors. The parent named inside the
/// header, its geometry, generations, name and description are not needed to read the delta (the
/// descriptor's `parentFileNameHint` names the parent, as QEMU reads it). Layout: docs/FORMAT.md,
/// "VMDK sources", and `/work/shared/research/encryption-and-vmdk.md` B.5.
struct VMDKCOWDHeader: Equatable {
    static let magic: [UInt8] = Array("COWD".utf8)
    static let size = 2048
    /// Sectors the header occupies, before which no table or grain may start.
    static let sectors = UInt64(size / 512)
    static let entriesPerTable: UInt64 = 4096
    /// Grains larger than this (16 MiB) are refused; ESXi writes 1 sector.
    static let maxGrainSectors: UInt64 = 1 << 15
    /// A directory of more entries is refused: 2^32 sectors of 1-sector grains need 2^20 (4 MiB).
    static let maxDirectoryEntries: UInt64 = 1 << 20

    static let flagRoot: UInt32 = 1 << 0
    static let flagCheckCapable: UInt32 = 1 << 1
    /// Set by ESXi while the delta's metadata may be half-written.
    static let flagInconsistent: UInt32 = 1 << 2

    var flags: UInt32
    /// Sectors the extent holds (numSectors).
    var capacity: UInt64
    var grainSectors: UInt64
    /// Sector of the grain directory (rootOffset).
    var directoryOffset: UInt64
    /// Entries of the grain directory (numRootEntries), at least enough to cover the capacity.
    var directoryEntries: UInt64

    var grainBytes: UInt64 { grainSectors * 512 }
    /// Sectors one grain table covers.
    var tableSpan: UInt64 { grainSectors * Self.entriesPerTable }

    /// Parses and checks the header at the start of `file`.
    static func parse(_ file: File, fileSize: UInt64) throws(CairnError) -> VMDKCOWDHeader {
        let path = file.path
        func bad(_ message: String) -> CairnError {
            CairnError(.badImage, "\(path): vmdk vmfsSparse (COWD) header \(message)")
        }
        guard fileSize >= UInt64(size) else {
            throw bad("is truncated: the file is \(fileSize) bytes, the header alone \(size)")
        }
        // The fields read are the first 32 of the 2048 bytes, which are all there.
        var reader = ByteReader(try file.readBytes(count: 32, at: 0), context: "\(path): vmdk COWD header")
        guard try reader.bytes(4) == Self.magic else { throw bad("magic at offset 0 is not COWD") }
        let version: UInt32 = try reader.le()
        let flags: UInt32 = try reader.le()
        let capacity = UInt64(try reader.le(UInt32.self))
        let grainSectors = UInt64(try reader.le(UInt32.self))
        let directoryOffset = UInt64(try reader.le(UInt32.self))
        let directoryEntries = UInt64(try reader.le(UInt32.self))
        // freeSector (offset 28) is where ESXi would allocate next; the file's length is the truth.

        guard version == 1 else { throw bad("version at offset 4 is \(version): only 1 is known") }
        let known = flagRoot | flagCheckCapable | flagInconsistent
        guard flags & ~known == 0 else {
            throw bad(
                "flags at offset 8 are 0x\(String(flags, radix: 16)): bits 0x\(String(flags & ~known, radix: 16)) are unknown"
            )
        }
        guard flags & flagInconsistent == 0 else {
            throw bad(
                "flags at offset 8 mark the delta inconsistent (0x4): ESXi had it open or did not close it cleanly; back it up with the VM powered off or after the snapshot is closed"
            )
        }
        guard capacity > 0 else { throw bad("numSectors at offset 12 is 0") }
        guard grainSectors >= 1, grainSectors <= maxGrainSectors, grainSectors & (grainSectors - 1) == 0 else {
            throw bad(
                "granularity at offset 16 is \(grainSectors) sectors: it must be a power of two from 1 to \(maxGrainSectors)"
            )
        }
        let header = VMDKCOWDHeader(
            flags: flags, capacity: capacity, grainSectors: grainSectors, directoryOffset: directoryOffset,
            directoryEntries: directoryEntries)
        let needed = (capacity + header.tableSpan - 1) / header.tableSpan
        guard directoryEntries >= needed, directoryEntries <= maxDirectoryEntries else {
            throw bad(
                "numRootEntries at offset 24 is \(directoryEntries): \(needed) are needed to cover numSectors \(capacity), and at most \(maxDirectoryEntries) are read"
            )
        }
        // directoryOffset < 2^32 and the directory < 4 MiB, so the sum cannot overflow.
        guard directoryOffset >= sectors, directoryOffset * 512 + directoryEntries * 4 <= fileSize else {
            throw bad(
                "rootOffset at offset 20 is sector \(directoryOffset) (\(directoryEntries) entries): the grain directory must lie after the header and inside the file (\(fileSize) bytes)"
            )
        }
        return header
    }
}
