/// Opens checked records: a frame's member list against its digest, the codec (decryption and
/// decompression), the plain length, and the id of each chunk (SHA-256, or the keyed id of an
/// encrypted repository, recomputed from the plain bytes). Restore, verify,
/// gc, `cairn serve` (through `ChunkReader`) and the archive readers all decode through it.
/// One per worker: it owns its codec and hasher and allocates nothing per record.
final class RecordDecoder {
    private let codec: any RecordCodec
    /// Proves chunks: the repository's kind of id.
    private let hasher: ChunkHasher
    /// Checks a frame's member list, whose digest is always its plain SHA-256.
    private let listHasher = SHA256Hasher()
    /// Where `openProved(_:place:)` writes plain bytes, for callers without buffers of their own.
    private let output: UnsafeMutableRawBufferPointer?

    /// `outputBytes`: room for the plain bytes of the largest record the caller will open with
    /// `openProved(_:place:)` (0 when it always passes its own buffer).
    init(codec: any RecordCodec = ZstdRecordCodec(), hasher: ChunkHasher = ChunkHasher(), outputBytes: Int = 0) {
        self.codec = codec
        self.hasher = hasher
        output = outputBytes > 0 ? .allocate(byteCount: outputBytes, alignment: 64) : nil
    }

    deinit { output?.deallocate() }

    /// The record's plain bytes (a chunk, or all of a frame's members), in `output` or, for a
    /// record stored as is, in place. Its chunks are not yet proved: see `proves`. `place`
    /// names the record in errors and is only built for one.
    func open(
        _ record: EncodedRecord, into output: UnsafeMutableRawBufferPointer, place: @autoclosure () -> String = ""
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        let header = record.header
        // The header's digest names the member list: a damaged list is caught even unread by CRC.
        if header.isFrame, listHasher.digest(record.memberList) != header.digest {
            throw CairnError(.damaged, "the member list of the frame record\(place()) does not match its digest")
        }
        guard header.rawLength <= output.count else {
            throw CairnError(.damaged, "\(EncodedRecord.subject(header))\(place()) claims \(header.rawLength) bytes")
        }
        do throws(CairnError) {
            let binding = RecordBinding(
                digest: header.digest, rawLength: header.rawLength, kind: header.kind, memberList: record.memberList)
            return try codec.open(
                record.data, header.compression, binding: binding,
                into: UnsafeMutableRawBufferPointer(rebasing: output[0..<header.rawLength]))
        } catch {
            throw CairnError(
                error.code, "\(EncodedRecord.subject(header))\(place()) \(error.message)", cause: error.cause)
        }
    }

    /// Opens the record and proves every chunk in it by its digest: a frame is used whole or not
    /// at all, so verify, restore and import of an archive agree on what it holds.
    func openProved(
        _ record: EncodedRecord, into output: UnsafeMutableRawBufferPointer, place: @autoclosure () -> String = ""
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        let plain = try open(record, into: output, place: place())
        for member in record.members where !proves(Self.chunk(member, in: plain), member.digest) {
            throw CairnError(
                .damaged,
                record.header.isFrame
                    ? "chunk \(member.digest) in a frame record of \(record.members.count) chunks\(place()) does not match its digest"
                    : "chunk \(member.digest)\(place()) does not match its digest")
        }
        return plain
    }

    /// `openProved` into the decoder's own buffer. Valid until the next call.
    func openProved(_ record: EncodedRecord, place: @autoclosure () -> String = "") throws(CairnError)
        -> UnsafeRawBufferPointer
    {
        guard let output else { preconditionFailure("a RecordDecoder made without an output buffer") }
        return try openProved(record, into: output, place: place())
    }

    /// Whether `plain` hashes to `digest`.
    func proves(_ plain: UnsafeRawBufferPointer, _ digest: ChunkDigest) -> Bool {
        hasher.digest(plain) == digest
    }

    /// A member's bytes within a record's plain bytes.
    static func chunk(_ member: FrameMember, in plain: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: plain[member.offset..<member.offset + member.rawLength])
    }
}
