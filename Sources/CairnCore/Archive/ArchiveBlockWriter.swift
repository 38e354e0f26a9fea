/// Cuts a record stream into archive blocks and volumes, and emits whole blocks to a sink.
///
/// Holds one block in memory. Each volume opens with a label block and closes with its catalog;
/// before emitting a data block the writer checks that the volume still has room for it and for
/// the catalog it would then have to write, so no volume exceeds its size. Records flow over
/// block and volume boundaries; a block header names the offset of the first record that begins
/// in it, so a reader can pick up the stream again after a damaged block.
final class ArchiveBlockWriter {
    let sink: any ArchiveSink
    let blockSize: Int
    let archive: ArchiveID
    let maxBlocksPerVolume: Int
    let label: ArchiveLabel
    /// An encrypted archive's keys: its catalogs' lists of restore points are sealed.
    var keys: ArchiveKeys?
    private let block: UnsafeMutableRawBufferPointer
    private let recordHeader: UnsafeMutableRawBufferPointer
    private var capacity: Int { blockSize - ArchiveFormat.blockHeaderSize }

    private var fill = 0
    private var firstRecordOffset = ArchiveFormat.noRecordStart
    private var sequence: UInt64 = 0
    private(set) var volume = 0
    private var blocksInVolume = 0

    // What the current, unemitted block starts; credited to a volume when the block is emitted.
    private var pendingPoints: [Manifest] = []
    private var pendingPointBytes = 0
    private var pendingRecords = 0, pendingChunks = 0, pendingPages = 0
    // The open volume's catalog so far.
    private var volumePoints: [ArchivePointEntry] = []
    private var volumeRecords = 0, volumeChunks = 0, volumePages = 0, volumeDataBlocks = 0
    private var volumeFirstSequence: UInt64 = 0
    // Every restore point so far: the last volume's catalog lists them all.
    private(set) var allPoints: [ArchivePointEntry] = []
    private var allPointBytes = 0
    private(set) var blocksWritten: UInt64 = 0
    private var finished = false

    init(sink: any ArchiveSink, blockSize: Int, archive: ArchiveID, volumeSize: UInt64?, label: ArchiveLabel)
        throws(CairnError)
    {
        try ArchiveFormat.validate(blockSize: blockSize)
        self.sink = sink
        self.blockSize = blockSize
        self.archive = archive
        self.label = label
        if let volumeSize {
            let blocks = volumeSize / UInt64(blockSize)
            guard blocks >= UInt64(ArchiveFormat.minimumBlocksPerVolume) else {
                throw CairnError(
                    .usage,
                    "a volume size of \(volumeSize) bytes holds fewer than \(ArchiveFormat.minimumBlocksPerVolume) blocks of \(blockSize) bytes (a label, data and the catalog)"
                )
            }
            maxBlocksPerVolume = Int(min(blocks, UInt64(Int.max)))
        } else {
            maxBlocksPerVolume = Int.max
        }
        block = .allocate(byteCount: blockSize, alignment: 4096)
        block.initializeMemory(as: UInt8.self, repeating: 0)
        recordHeader = .allocate(byteCount: ArchiveFormat.recordHeaderSize, alignment: 16)
    }

    deinit {
        block.deallocate()
        recordHeader.deallocate()
    }

    // MARK: Records

    /// Appends one record: header, then the body's parts in order. `chunks` is how many chunks
    /// a chunk record carries (a frame record's member count), for the volume catalog.
    func appendRecord(
        _ type: ArchiveRecordType, parts: [UnsafeRawBufferPointer], manifest: Manifest? = nil, chunks: Int = 1
    ) throws(CairnError) {
        let length = parts.reduce(0) { $0 + $1.count }
        precondition(length <= type.maxBody, "record body larger than the format allows")
        if fill == capacity { try emitDataBlock() }
        if firstRecordOffset == ArchiveFormat.noRecordStart { firstRecordOffset = UInt32(fill) }
        pendingRecords += 1
        switch type {
        case .chunk: pendingChunks += chunks
        case .indexPage: pendingPages += 1
        case .manifest:
            if let manifest {
                pendingPoints.append(manifest)
                pendingPointBytes += try Self.entryBytes(ArchivePointEntry(manifest, volume: 0))
            }
        case .end: break
        }
        ArchiveRecordHeader.store(type: type, bodyLength: length, into: recordHeader)
        try append(UnsafeRawBufferPointer(recordHeader))
        for part in parts { try append(part) }
    }

