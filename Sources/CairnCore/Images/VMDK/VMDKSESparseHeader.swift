/// The headers of an SEsparse extent: the 512-byte const header at sector 0 and the volatile
/// header it points to, little-endian u64 fields, checked field by field.
///
/// SEsparse is the delta (`-sesparse.vmdk`) of every ESXi snapshot on VMFS 6 (and of disks of
/// 2 TB and more on VMFS 5), named by a `createType="seSparse"` descriptor's SESPARSE extent.
/// VMware does not document it; the checks are QEMU's (which reads it strictly: magic, version,
/// 4 KiB grains, 4096-entry tables, no flags, zero reserved fields and padding, a clean journal),
/// and on top of them every region read lies inside the file and the regions do not overlap.
/// Offsets and sizes are in 512-byte sectors. Layout: docs/FORMAT.md, "VMDK sources", and
/// `/work/shared/research/encryption-and-vmdk.md` B.5.
struct VMDKSESparseHeader: Equatable {
    static let magic: UInt64 = 0xCAFE_BABE
    static let volatileMagic: UInt64 = 0xCAFE_CAFE
    static let version: UInt64 = 0x0000_0002_0000_0001
    static let size = 512
    static let grainSectors: UInt64 = 8
    /// Sectors of one grain table: 4096 u64 entries.
    static let tableSectors: UInt64 = 64
    static let entriesPerTable: UInt64 = 4096
    /// Capacities above 2^37 sectors (64 TiB, ESXi's limit is 62 TB) are refused, so the
    /// directory read is at most 4 Mi entries (32 MiB).
    static let maxCapacity: UInt64 = 1 << 37
    /// Offsets and sizes above 2^40 sectors are refused, so sums of them cannot overflow.
    static let maxSectors: UInt64 = 1 << 40

    /// One region of the file: `sectors` sectors from sector `offset`.
    struct Region: Equatable {
        var offset: UInt64
        var sectors: UInt64
        var end: UInt64 { offset + sectors }
    }

    var capacity: UInt64
    var volatileHeader: Region
    var directory: Region
    var tables: Region
    var grains: Region

    var grainBytes: UInt64 { Self.grainSectors * 512 }
    /// Sectors one grain table covers (16 MiB).
    var tableSpan: UInt64 { Self.grainSectors * Self.entriesPerTable }
    /// Grain directory entries that cover `capacity` (the directory may hold more).
    var directoryEntries: UInt64 { (capacity + tableSpan - 1) / tableSpan }
    /// Grain tables the grain table region holds.
    var tableCount: UInt64 { tables.sectors / Self.tableSectors }
    /// Grains the grain region holds.
    var grainCount: UInt64 { grains.sectors / Self.grainSectors }

