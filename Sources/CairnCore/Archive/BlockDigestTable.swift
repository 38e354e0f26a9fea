#if canImport(Glibc)
    import Glibc
#endif

/// A disk's (digest, block) pairs sorted by digest, for archive restore: which blocks each
/// arriving chunk goes to.
///
/// Pairs arrive in block order while the index is read. Up to `runLimit` are held in memory;
/// beyond that, sorted runs are written to files and merged into one sorted file that is searched
/// through a memory map. Heap memory is at most `runLimit` × 40 bytes (40 MiB by default) however
/// large the disk; a 1 TiB disk of data puts about 640 MiB in a temporary file instead.
///
/// `@unchecked Sendable`: it holds a memory map (`MappedFile`) and is filled and finished by one
/// thread; only after `finish()` do the archive restore's workers share it, and then only read it.
final class BlockDigestTable: @unchecked Sendable {
    static let entrySize = 40
    let directory: String
    let runLimit: Int
    private var pending: [(ChunkDigest, UInt64)] = []
    private var runs: [String] = []
    private var merged: MappedFile?
    private var mergedPath: String?
    private var sorted: [(ChunkDigest, UInt64)] = []
    private(set) var count = 0

    /// `directory` holds the temporary files (only written when the table outgrows `runLimit`).
    init(directory: String, runLimit: Int = 1 << 20) {
        self.directory = directory
        self.runLimit = max(1, runLimit)
        // Runs that a killed archive restore left beside its output.
        DeadProcessFiles.sweep(directory) { DeadProcessFiles.pid(in: $0, after: Self.filePrefix) }
    }

    static let filePrefix = ".cairn-restore-"

    deinit { close() }

    /// Removes the temporary files (the table is unusable afterwards).
    func close() {
        for run in runs { try? FileSystem.remove(run) }
        runs = []
        if let mergedPath { try? FileSystem.remove(mergedPath) }
        mergedPath = nil
        merged = nil
        sorted = []
        count = 0
    }

    func append(_ digest: ChunkDigest, block: UInt64) throws(CairnError) {
        pending.append((digest, block))
        count += 1
        if pending.count >= runLimit { try spill() }
    }

    private func temporaryPath() -> String {
        "\(directory)/\(Self.filePrefix)\(getpid())-\(runs.count)-\(UInt32.random(in: 0...UInt32.max)).tmp"
    }

    private func spill() throws(CairnError) {
        pending.sort { $0.0 < $1.0 }
        let path = temporaryPath()
        runs.append(path)
        try DigestRunFile.write(pending, to: path)
        pending.removeAll(keepingCapacity: true)
    }

    /// Sorts what is left and, if runs were spilled, merges them into one mapped file.
    func finish() throws(CairnError) {
        if runs.isEmpty {
            sorted = pending.sorted { $0.0 < $1.0 }
            pending = []
            return
        }
        if !pending.isEmpty { try spill() }
        pending = []
        let path = temporaryPath()
        let out = try File.open(path, .createNew)
        mergedPath = path
        let readers = try runs.map { (run) throws(CairnError) in try RunReader(path: run) }
        var w = ByteWriter(capacity: 1 << 20)
        var offset: UInt64 = 0
        while true {
            var best: Int?
            for (i, r) in readers.enumerated() where r.current != nil {
                if let b = best, !(r.current!.0 < readers[b].current!.0) { continue }
                best = i
            }
            guard let b = best else { break }
            let (digest, block) = readers[b].current!
            w.append(digest)
            w.le(block)
            if w.count >= 1 << 20 {
                try out.write(w.bytes, at: offset)
                offset += UInt64(w.count)
                w = ByteWriter(capacity: 1 << 20)
            }
            try readers[b].advance()
        }
        try out.write(w.bytes, at: offset)
        for run in runs { try? FileSystem.remove(run) }
        runs = []
        merged = try MappedFile(path: path)
    }

    func digest(at i: Int) -> ChunkDigest {
        if let merged { return ChunkDigest(loadingFrom: merged.bytes, at: i * Self.entrySize) }
        return sorted[i].0
    }

    func block(at i: Int) -> UInt64 {
        if let merged {
            return UInt64(
                littleEndian: merged.bytes.loadUnaligned(fromByteOffset: i * Self.entrySize + 32, as: UInt64.self))
        }
        return sorted[i].1
    }

    /// The entries for `digest` (empty if no block needs it).
    /// - Complexity: O(log n).
    func range(of digest: ChunkDigest) -> Range<Int> {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            if self.digest(at: mid) < digest { low = mid + 1 } else { high = mid }
        }
        var end = low
        while end < count && self.digest(at: end) == digest { end += 1 }
        return low..<end
    }

    /// Reads one spilled run sequentially, 1 MiB at a time.
    private final class RunReader {
        let file: File
        let size: UInt64
        var offset: UInt64 = 0
        var buffer: [UInt8] = []
        var position = 0
        var current: (ChunkDigest, UInt64)?

        init(path: String) throws(CairnError) {
            file = try File.open(path, .readOnly)
            size = try file.size()
            try advance()
        }

        func advance() throws(CairnError) {
            if position + BlockDigestTable.entrySize > buffer.count {
                guard offset < size else {
                    current = nil
                    return
                }
                let want = Int(
                    min(UInt64((1 << 20) / BlockDigestTable.entrySize * BlockDigestTable.entrySize), size - offset))
                buffer = try file.readBytes(count: want, at: offset)
                offset += UInt64(buffer.count)
                position = 0
                guard buffer.count >= BlockDigestTable.entrySize else {
                    current = nil
                    return
                }
            }
            let at = position
            current = buffer.withUnsafeBytes { raw in
                (
                    ChunkDigest(loadingFrom: raw, at: at),
                    UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 32, as: UInt64.self))
                )
            }
            position += BlockDigestTable.entrySize
        }
    }
}

/// Files of 40-byte entries (a digest, then a little-endian `UInt64`) in the caller's order:
/// the spilled runs of `BlockDigestTable` and `SpillingDigestMap`.
enum DigestRunFile {
    static func write(_ entries: some Sequence<(ChunkDigest, UInt64)>, to path: String) throws(CairnError) {
        let file = try File.open(path, .createNew)
        var w = ByteWriter(capacity: 1 << 20)
        var offset: UInt64 = 0
        for (digest, value) in entries {
            w.append(digest)
            w.le(value)
            if w.count >= 1 << 20 {
                try file.write(w.bytes, at: offset)
                offset += UInt64(w.count)
                w = ByteWriter(capacity: 1 << 20)
            }
        }
        try file.write(w.bytes, at: offset)
    }
}
