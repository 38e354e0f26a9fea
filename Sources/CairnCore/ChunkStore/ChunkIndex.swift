/// One moment's view of the chunk index: its segments and those that could not be opened.
///
/// Immutable and `Sendable`: a job that must see one consistent index (gc's mark and sweep,
/// verify) takes a snapshot once; the store swaps in a new snapshot when a commit, compaction or
/// reload changes the index, and snapshots already taken stay valid (their segments stay mapped).
public struct ChunkIndex: Sendable {
    /// Segments, newest last (searched newest first, so a newer location wins).
    public let segments: [IndexSegment]
    /// Segment files that failed their header checks when the index was loaded. Their chunks
    /// count as absent (a backup stores them again); commands report them and gc refuses to run.
    public let damaged: [DamagedSegment]

    init(segments: [IndexSegment] = [], damaged: [DamagedSegment] = []) {
        self.segments = segments
        self.damaged = damaged
    }

    /// The keys segments have in the repository's storage.
    static let prefix = "index/"

    /// Opens every segment in `storage`. A segment that fails its checks is set aside rather
    /// than thrown, so one flipped bit cannot take the whole repository offline; an unknown
    /// format version or an I/O error still stops the open.
    static func load(from storage: any RepositoryStorage) throws(CairnError) -> ChunkIndex {
        var segments: [IndexSegment] = []
        var damaged: [DamagedSegment] = []
        for key in try segmentKeys(in: storage) {
            do {
                segments.append(try IndexSegment(key: key, in: storage))
            } catch  where error.code == .damaged {
                damaged.append(DamagedSegment(name: FileSystem.baseName(key), error: error))
            }
        }
        return ChunkIndex(segments: segments, damaged: damaged)
    }

    /// The keys of every segment in `storage`, oldest first (names sort by creation time).
    static func segmentKeys(in storage: any RepositoryStorage) throws(CairnError) -> [String] {
        try storage.list(prefix: prefix).filter {
            $0.hasSuffix(".idx") && !$0.dropFirst(prefix.count).contains("/")
        }
    }

    /// - Complexity: O(s log n) for s segments of n entries.
    public func lookup(_ digest: ChunkDigest) -> ChunkLocation? {
        for segment in segments.reversed() {
            if let hit = segment.lookup(digest) { return hit }
        }
        return nil
    }

    /// The newest location of `digest` outside `excluded` (condemned packs), or nil.
    /// - Complexity: as `lookup(_:)`; with `excluded` empty it is `lookup(_:)`.
    public func lookup(_ digest: ChunkDigest, excluding excluded: Set<PackID>) -> ChunkLocation? {
        guard !excluded.isEmpty else { return lookup(digest) }
        for segment in segments.reversed() {
            if let hit = segment.lookup(digest), !excluded.contains(hit.pack) { return hit }
        }
        return nil
    }

    /// This index with one more (newest) segment.
    func adding(_ segment: IndexSegment) -> ChunkIndex {
        ChunkIndex(segments: segments + [segment], damaged: damaged)
    }

    /// This index with `merged` (oldest) in place of the segments it merged.
    func replacing(_ old: [IndexSegment], with merged: IndexSegment) -> ChunkIndex {
        let names = Set(old.map(\.name))
        return ChunkIndex(segments: [merged] + segments.filter { !names.contains($0.name) }, damaged: damaged)
    }
}

/// A chunk index segment file that failed its checks when the index was loaded.
public struct DamagedSegment: Sendable, Equatable {
    /// The file name in `index/`.
    public var name: String
    public var error: CairnError

    /// One line for a person: what is wrong and what to do.
    public var warning: String {
        "\(error.message); until then, chunks only it names count as missing (a backup stores them again)"
    }
}
