/// Checks and decodes the pack record inside an index page or chunk record: CRC, lengths,
/// decompression, SHA-256. Owns its buffers and contexts; allocates nothing per chunk.
final class ArchiveChunkDecoder {
    struct Header {
        var digest: ChunkDigest
        var storedLength: Int
        var rawLength: Int
        var kind: ChunkKind
        var compression: ChunkCompression
    }

    let maxRaw: Int
    private let decompressor = ZstdDecompressor()
    private let hasher = SHA256Hasher()
    private let output: UnsafeMutableRawBufferPointer

    init(chunkBlockSize: Int) {
        maxRaw = max(chunkBlockSize, IndexTree.pageBytes)
        output = .allocate(byteCount: maxRaw, alignment: 64)
    }

    deinit { output.deallocate() }

    /// The record's header, after its CRC and lengths are checked.
    func header(_ body: UnsafeRawBufferPointer) throws(CairnError) -> Header {
        guard body.count >= PackFormat.recordHeaderSize else {
            throw CairnError(.badArchive, "a chunk record of \(body.count) bytes is shorter than its 48-byte header")
        }
        let head = UnsafeRawBufferPointer(rebasing: body[0..<PackFormat.recordHeaderSize])
        let digest = ChunkDigest(loadingFrom: head)
        let stored = Int(UInt32(littleEndian: head.loadUnaligned(fromByteOffset: 32, as: UInt32.self)))
        let raw = Int(UInt32(littleEndian: head.loadUnaligned(fromByteOffset: 36, as: UInt32.self)))
        let crc = UInt32(littleEndian: head.loadUnaligned(fromByteOffset: 44, as: UInt32.self))
        let payload = UnsafeRawBufferPointer(rebasing: body[PackFormat.recordHeaderSize...])
        guard PackFormat.recordCRC(header: head, payload: payload) == crc else {
            throw CairnError(.damaged, "chunk record \(digest) fails its CRC")
        }
        guard stored == payload.count, raw <= maxRaw, let kind = ChunkKind(rawValue: head[40]),
            let compression = ChunkCompression(rawValue: head[41])
        else {
            throw CairnError(.badArchive, "chunk record \(digest) has inconsistent lengths or an unknown kind")
        }
        return Header(digest: digest, storedLength: stored, rawLength: raw, kind: kind, compression: compression)
    }

    /// The chunk's plain bytes, proved by its digest. Valid until the next call.
    func decode(_ body: UnsafeRawBufferPointer, _ header: Header) throws(CairnError) -> UnsafeRawBufferPointer {
        let payload = UnsafeRawBufferPointer(rebasing: body[PackFormat.recordHeaderSize...])
        let plain: UnsafeRawBufferPointer
        switch header.compression {
        case .none:
            plain = payload
        case .zstd:
            let target = UnsafeMutableRawBufferPointer(rebasing: output[0..<header.rawLength])
            let n: Int
            do throws(CairnError) {
                n = try decompressor.decompress(payload, into: target)
            } catch {
                throw CairnError(.damaged, "chunk \(header.digest) does not decompress", cause: error.cause)
            }
            guard n == header.rawLength else {
                throw CairnError(.damaged, "chunk \(header.digest) decompresses to \(n) bytes, not \(header.rawLength)")
            }
            plain = UnsafeRawBufferPointer(target)
        case .framed:
            throw CairnError(.badArchive, "chunk record \(header.digest) has an invalid compression")
        }
        guard plain.count == header.rawLength, hasher.digest(plain) == header.digest else {
            throw CairnError(.damaged, "chunk \(header.digest) does not match its digest")
        }
        return plain
    }
}
