/// A disk's blocks as its index tree lists them, walked in parallel batches.
final class DiskWalk: Sendable {
    let store: ChunkStore
    let root: ChunkDigest
    let depth: Int
    let blockCount: UInt64
    let size: UInt64
    var blockSize: Int { store.blockSize }

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
        let workers = Parallelism.workers
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
            let zeroBuffer = WorkerBuffer(
                byteCount: target.needsZeroWrites ? blockSize : 0, alignment: 4096, zeroed: true)
            var run = WriteRun()
            func flush() throws(CairnError) {
                guard let bytes = run.bytes else { return }
                let offset = run.offset
                run = WriteRun()
                try target.write(bytes, atGuestOffset: offset)
                written.increment(by: bytes.count)
            }
            func writeZeros(_ length: Int, at offset: UInt64) throws(CairnError) {
                try target.write(
                    UnsafeRawBufferPointer(rebasing: zeroBuffer.bytes[0..<length]), atGuestOffset: offset)
            }
            return { [self] (batch: inout DigestBatch) throws(CairnError) in
                defer { run = WriteRun() }
                for k in 0..<batch.count {
                    let block = batch.first + UInt64(k)
                    let offset = block * bs
                    let length = Int(min(bs, size - offset))
                    let digest = batch.digests[k]
                    if digest == zero {
                        try flush()
                        if target.needsZeroWrites {
                            try writeZeros(length, at: offset)
                            written.increment(by: length)
                        }
                        continue
                    }
                    do throws(CairnError) {
                        guard let location = store.lookup(digest) else { throw store.missingChunk(digest) }
                        // Reading another record reuses the buffer the run points into.
                        if !reader.holdsFrame(of: location) { try flush() }
                        let bytes = try reader.read(digest, at: location)
                        guard bytes.count == length else {
                            throw CairnError(
                                .damaged, "chunk \(digest) holds \(bytes.count) bytes where the disk needs \(length)")
                        }
                        if !run.extend(with: bytes, at: offset) {
                            try flush()
                            run = WriteRun(bytes: bytes, offset: offset)
                        }
                    } catch let error where error.code == .damaged {
                        try flush()
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
                        if target.needsZeroWrites { try writeZeros(length, at: offset) }
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

/// Blocks restored one after another whose bytes lie back to back in a reader's buffer (the
/// members of one frame, in disk order): written with one call, so the workers take the output
/// file's lock once per run instead of once per block.
struct WriteRun {
    private var start: UnsafeRawPointer?
    private var count = 0
    private(set) var offset: UInt64 = 0

    init() {}

    init(bytes: UnsafeRawBufferPointer, offset: UInt64) {
        start = bytes.baseAddress
        count = bytes.count
        self.offset = offset
    }

    var bytes: UnsafeRawBufferPointer? {
        start.map { UnsafeRawBufferPointer(start: $0, count: count) }
    }

    /// Appends `bytes` if they follow the run both in memory and on the disk.
    mutating func extend(with bytes: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        guard let start, start + count == bytes.baseAddress, self.offset + UInt64(count) == offset else { return false }
        count += bytes.count
        return true
    }
}
