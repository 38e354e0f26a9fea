/// Decodes chunk records on worker threads (one per core) and hands each chunk's plain bytes to
/// `handle`, which may run on any worker and in any order. A frame record is decompressed once
/// and each of its members handed over in turn.
///
/// The reader copies records into a fixed ring of batches (three per worker, each at least 2 MiB
/// and big enough for the largest record, a frame record included), so memory does not grow with
/// the archive and reading overlaps decompression, hashing and writing. Damaged records are
/// collected as problems, with the chunks they carried; any other error stops the pass.
final class ArchiveChunkWorkers: @unchecked Sendable {
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
    private let batchCount: Int
    private let free = WorkQueue<Batch>()
    private let work = WorkQueue<Batch>()
    private let failure = PipelineFailure()
    private let damage = NSLockBox<[Damage]>([])
    private var threads: [PipelineThread] = []
    private var current: Batch?
    private var finished = false

    init(chunkBlockSize: Int, handle: @escaping Handler) {
        capacity = max(
            2 << 20, RecordHeader.size + ZstdCompressor.bound(max(chunkBlockSize, IndexTree.pageBytes)),
            RecordHeader.size + ChunkReader.maxFramePayload)
        let maxChunk = max(chunkBlockSize, IndexTree.pageBytes)
        let workers = Parallelism.workers
        batchCount = workers * 3
        for _ in 0..<batchCount { free.push(Batch(capacity: capacity)) }
        for i in 0..<workers {
            threads.append(
                PipelineThread(name: "cairn-archive-\(i)") { [free, work, failure, damage] in
                    let decoder = RecordDecoder(outputBytes: max(maxChunk, PackFormat.maxFrameBytes))
                    while let batch = work.pop() {
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
                            } catch {
                                failure.record(error)
                                free.close()
                                work.close()
                            }
                        }
                        batch.used = 0
                        batch.records.removeAll(keepingCapacity: true)
                        batch.chunks.removeAll(keepingCapacity: true)
                        free.push(batch)
                    }
                })
        }
    }

    deinit { stop() }

    /// Copies one chunk record (already checked) and the chunks it carries into the current batch.
    func submit(_ record: EncodedRecord, location: ArchiveLocation, chunks: [ArrivingChunk]) throws(CairnError) {
        let body = record.bytes
        if let error = failure.first { throw error }
        if let batch = current, batch.used + body.count > capacity { flush() }
        if current == nil {
            guard let batch = free.pop() else { throw failure.first ?? CairnError(.io, "the chunk workers stopped") }
            current = batch
        }
        let batch = current!
        (batch.bytes.baseAddress! + batch.used).copyMemory(from: body.baseAddress!, byteCount: body.count)
        let first = batch.chunks.count
        batch.chunks.append(contentsOf: chunks)
        batch.records.append(
            Batch.Record(
                offset: batch.used, length: body.count, location: location, chunks: first..<batch.chunks.count))
        batch.used += body.count
    }

    private func flush() {
        guard let batch = current else { return }
        current = nil
        if batch.records.isEmpty { free.push(batch) } else { work.push(batch) }
    }

    /// Waits for every submitted chunk; returns the damaged ones.
    func finish() throws(CairnError) -> [Damage] {
        flush()
        if failure.first == nil {
            var returned: [Batch] = []
            while returned.count < batchCount, let batch = free.pop() { returned.append(batch) }
            for batch in returned { free.push(batch) }
        }
        stop()
        if let error = failure.first { throw error }
        return damage.value
    }

    /// Stops the workers (after `finish`, or when the pass failed).
    func stop() {
        guard !finished else { return }
        finished = true
        work.close()
        free.close()
        for thread in threads { thread.join() }
    }
}
