/// Checks and decodes the pack record inside an index page or chunk record: CRC, lengths,
/// decompression, SHA-256. Owns its buffers and contexts; allocates nothing per chunk.
///
/// A chunk record holds one chunk, or a frame record (several data chunks compressed together,
/// docs/ARCHIVE-FORMAT.md). Either way `members` lists the chunks the record carries and where
/// each lies in the record's plain bytes, so callers treat both alike. A frame is used whole or
/// not at all: if any member fails its digest, the record is damaged and none of its chunks is
/// handed out, so verify, restore and import agree on what an archive holds.
final class ArchiveChunkDecoder {
    struct Header {
        /// The chunk's digest; for a frame record, the SHA-256 of its member list.
        var digest: ChunkDigest
        var storedLength: Int
        var rawLength: Int
        var kind: ChunkKind
        var compression: ChunkCompression

        var isFrame: Bool { kind == .frame }
    }

    let maxRaw: Int
    private let decompressor = ZstdDecompressor()
    private let hasher = SHA256Hasher()
    private let output: UnsafeMutableRawBufferPointer
    /// The chunks of the record last passed to `header` or `decode`: one for a plain record, each
    /// member for a frame record (offsets into its plain bytes).
    private(set) var members: [FrameMember] = []

    init(chunkBlockSize: Int) {
        maxRaw = max(chunkBlockSize, IndexTree.pageBytes)
        output = .allocate(byteCount: max(maxRaw, PackFormat.maxFrameBytes), alignment: 64)
        members.reserveCapacity(PackFormat.maxFrameMembers)
    }

    deinit { output.deallocate() }

    /// The record's header, after its CRC and lengths (and a frame's member list) are checked.
    /// Fills `members`.
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
        let isFrame = head[40] == ChunkKind.frame.rawValue
        guard PackFormat.recordCRC(header: head, payload: payload) == crc else {
            // A frame's digest names its member list, which means nothing to a reader.
            throw CairnError(
                .damaged, isFrame ? "a frame record fails its CRC" : "chunk record \(digest) fails its CRC")
        }
        guard stored == payload.count, raw <= (isFrame ? PackFormat.maxFrameBytes : maxRaw),
            let kind = ChunkKind(rawValue: head[40]), let compression = ChunkCompression(rawValue: head[41]),
            compression != .framed
        else {
            throw CairnError(
                .badArchive, "chunk record \(digest) has inconsistent lengths, an unknown kind or compression")
        }
        let header = Header(digest: digest, storedLength: stored, rawLength: raw, kind: kind, compression: compression)
        _ = try readMembers(payload, header)
        return header
    }

    /// The record's plain bytes (a chunk, or all of a frame's members), every chunk in it proved
    /// by its digest; `members` says where each lies. Valid until the next call.
    func decode(_ body: UnsafeRawBufferPointer, _ header: Header) throws(CairnError) -> UnsafeRawBufferPointer {
        let payload = UnsafeRawBufferPointer(rebasing: body[PackFormat.recordHeaderSize...])
        let listLength = try readMembers(payload, header)
        // Built only for an error message: nothing is allocated per chunk.
        func what() -> String {
            header.isFrame ? "frame record of \(members.count) chunks" : "chunk \(header.digest)"
        }
        if header.isFrame {
            let list = UnsafeRawBufferPointer(rebasing: payload[0..<listLength])
            guard hasher.digest(list) == header.digest else {
                throw CairnError(.damaged, "the member list of a \(what()) does not match its digest")
            }
        }
        let data = UnsafeRawBufferPointer(rebasing: payload[listLength...])
        let plain: UnsafeRawBufferPointer
        switch header.compression {
        case .none:
            plain = data
        case .zstd:
            let target = UnsafeMutableRawBufferPointer(rebasing: output[0..<header.rawLength])
            let n: Int
            do throws(CairnError) {
                n = try decompressor.decompress(data, into: target)
            } catch {
                throw CairnError(.damaged, "\(what()) does not decompress", cause: error.cause)
            }
            guard n == header.rawLength else {
                throw CairnError(.damaged, "\(what()) decompresses to \(n) bytes, not \(header.rawLength)")
            }
            plain = UnsafeRawBufferPointer(target)
        case .framed:
            throw CairnError(.badArchive, "chunk record \(header.digest) has an invalid compression")
        }
        guard plain.count == header.rawLength else {
            throw CairnError(.damaged, "\(what()) holds \(plain.count) bytes, not \(header.rawLength)")
        }
        for member in members where hasher.digest(chunk(member, in: plain)) != member.digest {
            throw CairnError(
                .damaged,
                header.isFrame
                    ? "chunk \(member.digest) in a \(what()) does not match its digest"
                    : "chunk \(header.digest) does not match its digest")
        }
        return plain
    }

    /// A member's bytes within the plain bytes `decode` returned.
    func chunk(_ member: FrameMember, in plain: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: plain[member.offset..<member.offset + member.rawLength])
    }

    /// Fills `members` from a frame's member list (or with the one chunk of a plain record);
    /// returns the list's length in the payload (0 for a plain record).
    private func readMembers(_ payload: UnsafeRawBufferPointer, _ header: Header) throws(CairnError) -> Int {
        guard header.isFrame else {
            members.removeAll(keepingCapacity: true)
            members.append(
                FrameMember(digest: header.digest, rawLength: header.rawLength, kind: header.kind, offset: 0))
            return 0
        }
        do throws(CairnError) {
            return try PackFormat.frameMembers(
                payload: payload, rawLength: header.rawLength, context: "frame record", into: &members)
        } catch {
            throw CairnError(.badArchive, error.message)
        }
    }
}
