import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The content-addressed store: chunks in pack files, found through the chunk index.
///
/// Writes come from one thread (the backup's writer stage); lookups and reads from any number
/// of threads. Nothing written becomes visible to other processes until `commit()`, which makes
/// packs durable before the index segment that names them.
public final class ChunkStore: @unchecked Sendable {
    public let root: String
    public let blockSize: Int
    let compressionLevel: Int32
    let packTargetSize: UInt64

    /// Segments of the chunk index, newest last.
    private let segments: Mutex<[IndexSegment]>
    /// Segment files that failed their header checks when the index was loaded. Their chunks
    /// count as absent (a backup stores them again); commands report them and gc refuses to run.
    private let damaged: Mutex<[DamagedSegment]>
    /// Chunks written by this process and not yet in a segment (bounded by `flushThreshold`).
    private let pending = Mutex<[ChunkDigest: ChunkLocation]>([:])
    let packReaders = Mutex<[PackID: PackReader]>([:])
    /// Locations verify found damaged (`verify/damaged.json`): a chunk found only there counts
    /// as absent, so the next backup that holds it stores it again (healing).
    let distrusted: [ChunkDigest: ChunkLocation]

    // Writer-thread state.
    private var currentPack: PackWriter?
    private var finishedPacks: [PackWriter] = []
    private var unflushed: [(ChunkDigest, ChunkLocation)] = []
    /// The member list of the frame being stored (kept, so storing allocates nothing per frame).
    private var frameScratch: [FrameMember] = []
    /// Entries kept in memory before they are written out as a segment: bounds memory per run.
    static let flushThreshold = 262_144

    public private(set) var storedBytesWritten: UInt64 = 0
    public private(set) var chunksWritten: Int = 0

    /// `loadIndex: false` opens the store without its segments, for `rebuildIndex()` when a
    /// damaged segment would otherwise stop the repository from opening.
    init(root: String, blockSize: Int, compressionLevel: Int32, packTargetSize: UInt64, loadIndex: Bool = true)
        throws(CairnError)
    {
        self.root = root
        self.blockSize = blockSize
        self.compressionLevel = compressionLevel
        self.packTargetSize = packTargetSize
        var loaded = (segments: [IndexSegment](), damaged: [DamagedSegment]())
        if loadIndex { loaded = try Self.loadSegments(root: root) }
        segments = Mutex(loaded.segments)
        damaged = Mutex(loaded.damaged)
        distrusted = DamagedChunkList.load(root: root).locations
    }

    /// Opens every segment file. A segment that fails its checks is set aside rather than thrown,
    /// so one flipped bit cannot take the whole repository offline; an unknown format version or
    /// an I/O error still stops the open.
    static func loadSegments(root: String) throws(CairnError) -> (segments: [IndexSegment], damaged: [DamagedSegment]) {
        var loaded: [IndexSegment] = []
        var damaged: [DamagedSegment] = []
        for name in try FileSystem.list("\(root)/index") where name.hasSuffix(".idx") && !name.hasPrefix(".") {
            do {
                loaded.append(try IndexSegment(path: "\(root)/index/\(name)"))
            } catch  where error.code == .damaged {
                damaged.append(DamagedSegment(name: name, error: error))
            }
        }
        return (loaded, damaged)
    }

    /// Replaces this process's view of the index with what is on disk now.
    func reloadSegments() throws(CairnError) {
        let loaded = try Self.loadSegments(root: root)
        segments.withLock { $0 = loaded.segments }
        damaged.withLock { $0 = loaded.damaged }
    }

    public var segmentNames: [String] { segments.withLock { $0.map(\.name) } }
    public var indexSegments: [IndexSegment] { segments.withLock { $0 } }
    /// Segment files that could not be opened; empty in a healthy repository.
    public var damagedSegments: [DamagedSegment] { damaged.withLock { $0 } }

    /// Throws if any segment is damaged: for operations that must see the whole index (gc would
    /// take the packs only a damaged segment names for unreferenced ones).
    public func requireWholeIndex(for operation: String) throws(CairnError) {
        guard let first = damagedSegments.first else { return }
        let count = damagedSegments.count
        throw CairnError(
            .damaged,
            "cannot \(operation): chunk index segment \(first.name)\(count > 1 ? " and \(count - 1) more" : "") is damaged and \(operation) needs the whole index; run `cairn rebuild-index` first"
        )
    }

    // MARK: Lookups (any thread)

    public func lookup(_ digest: ChunkDigest) -> ChunkLocation? {
        if let hit = pending.withLock({ $0[digest] }) { return hit }
        return segments.withLock { segs -> ChunkLocation? in
            for segment in segs.reversed() {
                if let hit = segment.lookup(digest) { return hit }
            }
            return nil
        }
    }

    /// The error for a chunk the index does not find; names a damaged segment that may be why.
    func missingChunk(_ digest: ChunkDigest) -> CairnError {
        guard let segment = damagedSegments.first else {
            return CairnError(.damaged, "chunk \(digest) is missing from the repository")
        }
        return CairnError(
            .damaged,
            "chunk \(digest) is missing from the chunk index, whose segment \(segment.name) is damaged: run `cairn rebuild-index`, then try again"
        )
    }

    /// True if the store holds an intact copy of the chunk as far as it knows: a chunk whose only
    /// location verify found damaged counts as absent.
    public func contains(_ digest: ChunkDigest) -> Bool {
        if digest == ZeroBlock.digest { return true }
        guard let location = lookup(digest) else { return false }
        return distrusted.isEmpty || distrusted[digest] != location
    }

    /// True if the chunk's current location is one verify found damaged. Cheap when nothing is.
    func isDistrusted(_ digest: ChunkDigest) -> Bool {
        guard !distrusted.isEmpty, let bad = distrusted[digest] else { return false }
        return lookup(digest) == bad
    }

