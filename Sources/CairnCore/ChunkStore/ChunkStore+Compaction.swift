/// Merging chunk index segments, so lookups stay one binary search however many nights ran.
///
/// Each backup adds a segment; lookups probe every segment, newest first. Once there are more
/// than `compactionThreshold`, they are merged into one by a streaming k-way merge (memory: one
/// cursor per segment plus the pack table), written durably before the old ones are removed.
/// The merge runs twice, once to count the fan-out and once to write, so the segment is written
/// front to back through the one `IndexSegmentEncoder`.
/// It runs only under the exclusive repository lock, so no other process has the old files open.
extension ChunkStore {
    public static let compactionThreshold = 8

    public var needsCompaction: Bool { indexSegments.count > Self.compactionThreshold }

    /// Merges every current segment into one. Returns the number of segments merged.
    @discardableResult
    public func compactIndex() throws(CairnError) -> Int {
        let inputs = indexSegments
        guard inputs.count > 1 else { return 0 }
        var seen = Set<PackID>()
        var packs: [PackID] = []
        for segment in inputs {
            for pack in segment.packs where seen.insert(pack).inserted { packs.append(pack) }
        }
        // Two passes over the same merge: the first counts entries per first byte (the fan-out
        // precedes the entries), the second writes them.
        var counts = [Int](repeating: 0, count: 256)
        try Self.merge(inputs) { (digest, _) throws(CairnError) in counts[Int(digest.prefix >> 56)] += 1 }
        let key = Self.newSegmentKey()
        let object = try storage.stage(key)
        do throws(CairnError) {
            var encoder = try IndexSegmentEncoder(packs: packs, fanoutCounts: counts, into: object)
            try Self.merge(inputs) { (digest, location) throws(CairnError) in try encoder.append(digest, location) }
            try encoder.finish()
            try storage.commit([object])
        } catch {
            storage.abandon(object)
            throw error
        }
        let merged = try IndexSegment(key: key, in: storage)
        replaceSegments(inputs, with: merged)
        try storage.delete(inputs.map(\.key))
        return inputs.count
    }

    /// Calls `body` for every digest of `segments` once, in ascending order, with its location in
    /// the newest segment that has it. Memory: one cursor per segment.
    private static func merge(
        _ segments: [IndexSegment], _ body: (ChunkDigest, ChunkLocation) throws(CairnError) -> Void
    ) throws(CairnError) {
        // Newest segment first wins on equal digests.
        var cursors = segments.indices.reversed().map { (segment: segments[$0], position: 0) }
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
            guard let b = best else { return }
            let digest = cursors[b].segment.digest(at: cursors[b].position)
            guard let location = cursors[b].segment.location(at: cursors[b].position) else {
                throw CairnError(
                    .damaged, "chunk index segment \(cursors[b].segment.name) names a pack it does not list")
            }
            try body(digest, location)
            for i in cursors.indices where cursors[i].position < cursors[i].segment.entryCount {
                if cursors[i].segment.digest(at: cursors[i].position) == digest { cursors[i].position += 1 }
            }
        }
    }
}
