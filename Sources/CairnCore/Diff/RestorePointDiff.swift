/// What differs between two restore points, per disk, from their index trees alone.
///
/// No block data is read: two blocks differ exactly when their digests do, and two subtrees whose
/// page digests are equal hold the same blocks, so an unchanged region costs one comparison per
/// page however large it is. Only the pages below differing entries are loaded.
public struct RestorePointDiff: Sendable, Encodable {
    public var from: String
    public var to: String
    public var disks: [DiskDiff]
    /// Settings files in either restore point, by name.
    public var settings: [SettingsDiff]

    public struct SettingsDiff: Sendable, Encodable {
        public var name: String
        /// `same`, `changed`, `added` (only in `to`) or `removed` (only in `from`).
        public var status: String
        /// A unified diff of the two texts (`diff -u` style); nil when equal or not text.
        public var unified: String?
    }

    public struct DiskDiff: Sendable, Encodable {
        public var name: String
        /// Guest bytes in each restore point; nil where the disk is absent from it.
        public var sizeFrom: UInt64?
        public var sizeTo: UInt64?
        /// Bytes in blocks whose contents differ, plus the bytes one disk has beyond the other.
        public var bytesDiffering: UInt64
        /// Differing byte ranges in guest offsets, merged where they touch; at most
        /// `RestorePointDiff.maxRanges` of them.
        public var ranges: [ByteRange]
        /// How many more ranges there are beyond `ranges`.
        public var moreRanges: Int
    }

    public struct ByteRange: Sendable, Encodable, Equatable {
        public var offset: UInt64
        public var length: UInt64
    }

    /// Ranges listed per disk (the count and bytes cover all of them).
    public static let maxRanges = 1000

    /// Compares two restore points of the same repository. Disks are matched by name.
    public init(repository: Repository, from a: RestorePointID, to b: RestorePointID) throws(CairnError) {
        let first = try repository.catalog.manifest(a)
        let second = try repository.catalog.manifest(b)
        from = first.id.description
        to = second.id.description
        disks = []
        settings = []
        let store = repository.store
        var names = first.disks.map(\.name)
        for disk in second.disks where !names.contains(disk.name) { names.append(disk.name) }
        for name in names {
            let x = first.disk(named: name)
            let y = second.disk(named: name)
            var diff = DiskDiff(
                name: name, sizeFrom: x?.size, sizeTo: y?.size, bytesDiffering: 0, ranges: [], moreRanges: 0)
            if let x, let y {
                var ranges = RangeCollector(limit: Self.maxRanges)
                try IndexTreeComparison(store: store, blockSize: UInt64(first.blockSize)).compare(x, y, into: &ranges)
                diff.bytesDiffering = ranges.bytes
                diff.ranges = ranges.ranges
                diff.moreRanges = ranges.more
            } else {
                let size = x?.size ?? y?.size ?? 0
                diff.bytesDiffering = size
                if size > 0 { diff.ranges = [ByteRange(offset: 0, length: size)] }
            }
            disks.append(diff)
        }
        var settingsNames = (first.settings ?? []).map(\.name)
        for file in second.settings ?? [] where !settingsNames.contains(file.name) { settingsNames.append(file.name) }
        for name in settingsNames {
            let x = first.settings?.first { $0.name == name }
            let y = second.settings?.first { $0.name == name }
            let status = x == nil ? "added" : y == nil ? "removed" : x!.digest == y!.digest ? "same" : "changed"
            var unified: String?
            if status != "same" {
                let old = try x.map { file throws(CairnError) in try file.read(from: store) } ?? []
                let new = try y.map { file throws(CairnError) in try file.read(from: store) } ?? []
                if let oldText = String(validating: old, as: UTF8.self),
                    let newText = String(validating: new, as: UTF8.self)
                {
                    unified = UnifiedDiff.make(
                        old: oldText, new: newText, oldName: "\(from)/\(name)", newName: "\(to)/\(name)")
                }
            }
            settings.append(SettingsDiff(name: name, status: status, unified: unified))
        }
    }
}

