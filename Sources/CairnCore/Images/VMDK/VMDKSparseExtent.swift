/// One hosted sparse extent (KDMV): its grain directory and tables, and reads of its grains.
///
/// Covers monolithicSparse and twoGbMaxExtentSparse extents (versions 1 and 2, zeroed grains)
/// and streamOptimized ones (version 3, deflate-compressed grains behind markers), with the grain
/// directory at the front (QEMU's layout) or found through the footer (VMware's layout). Every
/// table and grain offset is checked against the file before it is read, and each compressed
/// grain's marker must name the grain it stands for (QEMU does not check this). Where a
/// redundant grain directory is in use, each grain table is compared with its copy when loaded.
final class VMDKSparseExtent: VMDKGrainTables {
    let file: File
    let fileSize: UInt64
    let header: VMDKSparseHeader
    /// Grain table sectors, one per 32 MiB (for 64 KiB grains) of the extent.
    let directory: [UInt32]
    /// The redundant copy's grain table sectors, when the extent keeps one.
    let redundantDirectory: [UInt32]?
    /// Whether grain tables are preceded by GT markers (VMware's stream layout).
    let tablesHaveMarkers: Bool
    private let cache = VMDKGrainTableCache(tableBytes: Int(VMDKSparseHeader.entriesPerTable) * 4)
    private var redundantTable = [UInt8](repeating: 0, count: Int(VMDKSparseHeader.entriesPerTable) * 4)

    /// One decompressed grain, reused; `decompressedGrain` says which grain it holds.
    private var grainBuffer: [UInt8] = []
    private var compressedBuffer: [UInt8] = []
    private var decompressedGrain: UInt64?
    private lazy var inflater = Inflater(.zlib)

    /// Opens the sparse extent in `file` whose parsed header is `header`.
    init(file: File, fileSize: UInt64, header primary: VMDKSparseHeader) throws(CairnError) {
        self.file = file
        self.fileSize = fileSize
        let path = file.path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): vmdk \(message)") }

        var header = primary
        if primary.directoryOffset == VMDKSparseHeader.gdAtEnd {
            header = try Self.readFooter(file, fileSize: fileSize, header: primary)
        }
        self.header = header
        tablesHaveMarkers = primary.directoryOffset == VMDKSparseHeader.gdAtEnd

