/// A job's writes to the chunk store: chunks appended to new packs, made durable and findable
/// by `commit()`, or dropped by `abandon()`.
///
/// `~Copyable`, so exactly one owner holds it: a job passes it `inout` to the parts that store
/// chunks, and `commit()` and `abandon()` consume it, so nothing can store into it (or commit it
/// again) afterwards. One that goes out of scope unfinished (a thrown error) is abandoned: its
/// temporary packs are removed. Lookups on other threads see its chunks through the store's
/// pending map, so a block met twice in one run is stored once.
///
/// Memory: the current pack's table and at most `ChunkStore.flushThreshold` index entries;
/// beyond that the packs so far are committed and a segment written in the middle of the run.
public struct ChunkWriteTransaction: ~Copyable {
    let store: ChunkStore
    private var currentPack: PackWriter?
    /// Packs complete on disk but not yet committed.
    private var finishedPacks: [PackWriter] = []
    /// Entries of chunks stored since the last segment was written.
    private var unflushed: [(ChunkDigest, ChunkLocation)] = []
    /// The member list of the frame being stored (kept, so storing allocates nothing per frame).
    private var finished = false

    /// Record bytes appended to packs by this transaction.
    public private(set) var storedBytesWritten: UInt64 = 0
    /// Chunks made findable by this transaction.
    public private(set) var chunksWritten: Int = 0

    init(store: ChunkStore) {
        let (opened, _) = store.writing.compareExchange(expected: false, desired: true, ordering: .acquiring)
        precondition(opened, "a second write transaction was begun on a chunk store that has one open")
        self.store = store
    }

    deinit {
        if !finished { dropUncommitted() }
        store.writing.store(false, ordering: .releasing)
    }

    /// What `store(record:)` added: chunks newly findable and their plain bytes.
    struct Stored {
        var chunks = 0
        var bytes = 0
    }

    /// Stores one encoded record unless the store already holds its chunk. A frame record is
    /// stored if any member is new, and only its new members are indexed (a member stored
    /// meanwhile by another frame stays in this one as dead bytes, which gc can reclaim).
    @discardableResult
    mutating func store(record: EncodedRecord) throws(CairnError) -> Stored {
        let isFrame = record.header.isFrame
        if isFrame {
            guard record.members.contains(where: { !store.contains($0.digest) }) else { return Stored() }
        } else if store.contains(record.header.digest) {
            return Stored()
        }
        if currentPack == nil { currentPack = try PackWriter(in: store.storage) }
        let pack = currentPack!
        var stored = Stored()
        // A frame's members may meanwhile be stored (or repeat within it): index each once.
        for entry in try pack.append(record: record) where !isFrame || !store.contains(entry.digest) {
            let location = entry.location(in: pack.id)
            store.pending.withLock { $0[entry.digest] = location }
            unflushed.append((entry.digest, location))
            stored.chunks += 1
            stored.bytes += Int(entry.rawLength)
        }
        storedBytesWritten += UInt64(record.bytes.count)
        chunksWritten += stored.chunks
        if pack.size >= store.packTargetSize {
            try pack.finish()
            finishedPacks.append(pack)
            currentPack = nil
            // An object store uploads it now, beside the chunks still being compressed.
            try store.storage.prepareCommit(pack.object)
            if unflushed.count >= ChunkStore.flushThreshold { try flush() }
        }
        return stored
    }

    /// Makes every chunk stored so far durable and findable by other processes; the
    /// transaction is over.
    consuming func commit() throws(CairnError) {
        try flush()
        finished = true
    }

    /// Drops what was written but not committed: temporary packs are removed, and their chunks
    /// count as absent again. What earlier flushes committed stays.
    consuming func abandon() {
        dropUncommitted()
        finished = true
    }

    /// Packs synced and made visible (one batch), then a new index segment naming them.
    private mutating func flush() throws(CairnError) {
        if let pack = currentPack {
            try pack.finish()
            finishedPacks.append(pack)
            currentPack = nil
        }
        // On failure the packs are kept in `finishedPacks`, so that abandoning removes them.
        try store.storage.commit(finishedPacks.map(\.object))
        CairnLog.logger.info("packs committed: \(finishedPacks.count), with \(unflushed.count) new index entries")
        finishedPacks.removeAll()
        if !unflushed.isEmpty {
            try store.addSegment(entries: unflushed)
            store.pending.withLock { $0.removeAll() }
            unflushed.removeAll()
        }
    }

    private func dropUncommitted() {
        currentPack?.abandon()
        for pack in finishedPacks { pack.abandon() }
        store.pending.withLock { $0.removeAll() }
    }
}
