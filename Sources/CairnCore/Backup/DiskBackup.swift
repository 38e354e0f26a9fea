/// The backup pipeline for one disk: read → hash, compare, compress (one worker per core) →
/// store and index, in block order.
///
/// Memory is a fixed number of batches whatever the disk's size. Holes and unallocated ranges
/// travel as data-less batches, so a sparse 8 GiB disk costs a few digests, not 8 GiB of reads.
final class DiskBackup: @unchecked Sendable {
    let store: ChunkStore
    let image: any DiskImage
    let name: String
    let base: Manifest.DiskEntry?
    let progress: (@Sendable (BackupProgress) -> Void)?
    let clock: Stopwatch
    let blockSize: Int
    let blockCount: UInt64
    /// Whether workers read their batches' data (see `DiskImage.supportsConcurrentReads`).
    let readInWorkers: Bool

    private(set) var bytesRead: UInt64 = 0
    private(set) var bytesNew: UInt64 = 0
    private var zeroBlocks: UInt64 = 0
    private var changedBlocks: UInt64 = 0

    /// Batches cover about 2 MiB of data, at least one block.
    static let batchBytes = 2 << 20
    /// Longest hole run one batch may stand for.
    static let maxHoleBlocks: UInt64 = 1 << 22

    init(
        store: ChunkStore, image: any DiskImage, name: String, base: Manifest.DiskEntry?,
        progress: (@Sendable (BackupProgress) -> Void)?, clock: Stopwatch
    ) {
        self.store = store
        self.image = image
        self.name = name
        self.base = base
        self.progress = progress
        self.clock = clock
        blockSize = store.blockSize
        blockCount = (image.virtualSize + UInt64(store.blockSize) - 1) / UInt64(store.blockSize)
        readInWorkers = image.supportsConcurrentReads
    }

    func run() throws(CairnError) -> Manifest.DiskEntry {
        let workers = Parallelism.workers
        let capacity = max(1, Self.batchBytes / blockSize)
        let free = WorkQueue<BlockBatch>()
        let toWork = WorkQueue<BlockBatch>()
        let toWrite = OrderedQueue<BlockBatch>()
        let failure = PipelineFailure()
        for _ in 0..<(2 * workers + 2) { free.push(BlockBatch(capacity: capacity, blockSize: blockSize)) }
        let batchCount = AtomicCounter()
        let finished = AtomicCounter()

        @Sendable func stopAll(_ error: CairnError) {
            failure.record(error)
            free.close()
            toWork.close()
            toWrite.close()
        }

        let reader = PipelineThread(name: "cairn-read") { [self] in
            do throws(CairnError) {
                let previous = try base.flatMap { entry throws(CairnError) -> IndexTreeReader? in
                    guard let root = entry.rootDigest else {
                        throw CairnError(
                            .damaged, "previous restore point's disk \(entry.name) has a malformed root digest")
                    }
                    return try IndexTreeReader(
                        reader: ChunkReader(store: store), root: root, depth: entry.depth, blockCount: entry.blockCount)
                }
                var next: UInt64 = 0
                var sequence = 0
                while next < blockCount {
                    try Cancellation.check()
                    guard let batch = free.pop() else { return }
                    try fill(batch, from: next, previous: previous)
                    batch.sequence = sequence
                    sequence += 1
                    next += batch.holeBlocks > 0 ? batch.holeBlocks : UInt64(batch.count)
                    toWork.push(batch)
                }
                batchCount.increment(by: sequence)
                finished.increment()
                toWrite.push(BlockBatch.endMarker, sequence: sequence)
            } catch {
                stopAll(error)
            }
        }

        var workerThreads: [PipelineThread] = []
        for i in 0..<workers {
            workerThreads.append(
                PipelineThread(name: "cairn-hash-\(i)") { [self] in
                    let hasher = SHA256Hasher()
                    let encoder = ChunkEncoder(level: store.compressionLevel)
                    while let batch = toWork.pop() {
                        do throws(CairnError) {
                            try process(batch, hasher: hasher, encoder: encoder)
                        } catch {
                            stopAll(error)
                            return
                        }
                        toWrite.push(batch, sequence: batch.sequence)
                    }
                })
        }

        let tree = IndexTreeWriter(store: store, encoder: ChunkEncoder(level: store.compressionLevel))
        var lastProgress = 0.0
        var sequence = 0
        writing: do {
            while let batch = toWrite.pop(sequence: sequence) {
                if batch === BlockBatch.endMarker { break }
                do throws(CairnError) {
                    try Cancellation.check()
                    try write(batch, into: tree)
                } catch {
                    stopAll(error)
                    break writing
                }
                free.push(batch)
                sequence += 1
                if let progress, clock.elapsed - lastProgress >= 0.5 {
                    lastProgress = clock.elapsed
                    let done = min(image.virtualSize, writtenBlocks * UInt64(blockSize))
                    progress(
                        BackupProgress(
                            disk: name, bytesDone: done, bytesTotal: image.virtualSize, bytesNew: bytesNew,
                            seconds: clock.elapsed))
                }
            }
        }
        free.close()
        toWork.close()
        toWrite.close()
        reader.join()
        for thread in workerThreads { thread.join() }
        if let error = failure.first { throw error }
        guard writtenBlocks == blockCount else {
            throw CairnError(.io, "backup of \(name) stopped after \(writtenBlocks) of \(blockCount) blocks")
        }
        let (root, depth) = try tree.finish()
        return Manifest.DiskEntry(
            name: name, size: image.virtualSize, blockCount: blockCount, root: root.hex, depth: depth,
            zeroBlocks: zeroBlocks, changedBlocks: changedBlocks, source: image.info)
    }

