/// A run of consecutive blocks moving through the backup pipeline, with all its buffers.
///
/// Batches are allocated once per run and reused: the reader fills `data`, a worker fills
/// `digests`, `outcomes` and the records (new blocks, compressed together in frames), the
/// writer consumes them. A batch whose blocks
/// all lie in a hole carries no data at all and may cover far more blocks than its capacity.
///
/// `@unchecked Sendable`: it owns raw buffers and moves between threads only through a
/// `Pipeline`, whose lock orders each hand-off, and one stage at a time holds it (the reader, one
/// worker, then the writer); no two threads ever touch a batch at once.
final class BlockBatch: @unchecked Sendable {
    enum Outcome: UInt8 {
        /// All zero: recorded as the zero digest, never stored.
        case zero
        /// Same digest as the previous restore point at this offset.
        case unchanged
        /// Changed here, but the repository already holds the chunk.
        case known
        /// New to the repository: it is a member of one of the batch's records.
        case new
    }

    /// Where a block's digest comes from.
    enum Source: UInt8 {
        /// Read and hashed.
        case data
        /// Lies wholly in a range the image reports as zeros: not read, the zero digest.
        case hole
        /// Unchanged since the base: a trusted dirty bitmap marks it clean, so it is not read and
        /// takes the previous restore point's digest.
        case unchanged
    }

    let capacity: Int
    let blockSize: Int
    let data: UnsafeMutableRawBufferPointer
    /// The batch's encoded records, back to back: room for every block as a record of its own,
    /// plus each frame's member list.
    let records: UnsafeMutableRawBufferPointer

    var firstBlock: UInt64 = 0
    var count = 0
    /// When non-zero, the batch is `holeBlocks` all-zero blocks and the per-block arrays are unused.
    var holeBlocks: UInt64 = 0
    var lengths: [Int]
    var sources: [Source]
    /// A clean block read anyway, to check the bitmap: its digest must equal `previous`.
    var isSample: [Bool]
    var previous: [ChunkDigest]
    var hasPrevious: [Bool]
    var digests: [ChunkDigest]
    var outcomes: [Outcome]
    /// The records encoded into `records` (their storage kept from batch to batch).
    private var encoded: [EncodedRecord] = []
    /// Scratch for the worker: indices of the blocks new so far in this batch.
    var newBlocks: [Int]
    var bytesRead: UInt64 = 0
    /// Bytes of `.unchanged` blocks (not read).
    var bytesSkipped: UInt64 = 0
    var sampledBlocks = 0
    /// Data blocks are yet to be read (by the reader thread or a worker).
    var needsRead = false

    init(capacity: Int, blockSize: Int) {
        self.capacity = capacity
        self.blockSize = blockSize
        data = .allocate(byteCount: capacity * blockSize, alignment: 4096)
        records = .allocate(
            byteCount: capacity * (ChunkEncoder.slotSize(rawLength: blockSize) + 64), alignment: 64)
        let zero = ChunkDigest(w0: 0, w1: 0, w2: 0, w3: 0)
        lengths = Array(repeating: 0, count: capacity)
        sources = Array(repeating: .data, count: capacity)
        isSample = Array(repeating: false, count: capacity)
        previous = Array(repeating: zero, count: capacity)
        hasPrevious = Array(repeating: false, count: capacity)
        digests = Array(repeating: zero, count: capacity)
        outcomes = Array(repeating: .zero, count: capacity)
        encoded.reserveCapacity(capacity)
        newBlocks = Array(repeating: 0, count: capacity)
    }

    deinit {
        data.deallocate()
        records.deallocate()
    }

    func block(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: data[(i * blockSize)..<(i * blockSize + lengths[i])])
    }

    var recordCount: Int { encoded.count }

    /// Forgets the records of the batch's previous use.
    func removeRecords() { encoded.removeAll(keepingCapacity: true) }

    /// Room for the next record, after those encoded so far.
    func nextRecordSlot() -> UnsafeMutableRawBufferPointer {
        let start =
            encoded.last.map { $0.bytes.baseAddress! + $0.bytes.count - UnsafeRawPointer(records.baseAddress!) } ?? 0
        return UnsafeMutableRawBufferPointer(rebasing: records[start...])
    }

    /// Notes a record encoded into `nextRecordSlot()`.
    func addRecord(_ record: EncodedRecord) {
        encoded.append(record)
    }

    func record(_ r: Int) -> EncodedRecord { encoded[r] }
}
