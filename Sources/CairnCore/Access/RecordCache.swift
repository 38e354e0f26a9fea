import Foundation
import Synchronization

/// Decompressed pack records shared by every reader of a served repository, within a byte bound.
///
/// Serving a disk reads blocks in any order and in small pieces, but blocks are stored in
/// frames of up to 2 MiB that decompress only whole: without a cache, every 4 KiB read would
/// cost a 2 MiB decompression. An entry holds one record's plain bytes with each chunk in it
/// already proved by its SHA-256 (or marked damaged), so a hit is a copy and nothing more.
/// Least recently used entries are evicted; two threads that miss on the same record wait for
/// one load instead of decompressing it twice.
public final class RecordCache: Sendable {
    /// The bound on the plain bytes held.
    public let capacity: Int

    struct Key: Hashable {
        var pack: PackID
        var offset: UInt64
    }

    /// A load in progress; threads that want the same record wait on `done`.
    final class PendingLoad: Sendable {
        let done = DispatchSemaphore(value: 0)
        let waiters = Atomic<Int>(0)
    }

    enum Slot {
        case ready(CachedRecord, lastUse: UInt64)
        case loading(PendingLoad)
    }

    struct State {
        var slots: [Key: Slot] = [:]
        var bytes = 0
        var clock: UInt64 = 0
        var hits = 0
        var misses = 0
    }

    private let state = Mutex(State())

    /// Frame buffers of evicted entries, reused instead of freed: a steady stream of misses then
    /// decompresses into warm memory (fresh pages cost a fault and a zeroing each) and the heap
    /// does not fragment into the gaps of freed 2 MiB blocks. Four frames' worth at most.
    let buffers = BufferPool(capacity: 4 * PackFormat.maxFrameBytes)

    /// A buffer of `PackFormat.maxFrameBytes` to decompress a frame into.
    func takeFrameBuffer() -> UnsafeMutableRawBufferPointer { buffers.take(PackFormat.maxFrameBytes) }

    /// Takes back a buffer from `takeFrameBuffer` (or an entry's).
    func recycle(_ buffer: UnsafeMutableRawBufferPointer) { buffers.give(buffer) }

    public init(capacity: Int) {
        self.capacity = max(capacity, PackFormat.maxFrameBytes)
    }

    /// Hits and misses so far (for the log and tests).
    public var statistics: (hits: Int, misses: Int, bytes: Int) {
        state.withLock { ($0.hits, $0.misses, $0.bytes) }
    }

    /// The record at `key`: from the cache, or made by `load` (on this thread) and kept.
    func record(
        _ key: Key, load: () throws(CairnError) -> CachedRecord
    ) throws(CairnError) -> CachedRecord {
        while true {
            enum Step {
                case hit(CachedRecord)
                case wait(PendingLoad)
                case load(PendingLoad)
            }
            let step = state.withLock { state -> Step in
                state.clock &+= 1
                switch state.slots[key] {
                case .ready(let record, _):
                    state.slots[key] = .ready(record, lastUse: state.clock)
                    state.hits += 1
                    return .hit(record)
                case .loading(let pending):
                    pending.waiters.add(1, ordering: .relaxed)
                    return .wait(pending)
                case nil:
                    let pending = PendingLoad()
                    state.slots[key] = .loading(pending)
                    state.misses += 1
                    return .load(pending)
                }
            }
            switch step {
            case .hit(let record):
                return record
            case .wait(let pending):
                pending.done.wait()
                continue  // ready now, or failed: then this thread tries (and reports) itself
            case .load(let pending):
                let result: Result<CachedRecord, CairnError>
                do throws(CairnError) {
                    result = .success(try load())
                } catch {
                    result = .failure(error)
                }
                state.withLock { state in
                    switch result {
                    case .success(let record):
                        state.slots[key] = .ready(record, lastUse: state.clock)
                        state.bytes += record.cost
                        evict(&state, keeping: key)
                    case .failure:
                        // Damaged records are not kept: each read that needs one fails and is logged.
                        state.slots[key] = nil
                    }
                }
                for _ in 0..<pending.waiters.load(ordering: .relaxed) { pending.done.signal() }
                return try result.get()
            }
        }
    }