    func appendRecord(_ type: ArchiveRecordType, bytes: [UInt8], manifest: Manifest? = nil) throws(CairnError) {
        try bytes.withBytesThrowing { raw throws(CairnError) in try appendRecord(type, parts: [raw], manifest: manifest)
        }
    }

    private func append(_ bytes: UnsafeRawBufferPointer) throws(CairnError) {
        var done = 0
        while done < bytes.count {
            if fill == capacity { try emitDataBlock() }
            let n = min(capacity - fill, bytes.count - done)
            (block.baseAddress! + ArchiveFormat.blockHeaderSize + fill).copyMemory(
                from: bytes.baseAddress! + done, byteCount: n)
            fill += n
            done += n
        }
    }

    /// Flushes the last data block and closes the last volume with the archive's catalog.
    func finish() throws(CairnError) {
        precondition(!finished)
        if fill > 0 || volume == 0 { try emitDataBlock() }
        try closeVolume(last: true)
        finished = true
    }

    // MARK: Blocks and volumes

    private static func entryBytes(_ entry: ArchivePointEntry) throws(CairnError) -> Int {
        // The encoded entry plus room for its volume number's digits and a separating comma.
        try JSONCoding.encode(entry).utf8.count + 12
    }

    /// Blocks the catalog needs if the volume closed now as the archive's last.
    private func catalogBlocks(extra: Int) -> Int {
        var bytes = allPointBytes + extra
        // Sealed, then base64: four bytes for every three, and the seal's salt and tag.
        if keys != nil { bytes = (bytes + MetadataSeal.overhead + 2) / 3 * 4 }
        bytes += 1024
        return (bytes + capacity - 1) / capacity
    }

    private func emitDataBlock() throws(CairnError) {
        if volume == 0 { try openVolume() }
        if blocksInVolume + 1 + catalogBlocks(extra: pendingPointBytes) > maxBlocksPerVolume {
            try closeVolume(last: false)
            try openVolume()
            guard blocksInVolume + 1 + catalogBlocks(extra: pendingPointBytes) <= maxBlocksPerVolume else {
                throw CairnError(
                    .usage,
                    "the volume size holds \(maxBlocksPerVolume) blocks, too few for a label, a data block and a catalog of \(allPoints.count + pendingPoints.count) restore points",
                    remedy: .largerVolume)
            }
        }
        if fill < capacity {
            (block.baseAddress! + ArchiveFormat.blockHeaderSize + fill).initializeMemory(
                as: UInt8.self, repeating: 0, count: capacity - fill)
        }
        try writeBlock(flags: [], payloadLength: fill, firstRecordOffset: firstRecordOffset)
        volumeDataBlocks += 1
        volumeRecords += pendingRecords
        volumeChunks += pendingChunks
        volumePages += pendingPages
        for manifest in pendingPoints {
            let entry = ArchivePointEntry(manifest, volume: volume)
            volumePoints.append(entry)
            allPoints.append(entry)
        }
        allPointBytes += pendingPointBytes
        pendingPoints.removeAll()
        pendingPointBytes = 0
        pendingRecords = 0
        pendingChunks = 0
        pendingPages = 0
        fill = 0
        firstRecordOffset = ArchiveFormat.noRecordStart
    }

    private func writeBlock(flags: ArchiveBlockFlags, payloadLength: Int, firstRecordOffset: UInt32) throws(CairnError)
    {
        let payload = UnsafeRawBufferPointer(
            rebasing: block[ArchiveFormat.blockHeaderSize..<ArchiveFormat.blockHeaderSize + payloadLength])
        let header = ArchiveBlockHeader(
            blockSize: UInt32(blockSize), archive: archive, volume: UInt32(volume), flags: flags, sequence: sequence,
            payloadLength: UInt32(payloadLength), firstRecordOffset: firstRecordOffset,
            payloadCRC: CRC32.checksum(payload))
        header.store(into: block)
        try sink.write(block: UnsafeRawBufferPointer(block))
        sequence += 1
        blocksInVolume += 1
        blocksWritten += 1
    }

