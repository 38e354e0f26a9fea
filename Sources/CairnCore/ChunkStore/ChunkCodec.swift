/// Turns a block into a pack record: hash known, compress if it helps, CRC. One per worker.
///
/// Owns its zstd context for its whole life; writes into a caller-provided slot, so encoding
/// allocates nothing.
final class ChunkEncoder {
    private let compressor: ZstdCompressor

    init(level: Int32) {
        compressor = ZstdCompressor(level: level)
    }

    /// Bytes a record slot needs for a chunk of `rawLength` bytes.
    static func slotSize(rawLength: Int) -> Int {
        PackFormat.recordHeaderSize + max(rawLength, ZstdCompressor.bound(rawLength))
    }

    /// Encodes `chunk` into `slot`; returns the record's length (header plus stored bytes).
    func encode(
        _ chunk: UnsafeRawBufferPointer, digest: ChunkDigest, kind: ChunkKind, into slot: UnsafeMutableRawBufferPointer
    ) -> Int {
        let payload = UnsafeMutableRawBufferPointer(rebasing: slot[PackFormat.recordHeaderSize...])
        let compression: ChunkCompression
        let stored: Int
        if let n = compressor.compress(chunk, into: payload) {
            compression = .zstd
            stored = n
        } else {
            if chunk.count > 0 { payload.baseAddress!.copyMemory(from: chunk.baseAddress!, byteCount: chunk.count) }
            compression = .none
            stored = chunk.count
        }
        let header = UnsafeMutableRawBufferPointer(rebasing: slot[0..<PackFormat.recordHeaderSize])
        PackFormat.storeRecordHeader(
            into: header, digest: digest, storedLength: stored, rawLength: chunk.count, kind: kind,
            compression: compression,
            crc: 0)
        let crc = PackFormat.recordCRC(
            header: UnsafeRawBufferPointer(header), payload: UnsafeRawBufferPointer(rebasing: payload[0..<stored]))
        header.storeBytes(of: crc.littleEndian, toByteOffset: 44, as: UInt32.self)
        return PackFormat.recordHeaderSize + stored
    }
}

/// Reads chunks back: pack record, CRC, decompression, SHA-256. One per worker.
///
/// Every chunk that leaves the store is proved by its digest; a mismatch is a `.damaged` error.
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

    init(store: ChunkStore) {
        self.store = store
        maxChunk = max(store.blockSize, IndexTree.pageBytes)
        recordBuffer = .allocate(byteCount: PackFormat.recordHeaderSize + ZstdCompressor.bound(maxChunk), alignment: 64)
        output = .allocate(byteCount: maxChunk, alignment: 64)
    }

    deinit {
        recordBuffer.deallocate()
        output.deallocate()
    }

    /// Reads, checks and decompresses one chunk. The bytes are valid until the next call.
    func read(_ digest: ChunkDigest) throws(CairnError) -> UnsafeRawBufferPointer {
        guard let location = store.lookup(digest) else {
            throw CairnError(.damaged, "chunk \(digest) is missing from the repository")
        }
        return try read(digest, at: location)
    }

    func read(_ digest: ChunkDigest, at location: ChunkLocation) throws(CairnError) -> UnsafeRawBufferPointer {
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
        let plain: UnsafeRawBufferPointer
        switch compression {
        case .none:
            plain = payload
        case .zstd:
            let target = UnsafeMutableRawBufferPointer(rebasing: output[0..<rawLength])
            let n: Int
            do {
                n = try decompressor.decompress(payload, into: target)
            } catch {
                throw CairnError(
                    .damaged, "chunk \(digest) in pack \(location.pack) does not decompress", cause: error.cause)
            }
            guard n == rawLength else {
                throw CairnError(
                    .damaged, "chunk \(digest) in pack \(location.pack) decompresses to \(n) bytes, not \(rawLength)")
            }
            plain = UnsafeRawBufferPointer(target)
        }
        guard hasher.digest(plain) == digest else {
            throw CairnError(.damaged, "chunk \(digest) in pack \(location.pack) does not match its digest")
        }
        return plain
    }
}
