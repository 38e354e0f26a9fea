extension ChunkReader {
    /// A chunk's pack record exactly as stored (48-byte header and compressed payload), its CRC
    /// checked but not decompressed: archives copy records as they are. Valid until the next read.
    func readStored(_ digest: ChunkDigest) throws(CairnError) -> UnsafeRawBufferPointer {
        guard let location = store.lookup(digest) else {
            throw CairnError(.damaged, "chunk \(digest) is missing from the repository")
        }
        let stored = Int(location.storedLength)
        guard PackFormat.recordHeaderSize + stored <= recordBuffer.count else {
            throw CairnError(.damaged, "chunk \(digest) claims \(stored) stored bytes, more than any chunk here")
        }
        let pack = try store.packReader(location.pack)
        _ = try pack.readRecord(at: location.offset, storedLength: stored, expected: digest, into: recordBuffer)
        return UnsafeRawBufferPointer(rebasing: recordBuffer[0..<PackFormat.recordHeaderSize + stored])
    }
}