/// Merges differing byte ranges as they arrive in offset order, keeping the first `limit`.
struct RangeCollector {
    let limit: Int
    private(set) var ranges: [RestorePointDiff.ByteRange] = []
    private(set) var more = 0
    private(set) var bytes: UInt64 = 0
    /// The range being grown (not yet in `ranges`).
    private var open: RestorePointDiff.ByteRange?

    init(limit: Int) { self.limit = limit }

    mutating func add(offset: UInt64, length: UInt64) {
        guard length > 0 else { return }
        bytes += length
        if let current = open, current.offset + current.length == offset {
            open = .init(offset: current.offset, length: current.length + length)
            return
        }
        close()
        open = .init(offset: offset, length: length)
    }

    mutating func close() {
        guard let current = open else { return }
        if ranges.count < limit { ranges.append(current) } else { more += 1 }
        open = nil
    }
}

/// Walks two index trees side by side, descending only where page digests differ.
struct IndexTreeComparison {
    let store: ChunkStore
    let blockSize: UInt64

    func compare(
        _ a: Manifest.DiskEntry, _ b: Manifest.DiskEntry, into ranges: inout RangeCollector
    ) throws(CairnError) {
        let (rootA, rootB) = (a.root, b.root)
        let common = min(a.size, b.size)
        let commonBlocks = min(a.blockCount, b.blockCount)
        if a.depth == b.depth {
            try comparePages(
                rootA, rootB, level: 0, depth: a.depth, firstBlock: 0, limit: commonBlocks, common: common,
                reader: ChunkReader(store: store), ranges: &ranges)
        } else {
            // Trees of different heights (a disk grown past a level): compare block by block.
            let x = try IndexTreeReader(
                reader: ChunkReader(store: store), root: rootA, depth: a.depth, blockCount: a.blockCount)
            let y = try IndexTreeReader(
                reader: ChunkReader(store: store), root: rootB, depth: b.depth, blockCount: b.blockCount)
            for block in 0..<commonBlocks {
                guard let p = try x.next(), let q = try y.next() else { break }
                if p != q { ranges.add(offset: block * blockSize, length: blockLength(block, common: common)) }
            }
        }
        // What one disk has beyond the other differs whole.
        ranges.add(offset: common, length: max(a.size, b.size) - common)
        ranges.close()
    }

    private func blockLength(_ block: UInt64, common: UInt64) -> UInt64 {
        min(blockSize, common - min(common, block * blockSize))
    }

    /// Blocks below one entry of a page at `level` in a tree of `depth`.
    private func blocksPerEntry(level: Int, depth: Int) -> UInt64 {
        var span: UInt64 = 1
        for _ in (level + 1)..<depth { span *= UInt64(IndexTree.fanout) }
        return span
    }

    private func comparePages(
        _ a: ChunkDigest, _ b: ChunkDigest, level: Int, depth: Int, firstBlock: UInt64, limit: UInt64,
        common: UInt64, reader: ChunkReader, ranges: inout RangeCollector
    ) throws(CairnError) {
        guard a != b, firstBlock < limit else { return }
        guard depth >= 1, depth <= 8 else { throw CairnError(.damaged, "index tree depth \(depth) is impossible") }
        let x = try page(a, reader: reader)
        let y = try page(b, reader: reader)
        let span = blocksPerEntry(level: level, depth: depth)
        for i in 0..<min(x.count, y.count) {
            let first = firstBlock + UInt64(i) * span
            guard first < limit else { break }
            if level == depth - 1 {
                if x[i] != y[i] { ranges.add(offset: first * blockSize, length: blockLength(first, common: common)) }
            } else {
                try comparePages(
                    x[i], y[i], level: level + 1, depth: depth, firstBlock: first, limit: limit, common: common,
                    reader: reader, ranges: &ranges)
            }
        }
    }

    private func page(_ digest: ChunkDigest, reader: ChunkReader) throws(CairnError) -> [ChunkDigest] {
        let bytes = try reader.read(digest)
        guard bytes.count % ChunkDigest.byteCount == 0, bytes.count <= IndexTree.pageBytes else {
            throw CairnError(.damaged, "index page \(digest) has \(bytes.count) bytes, not a whole number of digests")
        }
        return (0..<(bytes.count / 32)).map { ChunkDigest(loadingFrom: bytes, at: $0 * 32) }
    }
}
