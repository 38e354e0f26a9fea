/// Turns blocks into pack records: hash known, compress if it helps, CRC. One per worker.
///
/// Owns its zstd context for its whole life; writes into a caller-provided slot, so encoding
/// allocates nothing.
final class ChunkEncoder {
    private let compressor: ZstdCompressor
    private let hasher = SHA256Hasher()
    /// Where a frame's members are gathered when they do not lie back to back in memory.
    private var gatherBuffer: UnsafeMutableRawBufferPointer?

    init(level: Int32) {
        compressor = ZstdCompressor(level: level)
    }

    deinit {
        gatherBuffer?.deallocate()
    }

    /// Bytes a record slot needs for a chunk of `rawLength` bytes.
    static func slotSize(rawLength: Int) -> Int {
        PackFormat.recordHeaderSize + max(rawLength, ZstdCompressor.bound(rawLength))
    }

    /// Bytes a frame record of `members` members and `rawLength` plain bytes may need.
    static func frameSlotSize(members: Int, rawLength: Int) -> Int {
        PackFormat.recordHeaderSize + PackFormat.frameCountSize + members * PackFormat.frameMemberSize
            + max(rawLength, ZstdCompressor.bound(rawLength))
    }

    /// Encodes `chunk` into `slot`; returns the record's length (header plus stored bytes).
    func encode(
        _ chunk: UnsafeRawBufferPointer, digest: ChunkDigest, kind: ChunkKind, into slot: UnsafeMutableRawBufferPointer
    ) -> Int {
        let payload = UnsafeMutableRawBufferPointer(rebasing: slot[PackFormat.recordHeaderSize...])
        let (compression, stored) = compress(chunk, into: payload)
        return seal(
            slot, digest: digest, storedLength: stored, rawLength: chunk.count, kind: kind, compression: compression)
    }

    /// Encodes `count` data blocks as one frame record into `slot` (which must hold
    /// `frameSlotSize`); `member(i)` gives the i-th block and its digest. Members that lie back
    /// to back in memory are compressed where they are; others are gathered first.
    /// Returns the record's length.
    func encodeFrame(
        count: Int, into slot: UnsafeMutableRawBufferPointer,
        member: (Int) -> (bytes: UnsafeRawBufferPointer, digest: ChunkDigest)
    ) -> Int {
        precondition(count >= 1 && count <= PackFormat.maxFrameMembers)
        let list = PackFormat.recordHeaderSize
        let listLength = PackFormat.frameCountSize + count * PackFormat.frameMemberSize
        slot.storeBytes(of: UInt32(count).littleEndian, toByteOffset: list, as: UInt32.self)
        var total = 0
        var contiguous = true
        var start: UnsafeRawPointer?
        for i in 0..<count {
            let (bytes, digest) = member(i)
            let at = list + PackFormat.frameCountSize + i * PackFormat.frameMemberSize
            digest.store(to: slot, at: at)
            slot.storeBytes(of: UInt32(bytes.count).littleEndian, toByteOffset: at + 32, as: UInt32.self)
            slot.storeBytes(of: UInt32(ChunkKind.data.rawValue), toByteOffset: at + 36, as: UInt32.self)
            if i == 0 {
                start = bytes.baseAddress
            } else if bytes.count > 0, start.map({ $0 + total }) != bytes.baseAddress {
                contiguous = false
            }
            total += bytes.count
        }
        precondition(total <= PackFormat.maxFrameBytes)
        let source: UnsafeRawBufferPointer
        if contiguous, let start {
            source = UnsafeRawBufferPointer(start: start, count: total)
        } else {
            let gather = gatherBuffer ?? .allocate(byteCount: PackFormat.maxFrameBytes, alignment: 64)
            gatherBuffer = gather
            var at = 0
            for i in 0..<count {
                let bytes = member(i).bytes
                if bytes.count > 0 {
                    (gather.baseAddress! + at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                }
                at += bytes.count
            }
            source = UnsafeRawBufferPointer(rebasing: gather[0..<total])
        }
        let listBytes = UnsafeRawBufferPointer(rebasing: slot[list..<(list + listLength)])
        let data = UnsafeMutableRawBufferPointer(rebasing: slot[(list + listLength)...])
        let (compression, stored) = compress(source, into: data)
        return seal(
            slot, digest: hasher.digest(listBytes), storedLength: listLength + stored, rawLength: total, kind: .frame,
            compression: compression)
    }

    private func compress(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
    ) -> (ChunkCompression, Int) {
        if let n = compressor.compress(source, into: destination) { return (.zstd, n) }
        if source.count > 0 { destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: source.count) }
        return (.none, source.count)
    }