    func packReader(_ id: PackID) throws(CairnError) -> PackReader {
        if let reader = packReaders.withLock({ $0[id] }) { return reader }
        let reader = try PackReader(path: "\(root)/\(id.relativePath)", id: id)
        packReaders.withLock { cache in
            if cache.count >= 256 { cache.removeAll(keepingCapacity: true) }
            cache[id] = reader
        }
        return reader
    }

    // MARK: Writing (one thread)

    /// What `store(record:)` added: chunks newly findable and their plain bytes.
    struct Stored {
        var chunks = 0
        var bytes = 0
    }

    /// Stores one encoded record unless the store already holds its chunk. A frame record is
    /// stored if any member is new, and only its new members are indexed (a member stored
    /// meanwhile by another frame stays in this one as dead bytes, which gc can reclaim).
    @discardableResult
    func store(record: UnsafeRawBufferPointer) throws(CairnError) -> Stored {
        let isFrame = record[40] == ChunkKind.frame.rawValue
        if isFrame {
            _ = try PackFormat.frameMembers(
                payload: UnsafeRawBufferPointer(rebasing: record[PackFormat.recordHeaderSize...]),
                rawLength: Int(UInt32(littleEndian: record.loadUnaligned(fromByteOffset: 36, as: UInt32.self))),
                context: "frame record", into: &frameScratch)
            guard frameScratch.contains(where: { !contains($0.digest) }) else { return Stored() }
        } else if contains(ChunkDigest(loadingFrom: record)) {
            return Stored()
        }
        if currentPack == nil { currentPack = try PackWriter(repositoryPath: root) }
        let pack = currentPack!
        var stored = Stored()
        // A frame's members may meanwhile be stored (or repeat within it): index each once.
        for entry in try pack.append(record: record) where !isFrame || !contains(entry.digest) {
            let location = entry.location(in: pack.id)
            pending.withLock { $0[entry.digest] = location }
            unflushed.append((entry.digest, location))
            stored.chunks += 1
            stored.bytes += Int(entry.rawLength)
        }
        storedBytesWritten += UInt64(record.count)
        chunksWritten += stored.chunks
        if pack.size >= packTargetSize {
            try pack.finish()
            finishedPacks.append(pack)
            currentPack = nil
            if unflushed.count >= Self.flushThreshold { try commit() }
        }
        return stored
    }

    /// Makes every chunk stored so far durable and findable by other processes:
    /// packs synced and renamed into place, then a new index segment naming them.
    public func commit() throws(CairnError) {
        if let pack = currentPack {
            try pack.finish()
            finishedPacks.append(pack)
            currentPack = nil
        }
        guard !finishedPacks.isEmpty || !unflushed.isEmpty else { return }
        try syncFilesystem()
        var directories = Set<String>()
        for pack in finishedPacks {
            try FileSystem.rename(pack.temporaryPath, to: pack.finalPath)
            directories.insert(FileSystem.directoryName(pack.finalPath))
        }
        for directory in directories.sorted() { try FileSystem.syncDirectory(directory) }
        try FileSystem.syncDirectory("\(root)/packs")
        CairnLog.logger.info("packs committed: \(finishedPacks.count), with \(unflushed.count) new index entries")
        finishedPacks.removeAll()
        if !unflushed.isEmpty {
            let path = "\(root)/index/\(Self.newSegmentName())"
            try IndexSegment.write(entries: unflushed, to: path)
            let segment = try IndexSegment(path: path)
            segments.withLock { $0.append(segment) }
            pending.withLock { $0.removeAll() }
            unflushed.removeAll()
        }
    }

    /// Drops what was written but not committed (after a failure): temporary packs are removed.
    public func abandon() {
        currentPack?.abandon()
        currentPack = nil
        for pack in finishedPacks { pack.abandon() }
        finishedPacks.removeAll()
    }

    /// Swaps merged segments for their inputs in this process's view.
    func replaceSegments(_ old: [IndexSegment], with merged: IndexSegment) throws(CairnError) {
        let names = Set(old.map(\.name))
        segments.withLock { segs in
            segs.removeAll { names.contains($0.name) }
            segs.insert(merged, at: 0)
        }
    }

    /// Forces everything written to the repository's filesystem to stable storage.
    func syncFilesystem() throws(CairnError) {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw CairnError.io("open", root, .init(rawValue: errno)) }
        defer { close(fd) }
        if cairn_syncfs(fd) != 0 { throw CairnError.io("sync the filesystem of", root, .init(rawValue: errno)) }
        try FaultInjection.countWrite(root)
    }

    /// Segment names sort by creation time; the random tail keeps concurrent writers apart.
    static func newSegmentName() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let nanos = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        let time = String(nanos, radix: 16)
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return String(repeating: "0", count: 16 - time.count) + time + "-"
            + String(repeating: "0", count: 8 - random.count) + random + ".idx"
    }
}

/// A chunk index segment file that failed its checks when the index was loaded.
public struct DamagedSegment: Sendable, Equatable {
    /// The file name in `index/`.
    public var name: String
    public var error: CairnError

    /// One line for a person: what is wrong and what to do.
    public var warning: String {
        "\(error.message); until then, chunks only it names count as missing (a backup stores them again)"
    }
}

/// The all-zero block: never stored, named by one well-known digest.
public enum ZeroBlock {
    /// SHA-256 of 64 KiB of zeros stands for an all-zero block of any length (see docs/FORMAT.md).
    /// A fixed value, so restore points of repositories with other block sizes agree on it.
    public static let digest: ChunkDigest = {
        let zeros = [UInt8](repeating: 0, count: 65536)
        return SHA256Hasher().digest(zeros)
    }()
}
