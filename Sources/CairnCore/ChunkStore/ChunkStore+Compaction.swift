/// Merging chunk index segments, so lookups stay one binary search however many nights ran.
///
/// Each backup adds a segment; lookups probe every segment, newest first. Once there are more
/// than `compactionThreshold`, they are merged into one by a streaming k-way merge (memory: one
/// cursor per segment plus the pack table), written durably before the old ones are removed.
/// The merge runs twice, once to count the fan-out and once to write, so the segment is written
/// front to back through the one `IndexSegmentEncoder`.
/// On a local directory it runs only under the exclusive repository lock; on an object store a
/// backup may hold copies of the old segments in its cache, which stay valid (every entry they
/// name is in the merged one unless gc deleted its pack after the backup's leases were gone).
extension ChunkStore {
    public static let compactionThreshold = 8

    public var needsCompaction: Bool { indexSegments.count > Self.compactionThreshold }

    /// Merges every current segment into one, leaving out entries in the packs `dropping`
    /// (deleted by gc: a digest keeps its newest location outside them). Returns the number of
    /// segments merged. Only the segments this process lists are merged and deleted: one a
    /// backup on another host commits meanwhile stays as it is.
    @discardableResult
    public func compactIndex(dropping: Set<PackID> = []) throws(CairnError) -> Int {
        let inputs = indexSegments
        let names = inputs.contains { $0.packs.contains(where: dropping.contains) }
        guard inputs.count > 1 || names else { return 0 }
        var seen = Set<PackID>()
        var packs: [PackID] = []
        for segment in inputs {
            for pack in segment.packs where !dropping.contains(pack) && seen.insert(pack).inserted {
                packs.append(pack)
            }
        }
        // Two passes over the same merge: the first counts entries per first byte (the fan-out
        // precedes the entries), the second writes them.
        var counts = [Int](repeating: 0, count: 256)
        try Self.merge(inputs, dropping: dropping) { (digest, _) throws(CairnError) in
            counts[Int(digest.prefix >> 56)] += 1
        }
        let key = Self.newSegmentKey()
        let object = try storage.stage(key)
        do throws(CairnError) {
            var encoder = try IndexSegmentEncoder(packs: packs, fanoutCounts: counts, into: object)
            try Self.merge(inputs, dropping: dropping) { (digest, location) throws(CairnError) in
                try encoder.append(digest, location)
            }
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
    /// the newest segment that has it outside `dropping` (none: left out). Memory: one cursor
    /// per segment.
    private static func merge(
        _ segments: [IndexSegment], dropping: Set<PackID>,
        _ body: (ChunkDigest, ChunkLocation) throws(CairnError) -> Void
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
            // Newest first: the first cursor on this digest whose location is kept.
            var chosen: ChunkLocation?
            for i in cursors.indices where cursors[i].position < cursors[i].segment.entryCount {
                guard cursors[i].segment.digest(at: cursors[i].position) == digest else { continue }
                guard let location = cursors[i].segment.location(at: cursors[i].position) else {
                    throw CairnError(
                        .damaged, "chunk index segment \(cursors[i].segment.name) names a pack it does not list")
                }
                if chosen == nil && !dropping.contains(location.pack) { chosen = location }
                cursors[i].position += 1
            }
            if let chosen { try body(digest, chosen) }
        }
    }
}
