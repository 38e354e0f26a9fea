extension ChunkReader {
    /// A chunk's pack record exactly as stored (48-byte header and compressed payload), checked
    /// (CRC, lengths, a frame's member list) but not decompressed: archives copy records as they
    /// are. For a member of a frame record, the whole frame record, once its member list is seen
    /// to hold the chunk where the index says. The record's `members` are the chunks it carries
    /// (the one chunk of a plain record, or every member of a frame). Valid until the next read.
    func readStored(_ digest: ChunkDigest) throws(CairnError) -> EncodedRecord {
        guard let location = store.lookup(digest) else {
            throw store.missingChunk(digest)
        }
        let stored = Int(location.storedLength)
        let pack = try store.packReader(location.pack)
        guard let frameOffset = location.frameOffset else {
            guard RecordHeader.size + stored <= recordBuffer.count else {
                throw CairnError(.damaged, "chunk \(digest) claims \(stored) stored bytes, more than any chunk here")
            }
            return try pack.readRecord(
                at: location.offset, storedLength: stored, expected: digest, into: recordBuffer, maxChunk: maxChunk)
        }
        let record = try pack.readRecord(
            at: location.offset, storedLength: stored, expected: nil, into: frameRecordBuffer())
        guard
            record.members.contains(where: {
                $0.digest == digest && $0.offset == Int(frameOffset) && $0.rawLength == Int(location.rawLength)
            })
        else {
            throw CairnError(
                .damaged,
                "the frame record at offset \(location.offset) in pack \(location.pack) does not hold chunk \(digest) where the index says: rebuild the index with `cairn rebuild-index`"
            )
        }
        return record
    }
}