    /// Parses and checks the const header at the start of `file` and the volatile header.
    static func parse(_ file: File, fileSize: UInt64) throws(CairnError) -> VMDKSESparseHeader {
        let path = file.path
        func bad(_ message: String) -> CairnError {
            CairnError(.badImage, "\(path): vmdk SEsparse const header \(message)")
        }
        guard fileSize >= UInt64(size) else {
            throw bad("is truncated: the file is \(fileSize) bytes, the header alone \(size)")
        }
        let bytes = try file.readBytes(count: size, at: 0)
        var reader = ByteReader(bytes, context: "\(path): vmdk SEsparse const header")
        var fields: [UInt64] = []
        for _ in 0..<26 { fields.append(try reader.le()) }
        func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        guard fields[0] == magic else { throw bad("magic at offset 0 is \(hex(fields[0])), not 0xcafebabe") }
        guard fields[1] == version else {
            throw bad("version at offset 8 is \(hex(fields[1])): only 0x200000001 is known")
        }
        let capacity = fields[2]
        guard capacity > 0, capacity <= maxCapacity else {
            throw bad("capacity at offset 16 is \(capacity) sectors: it must be 1 to 2^37")
        }
        guard fields[3] == grainSectors else {
            throw bad("grainSize at offset 24 is \(fields[3]) sectors: SEsparse grains are 8 (4 KiB)")
        }
        guard fields[4] == tableSectors else {
            throw bad("grainTableSize at offset 32 is \(fields[4]) sectors: SEsparse grain tables are 64")
        }
        guard fields[5] == 0 else { throw bad("flags at offset 40 are \(hex(fields[5])): none are known") }
        for index in 6...9 where fields[index] != 0 {
            throw bad("reserved field at offset \(index * 8) is \(hex(fields[index])), not 0")
        }
        guard bytes[208...].allSatisfy({ $0 == 0 }) else { throw bad("padding from offset 208 is not all zeros") }
        let names = [
            "volatileHeader", "journalHeader", "journal", "grainDirectory", "grainTables", "freeBitmap", "backMap",
            "grains",
        ]
        var regions: [Region] = []
        for (index, name) in names.enumerated() {
            let at = 10 + index * 2
            guard fields[at] <= maxSectors, fields[at + 1] <= maxSectors else {
                throw bad(
                    "\(name) region at offsets \(at * 8) and \(at * 8 + 8) (sector \(fields[at]), \(fields[at + 1]) sectors) is beyond any file"
                )
            }
            regions.append(Region(offset: fields[at], sectors: fields[at + 1]))
        }
        let header = VMDKSESparseHeader(
            capacity: capacity, volatileHeader: regions[0], directory: regions[3], tables: regions[4],
            grains: regions[7])

        // The regions read must be there, after the const header, apart from each other.
        let used: [(String, Int, Region)] = [
            ("volatileHeader", 80, header.volatileHeader), ("grainDirectory", 128, header.directory),
            ("grainTables", 144, header.tables), ("grains", 192, header.grains),
        ]
        for (index, (name, offset, region)) in used.enumerated() {
            guard region.offset >= 1, region.sectors >= 1 else {
                throw bad(
                    "\(name) region at offset \(offset) starts at sector \(region.offset) with \(region.sectors) sectors: it must start after the const header and hold at least one sector"
                )
            }
            for (otherName, _, other) in used[..<index] where region.offset < other.end && other.offset < region.end {
                throw bad(
                    "\(name) region at offset \(offset) (sectors \(region.offset)..<\(region.end)) overlaps the \(otherName) region (sectors \(other.offset)..<\(other.end))"
                )
            }
        }
        guard header.directory.sectors * 512 / 8 >= header.directoryEntries else {
            throw bad(
                "grainDirectory region at offset 128 has \(header.directory.sectors) sectors: \(header.directoryEntries) entries are needed to cover the capacity"
            )
        }
        guard header.directory.offset * 512 + header.directoryEntries * 8 <= fileSize else {
            throw bad(
                "grainDirectory at sector \(header.directory.offset) (\(header.directoryEntries) entries) lies beyond the end of the file (\(fileSize) bytes): the file is truncated"
            )
        }
        try checkVolatileHeader(file, fileSize: fileSize, at: header.volatileHeader.offset)
        return header
    }

    /// The volatile header: magic 0xcafecafe, freeGTNumber, nextTxnSeqNumber, replayJournal (must
    /// be 0: the journal is not replayed), and zero padding.
    private static func checkVolatileHeader(_ file: File, fileSize: UInt64, at sector: UInt64) throws(CairnError) {
        let path = file.path
        func bad(_ message: String) -> CairnError {
            CairnError(.badImage, "\(path): vmdk SEsparse volatile header at sector \(sector) \(message)")
        }
        guard sector * 512 + UInt64(size) <= fileSize else {
            throw bad("lies beyond the end of the file (\(fileSize) bytes): the file is truncated")
        }
        let bytes = try file.readBytes(count: size, at: sector * 512)
        var reader = ByteReader(bytes, context: "\(path): vmdk SEsparse volatile header")
        let magic: UInt64 = try reader.le()
        try reader.skip(16)  // freeGTNumber, nextTxnSeqNumber: bookkeeping for writers
        let replayJournal: UInt64 = try reader.le()
        guard magic == volatileMagic else {
            throw bad("magic is 0x\(String(magic, radix: 16)), not 0xcafecafe")
        }
        guard replayJournal == 0 else {
            throw bad(
                "says the journal must be replayed (replayJournal at offset 24 is \(replayJournal)): the delta is dirty; let ESXi open and close it, or consolidate the snapshot"
            )
        }
        guard bytes[32...].allSatisfy({ $0 == 0 }) else { throw bad("padding from offset 32 is not all zeros") }
    }
}
