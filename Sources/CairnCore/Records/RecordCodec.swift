/// What a record says about itself outside its stored data: its header fields and a frame's
/// member list. A sealing codec binds them to the sealed bytes (associated data), so a record
/// moved under another digest, or relabelled, does not open; `ZstdRecordCodec` ignores them.
struct RecordBinding {
    var digest: ChunkDigest
    var rawLength: Int
    var kind: ChunkKind
    /// A frame's member list (count and entries); empty for a record of one chunk.
    var memberList: UnsafeRawBufferPointer
}

/// How a record's plain bytes become its stored bytes and back: the seam where compression
/// and encryption plug in (`ZstdRecordCodec`, `SealedRecordCodec`).
///
/// The encoder and the decoder own one codec each, for their whole life, and hand it raw
/// buffers only: a codec must not allocate per record. The compression byte of the record
/// header says which transformation `seal` chose, so `open` can undo it.
protocol RecordCodec: AnyObject {
    /// The most stored bytes `seal` may write for `rawLength` plain bytes.
    func storedBound(_ rawLength: Int) -> Int

    /// Writes the stored form of `plain` into `stored` (at least `storedBound(plain.count)`
    /// bytes); returns how it was stored and how many bytes it wrote.
    func seal(
        _ plain: UnsafeRawBufferPointer, binding: RecordBinding, into stored: UnsafeMutableRawBufferPointer
    ) -> (compression: ChunkCompression, count: Int)

    /// The plain bytes of `stored`: written into `output`, which is exactly the record's raw
    /// length, or `stored` itself if it is stored as is. Throws a `.damaged` error whose message
    /// is a predicate ("does not decompress"); the decoder puts the record's name in front.
    func open(
        _ stored: UnsafeRawBufferPointer, _ compression: ChunkCompression, binding: RecordBinding,
        into output: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> UnsafeRawBufferPointer
}

/// The codec of every repository today: zstd when it makes the record smaller, else as is; a
/// large record whose samples do not shrink is stored as is without trying (`worthCompressing`).
final class ZstdRecordCodec: RecordCodec {
    private let compressor: ZstdCompressor?
    private let decompressor = ZstdDecompressor()

    /// `level` for a codec that encodes; nil for one that only decodes.
    init(level: Int32? = nil) {
        compressor = level.map(ZstdCompressor.init(level:))
    }

    func storedBound(_ rawLength: Int) -> Int { max(rawLength, ZstdCompressor.bound(rawLength)) }

    func seal(
        _ plain: UnsafeRawBufferPointer, binding: RecordBinding, into stored: UnsafeMutableRawBufferPointer
    ) -> (compression: ChunkCompression, count: Int) {
        compress(plain, into: stored)
    }

    /// zstd when it helps, else the bytes as they are.
    func compress(
        _ plain: UnsafeRawBufferPointer, into stored: UnsafeMutableRawBufferPointer
    ) -> (compression: ChunkCompression, count: Int) {
        guard let compressor else { preconditionFailure("a decoding codec was asked to encode") }
        if compressor.worthCompressing(plain), let n = compressor.compress(plain, into: stored) { return (.zstd, n) }
        if plain.count > 0 { stored.baseAddress!.copyMemory(from: plain.baseAddress!, byteCount: plain.count) }
        return (.none, plain.count)
    }

    func open(
        _ stored: UnsafeRawBufferPointer, _ compression: ChunkCompression, binding: RecordBinding,
        into output: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        try decompress(stored, compression, into: output)
    }

    /// Undoes `compress`.
    func decompress(
        _ stored: UnsafeRawBufferPointer, _ compression: ChunkCompression, into output: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        switch compression {
        case .none:
            guard stored.count == output.count else {
                throw CairnError(.damaged, "holds \(stored.count) bytes, not \(output.count)")
            }
            return stored
        case .zstd:
            let n: Int
            do throws(CairnError) {
                n = try decompressor.decompress(stored, into: output)
            } catch {
                throw CairnError(.damaged, "does not decompress", cause: error.cause)
            }
            guard n == output.count else {
                throw CairnError(.damaged, "decompresses to \(n) bytes, not \(output.count)")
            }
            return UnsafeRawBufferPointer(output)
        case .framed:
            throw CairnError(.damaged, "has an invalid compression")
        }
    }
}
