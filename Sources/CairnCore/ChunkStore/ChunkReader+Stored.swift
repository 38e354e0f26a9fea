extension ChunkReader {
    /// A chunk's pack record exactly as stored (48-byte header and compressed payload), its CRC
    /// checked but not decompressed: archives copy records as they are. For a member of a frame
    /// record, the whole frame record, once its member list is seen to hold the chunk where the
    /// index says. `members` gets the chunks the record carries (the one chunk of a plain
    /// record, or every member of a frame). Valid until the next read.
    func readStored(_ digest: ChunkDigest, members: inout [FrameMember]) throws(CairnError) -> UnsafeRawBufferPointer {
        guard let location = store.lookup(digest) else {
            throw store.missingChunk(digest)
        }
        let stored = Int(location.storedLength)
        let pack = try store.packReader(location.pack)
        guard let frameOffset = location.frameOffset else {
            guard PackFormat.recordHeaderSize + stored <= recordBuffer.count else {
                throw CairnError(.damaged, "chunk \(digest) claims \(stored) stored bytes, more than any chunk here")
            }
            let (_, rawLength) = try pack.readRecord(
                at: location.offset, storedLength: stored, expected: digest, into: recordBuffer)
            guard let kind = ChunkKind(rawValue: recordBuffer[40]) else {
                throw CairnError(.damaged, "chunk \(digest) in pack \(location.pack) has an unknown kind")
            }
            members.removeAll(keepingCapacity: true)
            members.append(FrameMember(digest: digest, rawLength: rawLength, kind: kind, offset: 0))
            return UnsafeRawBufferPointer(rebasing: recordBuffer[0..<PackFormat.recordHeaderSize + stored])
        }
        let record = frameRecordBuffer()
        let context = "frame record at offset \(location.offset) in pack \(location.pack)"
        guard PackFormat.recordHeaderSize + stored <= record.count else {
            throw CairnError(.damaged, "the \(context) claims \(stored) stored bytes, more than any frame")
        }
        let (_, rawLength) = try pack.readRecord(
            at: location.offset, storedLength: stored, expected: nil, into: record)
        let payload = UnsafeRawBufferPointer(
            rebasing: record[PackFormat.recordHeaderSize..<PackFormat.recordHeaderSize + stored])
        _ = try PackFormat.frameMembers(payload: payload, rawLength: rawLength, context: context, into: &members)
        guard
            members.contains(where: {
                $0.digest == digest && $0.offset == Int(frameOffset) && $0.rawLength == Int(location.rawLength)
            })
        else {
            throw CairnError(
                .damaged,
                "the \(context) does not hold chunk \(digest) where the index says: rebuild the index with `cairn rebuild-index`"
            )
        }
        return UnsafeRawBufferPointer(rebasing: record[0..<PackFormat.recordHeaderSize + stored])
    }
}
