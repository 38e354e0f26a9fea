/// The most recently used L2 tables of one image, at most `capacity` of them.
///
/// Keeps memory bounded whatever the image size (a 1 TiB image with 64 KiB clusters has 2048 L2
/// tables; only `capacity` are held). Tables are kept as raw big-endian bytes and their buffers are
/// reused on eviction, so a lookup never allocates once the cache is warm.
final class QCOW2L2Cache {
    /// Cache budget in bytes: 64 tables of 64 KiB clusters, fewer of bigger ones.
    static let budget = 16 << 20

    let tableSize: Int
    let capacity: Int
    private var tables: [[UInt8]] = []
    private var offsets: [UInt64] = []
    private var lastUse: [UInt64] = []
    private var clock: UInt64 = 0

    init(tableSize: Int) {
        self.tableSize = tableSize
        self.capacity = max(4, min(64, Self.budget / tableSize))
    }

    /// Returns the slot holding the table at host `offset`, loading it with `load` on a miss.
    func slot(
        for offset: UInt64, load: (UnsafeMutableRawBufferPointer) throws(CairnError) -> Void
    ) throws(CairnError) -> Int {
        clock += 1
        if let hit = offsets.firstIndex(of: offset) {
            lastUse[hit] = clock
            return hit
        }
        let slot: Int
        if tables.count < capacity {
            tables.append([UInt8](repeating: 0, count: tableSize))
            offsets.append(offset)
            lastUse.append(clock)
            slot = tables.count - 1
        } else {
            slot = lastUse.indices.min { lastUse[$0] < lastUse[$1] }!
        }
        // Mark the slot empty until the load succeeds, so a failed read is never served later.
        offsets[slot] = UInt64.max
        try tables[slot].withMutableBytesThrowing { raw throws(CairnError) in try load(raw) }
        offsets[slot] = offset
        lastUse[slot] = clock
        return slot
    }

    /// The big-endian u64 at entry `index` (in 8-byte units) of the table in `slot`.
    func word(_ slot: Int, _ index: Int) -> UInt64 {
        tables[slot].withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)) }
    }
}
