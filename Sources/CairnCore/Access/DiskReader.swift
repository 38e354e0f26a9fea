/// Random access to one disk of a restore point, straight from the repository: what `cairn
/// serve` answers NBD reads and block-status queries with.
///
/// Every byte handed out comes from a chunk proved by its SHA-256 (in `RecordCache`, when
/// its record was loaded); a block whose chunk is missing or damaged fails the read with a
/// `DiskReadError` naming its offset, and is never handed out as data. Index pages go through
/// the same cache, so one bound covers everything a server holds.
///
/// Thread-safe: any number of threads read at once, each with a worker (chunk reader and
/// hasher) taken from a small pool, so the hot path allocates nothing but cache entries.
public final class DiskReader: Sendable {
    public let id: RestorePointID
    public let disk: Manifest.DiskEntry
    public var size: UInt64 { disk.size }
    public let blockSize: Int
    let store: ChunkStore
    let root: ChunkDigest
    let cache: RecordCache
    private let workers = NSLockBox<[Worker]>([])

    /// A chunk reader and a hasher, used by one thread at a time.
    final class Worker {
        let reader: ChunkReader
        let hasher: ChunkHasher
        init(store: ChunkStore) {
            reader = ChunkReader(store: store)
            hasher = store.makeHasher()
            // The SHA-256 of every chunk proves its bytes; the record CRC would only add a pass.
            reader.checksRecordCRC = false
        }
    }

    public init(repository: Repository, id: RestorePointID, disk: Manifest.DiskEntry, cache: RecordCache)
        throws(CairnError)
    {
        let root = disk.root
        var capacity: UInt64 = 1
        for _ in 0..<max(disk.depth, 1) {
            capacity =
                capacity.multipliedReportingOverflow(by: UInt64(IndexTree.fanout)).overflow
                ? .max : capacity * UInt64(IndexTree.fanout)
        }
        let bs = UInt64(repository.store.blockSize)
        let (blocksNeeded, _) = disk.size.quotientAndRemainder(dividingBy: bs)
        let expected = blocksNeeded + (disk.size % bs == 0 ? 0 : 1)
        guard disk.depth >= 1, disk.depth <= 8, disk.blockCount <= capacity, disk.blockCount == expected else {
            throw CairnError(
                .damaged,
                "restore point \(id) disk \(disk.name): index depth \(disk.depth) and \(disk.blockCount) blocks do not describe \(disk.size) bytes"
            )
        }
        self.id = id
        self.disk = disk
        self.root = root
        self.store = repository.store
        self.blockSize = repository.store.blockSize
        self.cache = cache
    }

    // MARK: Workers

    private func withWorker<R>(_ body: (Worker) throws(DiskReadError) -> R) throws(DiskReadError) -> R {
        let worker = workers.withLock { $0.popLast() } ?? Worker(store: store)
        defer { workers.withLock { $0.append(worker) } }
        return try body(worker)
    }

    // MARK: Reading

