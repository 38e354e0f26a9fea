/// A disk's blocks as its index tree lists them, walked in parallel batches.
final class DiskWalk: Sendable {
    let store: ChunkStore
    let root: ChunkDigest
    let depth: Int
    let blockCount: UInt64
    let size: UInt64
    var blockSize: Int { store.blockSize }
    /// The most each restore worker stages for one write (or one block, if larger). Restores
    /// staging 2 MiB ran as fast as with 4 MiB and faster than with 1 MiB (1.54-1.68 s, 1.53-1.69
    /// and 1.63-1.88 in turns on the benchmark disk), with 10 MiB less memory than 4 MiB.
    static let stagingBytes = 2 << 20

    init(store: ChunkStore, root: ChunkDigest, depth: Int, blockCount: UInt64, size: UInt64) {
        self.store = store
        self.root = root
        self.depth = depth
        self.blockCount = blockCount
        self.size = size
    }

    func makeReader(onPage: ((ChunkDigest) -> Void)? = nil) throws(CairnError) -> IndexTreeReader {
        // Restore computes each block's length as `size - offset`: a manifest whose size and
        // block count disagree (a hostile one, its checksum intact) would underflow it.
        let bs = UInt64(blockSize)
        guard blockCount == size / bs + (size % bs == 0 ? 0 : 1) else {
            throw CairnError(
                .damaged,
                "the disk's size \(size) does not match its \(blockCount) blocks of \(blockSize) bytes: its manifest is damaged"
            )
        }
        let reader = try IndexTreeReader(
            reader: ChunkReader(store: store), root: root, depth: depth, blockCount: blockCount)
        reader.onPage = onPage
        return reader
    }

    /// Calls `body` with each block index and digest, in order, on the calling thread.
    func forEachBlock(_ body: (UInt64, ChunkDigest) throws(CairnError) -> Void) throws(CairnError) {
        let reader = try makeReader()
        var index: UInt64 = 0
        while let digest = try reader.next() {
            if index & 1023 == 0 { try Cancellation.check() }
            try body(index, digest)
            index += 1
        }
        guard index == blockCount else {
            throw CairnError(.damaged, "index tree \(root) ends after \(index) of \(blockCount) blocks")
        }
    }

    /// A run of the tree's digests for one worker (a value: moved through the pipeline, its
    /// array reused while it is the only copy).
    struct DigestBatch: Sendable {
        var first: UInt64 = 0
        var count = 0
        var digests: [ChunkDigest]
        init(capacity: Int) {
            digests = Array(repeating: ZeroBlock.digest, count: capacity)
        }
    }

