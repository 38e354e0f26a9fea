import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The content-addressed store: chunks in pack files, found through the chunk index.
///
/// Shared by every thread of a job: lookups and reads go through the current `ChunkIndex`
/// snapshot and the pack reader cache, both behind locks. Writing is not done here but by a
/// `ChunkWriteTransaction` (`beginWrite()`), which one job owns; nothing it writes becomes
/// visible to other processes until it commits, which makes packs durable before the index
/// segment that names them. Objects are read and written through `storage`, which alone knows
/// the medium (`LocalDirectoryStorage`).
public final class ChunkStore: Sendable {
    public let root: String
    public let storage: any RepositoryStorage
    public let blockSize: Int
    let compressionLevel: Int32
    let packTargetSize: UInt64
    /// An encrypted repository's keys (nil: unencrypted). They choose the kind of chunk id and
    /// the record codec, once for the store: the factories below are the only way to either.
    let keys: MasterKey?
    /// The digest of a full leaf page of zero blocks under this store's ids: restore and serve
    /// skip such pages without reading them.
    let zeroLeafPage: ChunkDigest

    /// The index as this process knows it; swapped whole, never changed in place.
    private let current: Mutex<ChunkIndex>
    /// Chunks written by the open transaction and not yet in a segment (bounded by
    /// `flushThreshold`): lookups from other threads of the job see them, so a block is stored once.
    let pending = Mutex<[ChunkDigest: ChunkLocation]>([:])
    /// Whether a write transaction is open: one at a time, as `pending` is the store's.
    let writing = Atomic<Bool>(false)
    let packReaders = Mutex<[PackID: PackReader]>([:])
    /// Locations verify found damaged (`verify/damaged.json`): a chunk found only there counts
    /// as absent, so the next backup that holds it stores it again (healing).
    let distrusted: [ChunkDigest: ChunkLocation]

    /// Packs a gc on a shared store condemned and a later gc may delete (`CondemnedList`):
    /// absent for deduplication, read only where no other copy is indexed.
    private let condemnedPacks: Mutex<Set<PackID>>

    /// Copies of the index pages this host's backups wrote and read (`TreePageCache`): for an
    /// unencrypted repository on storage with a host cache directory; nil otherwise.
    public let treePages: TreePageCache?

    /// Entries kept in memory before they are written out as a segment: bounds memory per run.
    static let flushThreshold = 262_144

    /// `loadIndex: false` opens the store without its segments, for `rebuildIndex()` when a
    /// damaged segment would otherwise stop the repository from opening.
    init(
        storage: any RepositoryStorage, blockSize: Int, compressionLevel: Int32, packTargetSize: UInt64,
        loadIndex: Bool = true, keys: MasterKey? = nil
    ) throws(CairnError) {
        self.keys = keys
        var page: [UInt8] = []
        for _ in 0..<IndexTree.fanout { withUnsafeBytes(of: ZeroBlock.digest) { page.append(contentsOf: $0) } }
        zeroLeafPage = ChunkHasher(idKey: keys?.idKey).digest(page)
        self.root = storage.location
        self.storage = storage
        self.blockSize = blockSize
        self.compressionLevel = compressionLevel
        self.packTargetSize = packTargetSize
        // The lists first: a list written after the index was read names packs this process
        // may then still use, which the later gc accounts for by this process's lease.
        condemnedPacks = Mutex(loadIndex ? try CondemnedList.condemnedPacks(in: storage) : [])
        current = Mutex(loadIndex ? try ChunkIndex.load(from: storage) : ChunkIndex())
        distrusted = DamagedChunkList.load(from: storage).locations
        treePages = keys == nil ? storage.hostCacheDirectory.map { TreePageCache(directory: "\($0)/pages") } : nil
    }

    /// Whether chunk ids are keyed and records sealed.
    public var isEncrypted: Bool { keys != nil }

    /// A hasher that names chunks as this store does (one per worker).
    func makeHasher() -> ChunkHasher { ChunkHasher(idKey: keys?.idKey) }

    /// The record codec of this store: sealing when encrypted; `level` nil for one that only opens.
    func makeCodec(level: Int32?) -> any RecordCodec {
        if let keys { return SealedRecordCodec(dataKey: keys.dataKey, level: level) }
        return ZstdRecordCodec(level: level)
    }

    /// An encoder at the store's compression level, sealing when encrypted (one per worker).
    func makeEncoder() -> ChunkEncoder { ChunkEncoder(codec: makeCodec(level: compressionLevel)) }

    /// A decoder that opens and proves this store's records (one per worker).
    func makeDecoder(outputBytes: Int = 0) -> RecordDecoder {
        RecordDecoder(codec: makeCodec(level: nil), hasher: makeHasher(), outputBytes: outputBytes)
    }

    /// Replaces this process's view of the index with what the storage holds now.
    func reloadSegments() throws(CairnError) {
        let condemned = try CondemnedList.condemnedPacks(in: storage)
        let loaded = try ChunkIndex.load(from: storage)
        condemnedPacks.withLock { $0 = condemned }
        current.withLock { $0 = loaded }
    }

