/// Turns blocks into pack records: hash known, seal by the codec (compress if it helps), CRC.
/// One per worker.
///
/// Owns its codec for its whole life and writes into a caller-provided slot, so encoding
/// allocates nothing. Returns the record with its header and members, so nothing downstream
/// (chunk store, pack writer) reads them back from the bytes it just wrote.
final class ChunkEncoder {
    private let codec: any RecordCodec
    private let hasher = SHA256Hasher()
    /// Where a frame's members are gathered when they do not lie back to back in memory.
    private var gatherBuffer: UnsafeMutableRawBufferPointer?

    init(level: Int32) {
        codec = ZstdRecordCodec(level: level)
    }

    /// An encoder whose records are sealed by `codec` (`ChunkStore.makeEncoder()`).
    init(codec: any RecordCodec) {
        self.codec = codec
    }

    deinit {
        gatherBuffer?.deallocate()
    }

    /// Bytes a record slot needs for a chunk of `rawLength` bytes, sealed or not.
    static func slotSize(rawLength: Int) -> Int {
        RecordHeader.size + max(rawLength, ZstdCompressor.bound(rawLength)) + SealedRecordCodec.overhead
    }

    /// Bytes a frame record of `members` members and `rawLength` plain bytes may need.
    static func frameSlotSize(members: Int, rawLength: Int) -> Int {
        RecordHeader.size + RecordMembers.countSize + members * RecordMembers.entrySize
            + max(rawLength, ZstdCompressor.bound(rawLength)) + SealedRecordCodec.overhead
    }

    /// Encodes `chunk` into `slot` (at least `slotSize`).
    func encode(
        _ chunk: UnsafeRawBufferPointer, digest: ChunkDigest, kind: ChunkKind, into slot: UnsafeMutableRawBufferPointer
    ) -> EncodedRecord {
        let binding = RecordBinding(
            digest: digest, rawLength: chunk.count, kind: kind, memberList: .init(start: nil, count: 0))
        let (compression, stored) = codec.seal(
            chunk, binding: binding, into: UnsafeMutableRawBufferPointer(rebasing: slot[RecordHeader.size...]))
        let header = RecordHeader(
            digest: digest, storedLength: stored, rawLength: chunk.count, kind: kind, compression: compression)
        return seal(slot, header, listLength: 0)
    }

    /// Encodes `count` data blocks as one frame record into `slot` (which must hold
    /// `frameSlotSize`); `member(i)` gives the i-th block and its digest. Members that lie back
    /// to back in memory are compressed where they are; others are gathered first.
    func encodeFrame(
        count: Int, into slot: UnsafeMutableRawBufferPointer,
        member: (Int) -> (bytes: UnsafeRawBufferPointer, digest: ChunkDigest)
    ) -> EncodedRecord {
        precondition(count >= 1 && count <= PackFormat.maxFrameMembers)
        let list = RecordHeader.size
        let listLength = RecordMembers.countSize + count * RecordMembers.entrySize
        slot.storeBytes(of: UInt32(count).littleEndian, toByteOffset: list, as: UInt32.self)
        let entries = UnsafeMutableRawBufferPointer(
            rebasing: slot[(list + RecordMembers.countSize)..<(list + listLength)])
        var total = 0
        var contiguous = true
        var start: UnsafeRawPointer?
        for i in 0..<count {
            let (bytes, digest) = member(i)
            RecordMembers.store(digest, rawLength: bytes.count, kind: .data, at: i, into: entries)
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
        let listDigest = hasher.digest(listBytes)
        let binding = RecordBinding(digest: listDigest, rawLength: total, kind: .frame, memberList: listBytes)
        let (compression, stored) = codec.seal(
            source, binding: binding, into: UnsafeMutableRawBufferPointer(rebasing: slot[(list + listLength)...]))
        let header = RecordHeader(
            digest: listDigest, storedLength: listLength + stored, rawLength: total, kind: .frame,
            compression: compression)
        return seal(slot, header, listLength: listLength)
    }

    /// Writes the header (with its CRC over header and payload).
    private func seal(_ slot: UnsafeMutableRawBufferPointer, _ header: RecordHeader, listLength: Int) -> EncodedRecord {
        header.store(into: slot)
        RecordHeader.seal(slot, storedLength: header.storedLength)
        var sealed = header
        sealed.crc = UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: RecordHeader.crcOffset, as: UInt32.self))
        return EncodedRecord(
            encoded: UnsafeRawBufferPointer(rebasing: slot[0..<header.recordLength]), header: sealed,
            listLength: listLength)
    }
}