    /// Restores every non-zero block into `target`. Returns bytes written and damaged ranges.
    ///
    /// This thread walks the tree and fills batches; the workers of a `.recycle` pipeline read,
    /// prove and write them, in any order, and give the batches back.
    func restore(
        into target: any RestoreTarget, allowDamaged: Bool, progress: (@Sendable (RestoreProgress) -> Void)?,
        clock: Stopwatch
    ) throws(CairnError) -> (UInt64, [DamagedRange]) {
        let workers = Parallelism.overlappedWorkers
        let capacity = max(16, (4 << 20) / blockSize)
        let written = AtomicCounter()
        let damagedLock = NSLockBox<[DamagedRange]>([])
        let zero = ZeroBlock.digest
        let bs = UInt64(blockSize)
        let pipeline = Pipeline<DigestBatch>(
            name: "cairn-restore", workers: workers, delivery: .recycle,
            pool: (0..<(workers * 3)).map { _ in DigestBatch(capacity: capacity) },
            interruptedMessage: "restore incomplete"
        ) { [self] _ in
            let reader = ChunkReader(store: store)
            reader.checksRecordCRC = false
            var run = StagedRun(capacity: max(Self.stagingBytes, blockSize))
            return { [self] (batch: inout DigestBatch) throws(CairnError) in
                defer { run.reset() }
                func flush() throws(CairnError) {
                    guard let (bytes, offset) = run.take() else { return }
                    try target.write(bytes, atGuestOffset: offset)
                    written.increment(by: bytes.count)
                }
                for k in 0..<batch.count {
                    let block = batch.first + UInt64(k)
                    let offset = block * bs
                    let length = Int(min(bs, size - offset))
                    let digest = batch.digests[k]
                    if digest == zero && !target.needsZeroWrites {
                        try flush()  // a hole
                        continue
                    }
                    if !run.continues(at: offset, length: length) { try flush() }
                    let slot = run.slot(at: offset, length: length)
                    if digest == zero {
                        slot.initializeMemory(as: UInt8.self, repeating: 0)
                        run.commit(length)
                        continue
                    }
                    do throws(CairnError) {
                        guard let location = store.lookup(digest) else { throw store.missingChunk(digest) }
                        try reader.read(digest, at: location, into: slot)
                        run.commit(length)
                    } catch let error where error.code == .damaged {
                        guard allowDamaged else {
                            throw CairnError(
                                .damaged, "cannot restore disk offset \(offset) (block \(block)): \(error.message)",
                                cause: error.cause)
                        }
                        damagedLock.withLock {
                            $0.append(
                                DamagedRange(
                                    offset: offset, length: UInt64(length), chunk: digest.hex, reason: error.message))
                        }
                        if target.needsZeroWrites {
                            slot.initializeMemory(as: UInt8.self, repeating: 0)
                            run.commit(length)
                        } else {
                            try flush()  // left a hole
                        }
                    }
                }
                try flush()
            }
        }

        // The walker's own errors (a damaged index) are told apart from the workers'.
        var walkFailedFirst = false
        do throws(CairnError) {
            let tree = try makeReader()
            var next: UInt64 = 0
            var lastProgress = 0.0
            outer: while next < blockCount {
                var batch = try pipeline.acquire()
                batch.first = next
                batch.count = 0
                var nonZero = false
                var ended = false
                while batch.count < capacity && next < blockCount {
                    if !target.needsZeroWrites, try tree.atZeroLeafPage() {
                        // 1,024 zero blocks: nothing to write; close this batch here.
                        if batch.count > 0 { break }
                        tree.skip(UInt64(IndexTree.fanout))
                        next += UInt64(IndexTree.fanout)
                        batch.first = next
                        continue
                    }
                    guard let digest = try tree.next() else {
                        ended = true
                        break
                    }
                    batch.digests[batch.count] = digest
                    if digest != zero { nonZero = true }
                    batch.count += 1
                    next += 1
                }
                if nonZero || target.needsZeroWrites { try pipeline.submit(batch) } else { pipeline.recycle(batch) }
                if ended { break outer }
                if let progress, clock.elapsed - lastProgress >= 0.5 {
                    lastProgress = clock.elapsed
                    progress(RestoreProgress(bytesDone: min(size, next * bs), bytesTotal: size, seconds: clock.elapsed))
                }
            }
            if next != blockCount {
                throw CairnError(.damaged, "index tree \(root) ends after \(next) of \(blockCount) blocks")
            }
        } catch {
            walkFailedFirst = pipeline.stop(error)
        }
        do throws(CairnError) {
            try pipeline.finish()
        } catch {
            if allowDamaged, walkFailedFirst, error.code == .damaged {
                throw CairnError(
                    .damaged,
                    "the index of this disk is damaged; nothing after that point can be restored: \(error.message)")
            }
            throw error
        }
        let damaged = damagedLock.value.sorted { $0.offset < $1.offset }
        return (UInt64(written.current), damaged)
    }
}

/// Blocks restored one after another, staged back to back in one aligned buffer per worker
/// and written with one call: on this machine kind direct writes of 1 to 4 MiB ran at 1.8-2.1
/// GB/s where writes of one 64 KiB block each ran at 0.6 GB/s, and a restore spent more time waiting
/// for its writes than decompressing (Benchmarks/README.md). Chunks are decompressed straight
/// into their place here, so the bytes are copied by nobody on their way to the file.
struct StagedRun {
    private let buffer: WorkerBuffer
    /// The guest offset of the run's first byte, and the bytes staged.
    private var offset: UInt64 = 0
    private var count = 0

    init(capacity: Int) {
        buffer = WorkerBuffer(byteCount: capacity, alignment: File.directAlignment)
    }

    /// Whether a block at `offset` of `length` bytes extends the run (or starts one).
    func continues(at offset: UInt64, length: Int) -> Bool {
        count == 0 || (offset == self.offset + UInt64(count) && count + length <= buffer.bytes.count)
    }

    /// Where the block at `offset` goes; `commit` adds it to the run once it is there. The run
    /// must continue there (`continues`).
    mutating func slot(at offset: UInt64, length: Int) -> UnsafeMutableRawBufferPointer {
        if count == 0 { self.offset = offset }
        return UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[count..<(count + length)])
    }

    mutating func commit(_ length: Int) { count += length }

    /// The run's bytes and guest offset, emptying it; nil when it is empty.
    mutating func take() -> (UnsafeRawBufferPointer, UInt64)? {
        guard count > 0 else { return nil }
        defer { count = 0 }
        return (UnsafeRawBufferPointer(rebasing: buffer.bytes[0..<count]), offset)
    }

    mutating func reset() { count = 0 }
}
