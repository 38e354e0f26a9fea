/// A run of consecutive blocks moving through the backup pipeline, with all its buffers.
///
/// Batches are allocated once per run and reused: the reader fills `data`, a worker fills
/// `digests`, `outcomes` and the record slots, the writer consumes them. A batch whose blocks
/// all lie in a hole carries no data at all and may cover far more blocks than its capacity.
final class BlockBatch: @unchecked Sendable {
    enum Outcome: UInt8 {
        /// All zero: recorded as the zero digest, never stored.
        case zero
        /// Same digest as the previous restore point at this offset.
        case unchanged
        /// Changed here, but the repository already holds the chunk.
        case known
        /// New to the repository: its record is in the block's slot.
        case new
    }

    let capacity: Int
    let blockSize: Int
    let slotSize: Int
    let data: UnsafeMutableRawBufferPointer
    let slots: UnsafeMutableRawBufferPointer

    var sequence = 0
    var firstBlock: UInt64 = 0
    var count = 0
    /// When non-zero, the batch is `holeBlocks` all-zero blocks and the per-block arrays are unused.
    var holeBlocks: UInt64 = 0
    var lengths: [Int]
    /// True if the block lies wholly in a range the image reports as zeros (not read).
    var isHole: [Bool]
    var previous: [ChunkDigest]
    var hasPrevious: [Bool]
    var digests: [ChunkDigest]
    var outcomes: [Outcome]
    var recordLengths: [Int]
    var bytesRead: UInt64 = 0
    /// Data blocks are yet to be read (by the reader thread or a worker).
    var needsRead = false

    init(capacity: Int, blockSize: Int) {
        self.capacity = capacity
        self.blockSize = blockSize
        slotSize = ChunkEncoder.slotSize(rawLength: blockSize)
        data = .allocate(byteCount: capacity * blockSize, alignment: 4096)
        slots = .allocate(byteCount: capacity * slotSize, alignment: 64)
        let zero = ChunkDigest(w0: 0, w1: 0, w2: 0, w3: 0)
        lengths = Array(repeating: 0, count: capacity)
        isHole = Array(repeating: false, count: capacity)
        previous = Array(repeating: zero, count: capacity)
        hasPrevious = Array(repeating: false, count: capacity)
        digests = Array(repeating: zero, count: capacity)
        outcomes = Array(repeating: .zero, count: capacity)
        recordLengths = Array(repeating: 0, count: capacity)
    }

    deinit {
        data.deallocate()
        slots.deallocate()
    }

    func block(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: data[(i * blockSize)..<(i * blockSize + lengths[i])])
    }

    func slot(_ i: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: slots[(i * slotSize)..<((i + 1) * slotSize)])
    }

    func record(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: slots[(i * slotSize)..<(i * slotSize + recordLengths[i])])
    }
}
