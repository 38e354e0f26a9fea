import Synchronization

/// The backup pipeline for one disk: read → hash, compare, compress (one worker per core) →
/// store and index, in block order.
///
/// Memory is a fixed number of batches whatever the disk's size. Holes and unallocated ranges
/// travel as data-less batches, so a sparse 8 GiB disk costs a few digests, not 8 GiB of reads.
///
/// With a trusted `ChangedBlockMap`, the reader asks for extents through a `ChangeTrackedImage`:
/// blocks wholly inside its `.unchanged` extents (dirty ranges are rounded outward to whole
/// blocks) are not read and take the previous restore point's digest; a few of
/// them, chosen at random, are read anyway and must hash to that digest. A mismatch, or an error
/// from the map, abandons the pass (`abandonReason`) so the caller can read the disk in full.
///
/// `@unchecked Sendable`: the pipeline's threads share it, each with its own fields. The reader
/// alone uses `random` and `previousIsDamaged` (and the image and map), the writer (the thread
/// that calls `run`) alone the counters, the workers only `let`s and `abandoned` (a `Mutex`);
/// the pipeline's joins order them before `run` returns.
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
    /// Trusted changes since `base`; nil reads every allocated block.
    let changes: (any ChangedBlockMap)?
    /// The image seen through `changes` (extents that are `.unchanged`), when there is a map.
    private let tracked: ChangeTrackedImage?
    /// Where the reader asks for extents: `tracked`, or the image itself.
    private let extents: any DiskImage
    /// Chance (out of 2^32) that a clean block is read and checked against its previous digest.
    let sampleThreshold: UInt64
    private var random: UInt64

    /// Why the change map was given up mid-pass (a sample mismatch or a map error); the pass then
    /// fails and must be run again without a map.
    var abandonReason: String? { abandoned.withLock { $0 } }
    private let abandoned = Mutex<String?>(nil)

    private(set) var bytesRead: UInt64 = 0
    private(set) var bytesNew: UInt64 = 0
    private var zeroBlocks: UInt64 = 0
    private var changedBlocks: UInt64 = 0
    private(set) var bytesSkipped: UInt64 = 0
    private(set) var sampledBlocks: UInt64 = 0

    /// Batches cover about 2 MiB of data, at least one block.
    static let batchBytes = 2 << 20
    /// Longest hole run one batch may stand for.
    static let maxHoleBlocks: UInt64 = 1 << 22

    init(
        store: ChunkStore, image: any DiskImage, name: String, base: Manifest.DiskEntry?,
        progress: (@Sendable (BackupProgress) -> Void)?, clock: Stopwatch, changes: (any ChangedBlockMap)? = nil,
        sampleBlocks: Int = 0
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
        self.changes = base == nil ? nil : changes
        tracked = self.changes.map { ChangeTrackedImage(image, changes: $0) }
        extents = tracked ?? image
        // Aim for `sampleBlocks` checks among the blocks that held data last time.
        let candidates = base.map { $0.blockCount - min($0.blockCount, $0.zeroBlocks) } ?? 0
        if sampleBlocks <= 0 || candidates == 0 {
            sampleThreshold = 0
        } else {
            sampleThreshold = min(1 << 32, min(UInt64(sampleBlocks), 1 << 31) << 32 / candidates)
        }
        random = UInt64.random(in: 1...UInt64.max)
    }

    /// Records why the change map is given up and stops the pass.
    private func abandon(_ reason: String) -> CairnError {
        abandoned.withLock { if $0 == nil { $0 = reason } }
        return CairnError(.damaged, "changed-block tracking was abandoned for \(name): \(reason)")
    }

    private func nextRandom() -> UInt64 {
        random ^= random << 13
        random ^= random >> 7
        random ^= random << 17
        return random
    }

    /// Backs the disk up, storing new chunks into `transaction` (which the job commits).
    ///
    /// The reader (a thread of its own) fills batches in disk order, the workers hash and
    /// compress them, and this thread, the writer, takes them back in disk order to store and
    /// index them: one `Pipeline` over a fixed ring of `2 × workers + 2` batches.
    func run(into transaction: inout ChunkWriteTransaction) throws(CairnError) -> Manifest.DiskEntry {
        let workers = Parallelism.workers
        let capacity = max(1, Self.batchBytes / blockSize)
        let batches = (0..<(2 * workers + 2)).map { _ in BlockBatch(capacity: capacity, blockSize: blockSize) }
        let pipeline = Pipeline<BlockBatch>(name: "cairn-hash", workers: workers, delivery: .inOrder, pool: batches) {
            [self] _ in
            let hasher = store.makeHasher()
            let encoder = store.makeEncoder()
            return { [self] (batch: inout BlockBatch) throws(CairnError) in
                try process(batch, hasher: hasher, encoder: encoder)
            }
        }
        // The extents are walked for the progress total before the reader starts: an image is
        // used from one thread at a time (`DiskImage`), and the reader asks it for extents too.
        // An NBD export's block status is asked for in order, once, by the reader: it is not
        // walked ahead of time, and its progress counts the virtual size.
        let countsAllocated = progress != nil && image.info.kind != .nbd
        let allocated = countsAllocated ? allocatedBytes() : image.virtualSize
        pipeline.startSource(name: "cairn-read") { [self] (pipeline) throws(CairnError) in
            let previous = try base.flatMap { entry throws(CairnError) -> IndexTreeReader? in
                let tree = try IndexTreeReader(
                    reader: ChunkReader(store: store), root: entry.root, depth: entry.depth,
                    blockCount: entry.blockCount)
                tree.cache = store.treePages
                return tree
            }
            var next: UInt64 = 0
            while next < blockCount {
                let batch = try pipeline.acquire()
                try fill(batch, from: next, previous: previous)
                next += batch.holeBlocks > 0 ? batch.holeBlocks : UInt64(batch.count)
                try pipeline.submit(batch)
            }
        }

        let tree = IndexTreeWriter(store: store, encoder: store.makeEncoder())
        tree.cache = store.treePages
        var lastProgress = 0.0
        do throws(CairnError) {
            while let batch = try pipeline.next() {
                try write(batch, into: tree, transaction: &transaction)
                pipeline.recycle(batch)
                if let progress, clock.elapsed - lastProgress >= 0.5 {
                    lastProgress = clock.elapsed
                    progress(
                        BackupProgress(
                            disk: name,
                            bytesDone: min(
                                allocated, countsAllocated ? allocatedWritten : writtenBlocks * UInt64(blockSize)),
                            bytesTotal: allocated,
                            bytesNew: bytesNew, seconds: clock.elapsed, virtualSize: image.virtualSize))
                }
            }
        } catch {
            pipeline.stop(error)
        }
        try pipeline.finish()
        if let progress {
            progress(
                BackupProgress(
                    disk: name, bytesDone: allocated, bytesTotal: allocated, bytesNew: bytesNew,
                    seconds: clock.elapsed, virtualSize: image.virtualSize))
        }
        guard writtenBlocks == blockCount else {
            throw CairnError(.io, "backup of \(name) stopped after \(writtenBlocks) of \(blockCount) blocks")
        }
        let (root, depth) = try tree.finish(into: &transaction)
        return Manifest.DiskEntry(
            name: name, size: image.virtualSize, blockCount: blockCount, root: root, depth: depth,
            zeroBlocks: zeroBlocks, changedBlocks: changedBlocks, source: image.info)
    }

    private var writtenBlocks: UInt64 = 0
    /// Bytes of the blocks written so far that were not holes: progress counts allocated data,
    /// so a sparse disk's progress runs to 100% instead of stalling where its data ends.
    private var allocatedWritten: UInt64 = 0

    /// The guest bytes that are not known zeros (what the progress line counts), from the
    /// image's extents. The walk reads only metadata; on an image so fragmented that it takes
    /// more than a second, the rest of the disk counts as allocated (an estimate, never an error).
    private func allocatedBytes() -> UInt64 {
        let walk = Stopwatch()
        var position: UInt64 = 0
        var total: UInt64 = 0
        while position < image.virtualSize {
            guard walk.elapsed < 1,
                let extent = try? image.extent(at: position, maxLength: image.virtualSize - position)
            else {
                return total + (image.virtualSize - position)
            }
            let length = max(1, min(extent.length, image.virtualSize - position))
            if !extent.isZero { total += length }
            position += length
        }
        return total
    }

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

    /// The extent at `offset`, through the change map when there is one; an error from the map
    /// gives the map up (`abandon`).
    private func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        do {
            return try extents.extent(at: offset, maxLength: maxLength)
        } catch {
            guard let tracked, let failure = tracked.takeMapFailure() else { throw error }
            throw abandon("reading \(tracked.changes.description) failed: \(failure.message)")
        }
    }

    /// Reader stage: decides which blocks lie in holes, which are unchanged since the base (a
    /// trusted map calls them clean), reads the rest, and lines up the previous restore point's
    /// digests for the same blocks.
    private func fill(_ batch: BlockBatch, from first: UInt64, previous: IndexTreeReader?) throws(CairnError) {
        let bs = UInt64(blockSize)
        let start = first * bs
        batch.firstBlock = first
        batch.holeBlocks = 0
        batch.bytesRead = 0
        batch.needsRead = false

        // A long zero extent becomes a data-less batch. Ask about one batch first: asking a qcow2
        // image about a long run of data walks its L2 entries to the run's end, which per batch
        // would make a big data extent cost quadratic time.
        let batchSpan = bs * UInt64(batch.capacity)
        var head = try extent(at: start, maxLength: batchSpan)
        if head.isZero && head.length >= batchSpan {
            head = try extent(at: start, maxLength: Self.maxHoleBlocks * bs)
        }
        if head.isZero && head.length >= batchSpan {
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
            batch.sources[i] = .hole
            batch.isSample[i] = false
        }
        // Blocks that touch data are read; blocks wholly inside one run of unchanged extents are
        // unchanged (for now: below, only if the base has a digest the repository trusts); a
        // block that an unchanged run only partly covers is read.
        var position = start
        var unchangedFrom: UInt64?
        func closeUnchanged(at runEnd: UInt64) {
            guard let from = unchangedFrom else { return }
            unchangedFrom = nil
            let a = Int((from - start) / bs)
            let b = Int((runEnd - 1 - start) / bs)
            for i in a...min(b, count - 1) {
                let blockStart = start + UInt64(i) * bs
                let whole = blockStart >= from && blockStart + UInt64(batch.lengths[i]) <= runEnd
                if whole && batch.sources[i] == .hole {
                    batch.sources[i] = .unchanged
                } else {
                    batch.sources[i] = .data
                }
            }
        }
        // The first extent is the one already asked for: reuse it, cut to this batch.
        var known: ImageExtent? = ImageExtent(length: min(head.length, end - start), state: head.state)
        while position < end {
            let extent: ImageExtent
            if let first = known {
                extent = first
                known = nil
            } else {
                extent = try self.extent(at: position, maxLength: end - position)
            }
            let extentEnd = position + max(1, extent.length)
            switch extent.state {
            case .zero:
                closeUnchanged(at: position)
            case .data:
                closeUnchanged(at: position)
                let a = Int((position - start) / bs)
                let b = Int((extentEnd - 1 - start) / bs)
                for i in a...min(b, count - 1) { batch.sources[i] = .data }
            case .unchanged:
                if unchangedFrom == nil { unchangedFrom = position }
            }
            position = extentEnd
        }
        closeUnchanged(at: end)
        for k in 0..<count {
            if let previous, let digest = previousDigest(previous) {
                batch.previous[k] = digest
                batch.hasPrevious[k] = true
            } else {
                batch.hasPrevious[k] = false
            }
        }
        // An unchanged block takes the base's digest only if the repository still trusts it; a
        // random few are read anyway and must hash to it.
        for i in 0..<count where batch.sources[i] == .unchanged {
            if !batch.hasPrevious[i] || store.isDistrusted(batch.previous[i]) {
                batch.sources[i] = .data
            } else if sampleThreshold > 0 && nextRandom() >> 32 < sampleThreshold {
                batch.sources[i] = .data
                batch.isSample[i] = true
            }
        }
        batch.needsRead = true
        if !readInWorkers { try readData(batch) }
    }

    /// Reads the batch's data blocks, one `pread` per run of consecutive data blocks.
    private func readData(_ batch: BlockBatch) throws(CairnError) {
        guard batch.needsRead else { return }
        batch.needsRead = false
        batch.bytesSkipped = 0
        let bs = UInt64(blockSize)
        let start = batch.firstBlock * bs
        let count = batch.count
        var i = 0
        while i < count {
            if batch.sources[i] != .data {
                if batch.sources[i] == .unchanged { batch.bytesSkipped += UInt64(batch.lengths[i]) }
                i += 1
                continue
            }
            var j = i
            var bytes = 0
            while j < count && batch.sources[j] == .data {
                bytes += batch.lengths[j]
                j += 1
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: batch.data[(i * blockSize)..<(i * blockSize + bytes)])
            try image.read(into: target, at: start + UInt64(i) * bs)
            batch.bytesRead += UInt64(bytes)
            i = j
        }
    }

    /// Worker stage: zero check, chunk id (SHA-256 or keyed), compare with the previous digest, compress what is new.
    ///
    /// New blocks that fall in the same aligned 2 MiB window of the disk are compressed together
    /// as one frame record, far smaller than blocks compressed alone; restore, which reads the
    /// disk in order, still decompresses each frame once.
    private func process(_ batch: BlockBatch, hasher: ChunkHasher, encoder: ChunkEncoder) throws(CairnError) {
        guard batch.holeBlocks == 0 else { return }
        try readData(batch)
        let zero = ZeroBlock.digest
        let frameBlocks = UInt64(max(1, PackFormat.maxFrameBytes / blockSize))
        batch.removeRecords()
        var newCount = 0
        var frameFirst = 0  // index into newBlocks of the open frame's first member
        var frameBytes = 0
        var frameWindow = UInt64.max

        func closeFrame() {
            let members = newCount - frameFirst
            guard members > 0 else { return }
            let slot = batch.nextRecordSlot()
            let record: EncodedRecord
            if members == 1 {
                let i = batch.newBlocks[frameFirst]
                record = encoder.encode(batch.block(i), digest: batch.digests[i], kind: .data, into: slot)
            } else {
                record = encoder.encodeFrame(count: members, into: slot) { k in
                    let i = batch.newBlocks[frameFirst + k]
                    return (batch.block(i), batch.digests[i])
                }
            }
            batch.addRecord(record)
            frameFirst = newCount
            frameBytes = 0
        }

        batch.sampledBlocks = 0
        for i in 0..<batch.count {
            switch batch.sources[i] {
            case .hole:
                batch.digests[i] = zero
                batch.outcomes[i] = .zero
                continue
            case .unchanged:
                batch.digests[i] = batch.previous[i]
                batch.outcomes[i] = batch.previous[i] == zero ? .zero : .unchanged
                continue
            case .data:
                break
            }
            let bytes = batch.block(i)
            let isZero = bytes.isAllZero
            let digest = isZero ? zero : hasher.digest(bytes)
            if batch.isSample[i] {
                batch.sampledBlocks += 1
                if digest != batch.previous[i] {
                    let offset = (batch.firstBlock + UInt64(i)) * UInt64(blockSize)
                    throw abandon(
                        "\(changes?.description ?? "the bitmap") calls the block at offset \(offset) clean, but it "
                            + "differs from the previous restore point")
                }
            }
            if isZero {
                batch.digests[i] = zero
                batch.outcomes[i] = .zero
                continue
            }
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
    private func write(
        _ batch: BlockBatch, into tree: IndexTreeWriter, transaction: inout ChunkWriteTransaction
    ) throws(CairnError) {
        bytesRead += batch.bytesRead
        if batch.holeBlocks > 0 {
            try tree.append(ZeroBlock.digest, count: batch.holeBlocks, into: &transaction)
            zeroBlocks += batch.holeBlocks
            writtenBlocks += batch.holeBlocks
            return
        }
        for i in 0..<batch.count {
            try tree.append(batch.digests[i], into: &transaction)
            if batch.sources[i] != .hole { allocatedWritten += UInt64(batch.lengths[i]) }
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
        bytesSkipped += batch.bytesSkipped
        sampledBlocks += UInt64(batch.sampledBlocks)
        for r in 0..<batch.recordCount {
            bytesNew += UInt64(try transaction.store(record: batch.record(r)).bytes)
        }
        writtenBlocks += UInt64(batch.count)
    }
}