    private var writtenBlocks: UInt64 = 0

    // MARK: Stages

    /// Set once the previous restore point's index turns out damaged: the rest of the disk is
    /// then backed up as if there were no previous restore point (every block looked up), so a
    /// damaged index page never stops the backup that would heal the repository.
    private var previousIsDamaged = false

    private func previousDigest(_ previous: IndexTreeReader) -> ChunkDigest? {
        guard !previousIsDamaged else { return nil }
        do {
            return try previous.next()
        } catch {
            previousIsDamaged = true
            return nil
        }
    }

    /// Reader stage: decides which blocks lie in holes, reads the rest, and lines up the previous
    /// restore point's digests for the same blocks.
    private func fill(_ batch: BlockBatch, from first: UInt64, previous: IndexTreeReader?) throws(CairnError) {
        let bs = UInt64(blockSize)
        let start = first * bs
        batch.firstBlock = first
        batch.holeBlocks = 0
        batch.bytesRead = 0
        batch.needsRead = false

        // A long zero extent becomes a data-less batch.
        let head = try image.extent(at: start, maxLength: Self.maxHoleBlocks * bs)
        if head.isZero && head.length >= bs * UInt64(batch.capacity) {
            var blocks = head.length / bs
            if start + head.length >= image.virtualSize { blocks = blockCount - first }
            batch.holeBlocks = blocks
            previous?.skip(blocks)
            return
        }

        let count = Int(min(UInt64(batch.capacity), blockCount - first))
        batch.count = count
        let end = min(image.virtualSize, start + UInt64(count) * bs)
        for i in 0..<count {
            let offset = start + UInt64(i) * bs
            batch.lengths[i] = Int(min(bs, image.virtualSize - offset))
            batch.isHole[i] = true
        }
        // Mark blocks that touch data.
        var position = start
        // The first extent is the one already asked for: reuse it, cut to this batch.
        var known: ImageExtent? = ImageExtent(length: min(head.length, end - start), isZero: head.isZero)
        while position < end {
            let extent: ImageExtent
            if let first = known {
                extent = first
                known = nil
            } else {
                extent = try image.extent(at: position, maxLength: end - position)
            }
            let extentEnd = position + max(1, extent.length)
            if !extent.isZero {
                let a = Int((position - start) / bs)
                let b = Int((extentEnd - 1 - start) / bs)
                for i in a...min(b, count - 1) { batch.isHole[i] = false }
            }
            position = extentEnd
        }
        batch.needsRead = true
        if !readInWorkers { try readData(batch) }
        for k in 0..<count {
            if let previous, let digest = previousDigest(previous) {
                batch.previous[k] = digest
                batch.hasPrevious[k] = true
            } else {
                batch.hasPrevious[k] = false
            }
        }
    }

