/// A pack record laid out in memory (its header, then exactly its stored payload), with its
/// header read and, for a frame, its member list known to be well formed.
///
/// The one currency between the codec and the stores: `ChunkEncoder` returns it, the chunk
/// store, pack writer and archive writer take it, and `EncodedRecord(checking:)` makes one from
/// untrusted bytes (a pack read back, an archive's chunk record). It points into its caller's
/// buffer and is valid as long as that buffer is.
struct EncodedRecord {
    let bytes: UnsafeRawBufferPointer
    let header: RecordHeader
    /// Bytes of a frame's member list (count and entries) at the start of its payload; 0 for a
    /// plain record.
    let listLength: Int

    /// Made by the encoder, which has just written `bytes`.
    init(encoded bytes: UnsafeRawBufferPointer, header: RecordHeader, listLength: Int) {
        self.bytes = bytes
        self.header = header
        self.listLength = listLength
    }

    /// Checks the record in `bytes`, which must be exactly its header and payload: the header
    /// is whole and names a known kind and compression, the stored length matches, the raw
    /// length is at most `maxChunk` (a frame's at most `PackFormat.maxFrameBytes`), a frame's
    /// member list is well formed, and (if `checkCRC`) the CRC holds.
    ///
    /// Every length is bounded before it is used, so any bytes at all are safe to pass. A CRC
    /// mismatch is `.damaged`; anything else malformed is `malformed` (`.damaged` in a pack,
    /// `.badArchive` in an archive). `place` (" in pack … at offset …", or empty) names the
    /// record in errors and is only built for one.
    init(
        checking bytes: UnsafeRawBufferPointer, checkCRC: Bool = true, maxChunk: Int = PackFormat.maxRecordPayload,
        malformed: CairnError.Code = .damaged, place: @autoclosure () -> String = ""
    ) throws(CairnError) {
        guard bytes.count >= RecordHeader.size else {
            throw CairnError(
                malformed, "a record of \(bytes.count) bytes\(place()) is shorter than its 48-byte header")
        }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[RecordHeader.size...])
        if checkCRC {
            let stored = UInt32(
                littleEndian: bytes.loadUnaligned(fromByteOffset: RecordHeader.crcOffset, as: UInt32.self))
            guard RecordHeader.crc(header: bytes, payload: payload) == stored else {
                // A frame's digest names its member list, which means nothing to a reader.
                let subject =
                    bytes[40] == ChunkKind.frame.rawValue ? "frame record" : "chunk \(ChunkDigest(loadingFrom: bytes))"
                throw CairnError(.damaged, "\(subject)\(place()) fails its CRC")
            }
        }
        guard let header = RecordHeader(parsing: bytes) else {
            throw CairnError(malformed, "the record\(place()) has an unknown kind or compression")
        }
        guard header.storedLength == payload.count,
            header.rawLength <= (header.isFrame ? PackFormat.maxFrameBytes : maxChunk)
        else {
            throw CairnError(
                malformed,
                "\(Self.subject(header))\(place()) has inconsistent lengths (\(header.storedLength) stored, \(header.rawLength) raw)"
            )
        }
        self.bytes = bytes
        self.header = header
        listLength =
            header.isFrame
            ? try RecordMembers.checkList(payload: payload, rawLength: header.rawLength, code: malformed, place: place)
            : 0
    }

    /// "chunk DIGEST" or "frame record", for messages.
    static func subject(_ header: RecordHeader) -> String {
        header.isFrame ? "frame record" : "chunk \(header.digest)"
    }

    /// Everything after the header.
    var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[RecordHeader.size...]) }

    /// A frame's member list (count and entries), whose SHA-256 is the header's digest.
    var memberList: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[RecordHeader.size..<(RecordHeader.size + listLength)])
    }

    /// The stored (compressed, or plain) data after any member list.
    var data: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[(RecordHeader.size + listLength)...]) }

    /// The chunks this record carries.
    var members: RecordMembers {
        guard header.isFrame else {
            return RecordMembers(
                single: FrameMember(digest: header.digest, rawLength: header.rawLength, kind: header.kind, offset: 0))
        }
        let start = RecordHeader.size + RecordMembers.countSize
        return RecordMembers(
            frameEntries: UnsafeRawBufferPointer(rebasing: bytes[start..<(RecordHeader.size + listLength)]))
    }
}