    /// Writes a small payload (label, catalog) as whole blocks, outside the record stream.
    private func writeSpecial(_ bytes: [UInt8], flags: ArchiveBlockFlags, lastFlags: ArchiveBlockFlags)
        throws(CairnError)
    {
        var offset = 0
        repeat {
            let n = min(capacity, bytes.count - offset)
            let target = UnsafeMutableRawBufferPointer(rebasing: block[ArchiveFormat.blockHeaderSize...])
            target.initializeMemory(as: UInt8.self, repeating: 0)
            bytes.withUnsafeBytes { raw in
                if n > 0 { target.baseAddress!.copyMemory(from: raw.baseAddress! + offset, byteCount: n) }
            }
            offset += n
            let last = offset == bytes.count
            try writeBlock(
                flags: last ? flags.union(lastFlags) : flags, payloadLength: n,
                firstRecordOffset: ArchiveFormat.noRecordStart)
        } while offset < bytes.count
    }

    private func openVolume() throws(CairnError) {
        volume += 1
        blocksInVolume = 0
        try sink.beginVolume(volume)
        var label = self.label
        label.volume = volume
        // The label shares the block buffer with the pending data block: keep its bytes aside.
        let saved = Array(
            UnsafeRawBufferPointer(
                rebasing: block[ArchiveFormat.blockHeaderSize..<ArchiveFormat.blockHeaderSize + fill]))
        let labelBytes = Array(try JSONCoding.encode(label).utf8)
        // A reader takes one block for the label: it must fit (many key files might not).
        guard labelBytes.count <= capacity else {
            throw CairnError(
                .usage,
                "the volume label (\(label.keys?.count ?? 0) key files) takes \(labelBytes.count) bytes, more than one archive block of \(blockSize): use a larger --block-size, or remove keys no one uses (`cairn key remove`)"
            )
        }
        try writeSpecial(labelBytes, flags: .label, lastFlags: [])
        saved.withUnsafeBytes { raw in
            if !raw.isEmpty {
                (block.baseAddress! + ArchiveFormat.blockHeaderSize).copyMemory(
                    from: raw.baseAddress!, byteCount: raw.count)
            }
        }
        volumePoints = []
        volumeRecords = 0
        volumeChunks = 0
        volumePages = 0
        volumeDataBlocks = 0
        volumeFirstSequence = sequence
    }

    private func closeVolume(last: Bool) throws(CairnError) {
        var catalog = ArchiveVolumeCatalog(
            format: Int(ArchiveFormat.version), archive: archive.hex, volume: volume, last: last,
            volumes: last ? volume : nil, firstSequence: volumeFirstSequence, dataBlocks: volumeDataBlocks,
            records: volumeRecords, chunks: volumeChunks, indexPages: volumePages,
            points: last ? allPoints : volumePoints)
        if let keys {
            catalog.sealedPoints = try keys.sealPoints(catalog.points, volume: volume)
            catalog.points = []
        }
        // The pending data block (if any) moves to the next volume: keep its bytes aside.
        let saved = Array(
            UnsafeRawBufferPointer(
                rebasing: block[ArchiveFormat.blockHeaderSize..<ArchiveFormat.blockHeaderSize + fill]))
        try writeSpecial(
            Array(try JSONCoding.encode(catalog).utf8), flags: .catalog,
            lastFlags: last ? [.endOfVolume, .endOfArchive] : .endOfVolume)
        saved.withUnsafeBytes { raw in
            if !raw.isEmpty {
                (block.baseAddress! + ArchiveFormat.blockHeaderSize).copyMemory(
                    from: raw.baseAddress!, byteCount: raw.count)
            }
        }
        try sink.endVolume()
    }
}