    /// Fills `buffer` with the disk's bytes from `offset`, which with the buffer must lie
    /// inside the disk.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskReadError) {
        precondition(offset <= size && UInt64(buffer.count) <= size - offset, "read past the end of the disk")
        guard buffer.count > 0 else { return }
        try withWorker { worker throws(DiskReadError) in
            let bs = UInt64(blockSize)
            var leaf = LeafPage.none
            var done = 0
            while done < buffer.count {
                let position = offset + UInt64(done)
                let block = position / bs
                let blockStart = block * bs
                let blockLength = Int(min(bs, size - blockStart))
                let within = Int(position - blockStart)
                let n = min(blockLength - within, buffer.count - done)
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
                do throws(CairnError) {
                    let digest = try blockDigest(block, leaf: &leaf, worker: worker)
                    if digest == ZeroBlock.digest {
                        target.initializeMemory(as: UInt8.self, repeating: 0)
                    } else {
                        let (record, start) = try chunk(digest, length: blockLength, worker: worker)
                        target.copyMemory(
                            from: UnsafeRawBufferPointer(rebasing: record.bytes[start + within..<start + within + n]))
                    }
                } catch {
                    throw DiskReadError(offset: blockStart, length: UInt64(blockLength), error: error)
                }
                done += n
            }
        }
    }

    /// Calls `body` with the runs of data and of zeros (`true`) from `offset`, consecutive and
    /// in order, at most `maxExtents` of them, covering at most `length` bytes (and never past
    /// the end of the disk); at least one unless `length` is 0.
    ///
    /// A zero block reads as zeros and holds no storage, which NBD calls hole and zero; a whole
    /// leaf page of zero blocks (1,024 blocks) is answered without reading it.
    public func extents(
        at offset: UInt64, length: UInt64, maxExtents: Int, _ body: (UInt64, Bool) -> Void
    ) throws(DiskReadError) {
        guard offset < size, length > 0, maxExtents > 0 else { return }
        let end = offset + min(length, size - offset)
        // Bound the work one query does: 2^20 blocks is 64 GiB of 64 KiB blocks, a few milliseconds.
        let scanLimit: UInt64 = 1 << 20
        try withWorker { worker throws(DiskReadError) in
            let bs = UInt64(blockSize)
            let fanout = UInt64(IndexTree.fanout)
            var leaf = LeafPage.none
            var runStart = offset
            var runZero: Bool?
            var emitted = 0
            var position = offset
            var scanned: UInt64 = 0
            while position < end && scanned < scanLimit {
                let block = position / bs
                var zero: Bool
                var next: UInt64
                do throws(CairnError) {
                    if block % fanout == 0, try loadLeaf(block / fanout, into: &leaf, worker: worker), leaf.isZero {
                        zero = true
                        next = (block + fanout) * bs
                        scanned += fanout
                    } else {
                        zero = try blockDigest(block, leaf: &leaf, worker: worker) == ZeroBlock.digest
                        next = (block + 1) * bs
                        scanned += 1
                    }
                } catch {
                    throw DiskReadError(offset: block * bs, length: bs, error: error)
                }
                next = min(next, end)
                if let current = runZero, current != zero {
                    body(position - runStart, current)
                    emitted += 1
                    if emitted == maxExtents { return }
                    runStart = position
                }
                runZero = zero
                position = next
            }
            if let current = runZero { body(position - runStart, current) }
        }
    }

    // MARK: The index

    /// The leaf page a read is in: loaded once per 1,024 blocks.
    enum LeafPage {
        case none
        case zero(UInt64)
        case page(UInt64, CachedRecord, start: Int, count: Int)

        var isZero: Bool {
            if case .zero = self { return true }
            return false
        }
    }

    /// The digest of block `block`, loading its leaf page into `leaf` if it is not there.
    private func blockDigest(_ block: UInt64, leaf: inout LeafPage, worker: Worker) throws(CairnError) -> ChunkDigest {
        guard block < disk.blockCount else { throw truncated() }
        let fanout = UInt64(IndexTree.fanout)
        _ = try loadLeaf(block / fanout, into: &leaf, worker: worker)
        let entry = Int(block % fanout)
        switch leaf {
        case .none:
            throw truncated()
        case .zero:
            return ZeroBlock.digest
        case .page(_, let record, let start, let count):
            guard entry < count else { throw truncated() }
            return ChunkDigest(loadingFrom: record.bytes, at: start + entry * ChunkDigest.byteCount)
        }
    }

    /// Makes `leaf` leaf page `page`; returns true (for use in conditions).
    private func loadLeaf(_ page: UInt64, into leaf: inout LeafPage, worker: Worker) throws(CairnError) -> Bool {
        switch leaf {
        case .zero(let p) where p == page: return true
        case .page(let p, _, _, _) where p == page: return true
        default: break
        }
        let digest = try pageDigest(level: disk.depth - 1, page: page, worker: worker)
        if disk.depth > 1 && digest == store.zeroLeafPage {
            leaf = .zero(page)
        } else {
            let (record, start, count) = try indexPage(digest, worker: worker)
            leaf = .page(page, record, start: start, count: count)
        }
        return true
    }

    /// The digest of page `page` of `level` (0 = the root), as its parent lists it.
    private func pageDigest(level: Int, page: UInt64, worker: Worker) throws(CairnError) -> ChunkDigest {
        if level == 0 {
            guard page == 0 else { throw truncated() }
            return root
        }
        let fanout = UInt64(IndexTree.fanout)
        let parent = try pageDigest(level: level - 1, page: page / fanout, worker: worker)
        let (record, start, count) = try indexPage(parent, worker: worker)
        let entry = Int(page % fanout)
        guard entry < count else { throw truncated() }
        return ChunkDigest(loadingFrom: record.bytes, at: start + entry * ChunkDigest.byteCount)
    }

    /// An index page: its record, where its digests start there, and how many it lists.
    private func indexPage(_ digest: ChunkDigest, worker: Worker) throws(CairnError) -> (CachedRecord, Int, Int) {
        let (record, start, length) = try chunk(digest, length: nil, worker: worker)
        guard length % ChunkDigest.byteCount == 0, length <= IndexTree.pageBytes else {
            throw CairnError(.damaged, "index page \(digest) has \(length) bytes, not a whole number of digests")
        }
        return (record, start, length / ChunkDigest.byteCount)
    }

    private func truncated() -> CairnError {
        CairnError(.damaged, "the index tree of disk \(disk.name) holds fewer than its \(disk.blockCount) blocks")
    }

    // MARK: Chunks

    /// A chunk of `length` bytes (any, if nil), proved: its record and where it starts there.
    private func chunk(_ digest: ChunkDigest, length: Int?, worker: Worker) throws(CairnError) -> (CachedRecord, Int) {
        let (record, start, count) = try chunk(digest, length: length, worker: worker)
        _ = count
        return (record, start)
    }

    private func chunk(
        _ digest: ChunkDigest, length: Int?, worker: Worker
    ) throws(CairnError) -> (CachedRecord, Int, Int) {
        guard let location = store.lookup(digest) else {
            throw CairnError(.damaged, "chunk \(digest) is missing from the repository")
        }
        if let length, Int(location.rawLength) != length {
            throw CairnError(
                .damaged, "chunk \(digest) holds \(location.rawLength) bytes where the disk needs \(length)")
        }
        let record = try cache.record(RecordCache.Key(pack: location.pack, offset: location.offset)) {
            () throws(CairnError) -> CachedRecord in
            if location.frameOffset == nil {
                let plain = try worker.reader.read(digest, at: location)
                return CachedRecord(copyingProved: plain, digest: digest, cache: cache)
            }
            let members = { worker.reader.lastFrameMembers.map { ($0.offset, $0.rawLength, $0.digest) } }
            // Decompress straight into what becomes the cache entry when the frame is big
            // (a whole 2 MiB window, the usual case); copy a small one out of the scratch.
            let scratch = cache.takeFrameBuffer()
            let plain: UnsafeRawBufferPointer
            do throws(CairnError) {
                plain = try worker.reader.frameBytes(location, into: scratch)
            } catch {
                cache.recycle(scratch)
                throw error
            }
            if plain.count >= PackFormat.maxFrameBytes / 2 {
                return CachedRecord(
                    owning: scratch, count: plain.count, members: members(), hasher: worker.hasher, recycleTo: cache)
            }
            defer { cache.recycle(scratch) }
            return CachedRecord(copying: plain, members: members(), hasher: worker.hasher, cache: cache)
        }
        let start = Int(location.frameOffset ?? 0)
        guard let member = record.member(at: start), member.digest == digest,
            member.length == Int(location.rawLength)
        else {
            throw CairnError(
                .damaged,
                "the record at offset \(location.offset) in pack \(location.pack) does not hold chunk \(digest) where the index says: rebuild the index with `cairn rebuild-index`"
            )
        }
        guard member.intact else {
            throw CairnError(.damaged, "chunk \(digest) in pack \(location.pack) does not match its digest")
        }
        return (record, start, member.length)
    }
}

/// A read that met a missing or damaged chunk: the block's range on the disk and why.
public struct DiskReadError: Error, Sendable {
    public var offset: UInt64
    public var length: UInt64
    public var error: CairnError
}