    /// Reads the batch's data blocks, one `pread` per run of consecutive data blocks.
    private func readData(_ batch: BlockBatch) throws(CairnError) {
        guard batch.needsRead else { return }
        batch.needsRead = false
        let bs = UInt64(blockSize)
        let start = batch.firstBlock * bs
        let count = batch.count
        var i = 0
        while i < count {
            if batch.isHole[i] {
                i += 1
                continue
            }
            var j = i
            var bytes = 0
            while j < count && !batch.isHole[j] {
                bytes += batch.lengths[j]
                j += 1
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: batch.data[(i * blockSize)..<(i * blockSize + bytes)])
            try image.read(into: target, at: start + UInt64(i) * bs)
            batch.bytesRead += UInt64(bytes)
            i = j
        }
    }

    /// Worker stage: zero check, SHA-256, compare with the previous digest, compress what is new.
    ///
    /// New blocks that fall in the same aligned 2 MiB window of the disk are compressed together
    /// as one frame record, far smaller than blocks compressed alone; restore, which reads the
    /// disk in order, still decompresses each frame once.
    private func process(_ batch: BlockBatch, hasher: SHA256Hasher, encoder: ChunkEncoder) throws(CairnError) {
        guard batch.holeBlocks == 0 else { return }
        try readData(batch)
        let zero = ZeroBlock.digest
        let frameBlocks = UInt64(max(1, PackFormat.maxFrameBytes / blockSize))
        batch.recordCount = 0
        var newCount = 0
        var frameFirst = 0  // index into newBlocks of the open frame's first member
        var frameBytes = 0
        var frameWindow = UInt64.max

        func closeFrame() {
            let members = newCount - frameFirst
            guard members > 0 else { return }
            let slot = batch.nextRecordSlot()
            let length: Int
            if members == 1 {
                let i = batch.newBlocks[frameFirst]
                length = encoder.encode(batch.block(i), digest: batch.digests[i], kind: .data, into: slot)
            } else {
                length = encoder.encodeFrame(count: members, into: slot) { k in
                    let i = batch.newBlocks[frameFirst + k]
                    return (batch.block(i), batch.digests[i])
                }
            }
            batch.addRecord(length: length)
            frameFirst = newCount
            frameBytes = 0
        }

        for i in 0..<batch.count {
            if batch.isHole[i] || batch.block(i).isAllZero {
                batch.digests[i] = zero
                batch.outcomes[i] = .zero
                continue
            }
            let bytes = batch.block(i)
            let digest = hasher.digest(bytes)
            batch.digests[i] = digest
            if batch.hasPrevious[i] && batch.previous[i] == digest && !store.isDistrusted(digest) {
                batch.outcomes[i] = .unchanged
            } else if store.contains(digest)
                || (0..<newCount).contains(where: { batch.digests[batch.newBlocks[$0]] == digest })
            {
                batch.outcomes[i] = .known
            } else {
                let window = (batch.firstBlock + UInt64(i)) / frameBlocks
                if window != frameWindow || frameBytes + bytes.count > PackFormat.maxFrameBytes { closeFrame() }
                frameWindow = window
                batch.newBlocks[newCount] = i
                newCount += 1
                frameBytes += bytes.count
                batch.outcomes[i] = .new
            }
        }
        closeFrame()
    }

    /// Writer stage: stores new chunks (once, even if two workers found the same one) and feeds
    /// the index tree, in block order.
    private func write(_ batch: BlockBatch, into tree: IndexTreeWriter) throws(CairnError) {
        bytesRead += batch.bytesRead
        if batch.holeBlocks > 0 {
            try tree.append(ZeroBlock.digest, count: batch.holeBlocks)
            zeroBlocks += batch.holeBlocks
            writtenBlocks += batch.holeBlocks
            return
        }
        for i in 0..<batch.count {
            try tree.append(batch.digests[i])
            switch batch.outcomes[i] {
            case .zero:
                zeroBlocks += 1
                if batch.hasPrevious[i] && batch.previous[i] != ZeroBlock.digest { changedBlocks += 1 }
            case .unchanged:
                break
            case .known:
                changedBlocks += 1
            case .new:
                changedBlocks += 1
            }
        }
        for r in 0..<batch.recordCount {
            bytesNew += UInt64(try store.store(record: batch.record(r)).bytes)
        }
        writtenBlocks += UInt64(batch.count)
    }
}

extension BlockBatch {
    /// Sent by the reader after the last batch, so the writer knows the disk is complete.
    static let endMarker = BlockBatch(capacity: 1, blockSize: 1)
}
