/// The most recently used grain tables of one sparse extent, at most `capacity` of them.
///
/// A hosted sparse grain table is 512 little-endian u32 entries (2 KiB, 32 MiB of 64 KiB grains);
/// a vmfsSparse (COWD) table 4096 u32 entries (16 KiB); an SEsparse table 4096 u64 entries
/// (32 KiB, 16 MiB of 4 KiB grains). 64 tables cover a backup that reads in order and stay
/// small when a disk has many extents. Buffers are reused on eviction, so a lookup never
/// allocates once the cache is warm.
final class VMDKGrainTableCache {
    static let capacity = 64

    /// Bytes of one table.
    let tableBytes: Int
    private var tables: [[UInt8]] = []
    private var sectors: [UInt64] = []
    private var lastUse: [UInt64] = []
    private var slots: [UInt64: Int] = [:]
    private var clock: UInt64 = 0

    init(tableBytes: Int) {
        self.tableBytes = tableBytes
    }

    /// Returns the slot holding the table at `sector`, loading it with `load` on a miss.
    func slot(
        for sector: UInt64, load: (UnsafeMutableRawBufferPointer) throws(CairnError) -> Void
    ) throws(CairnError) -> Int {
        clock += 1
        if let hit = slots[sector] {
            lastUse[hit] = clock
            return hit
        }
        let slot: Int
        if tables.count < Self.capacity {
            tables.append([UInt8](repeating: 0, count: tableBytes))
            sectors.append(UInt64.max)
            lastUse.append(clock)
            slot = tables.count - 1
        } else {
            slot = lastUse.indices.min { lastUse[$0] < lastUse[$1] }!
            slots[sectors[slot]] = nil
            sectors[slot] = UInt64.max
        }
        // The slot stays unnamed until the load succeeds, so a failed read is never served later.
        try tables[slot].withMutableBytesThrowing { raw throws(CairnError) in try load(raw) }
        sectors[slot] = sector
        slots[sector] = slot
        lastUse[slot] = clock
        return slot
    }

    /// Entry `index` of the u32 table in `slot`.
    func entry32(_ slot: Int, _ index: Int) -> UInt32 {
        tables[slot].withUnsafeBytes {
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
        }
    }

    /// Entry `index` of the u64 table in `slot`.
    func entry64(_ slot: Int, _ index: Int) -> UInt64 {
        tables[slot].withUnsafeBytes {
            UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
        }
    }
}
