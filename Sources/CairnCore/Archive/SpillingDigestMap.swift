import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A map from chunk digests to bit masks that keeps at most `memoryLimit` entries in memory and
/// spills the rest to sorted files searched through memory maps.
///
/// Archives need "which chunks are already written" (the writer) and "which chunks do the indexes
/// still need, and for which restore points" (verify, import): one entry per distinct chunk, 16
/// million for a 1 TiB archive. Here the heap holds at most `memoryLimit` entries (about 80 bytes
/// each) plus one bit per spilled entry; spilled entries cost 40 bytes on disk. A lookup probes
/// memory, then each run by binary search (runs are few: one per `memoryLimit` entries).
final class SpillingDigestMap {
    private static let entrySize = 40
    let directory: String
    let memoryLimit: Int
    private var memory: [ChunkDigest: UInt64] = [:]
    private var runs: [Run] = []

    private final class Run {
        let path: String
        let map: MappedFile
        let count: Int
        /// Entries already taken (their chunk arrived), one bit each.
        var taken: [UInt64]

        init(path: String) throws(CairnError) {
            self.path = path
            map = try MappedFile(path: path)
            count = map.count / SpillingDigestMap.entrySize
            taken = Array(repeating: 0, count: (count + 63) / 64)
        }

        deinit { try? FileSystem.remove(path) }

        func digest(_ i: Int) -> ChunkDigest {
            ChunkDigest(loadingFrom: map.bytes, at: i * SpillingDigestMap.entrySize)
        }
        func value(_ i: Int) -> UInt64 {
            UInt64(
                littleEndian: map.bytes.loadUnaligned(
                    fromByteOffset: i * SpillingDigestMap.entrySize + 32, as: UInt64.self))
        }
        func isTaken(_ i: Int) -> Bool { taken[i / 64] & (1 << UInt64(i % 64)) != 0 }
        func take(_ i: Int) { taken[i / 64] |= 1 << UInt64(i % 64) }

        /// Index of `digest` (entries in a run are unique), if present.
        func find(_ digest: ChunkDigest) -> Int? {
            var low = 0
            var high = count
            while low < high {
                let mid = (low + high) / 2
                let d = self.digest(mid)
                if d == digest { return mid }
                if d < digest { low = mid + 1 } else { high = mid }
            }
            return nil
        }
    }

    /// Entries kept in memory by maps made without an explicit limit (tests lower it to make
    /// every path spill; results do not depend on it).
    static var defaultMemoryLimit: Int {
        get { defaultLimit.load(ordering: .relaxed) }
        set { defaultLimit.store(newValue, ordering: .relaxed) }
    }
    private static let defaultLimit = Atomic<Int>(1 << 19)

    /// `directory` holds the spilled runs (removed when the map goes away).
    init(directory: String, memoryLimit: Int = SpillingDigestMap.defaultMemoryLimit) {
        self.directory = directory
        self.memoryLimit = max(1, memoryLimit)
        // Runs that a killed archive write or verify left behind.
        DeadProcessFiles.sweep(directory) { DeadProcessFiles.pid(in: $0, after: Self.filePrefix) }
    }

    static let filePrefix = ".cairn-digests-"

    /// True if `digest` is present and not taken.
    func contains(_ digest: ChunkDigest) -> Bool {
        if memory[digest] != nil { return true }
        for run in runs { if let i = run.find(digest), !run.isTaken(i) { return true } }
        return false
    }

    /// Adds `mask` to the entry for `digest` (creating it).
    func insert(_ digest: ChunkDigest, mask: UInt64) throws(CairnError) {
        memory[digest, default: 0] |= mask
        if memory.count >= memoryLimit { try spill() }
    }

    /// Removes `digest` and returns the union of its masks, or nil if it was absent.
    func take(_ digest: ChunkDigest) -> UInt64? {
        var found = memory.removeValue(forKey: digest)
        for run in runs {
            if let i = run.find(digest), !run.isTaken(i) {
                run.take(i)
                found = (found ?? 0) | run.value(i)
            }
        }
        return found
    }

    /// How many distinct digests are still present, and one of them (for messages).
    ///
    /// A digest can sit in memory and in several runs; a merge over the sorted runs and the sorted
    /// memory counts it once without holding the runs in memory.
    var remaining: (count: Int, example: (digest: ChunkDigest, mask: UInt64)?) {
        let inMemory = memory.keys.sorted()
        var cursors = Array(repeating: 0, count: runs.count)
        var memoryCursor = 0
        var count = 0
        var example: (digest: ChunkDigest, mask: UInt64)?
        func skipTaken(_ r: Int) {
            while cursors[r] < runs[r].count && runs[r].isTaken(cursors[r]) { cursors[r] += 1 }
        }
        for r in runs.indices { skipTaken(r) }
        while true {
            var smallest: ChunkDigest?
            if memoryCursor < inMemory.count { smallest = inMemory[memoryCursor] }
            for r in runs.indices where cursors[r] < runs[r].count {
                let d = runs[r].digest(cursors[r])
                if smallest == nil || d < smallest! { smallest = d }
            }
            guard let digest = smallest else { break }
            count += 1
            if example == nil { example = (digest, 0) }
            if memoryCursor < inMemory.count && inMemory[memoryCursor] == digest {
                if example!.digest == digest { example!.mask |= memory[digest]! }
                memoryCursor += 1
            }
            for r in runs.indices where cursors[r] < runs[r].count && runs[r].digest(cursors[r]) == digest {
                if example!.digest == digest { example!.mask |= runs[r].value(cursors[r]) }
                cursors[r] += 1
                skipTaken(r)
            }
        }
        return (count, example)
    }

    /// The union of the masks of every entry still present.
    var unionOfRemaining: UInt64 {
        var mask: UInt64 = 0
        for value in memory.values { mask |= value }
        for run in runs {
            for i in 0..<run.count where !run.isTaken(i) { mask |= run.value(i) }
        }
        return mask
    }

    private func spill() throws(CairnError) {
        let entries = memory.sorted { $0.key < $1.key }
        memory.removeAll(keepingCapacity: true)
        let path = "\(directory)/\(Self.filePrefix)\(getpid())-\(runs.count)-\(UInt32.random(in: 0...UInt32.max)).tmp"
        do {
            try DigestRunFile.write(entries.lazy.map { ($0.key, $0.value) }, to: path)
            runs.append(try Run(path: path))
        } catch {
            try? FileSystem.remove(path)
            throw error
        }
    }
}

/// Where archive commands may put temporary files: `$TMPDIR`, else /var/tmp (on disk, not in RAM).
enum ScratchDirectory {
    static var path: String {
        if let tmp = getenv("TMPDIR"), FileSystem.isDirectory(String(cString: tmp)) { return String(cString: tmp) }
        return FileSystem.isDirectory("/var/tmp") ? "/var/tmp" : "/tmp"
    }
}
