/// Merging chunk index segments, so lookups stay one binary search however many nights ran.
///
/// Each backup adds a segment; lookups probe every segment, newest first. Once there are more
/// than `compactionThreshold`, they are merged into one by a streaming k-way merge (memory: one
/// cursor per segment plus the pack table), written durably before the old ones are removed.
/// It runs only under the exclusive repository lock, so no other process has the old files open.
extension ChunkStore {
    public static let compactionThreshold = 8

    public var needsCompaction: Bool { indexSegments.count > Self.compactionThreshold }

    /// Merges every current segment into one. Returns the number of segments merged.
    @discardableResult
    public func compactIndex() throws(CairnError) -> Int {
        let inputs = indexSegments
        guard inputs.count > 1 else { return 0 }
        var packOrdinal: [PackID: UInt32] = [:]
        var packs: [PackID] = []
        for segment in inputs {
            for pack in segment.packs where packOrdinal[pack] == nil {
                packOrdinal[pack] = UInt32(packs.count)
                packs.append(pack)
            }
        }
        let path = "\(root)/index/\(Self.newSegmentName())"
        let temporary = FileSystem.temporaryName(for: path)
        let file = try File.open(temporary, .createNew)
        do throws(CairnError) {
            let writer = SegmentStreamWriter(file: file, packs: packs)
            try writer.begin()
            // Newest segment first wins on equal digests.
            var cursors = inputs.indices.reversed().map { (segment: inputs[$0], position: 0) }
            while true {
                var best: Int?
                for (i, c) in cursors.enumerated() where c.position < c.segment.entryCount {
                    if let b = best {
                        if c.segment.digest(at: c.position) < cursors[b].segment.digest(at: cursors[b].position) {
                            best = i
                        }
                    } else {
                        best = i
                    }
                }
                guard let b = best else { break }
                let digest = cursors[b].segment.digest(at: cursors[b].position)
                guard let location = cursors[b].segment.location(at: cursors[b].position) else {
                    throw CairnError(
                        .damaged, "chunk index segment \(cursors[b].segment.name) names a pack it does not list")
                }
                try writer.append(digest, ordinal: packOrdinal[location.pack]!, location: location)
                for i in cursors.indices where cursors[i].position < cursors[i].segment.entryCount {
                    if cursors[i].segment.digest(at: cursors[i].position) == digest { cursors[i].position += 1 }
                }
            }
            try writer.finish()
            try file.sync()
        } catch {
            try? FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.rename(temporary, to: path)
        try FileSystem.syncDirectory("\(root)/index")
        let merged = try IndexSegment(path: path)
        try replaceSegments(inputs, with: merged)
        for segment in inputs { try FileSystem.remove(segment.path) }
        try FileSystem.syncDirectory("\(root)/index")
        return inputs.count
    }
}

/// Writes a segment entry by entry, then patches the header and fan-out and appends the CRC.
final class SegmentStreamWriter {
    private let file: File
    private let packs: [PackID]
    private var buffer = ByteWriter(capacity: 1 << 20)
    private var offset: UInt64 = 0
    private var counts = [Int](repeating: 0, count: 256)
    private var entryCount: UInt64 = 0
    private var fanoutOffset: UInt64 = 0

    init(file: File, packs: [PackID]) {
        self.file = file
        self.packs = packs
    }

    func begin() throws(CairnError) {
        buffer.append(IndexSegment.magic)
        buffer.le(IndexSegment.version)
        buffer.le(UInt32(packs.count))
        buffer.le(UInt64(0))
        buffer.le(UInt64(0))
        for p in packs { buffer.append(p.bytes) }
        fanoutOffset = UInt64(buffer.count)
        buffer.zeros(IndexSegment.fanoutSize)
        try flush()
    }

    func append(_ digest: ChunkDigest, ordinal: UInt32, location: ChunkLocation) throws(CairnError) {
        buffer.append(digest)
        buffer.le(ordinal)
        buffer.le(UInt32(location.offset))
        buffer.le(location.storedLength)
        buffer.le(location.rawLength)
        buffer.le(location.frameOffset ?? ChunkLocation.notFramed)
        counts[Int(digest.prefix >> 56)] += 1
        entryCount += 1
        if buffer.count >= 1 << 20 { try flush() }
    }

    func finish() throws(CairnError) {
        try flush()
        var count = ByteWriter()
        count.le(entryCount)
        try file.write(count.bytes, at: 16)
        var fanout = ByteWriter(capacity: IndexSegment.fanoutSize)
        var running = 0
        for c in counts {
            running += c
            fanout.le(UInt32(running))
        }
        try file.write(fanout.bytes, at: fanoutOffset)
        // CRC of everything written, read back in order.
        var crc: UInt32 = 0
        var position: UInt64 = 0
        while position < offset {
            let chunk = try file.readBytes(count: Int(min(4 << 20, offset - position)), at: position)
            crc = CRC32.checksum(chunk, seed: crc)
            position += UInt64(chunk.count)
        }
        var footer = ByteWriter()
        footer.le(crc)
        footer.le(UInt32(0))
        footer.append(IndexSegment.footerMagic)
        try file.write(footer.bytes, at: offset)
    }

    private func flush() throws(CairnError) {
        guard buffer.count > 0 else { return }
        try file.write(buffer.bytes, at: offset)
        offset += UInt64(buffer.count)
        buffer = ByteWriter(capacity: 1 << 20)
    }
}
