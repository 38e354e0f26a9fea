/// A restore point's per-disk index: the digest of every block, in order, as a tree of pages.
///
/// Leaf pages list up to 1,024 block digests; each higher page lists up to 1,024 digests of pages
/// below. Pages are content-addressed chunks, so an unchanged region of a disk reuses yesterday's
/// pages and an unchanged night stores nothing but a new manifest. Each restore point still names
/// its own complete tree: there are no chains between restore points.
public enum IndexTree {
    public static let fanout = 1024
    public static let pageBytes = fanout * ChunkDigest.byteCount
}

/// Builds a disk's index tree from its block digests, storing each page as it fills (into the
/// job's write transaction, passed to each call).
final class IndexTreeWriter {
    private let store: ChunkStore
    /// Where to keep a copy of each page written (a backup's, for its next night: `TreePageCache`).
    var cache: TreePageCache?
    private let encoder: ChunkEncoder
    private let hasher: ChunkHasher
    private var levels: [[UInt8]] = [[]]
    private var emitted: [Int] = [0]
    private var slot: UnsafeMutableRawBufferPointer
    private(set) var pagesStored = 0

    init(store: ChunkStore, encoder: ChunkEncoder) {
        self.store = store
        self.encoder = encoder
        hasher = store.makeHasher()
        slot = .allocate(byteCount: ChunkEncoder.slotSize(rawLength: IndexTree.pageBytes), alignment: 64)
        levels[0].reserveCapacity(IndexTree.pageBytes)
    }

    deinit { slot.deallocate() }

    func append(_ digest: ChunkDigest, into transaction: inout ChunkWriteTransaction) throws(CairnError) {
        try append(digest, level: 0, into: &transaction)
    }

    /// Appends `count` copies of one digest (a hole or a run of zero blocks). Whole pages of a
    /// single digest are hashed once and remembered, so a 1 TiB empty disk costs thousands of
    /// appends, not millions.
    func append(_ digest: ChunkDigest, count: UInt64, into transaction: inout ChunkWriteTransaction)
        throws(CairnError)
    {
        var remaining = count
        while remaining > 0 && !levels[0].isEmpty {
            try append(digest, level: 0, into: &transaction)
            remaining -= 1
        }
        let fanout = UInt64(IndexTree.fanout)
        if remaining >= fanout {
            let page = try uniformPage(of: digest, into: &transaction)
            for _ in 0..<(remaining / fanout) {
                emitted[0] += 1
                try append(page, level: 1, into: &transaction)
            }
            remaining %= fanout
        }
        for _ in 0..<remaining { try append(digest, level: 0, into: &transaction) }
    }

    private var uniformPages: [ChunkDigest: ChunkDigest] = [:]

    /// The digest of a full page listing `digest` 1,024 times, stored if new.
    private func uniformPage(of digest: ChunkDigest, into transaction: inout ChunkWriteTransaction)
        throws(CairnError) -> ChunkDigest
    {
        if let known = uniformPages[digest] { return known }
        var page: [UInt8] = []
        page.reserveCapacity(IndexTree.pageBytes)
        for _ in 0..<IndexTree.fanout { withUnsafeBytes(of: digest) { page.append(contentsOf: $0) } }
        let stored = try storePage(page, into: &transaction)
        uniformPages[digest] = stored
        return stored
    }

    private func append(_ digest: ChunkDigest, level: Int, into transaction: inout ChunkWriteTransaction)
        throws(CairnError)
    {
        if level == levels.count {
            levels.append([])
            levels[level].reserveCapacity(IndexTree.pageBytes)
            emitted.append(0)
        }
        withUnsafeBytes(of: digest) { levels[level].append(contentsOf: $0) }
        if levels[level].count == IndexTree.pageBytes {
            let page = try storePage(levels[level], into: &transaction)
            levels[level].removeAll(keepingCapacity: true)
            emitted[level] += 1
            try append(page, level: level + 1, into: &transaction)
        }
    }

    private func storePage(_ page: [UInt8], into transaction: inout ChunkWriteTransaction) throws(CairnError)
        -> ChunkDigest
    {
        try page.withBytesThrowing { raw throws(CairnError) -> ChunkDigest in
            let digest = hasher.digest(raw)
            cache?.keep(digest, raw)  // the next night's backup reads it from here
            if !store.contains(digest) {
                let record = encoder.encode(raw, digest: digest, kind: .indexPage, into: slot)
                if try transaction.store(record: record).chunks > 0 { pagesStored += 1 }
            }
            return digest
        }
    }

    /// Flushes partial pages upward and returns the root page's digest and the tree's depth
    /// (1 = the root lists block digests).
    func finish(into transaction: inout ChunkWriteTransaction) throws(CairnError) -> (root: ChunkDigest, depth: Int) {
        var level = 0
        while true {
            if level == levels.count - 1 && emitted[level] == 0 {
                // A top page with one entry is redundant: its child page already lists everything.
                // Collapsing it keeps the shape canonical: depth = ⌈log₁₀₂₄(blocks)⌉, at least 1.
                if level > 0 && levels[level].count == ChunkDigest.byteCount {
                    let only = levels[level].withUnsafeBytes { ChunkDigest(loadingFrom: $0) }
                    return (only, level)
                }
                return (try storePage(levels[level], into: &transaction), level + 1)
            }
            if !levels[level].isEmpty {
                let page = try storePage(levels[level], into: &transaction)
                levels[level].removeAll(keepingCapacity: true)
                emitted[level] += 1
                try append(page, level: level + 1, into: &transaction)
            }
            level += 1
        }
    }
}