    /// Writes the header (with its CRC over header and payload); returns the record's length.
    private func seal(
        _ slot: UnsafeMutableRawBufferPointer, digest: ChunkDigest, storedLength: Int, rawLength: Int, kind: ChunkKind,
        compression: ChunkCompression
    ) -> Int {
        let header = UnsafeMutableRawBufferPointer(rebasing: slot[0..<PackFormat.recordHeaderSize])
        PackFormat.storeRecordHeader(
            into: header, digest: digest, storedLength: storedLength, rawLength: rawLength, kind: kind,
            compression: compression, crc: 0)
        let payload = UnsafeRawBufferPointer(
            rebasing: slot[PackFormat.recordHeaderSize..<(PackFormat.recordHeaderSize + storedLength)])
        let crc = PackFormat.recordCRC(header: UnsafeRawBufferPointer(header), payload: payload)
        header.storeBytes(of: crc.littleEndian, toByteOffset: 44, as: UInt32.self)
        return PackFormat.recordHeaderSize + storedLength
    }
}

/// Reads chunks back: pack record, CRC, decompression, SHA-256. One per worker.
///
/// Every chunk that leaves the store is proved by its digest; a mismatch is a `.damaged` error.
/// The last frame record read stays decompressed, so reading a frame's members in turn (as
/// restore and verify do) decompresses it once.
public final class ChunkReader {
    let store: ChunkStore
    private let decompressor = ZstdDecompressor()
    private let hasher = SHA256Hasher()
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
    /// The last frame's member list, kept so that reading frames allocates nothing.
    private var frameMembers: [FrameMember] = []

    /// The largest frame record payload: a full member list and a whole frame that did not compress.
    static let maxFramePayload =
        PackFormat.frameCountSize + PackFormat.maxFrameMembers * PackFormat.frameMemberSize
        + ZstdCompressor.bound(PackFormat.maxFrameBytes)

