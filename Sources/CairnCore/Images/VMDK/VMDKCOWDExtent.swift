/// One vmfsSparse extent (COWD): its grain directory and tables, and where its grains are.
///
/// The grain directory holds u32 sectors of grain tables (0 = none); each table 4096 u32 sectors
/// of grains (0 = unallocated: the parent's bytes, or zeros). COWD has no zero grains. Every table
/// and grain must start after the header, stay clear of the grain directory and end inside the
/// file; QEMU checks none of this and reads zeros past the end of the file.
final class VMDKCOWDExtent: VMDKGrainTables {
    let file: File
    let fileSize: UInt64
    let header: VMDKCOWDHeader
    /// Grain table sectors, one per 4096 grains (2 MiB of ESXi's 1-sector grains).
    let directory: [UInt32]
    private let cache = VMDKGrainTableCache(tableBytes: Int(VMDKCOWDHeader.entriesPerTable) * 4)

    var grainBytes: UInt64 { header.grainBytes }
    var entriesPerTable: UInt64 { VMDKCOWDHeader.entriesPerTable }

    /// Opens the vmfsSparse extent in `file` whose parsed header is `header`.
    init(file: File, fileSize: UInt64, header: VMDKCOWDHeader) throws(CairnError) {
        self.file = file
        self.fileSize = fileSize
        self.header = header
        // The header has checked that the directory lies inside the file.
        let count = Int(header.directoryEntries)
        let bytes = try file.readBytes(count: count * 4, at: header.directoryOffset * 512)
        guard bytes.count == count * 4 else {
            throw CairnError(.badImage, "\(file.path): vmdk COWD file shrank while its grain directory was read")
        }
        directory = bytes.withUnsafeBytes { raw in
            (0..<count).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
        }
        for (index, sector) in directory.enumerated() where sector != 0 {
            try check(
                sector: UInt64(sector), bytes: entriesPerTable * 4,
                "grain directory entry \(index) points to a grain table at sector \(sector)")
        }
    }

    /// Refuses `bytes` at `sector` (< 2^32) that overlap the header or the grain directory, or
    /// run past the end of the file; `what` names them in the error.
    private func check(sector: UInt64, bytes: UInt64, _ what: @autoclosure () -> String) throws(CairnError) {
        let start = sector * 512
        let directoryStart = header.directoryOffset * 512
        let directoryEnd = directoryStart + header.directoryEntries * 4
        guard sector >= VMDKCOWDHeader.sectors, start >= directoryEnd || start + bytes <= directoryStart else {
            throw CairnError(
                .badImage, "\(file.path): vmdk vmfsSparse (COWD) \(what()), inside the header or the grain directory")
        }
        guard start + bytes <= fileSize else {
            throw CairnError(
                .badImage,
                "\(file.path): vmdk vmfsSparse (COWD) \(what()), beyond the end of the file (\(fileSize) bytes): the file is truncated"
            )
        }
    }

    func table(_ index: Int) throws(CairnError) -> Int? {
        let sector = UInt64(directory[index])
        if sector == 0 { return nil }
        return try cache.slot(for: sector) { (table) throws(CairnError) in
            try file.readExactly(into: table, at: sector * 512)
        }
    }

    func grain(_ grainIndex: UInt64, inTable slot: Int) throws(CairnError) -> VMDKGrain {
        let entryIndex = Int(grainIndex % entriesPerTable)
        let sector = UInt64(cache.entry32(slot, entryIndex))
        if sector == 0 { return .unallocated }
        // The grain's bytes that hold extent data must be in the file (the last grain may be partial).
        let needed = min(header.grainBytes, header.capacity * 512 - grainIndex * header.grainBytes)
        try check(
            sector: sector, bytes: needed,
            "grain table entry \(entryIndex) of the table at sector \(directory[Int(grainIndex / entriesPerTable)]) (extent offset \(grainIndex * header.grainBytes)) points to a grain at sector \(sector)"
        )
        return .data(byteOffset: sector * 512)
    }
}