/// Reads a disk's index tree, holding one page per level: in block order, or skipping ahead.
final class IndexTreeReader {
    private let reader: ChunkReader
    private let depth: Int
    let blockCount: UInt64
    private let rootDigest: ChunkDigest
    /// pages[0] is the root; pages[depth-1] lists block digests.
    private var pages: [[ChunkDigest]]
    /// Which page of its level each loaded page is (nil: none loaded).
    private var loaded: [UInt64?]
    /// The next block `next()` returns.
    private(set) var produced: UInt64 = 0
    /// Called with every page digest as it is loaded (verify and gc use it to mark pages).
    var onPage: ((ChunkDigest) -> Void)?
    /// Copies of pages to try before the store, and to keep what is read (a backup's previous
    /// restore point only: verify and gc read the store itself).
    var cache: TreePageCache?

    init(reader: ChunkReader, root: ChunkDigest, depth: Int, blockCount: UInt64) throws(CairnError) {
        var capacity: UInt64 = 1
        for _ in 0..<max(depth, 1) {
            capacity =
                capacity.multipliedReportingOverflow(by: UInt64(IndexTree.fanout)).overflow
                ? .max : capacity * UInt64(IndexTree.fanout)
        }
        guard depth >= 1, depth <= 8, blockCount <= capacity else {
            throw CairnError(.damaged, "index tree depth \(depth) cannot list \(blockCount) blocks")
        }
        self.reader = reader
        self.depth = depth
        self.blockCount = blockCount
        self.rootDigest = root
        pages = Array(repeating: [], count: depth)
        loaded = Array(repeating: nil, count: depth)
    }

    private func load(_ digest: ChunkDigest) throws(CairnError) -> [ChunkDigest] {
        onPage?(digest)
        // A cached copy is proved by its digest and sized as a page (`TreePageCache.page`).
        if let copy = cache?.page(digest) { return copy.withUnsafeBytes(Self.digests) }
        let bytes = try reader.read(digest)
        guard bytes.count % ChunkDigest.byteCount == 0, bytes.count <= IndexTree.pageBytes else {
            throw CairnError(.damaged, "index page \(digest) has \(bytes.count) bytes, not a whole number of digests")
        }
        cache?.keep(digest, bytes)
        return Self.digests(bytes)
    }

    /// The digests a page's bytes list, in order.
    private static func digests(_ bytes: UnsafeRawBufferPointer) -> [ChunkDigest] {
        var out: [ChunkDigest] = []
        out.reserveCapacity(bytes.count / ChunkDigest.byteCount)
        for i in 0..<(bytes.count / ChunkDigest.byteCount) {
            out.append(ChunkDigest(loadingFrom: bytes, at: i * ChunkDigest.byteCount))
        }
        return out
    }

    /// Makes `pages[level]` the page with index `page` within its level.
    private func ensure(level: Int, page: UInt64) throws(CairnError) {
        if loaded[level] == page { return }
        let digest: ChunkDigest
        if level == 0 {
            guard page == 0 else { throw truncated() }
            digest = rootDigest
        } else {
            digest = try childDigest(level: level, page: page)
        }
        pages[level] = try load(digest)
        loaded[level] = page
    }

    /// The digest of page `page` of `level`, as its parent lists it.
    private func childDigest(level: Int, page: UInt64) throws(CairnError) -> ChunkDigest {
        let fanout = UInt64(IndexTree.fanout)
        try ensure(level: level - 1, page: page / fanout)
        let entry = Int(page % fanout)
        guard entry < pages[level - 1].count else { throw truncated() }
        return pages[level - 1][entry]
    }

    /// The next block's digest, or nil after the last block.
    func next() throws(CairnError) -> ChunkDigest? {
        guard produced < blockCount else { return nil }
        let fanout = UInt64(IndexTree.fanout)
        let leaf = depth - 1
        try ensure(level: leaf, page: produced / fanout)
        let entry = Int(produced % fanout)
        guard entry < pages[leaf].count else { throw truncated() }
        produced += 1
        return pages[leaf][entry]
    }

    /// Moves past `count` blocks without reading their pages.
    func skip(_ count: UInt64) {
        produced = min(blockCount, produced + count)
    }

    /// True if the next block starts a full leaf page of zero blocks (which needs no reading).
    func atZeroLeafPage() throws(CairnError) -> Bool {
        let fanout = UInt64(IndexTree.fanout)
        guard produced % fanout == 0, produced + fanout <= blockCount else { return false }
        if depth == 1 { return false }
        return try childDigest(level: depth - 1, page: produced / fanout) == reader.store.zeroLeafPage
    }

    private func truncated() -> CairnError {
        CairnError(.damaged, "index tree \(rootDigest) holds fewer than its \(blockCount) blocks")
    }
}