    init(store: ChunkStore) {
        self.store = store
        maxChunk = max(store.blockSize, IndexTree.pageBytes)
        recordBuffer = .allocate(byteCount: PackFormat.recordHeaderSize + ZstdCompressor.bound(maxChunk), alignment: 64)
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
        let pack = try store.packReader(location.pack)
        let stored = Int(location.storedLength)
        guard Int(location.rawLength) <= maxChunk, PackFormat.recordHeaderSize + stored <= recordBuffer.count else {
            throw CairnError(.damaged, "chunk \(digest) claims \(location.rawLength) bytes, more than any chunk here")
        }
        let (compression, rawLength) = try pack.readRecord(
            at: location.offset, storedLength: stored, expected: digest, into: recordBuffer, checkCRC: checksRecordCRC)
        guard rawLength <= maxChunk else {
            throw CairnError(.damaged, "chunk \(digest) in pack \(location.pack) claims \(rawLength) bytes")
        }
        let payload = UnsafeRawBufferPointer(
            rebasing: recordBuffer[PackFormat.recordHeaderSize..<PackFormat.recordHeaderSize + stored])
        let plain = try expand(
            payload, compression, into: output, rawLength: rawLength, what: "chunk \(digest)", pack: location.pack)
        return try proved(plain, digest, location.pack)
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
    func frameBytes(_ location: ChunkLocation) throws(CairnError) -> UnsafeRawBufferPointer {
        let plain = framePlain ?? .allocate(byteCount: PackFormat.maxFrameBytes, alignment: 64)
        framePlain = plain
        if let cached = cachedFrame, cached.pack == location.pack, cached.offset == location.offset {
            return cached.bytes
        }
        let record = frameRecordBuffer()
        let stored = Int(location.storedLength)
        let pack = try store.packReader(location.pack)
        let (compression, rawLength) = try pack.readRecord(
            at: location.offset, storedLength: stored, expected: nil, into: record, checkCRC: checksRecordCRC)
        let payload = UnsafeRawBufferPointer(
            rebasing: record[PackFormat.recordHeaderSize..<PackFormat.recordHeaderSize + stored])
        func context() -> String { "frame record at offset \(location.offset)" }
        let listLength = try PackFormat.frameMembers(
            payload: payload, rawLength: rawLength, context: "\(context()) in pack \(location.pack)",
            into: &frameMembers)
        // The header's digest names the member list: a damaged list is caught even unread by CRC.
        guard
            hasher.digest(UnsafeRawBufferPointer(rebasing: payload[0..<listLength]))
                == ChunkDigest(loadingFrom: UnsafeRawBufferPointer(record))
        else {
            throw CairnError(
                .damaged, "the member list of the \(context()) in pack \(location.pack) does not match its digest")
        }
        let result = try expand(
            UnsafeRawBufferPointer(rebasing: payload[listLength...]), compression, into: plain, rawLength: rawLength,
            what: context(), pack: location.pack)
        cachedFrame = (location.pack, location.offset, result)
        return result
    }

    /// Room for one whole frame record, allocated on first use. Reading into it forgets the
    /// cached frame, whose plain bytes may lie there (a frame stored uncompressed).
    func frameRecordBuffer() -> UnsafeMutableRawBufferPointer {
        cachedFrame = nil
        let record =
            frameRecord ?? .allocate(byteCount: PackFormat.recordHeaderSize + Self.maxFramePayload, alignment: 64)
        frameRecord = record
        return record
    }

    /// Decompresses (or passes through) a payload of `rawLength` plain bytes. `what` names the
    /// record in errors and is only built for one.
    private func expand(
        _ payload: UnsafeRawBufferPointer, _ compression: ChunkCompression, into output: UnsafeMutableRawBufferPointer,
        rawLength: Int, what: @autoclosure () -> String, pack: PackID
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        switch compression {
        case .none:
            guard payload.count == rawLength else {
                throw CairnError(.damaged, "\(what()) in pack \(pack) holds \(payload.count) bytes, not \(rawLength)")
            }
            return payload
        case .zstd:
            guard rawLength <= output.count else {
                throw CairnError(.damaged, "\(what()) in pack \(pack) claims \(rawLength) bytes")
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: output[0..<rawLength])
            let n: Int
            do {
                n = try decompressor.decompress(payload, into: target)
            } catch {
                throw CairnError(.damaged, "\(what()) in pack \(pack) does not decompress", cause: error.cause)
            }
            guard n == rawLength else {
                throw CairnError(.damaged, "\(what()) in pack \(pack) decompresses to \(n) bytes, not \(rawLength)")
            }
            return UnsafeRawBufferPointer(target)
        case .framed:
            throw CairnError(.damaged, "\(what()) in pack \(pack) has an invalid compression")
        }
    }

    private func proved(
        _ plain: UnsafeRawBufferPointer, _ digest: ChunkDigest, _ pack: PackID
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        guard hasher.digest(plain) == digest else {
            throw CairnError(.damaged, "chunk \(digest) in pack \(pack) does not match its digest")
        }
        return plain
    }
}
