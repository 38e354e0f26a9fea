/// One SEsparse extent: its grain directory and tables, and where its grains are.
///
/// A directory entry is 0 (no table) or 0x10000000_xxxxxxxx: table x of the grain table region.
/// A table entry's top nibble is its type: 0 unallocated (the parent's bytes, or zeros; the other
/// bits must be 0), 1 unmapped by the guest (SCSI UNMAP) and 2 zero (both read as zeros, as QEMU
/// reads them, not the parent's bytes), 3 allocated: grain index
/// `(e & 0x0fff000000000000) >> 48 | (e & 0x0000ffffffffffff) << 12` of the grain region. Every
/// table and grain must lie inside its region and inside the file.
final class VMDKSESparseExtent: VMDKGrainTables {
    let file: File
    let fileSize: UInt64
    let header: VMDKSESparseHeader
    /// Table index in the grain table region per directory entry, nil for none.
    let directory: [UInt32?]
    private let cache = VMDKGrainTableCache(tableBytes: Int(VMDKSESparseHeader.entriesPerTable) * 8)

    var grainBytes: UInt64 { header.grainBytes }
    var entriesPerTable: UInt64 { VMDKSESparseHeader.entriesPerTable }

    /// Opens the SEsparse extent in `file` whose parsed headers are `header`.
    init(file: File, fileSize: UInt64, header: VMDKSESparseHeader) throws(CairnError) {
        self.file = file
        self.fileSize = fileSize
        self.header = header
        let path = file.path
        // The header has checked that the entries covering the capacity lie inside the file.
        let count = Int(header.directoryEntries)
        let bytes = try file.readBytes(count: count * 8, at: header.directory.offset * 512)
        guard bytes.count == count * 8 else {
            throw CairnError(.badImage, "\(path): vmdk SEsparse file shrank while its grain directory was read")
        }
        var directory: [UInt32?] = []
        directory.reserveCapacity(count)
        for index in 0..<count {
            let entry = bytes.withUnsafeBytes {
                UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
            }
            if entry == 0 {
                directory.append(nil)
                continue
            }
            func bad(_ message: String) -> CairnError {
                CairnError(
                    .badImage,
                    "\(path): vmdk SEsparse grain directory entry \(index) is 0x\(String(entry, radix: 16)): \(message)"
                )
            }
            guard entry >> 32 == 0x1000_0000 else {
                throw bad("the top 32 bits of an allocated entry must be 0x10000000")
            }
            let table = UInt64(entry & 0xFFFF_FFFF)
            guard table < header.tableCount else {
                throw bad("table \(table) is beyond the grain table region's \(header.tableCount) tables")
            }
            let sector = header.tables.offset + table * VMDKSESparseHeader.tableSectors
            guard (sector + VMDKSESparseHeader.tableSectors) * 512 <= fileSize else {
                throw bad(
                    "its table at sector \(sector) lies beyond the end of the file (\(fileSize) bytes): the file is truncated"
                )
            }
            directory.append(UInt32(table))
        }
        self.directory = directory
    }

    func table(_ index: Int) throws(CairnError) -> Int? {
        guard let table = directory[index] else { return nil }
        let sector = header.tables.offset + UInt64(table) * VMDKSESparseHeader.tableSectors
        return try cache.slot(for: sector) { (buffer) throws(CairnError) in
            try file.readExactly(into: buffer, at: sector * 512)
        }
    }

    func grain(_ grainIndex: UInt64, inTable slot: Int) throws(CairnError) -> VMDKGrain {
        let entryIndex = Int(grainIndex % entriesPerTable)
        let entry = cache.entry64(slot, entryIndex)
        switch entry >> 60 {
        case 0:
            if entry == 0 { return .unallocated }
            throw bad(grainIndex, entryIndex, entry, "is unallocated (type 0) but has other bits set")
        case 1, 2:
            return .zero
        case 3:
            let index = (entry & 0x0FFF_0000_0000_0000) >> 48 | (entry & 0x0000_FFFF_FFFF_FFFF) << 12
            guard index < header.grainCount else {
                throw bad(
                    grainIndex, entryIndex, entry,
                    "points to grain \(index), beyond the grain region's \(header.grainCount) grains")
            }
            let start = (header.grains.offset + index * VMDKSESparseHeader.grainSectors) * 512
            // The grain's bytes that hold extent data must be in the file (the last grain may be partial).
            let needed = min(header.grainBytes, header.capacity * 512 - grainIndex * header.grainBytes)
            guard start + needed <= fileSize else {
                throw bad(
                    grainIndex, entryIndex, entry,
                    "points to a grain at byte \(start), beyond the end of the file (\(fileSize) bytes): the file is truncated"
                )
            }
            return .data(byteOffset: start)
        default:
            throw bad(grainIndex, entryIndex, entry, "has type \(entry >> 60): only 0 to 3 are known")
        }
    }

    private func bad(_ grainIndex: UInt64, _ entryIndex: Int, _ entry: UInt64, _ message: String) -> CairnError {
        let table = directory[Int(grainIndex / entriesPerTable)].map { String($0) } ?? "?"
        return CairnError(
            .badImage,
            "\(file.path): vmdk SEsparse grain table entry \(entryIndex) of table \(table) (extent offset \(grainIndex * header.grainBytes)) is 0x\(String(entry, radix: 16)): it \(message)"
        )
    }
}