    /// Drops least recently used records until the bytes held fit the capacity.
    ///
    /// - Complexity: O(n) per record dropped, n the records held (at most a few thousand).
    private func evict(_ state: inout State, keeping key: Key) {
        while state.bytes > capacity {
            var oldest: (Key, UInt64, Int)?
            for (k, slot) in state.slots where k != key {
                if case .ready(let record, let lastUse) = slot, lastUse < (oldest?.1 ?? .max) {
                    oldest = (k, lastUse, record.cost)
                }
            }
            guard let (victim, _, count) = oldest else { return }
            state.slots[victim] = nil
            state.bytes -= count
        }
    }
}

/// One pack record's plain bytes and, for each chunk in it, whether it matched its digest.
///
/// `@unchecked Sendable`: the bytes are written once, in `init`, before the record is shared,
/// and only read afterwards; they are freed when the last reader lets go of the record.
final class CachedRecord: @unchecked Sendable {
    struct Member {
        var offset: Int
        var length: Int
        var digest: ChunkDigest
        var intact: Bool
    }

    let bytes: UnsafeRawBufferPointer
    /// Bytes allocated for it: what it counts against the cache's capacity.
    let cost: Int
    /// In frame order (ascending offsets).
    let members: [Member]

    /// Copies `plain` and proves each of `members` (offset, length, digest) against its digest.
    init(
        copying plain: UnsafeRawBufferPointer, members list: [(Int, Int, ChunkDigest)], hasher: ChunkHasher,
        cache: RecordCache
    ) {
        (bytes, cost, owner) = Self.copy(plain, into: cache)
        members = Self.prove(bytes, list, hasher)
    }

    /// Takes ownership of `buffer` (from `cache.takeFrameBuffer`), whose first `count` bytes are
    /// a frame's plain bytes, and proves each member.
    init(
        owning buffer: UnsafeMutableRawBufferPointer, count: Int, members list: [(Int, Int, ChunkDigest)],
        hasher: ChunkHasher, recycleTo cache: RecordCache
    ) {
        bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        cost = buffer.count
        owner = cache
        members = Self.prove(bytes, list, hasher)
    }

    /// `plain` copied: into a pooled buffer when it is large (given back when the entry goes),
    /// else into an allocation of its own size (a pooled one would round small ones up a lot).
    private static func copy(
        _ plain: UnsafeRawBufferPointer, into cache: RecordCache
    ) -> (UnsafeRawBufferPointer, Int, RecordCache?) {
        let pooled = plain.count >= BufferPool.granularity
        let buffer =
            pooled ? cache.buffers.take(plain.count) : .allocate(byteCount: max(plain.count, 1), alignment: 64)
        if plain.count > 0 { buffer.baseAddress!.copyMemory(from: plain.baseAddress!, byteCount: plain.count) }
        return (UnsafeRawBufferPointer(rebasing: buffer[0..<plain.count]), buffer.count, pooled ? cache : nil)
    }

    private static func prove(
        _ bytes: UnsafeRawBufferPointer, _ list: [(Int, Int, ChunkDigest)], _ hasher: ChunkHasher
    ) -> [Member] {
        var members: [Member] = []
        members.reserveCapacity(list.count)
        for (offset, length, digest) in list {
            let intact =
                offset >= 0 && length >= 0 && offset + length <= bytes.count
                && hasher.digest(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length])) == digest
            members.append(Member(offset: offset, length: length, digest: digest, intact: intact))
        }
        return members
    }

    /// A chunk already proved by its reader: kept without hashing again.
    init(copyingProved plain: UnsafeRawBufferPointer, digest: ChunkDigest, cache: RecordCache) {
        (bytes, cost, owner) = Self.copy(plain, into: cache)
        members = [Member(offset: 0, length: plain.count, digest: digest, intact: true)]
    }

    /// The cache whose frame buffer this is (to give it back), if it is one.
    private let owner: RecordCache?

    deinit {
        let buffer = UnsafeMutableRawBufferPointer(
            start: UnsafeMutableRawPointer(mutating: bytes.baseAddress), count: cost)
        if let owner { owner.recycle(buffer) } else { buffer.deallocate() }
    }

    /// The member that starts at `offset`, by binary search.
    func member(at offset: Int) -> Member? {
        var low = 0
        var high = members.count
        while low < high {
            let mid = (low + high) / 2
            if members[mid].offset < offset { low = mid + 1 } else { high = mid }
        }
        return low < members.count && members[low].offset == offset ? members[low] : nil
    }
}
