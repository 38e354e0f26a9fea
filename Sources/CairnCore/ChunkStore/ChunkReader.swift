/// Reads chunks back: pack record, CRC, decompression, SHA-256. One per worker.
///
/// Every chunk that leaves the store is proved by its digest; a mismatch is a `.damaged` error.
/// The last frame record read stays decompressed, so reading a frame's members in turn (as
/// restore and verify do) decompresses it once. Records are checked and opened by the one
/// record codec (`EncodedRecord`, `RecordDecoder`) that the archive readers use too.
public final class ChunkReader {
    let store: ChunkStore
    private let decoder: RecordDecoder
    let recordBuffer: UnsafeMutableRawBufferPointer
    private let output: UnsafeMutableRawBufferPointer
    let maxChunk: Int
    /// Whether to check each record's CRC before decompressing. Restore turns it off: the SHA-256
    /// of the result proves every byte anyway, and the CRC pass costs about a tenth of a restore.
    /// Verify keeps it on, to tell a damaged record from a damaged index.
    var checksRecordCRC = true
    /// Frame buffers, allocated on the first frame read: the record and its plain bytes.
    private var frameRecord: UnsafeMutableRawBufferPointer?
    private var framePlain: UnsafeMutableRawBufferPointer?
    /// The last frame read, and its plain bytes (in `framePlain`, or in `frameRecord` when the
    /// frame is stored uncompressed).
    private var cachedFrame: (pack: PackID, offset: UInt64, bytes: UnsafeRawBufferPointer)?
    /// The last frame record `frameBytes` read (its bytes in `frameRecord`, or in `span`).
    private var lastFrame: EncodedRecord?
    /// Bytes of a pack read ahead (verify's units): records it holds are taken from it, not
    /// read. Setting it forgets the cached frame, whose bytes may lie in the span it replaces.
    var span: PackSpan? {
        didSet {
            cachedFrame = nil
            lastFrame = nil
        }
    }

    /// The largest frame record payload: a full member list and a whole frame that did not compress.
    static let maxFramePayload =
        RecordMembers.countSize + PackFormat.maxFrameMembers * RecordMembers.entrySize
        + ZstdCompressor.bound(PackFormat.maxFrameBytes) + SealedRecordCodec.overhead

    init(store: ChunkStore) {
        self.store = store
        decoder = store.makeDecoder()
        maxChunk = max(store.blockSize, IndexTree.pageBytes)
        recordBuffer = .allocate(
            byteCount: RecordHeader.size + ZstdCompressor.bound(maxChunk) + SealedRecordCodec.overhead, alignment: 64)
        output = .allocate(byteCount: maxChunk, alignment: 64)
    }

    deinit {
        recordBuffer.deallocate()
        output.deallocate()
        frameRecord?.deallocate()
        framePlain?.deallocate()
    }

    /// Reads, checks and decompresses one chunk. The bytes are valid until the next call.
    func read(_ digest: ChunkDigest) throws(CairnError) -> UnsafeRawBufferPointer {
        guard let location = store.lookup(digest) else {
            throw store.missingChunk(digest)
        }
        return try read(digest, at: location)
    }

    func read(_ digest: ChunkDigest, at location: ChunkLocation) throws(CairnError) -> UnsafeRawBufferPointer {
        if let frameOffset = location.frameOffset {
            return try readMember(digest, at: location, frameOffset: Int(frameOffset))
        }
        return try readAlone(digest, at: location, into: output)
    }

    /// Reads, checks, decompresses into `output` (or leaves in place, if stored as is) and
    /// proves a chunk stored in a record of its own.
    private func readAlone(
        _ digest: ChunkDigest, at location: ChunkLocation, into output: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        let pack = try store.packReader(location.pack)
        let stored = Int(location.storedLength)
        guard Int(location.rawLength) <= maxChunk, RecordHeader.size + stored <= recordBuffer.count else {
            throw CairnError(.damaged, "chunk \(digest) claims \(location.rawLength) bytes, more than any chunk here")
        }
        let record = try pack.readRecord(
            at: location.offset, storedLength: stored, expected: digest, into: recordBuffer, checkCRC: checksRecordCRC,
            maxChunk: maxChunk, from: span)
        let plain = try decoder.open(record, into: output, place: " in pack \(location.pack)")
        return try proved(plain, digest, location.pack)
    }