    /// The packs this process treats as condemned.
    public var condemned: Set<PackID> { condemnedPacks.withLock { $0 } }

    /// A snapshot of the index as this process knows it now.
    public var index: ChunkIndex { current.withLock { $0 } }
    public var indexSegments: [IndexSegment] { index.segments }
    /// Segment files that could not be opened; empty in a healthy repository.
    public var damagedSegments: [DamagedSegment] { index.damaged }

    /// Throws if any segment is damaged: for operations that must see the whole index (gc would
    /// take the packs only a damaged segment names for unreferenced ones).
    public func requireWholeIndex(for operation: String) throws(CairnError) {
        let damaged = damagedSegments
        guard let first = damaged.first else { return }
        let count = damaged.count
        throw CairnError(
            .damaged,
            "cannot \(operation): chunk index segment \(first.name)\(count > 1 ? " and \(count - 1) more" : "") is damaged and \(operation) needs the whole index; run `cairn rebuild-index` first"
        )
    }

    // MARK: Lookups (any thread)

    /// Where to read `digest`: a copy outside condemned packs if one is indexed, else any.
    public func lookup(_ digest: ChunkDigest) -> ChunkLocation? {
        if let hit = pending.withLock({ $0[digest] }) { return hit }
        let condemned = condemnedPacks.withLock { $0 }
        return current.withLock { $0.lookup(digest, excluding: condemned) ?? $0.lookup(digest) }
    }

    /// Where `digest` is stored for deduplication: never in a condemned pack, which a later gc
    /// may delete once the restore points that need it are committed without this one.
    func lookupForReuse(_ digest: ChunkDigest) -> ChunkLocation? {
        if let hit = pending.withLock({ $0[digest] }) { return hit }
        let condemned = condemnedPacks.withLock { $0 }
        return current.withLock { $0.lookup(digest, excluding: condemned) }
    }

    /// The error for a chunk the index does not find; names a damaged segment that may be why.
    func missingChunk(_ digest: ChunkDigest) -> CairnError {
        guard let segment = damagedSegments.first else {
            return CairnError(.damaged, "chunk \(digest) is missing from the repository")
        }
        return CairnError(
            .damaged,
            "chunk \(digest) is missing from the chunk index, whose segment \(segment.name) is damaged: run `cairn rebuild-index`, then try again"
        )
    }

    /// True if the store holds an intact copy of the chunk as far as it knows: a chunk whose only
    /// location verify found damaged, or that only a condemned pack holds, counts as absent.
    public func contains(_ digest: ChunkDigest) -> Bool {
        if digest == ZeroBlock.digest { return true }
        guard let location = lookupForReuse(digest) else { return false }
        return distrusted.isEmpty || distrusted[digest] != location
    }

    /// True if the chunk's current location is one verify found damaged. Cheap when nothing is.
    func isDistrusted(_ digest: ChunkDigest) -> Bool {
        guard !distrusted.isEmpty, let bad = distrusted[digest] else { return false }
        return lookup(digest) == bad
    }

    func packReader(_ id: PackID) throws(CairnError) -> PackReader {
        if let reader = packReaders.withLock({ $0[id] }) { return reader }
        let reader = try PackReader(id: id, in: storage)
        packReaders.withLock { cache in
            if cache.count >= 256 { cache.removeAll(keepingCapacity: true) }
            cache[id] = reader
        }
        return reader
    }

    // MARK: Changing the index (the write transaction, compaction, gc, rebuild)

    /// Opens the write transaction through which a job stores chunks. One at a time per store.
    public func beginWrite() -> ChunkWriteTransaction {
        ChunkWriteTransaction(store: self)
    }

    /// Writes `entries` as a new segment, durably, and makes it the newest in this process's view.
    func addSegment(entries: [(ChunkDigest, ChunkLocation)]) throws(CairnError) {
        let segment = try IndexSegment.write(entries: entries, as: Self.newSegmentKey(), in: storage)
        current.withLock { $0 = $0.adding(segment) }
    }

    /// Swaps merged segments for their inputs in this process's view.
    func replaceSegments(_ old: [IndexSegment], with merged: IndexSegment) {
        current.withLock { $0 = $0.replacing(old, with: merged) }
    }

    /// A key for a new segment. Names sort by creation time; the random tail keeps concurrent
    /// writers apart.
    static func newSegmentKey() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let nanos = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        let time = String(nanos, radix: 16)
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return ChunkIndex.prefix + String(repeating: "0", count: 16 - time.count) + time + "-"
            + String(repeating: "0", count: 8 - random.count) + random + ".idx"
    }
}

/// The all-zero block: never stored, named by one well-known digest.
public enum ZeroBlock {
    /// SHA-256 of 64 KiB of zeros stands for an all-zero block of any length (see docs/FORMAT.md).
    /// A fixed value, so restore points of repositories with other block sizes agree on it.
    public static let digest: ChunkDigest = {
        let zeros = [UInt8](repeating: 0, count: 65536)
        return SHA256Hasher().digest(zeros)
    }()
}
