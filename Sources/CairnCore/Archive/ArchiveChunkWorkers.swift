/// Decodes chunk records on worker threads (one per core) and hands each chunk's plain bytes to
/// `handle`, which may run on any worker and in any order. A frame record is decompressed once
/// and each of its members handed over in turn.
///
/// The reader copies records into a fixed ring of batches (three per worker, each at least 2 MiB
/// and big enough for the largest record, a frame record included), so memory does not grow with
/// the archive and reading overlaps decompression, hashing and writing. Damaged records are
/// collected as problems, with the chunks they carried; any other error stops the pass.
///
/// One `Pipeline` with `.recycle` delivery: the scanner's thread fills batches and submits them,
/// the workers decode and hand over their chunks and give the batches back.
final class ArchiveChunkWorkers {
    /// `@unchecked Sendable`: it owns a raw buffer and moves between threads only through the
    /// `Pipeline` (whose lock orders each hand-off); one thread at a time holds it, the scanner's
    /// while it fills it, then one worker.
    final class Batch: @unchecked Sendable {
        let bytes: UnsafeMutableRawBufferPointer
        var used = 0
        var records: [Record] = []
        /// The chunks the records carry, with the points needing them (for `Damage`).
        var chunks: [ArrivingChunk] = []

        struct Record {
            /// Where the record's body starts in `bytes`.
            var offset: Int
            /// The record's length (header and payload).
            var length: Int
            var location: ArchiveLocation
            /// Its chunks in `chunks`.
            var chunks: Range<Int>
        }

        init(capacity: Int) { bytes = .allocate(byteCount: capacity, alignment: 64) }
        deinit { bytes.deallocate() }
    }

    /// A chunk record that failed to decode, with the chunks it was submitted with.
    struct Damage {
        var problem: ArchiveProblem
        var chunks: [ArrivingChunk]
    }

    typealias Handler = @Sendable (ChunkDigest, UnsafeRawBufferPointer, ArchiveLocation) throws(CairnError) -> Void

    let capacity: Int
    private let pipeline: Pipeline<Batch>
    private let damage: NSLockBox<[Damage]>
    private var current: Batch?
    private var finished = false

    /// `keys`: an encrypted archive's master key (its records are sealed, its ids keyed).
    init(chunkBlockSize: Int, keys: MasterKey? = nil, handle: @escaping Handler) {
        let capacity = max(
            2 << 20, RecordHeader.size + ZstdCompressor.bound(max(chunkBlockSize, IndexTree.pageBytes)),
            RecordHeader.size + ChunkReader.maxFramePayload)
        self.capacity = capacity
        let maxChunk = max(chunkBlockSize, IndexTree.pageBytes)
        let workers = Parallelism.workers
        let damage = NSLockBox<[Damage]>([])
        self.damage = damage
        pipeline = Pipeline<Batch>(
            name: "cairn-archive", workers: workers, delivery: .recycle,
            pool: (0..<(workers * 3)).map { _ in Batch(capacity: capacity) },
            interruptedMessage: "stopped before the end of the archive"
        ) { _ in
            let decoder = ArchiveKeys.decoder(keys, outputBytes: max(maxChunk, PackFormat.maxFrameBytes))
            return { (batch: inout Batch) throws(CairnError) in
                defer {
                    batch.used = 0
                    batch.records.removeAll(keepingCapacity: true)
                    batch.chunks.removeAll(keepingCapacity: true)
                }
                for record in batch.records {
                    let body = UnsafeRawBufferPointer(
                        rebasing: batch.bytes[record.offset..<record.offset + record.length])
                    do throws(CairnError) {
                        // Checked when submitted; this finds its header and members again.
                        let encoded = try EncodedRecord(
                            checking: body, checkCRC: false, maxChunk: maxChunk, malformed: .badArchive)
                        let plain = try decoder.openProved(encoded)
                        for member in encoded.members {
                            try handle(member.digest, RecordDecoder.chunk(member, in: plain), record.location)
                        }
                    } catch let error where error.code == .damaged {
                        damage.withLock {
                            $0.append(
                                Damage(
                                    problem: ArchiveProblem(
                                        location: record.location, message: error.message, code: .damaged),
                                    chunks: Array(batch.chunks[record.chunks])))
                        }
                    }
                }
            }
        }
    }

    deinit { stop() }

    /// Copies one chunk record (already checked) and the chunks it carries into the current batch.
    func submit(_ record: EncodedRecord, location: ArchiveLocation, chunks: [ArrivingChunk]) throws(CairnError) {
        let body = record.bytes
        if let error = pipeline.error { throw error }
        if let batch = current, batch.used + body.count > capacity { try flush() }
        let batch: Batch
        if let current {
            batch = current
        } else {
            batch = try pipeline.acquire()
            current = batch
        }
        (batch.bytes.baseAddress! + batch.used).copyMemory(from: body.baseAddress!, byteCount: body.count)
        let first = batch.chunks.count
        batch.chunks.append(contentsOf: chunks)
        batch.records.append(
            Batch.Record(
                offset: batch.used, length: body.count, location: location, chunks: first..<batch.chunks.count))
        batch.used += body.count
    }

    private func flush() throws(CairnError) {
        guard let batch = current else { return }
        current = nil
        if batch.records.isEmpty { pipeline.recycle(batch) } else { try pipeline.submit(batch) }
    }

    /// Waits for every submitted chunk; returns the damaged ones.
    func finish() throws(CairnError) -> [Damage] {
        do throws(CairnError) {
            try flush()
        } catch {
            pipeline.stop(error)
        }
        finished = true
        try pipeline.finish()
        return damage.value
    }

    /// Stops the workers (after `finish`, or when the pass failed): what is in flight is dropped.
    func stop() {
        guard !finished else { return }
        finished = true
        current = nil
        pipeline.stop(CairnError(.io, "the archive's chunk workers were stopped"))
        try? pipeline.finish()
    }
}