    /// Reads, checks and decompresses one chunk into `destination`, whose count is the chunk's
    /// length (a chunk of any other length is damaged). A chunk stored alone is
    /// decompressed straight there, a frame member copied out of its frame.
    func read(
        _ digest: ChunkDigest, at location: ChunkLocation, into destination: UnsafeMutableRawBufferPointer
    ) throws(CairnError) {
        let plain =
            if let frameOffset = location.frameOffset {
                try readMember(digest, at: location, frameOffset: Int(frameOffset))
            } else {
                try readAlone(digest, at: location, into: destination)
            }
        guard plain.count == destination.count else {
            throw CairnError(
                .damaged, "chunk \(digest) holds \(plain.count) bytes where the disk needs \(destination.count)")
        }
        if plain.baseAddress != UnsafeRawPointer(destination.baseAddress), !plain.isEmpty {
            destination.baseAddress!.copyMemory(from: plain.baseAddress!, byteCount: plain.count)
        }
    }

    /// Reads one member of a frame record, decompressing the frame unless it is the cached one.
    private func readMember(
        _ digest: ChunkDigest, at location: ChunkLocation, frameOffset: Int
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        let plainBuffer = try frameBytes(location)
        let end = frameOffset + Int(location.rawLength)
        guard Int(location.rawLength) <= maxChunk, end <= plainBuffer.count else {
            throw CairnError(
                .damaged,
                "chunk \(digest) lies at bytes \(frameOffset)..<\(end) of a frame record of \(plainBuffer.count) bytes in pack \(location.pack)"
            )
        }
        return try proved(UnsafeRawBufferPointer(rebasing: plainBuffer[frameOffset..<end]), digest, location.pack)
    }

    /// Whether reading the chunk at `location` leaves the bytes of the last read in place: it is
    /// a member of the frame this reader holds decompressed.
    func holdsFrame(of location: ChunkLocation) -> Bool {
        guard location.frameOffset != nil, let cached = cachedFrame else { return false }
        return cached.pack == location.pack && cached.offset == location.offset
    }

    /// The plain bytes of the frame record at `location`: from the cache, or read, checked and
    /// decompressed. Valid until the next read.
    ///
    /// With `target` (at least `PackFormat.maxFrameBytes`), the plain bytes are written there
    /// instead and nothing is kept: `cairn serve` decompresses straight into its cache entry.
    func frameBytes(
        _ location: ChunkLocation, into target: UnsafeMutableRawBufferPointer? = nil
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        let plain = target ?? framePlain ?? .allocate(byteCount: PackFormat.maxFrameBytes, alignment: 64)
        if target == nil {
            framePlain = plain
            if let cached = cachedFrame, cached.pack == location.pack, cached.offset == location.offset {
                return cached.bytes
            }
        }
        let buffer = frameRecordBuffer()
        let pack = try store.packReader(location.pack)
        let record = try pack.readRecord(
            at: location.offset, storedLength: Int(location.storedLength), expected: nil, into: buffer,
            checkCRC: checksRecordCRC, from: target == nil ? span : nil)
        let result = try decoder.open(
            record, into: plain, place: " at offset \(location.offset) in pack \(location.pack)")
        lastFrame = record
        guard let target else {
            cachedFrame = (location.pack, location.offset, result)
            return result
        }
        if result.baseAddress != UnsafeRawPointer(target.baseAddress), result.count > 0 {
            // Stored uncompressed: the bytes are still in the record buffer.
            target.baseAddress!.copyMemory(from: result.baseAddress!, byteCount: result.count)
        }
        return UnsafeRawBufferPointer(rebasing: target[0..<result.count])
    }

    /// The members of the frame `frameBytes` returned last (valid until the next read).
    var lastFrameMembers: RecordMembers { lastFrame?.members ?? RecordMembers.none }

    /// Room for one whole frame record, allocated on first use. Reading into it forgets the
    /// cached frame, whose plain bytes may lie there (a frame stored uncompressed).
    func frameRecordBuffer() -> UnsafeMutableRawBufferPointer {
        cachedFrame = nil
        lastFrame = nil
        let record = frameRecord ?? .allocate(byteCount: RecordHeader.size + Self.maxFramePayload, alignment: 64)
        frameRecord = record
        return record
    }

    private func proved(
        _ plain: UnsafeRawBufferPointer, _ digest: ChunkDigest, _ pack: PackID
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        guard decoder.proves(plain, digest) else {
            throw CairnError(.damaged, "chunk \(digest) in pack \(pack) does not match its digest")
        }
        return plain
    }
}