        let entries = header.directoryEntries
        let fileSectors = fileSize / 512
        func readDirectory(_ sector: UInt64, _ field: String) throws(CairnError) -> [UInt32] {
            // entries <= 32 Mi and sector <= fileSectors, so neither product overflows.
            guard sector <= fileSectors, entries * 4 <= fileSize - sector * 512 else {
                throw bad(
                    "\(field) at sector \(sector) (\(entries) entries) lies beyond the end of the file (\(fileSize) bytes): the file is truncated"
                )
            }
            let bytes = try file.readBytes(count: Int(entries * 4), at: sector * 512)
            return bytes.withUnsafeBytes { raw in
                (0..<Int(entries)).map {
                    UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))
                }
            }
        }
        directory = try readDirectory(header.directoryOffset, "grain directory (gdOffset)")
        if tablesHaveMarkers {
            try Self.checkMarker(
                file, fileSize: fileSize, sector: header.directoryOffset - 1, type: 2,
                sectors: (entries * 4 + 511) / 512, what: "grain directory")
        }
        if header.flags & VMDKSparseHeader.flagRedundantDirectory != 0 && !tablesHaveMarkers {
            let copy = try readDirectory(header.redundantDirectoryOffset, "redundant grain directory (rgdOffset)")
            for index in 0..<Int(entries) where (copy[index] == 0) != (directory[index] == 0) {
                throw bad(
                    "grain directory entry \(index) is \(directory[index]) but the redundant directory's is \(copy[index]): the directories disagree"
                )
            }
            redundantDirectory = copy
        } else {
            redundantDirectory = nil
        }
        for (index, sector) in directory.enumerated() where sector != 0 {
            try checkTableSector(UInt64(sector), "grain directory entry \(index)")
        }
    }

    /// A VMware stream keeps the real grain directory offset in the footer: the last 1536 bytes
    /// are a footer marker, the footer (a copy of the header), and the end-of-stream marker.
    private static func readFooter(
        _ file: File, fileSize: UInt64, header: VMDKSparseHeader
    ) throws(CairnError) -> VMDKSparseHeader {
        let path = file.path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): vmdk stream \(message)") }
        guard fileSize % 512 == 0, fileSize >= 3 * 512 + UInt64(VMDKSparseHeader.size) else {
            throw bad(
                "is \(fileSize) bytes: too short, or not whole sectors, to end in a footer and end-of-stream marker")
        }
        try checkMarker(file, fileSize: fileSize, sector: fileSize / 512 - 3, type: 3, sectors: 1, what: "footer")
        let end = try file.readBytes(count: 512, at: fileSize - 512)
        guard end.allSatisfy({ $0 == 0 }) else { throw bad("does not end in an end-of-stream marker (a zero sector)") }
        let footer = try VMDKSparseHeader.parse(file, at: fileSize - 1024, fileSize: fileSize, what: "footer")
        guard footer.directoryOffset != VMDKSparseHeader.gdAtEnd else {
            throw bad("footer's gdOffset is also \"at the end\": the grain directory cannot be found")
        }
        guard footer.capacity == header.capacity, footer.grainSectors == header.grainSectors,
            footer.flags == header.flags, footer.compressAlgorithm == header.compressAlgorithm
        else { throw bad("footer disagrees with the header on capacity, grainSize, flags or compressAlgorithm") }
        return footer
    }

    /// Checks the metadata marker at `sector`: {sectors u64, size 0 u32, type u32}.
    private static func checkMarker(
        _ file: File, fileSize: UInt64, sector: UInt64, type: UInt32, sectors: UInt64, what: String
    ) throws(CairnError) {
        let bytes = try file.readBytes(count: 16, at: sector * 512)
        var reader = ByteReader(bytes, context: "\(file.path): vmdk \(what) marker")
        let value: UInt64 = try reader.le()
        let size: UInt32 = try reader.le()
        let found: UInt32 = try reader.le()
        guard value == sectors, size == 0, found == type else {
            throw CairnError(
                .badImage,
                "\(file.path): vmdk \(what) marker at sector \(sector) is {\(value), \(size), type \(found)}, not {\(sectors), 0, type \(type)}"
            )
        }
    }

    private func checkTableSector(_ sector: UInt64, _ field: String) throws(CairnError) {
        let bytes = VMDKSparseHeader.entriesPerTable * 4
        guard sector >= 1, sector <= fileSize / 512, bytes <= fileSize - sector * 512 else {
            throw CairnError(
                .badImage,
                "\(file.path): vmdk \(field) points to a grain table at sector \(sector), beyond the end of the file (\(fileSize) bytes)"
            )
        }
    }

    var grainBytes: UInt64 { header.grainBytes }
    var entriesPerTable: UInt64 { VMDKSparseHeader.entriesPerTable }

    func table(_ index: Int) throws(CairnError) -> Int? {
        let sector = UInt64(directory[index])
        if sector == 0 { return nil }
        return try cache.slot(for: sector) { (table) throws(CairnError) in
            try loadTable(table, tableIndex: index, sector: sector)
        }
    }

    func grain(_ grainIndex: UInt64, inTable slot: Int) throws(CairnError) -> VMDKGrain {
        let entryIndex = Int(grainIndex % VMDKSparseHeader.entriesPerTable)
        let entry = UInt64(cache.entry32(slot, entryIndex))
        if entry == 0 { return .unallocated }
        if entry == 1 && header.hasZeroedGrains { return .zero }
        func bad(_ message: String) -> CairnError {
            let tableSector = directory[Int(grainIndex / VMDKSparseHeader.entriesPerTable)]
            return CairnError(
                .badImage,
                "\(file.path): vmdk grain table entry \(entryIndex) of the table at sector \(tableSector) (extent offset \(grainIndex * header.grainBytes)) \(message)"
            )
        }
        guard entry >= header.overhead else {
            throw bad("points to sector \(entry), inside the metadata (overHead is \(header.overhead) sectors)")
        }
        if header.isCompressed {
            guard entry * 512 + 12 <= fileSize else {
                throw bad(
                    "points to a compressed grain at sector \(entry), beyond the end of the file (\(fileSize) bytes)")
            }
            return .compressed(sector: entry)
        }
        // The grain's bytes that hold extent data must be in the file (the last grain may be partial).
        let needed = min(header.grainBytes, header.capacity * 512 - grainIndex * header.grainBytes)
        guard entry * 512 + needed <= fileSize else {
            throw bad(
                "points to a grain at sector \(entry), beyond the end of the file (\(fileSize) bytes): the file is truncated"
            )
        }
        return .data(byteOffset: entry * 512)
    }

    private func loadTable(
        _ table: UnsafeMutableRawBufferPointer, tableIndex: Int, sector: UInt64
    ) throws(CairnError) {
        try file.readExactly(into: table, at: sector * 512)
        if tablesHaveMarkers {
            try Self.checkMarker(file, fileSize: fileSize, sector: sector - 1, type: 1, sectors: 4, what: "grain table")
        }
        guard let redundantDirectory else { return }
        let copySector = UInt64(redundantDirectory[tableIndex])
        try checkTableSector(copySector, "redundant grain directory entry \(tableIndex)")
        try redundantTable.withMutableBytesThrowing { (copy) throws(CairnError) in
            try file.readExactly(into: copy, at: copySector * 512)
            guard copy.elementsEqual(UnsafeRawBufferPointer(table)) else {
                throw CairnError(
                    .badImage,
                    "\(file.path): vmdk grain table at sector \(sector) differs from its redundant copy at sector \(copySector)"
                )
            }
        }
    }

    /// Decompresses the grain at marker `sector` (extent grain `grainIndex`) into the grain buffer.
    private func decompress(sector: UInt64, grainIndex: UInt64) throws(CairnError) {
        if decompressedGrain == grainIndex { return }
        decompressedGrain = nil
        let grainBytes = Int(header.grainBytes)
        func bad(_ message: String) -> CairnError {
            CairnError(.badImage, "\(file.path): vmdk compressed grain at sector \(sector) \(message)")
        }
        var marker = ByteReader(try file.readBytes(count: 12, at: sector * 512), context: "\(file.path): grain marker")
        let lba: UInt64 = try marker.le()
        let size: UInt32 = try marker.le()
        guard lba == grainIndex * header.grainSectors else {
            throw bad(
                "has marker LBA \(lba), but the grain table places it at sector \(grainIndex * header.grainSectors)")
        }
        guard size > 0, UInt64(size) <= 2 * header.grainBytes else {
            throw bad("has compressed size \(size): it must be 1 to \(2 * header.grainBytes) bytes (two grains)")
        }
        guard UInt64(size) <= fileSize - sector * 512 - 12 else {
            throw bad("(\(size) bytes) runs past the end of the file (\(fileSize) bytes): the file is truncated")
        }
        if grainBuffer.count != grainBytes { grainBuffer = [UInt8](repeating: 0, count: grainBytes) }
        if compressedBuffer.count < 2 * grainBytes { compressedBuffer = [UInt8](repeating: 0, count: 2 * grainBytes) }
        let compressed = Int(size)
        try compressedBuffer.withMutableBytesThrowing { (raw) throws(CairnError) in
            try file.readExactly(
                into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<compressed]), at: sector * 512 + 12)
        }
        let needed = Int(min(header.grainBytes, header.capacity * 512 - grainIndex * header.grainBytes))
        let produced: Int
        do throws(CairnError) {
            produced = try compressedBuffer.withMutableBytesThrowing { (source) throws(CairnError) in
                try grainBuffer.withMutableBytesThrowing { (target) throws(CairnError) in
                    try inflater.inflate(UnsafeRawBufferPointer(rebasing: source[0..<compressed]), into: target)
                }
            }
        } catch {
            throw bad("does not inflate: \(error.cause ?? error.message)")
        }
        guard produced >= needed else {
            throw bad("inflates to \(produced) bytes, not the grain's \(needed)")
        }
        decompressedGrain = grainIndex
    }

    /// Copies extent bytes `offset..<offset+target.count` (inside one compressed grain) out of it.
    func readCompressed(
        into target: UnsafeMutableRawBufferPointer, sector: UInt64, at offset: UInt64
    ) throws(CairnError) {
        let grainIndex = offset / header.grainBytes
        try decompress(sector: sector, grainIndex: grainIndex)
        let start = Int(offset - grainIndex * header.grainBytes)
        grainBuffer.withUnsafeBytes { grain in
            target.copyMemory(from: UnsafeRawBufferPointer(rebasing: grain[start..<start + target.count]))
        }
    }
}
