/// Writes one chunk index segment (docs/FORMAT.md, "Chunk index segments") into a staged object,
/// streaming: header, pack table and fan-out first, entries in digest order, then the CRC footer.
///
/// The one encoder of segments: a backup's commit, gc, rebuild-index and compaction all write
/// through it. The fan-out is written before the entries, so the caller says in advance how many
/// entries start with each first byte (`fanoutCounts`); nothing is patched or read back, which
/// an object store could not do. Memory: one buffer of `flushBytes`.
struct IndexSegmentEncoder {
    static let flushBytes = 1 << 20

    private let output: any StagedObject
    private var packOrdinal: [PackID: UInt32] = [:]
    private let promised: [Int]
    private var counts = [Int](repeating: 0, count: 256)
    private var buffer = ByteWriter(capacity: flushBytes)
    private var crc: UInt32 = 0

    /// Starts the segment: `packs` is its pack table, `fanoutCounts` (256 numbers) how many
    /// entries will start with each first byte.
    init(packs: [PackID], fanoutCounts: [Int], into output: any StagedObject) throws(CairnError) {
        precondition(fanoutCounts.count == 256, "a segment's fan-out has 256 slots")
        self.output = output
        promised = fanoutCounts
        let entries = fanoutCounts.reduce(0, +)
        guard let packCount = UInt32(exactly: packs.count) else {
            throw CairnError(.repository, "an index segment cannot name \(packs.count) packs")
        }
        for (ordinal, pack) in packs.enumerated() { packOrdinal[pack] = UInt32(ordinal) }
        buffer.append(IndexSegment.magic)
        buffer.le(IndexSegment.version)
        buffer.le(packCount)
        buffer.le(UInt64(entries))
        buffer.le(UInt64(0))
        for pack in packs { buffer.append(pack.bytes) }
        var running = 0
        for count in fanoutCounts {
            running += count
            buffer.le(UInt32(truncatingIfNeeded: running))
        }
        guard UInt32(exactly: running) != nil else {
            throw CairnError(.repository, "an index segment cannot hold \(running) entries")
        }
    }

    /// Appends the next entry (digests in ascending order). Throws, rather than truncating, for a
    /// location a segment cannot address: an offset at or beyond 4 GiB in its pack.
    mutating func append(_ digest: ChunkDigest, _ location: ChunkLocation) throws(CairnError) {
        guard let ordinal = packOrdinal[location.pack] else {
            preconditionFailure("index segment entry names pack \(location.pack), which is not in its pack table")
        }
        guard let offset = UInt32(exactly: location.offset) else {
            throw CairnError(
                .repository,
                "chunk \(digest) lies at offset \(location.offset) of pack \(location.pack), beyond the 4 GiB an index segment can address: packs must stay smaller than 4 GiB (the config's packSize)"
            )
        }
        buffer.append(digest)
        buffer.le(ordinal)
        buffer.le(offset)
        buffer.le(location.storedLength)
        buffer.le(location.rawLength)
        buffer.le(location.frameOffset ?? ChunkLocation.notFramed)
        counts[Int(digest.prefix >> 56)] += 1
        if buffer.count >= Self.flushBytes { try flush() }
    }

    /// Writes the footer and seals the object (the caller commits it).
    mutating func finish() throws(CairnError) {
        precondition(counts == promised, "index segment entries do not match the fan-out promised for them")
        try flush()
        buffer.le(crc)
        buffer.le(UInt32(0))
        buffer.append(IndexSegment.footerMagic)
        try output.append(buffer.bytes)
        buffer.removeAll()
        output.seal()
    }

    private mutating func flush() throws(CairnError) {
        guard buffer.count > 0 else { return }
        crc = CRC32.checksum(buffer.bytes, seed: crc)
        try output.append(buffer.bytes)
        buffer.removeAll()
    }
}

extension IndexSegment {
    /// Writes a segment for `entries` as `key`, durably, and returns it opened. Entries are
    /// sorted here; of equal digests the first is kept.
    @discardableResult
    static func write(
        entries unsorted: [(ChunkDigest, ChunkLocation)], as key: String, in storage: any RepositoryStorage
    ) throws(CairnError) -> IndexSegment {
        let sorted = unsorted.enumerated().sorted { ($0.element.0, $0.offset) < ($1.element.0, $1.offset) }
        var entries: [(ChunkDigest, ChunkLocation)] = []
        entries.reserveCapacity(sorted.count)
        for e in sorted where entries.last?.0 != e.element.0 { entries.append(e.element) }
        var seen = Set<PackID>()
        var packs: [PackID] = []
        var counts = [Int](repeating: 0, count: 256)
        for (digest, location) in entries {
            if seen.insert(location.pack).inserted { packs.append(location.pack) }
            counts[Int(digest.prefix >> 56)] += 1
        }
        let object = try storage.stage(key)
        do throws(CairnError) {
            var encoder = try IndexSegmentEncoder(packs: packs, fanoutCounts: counts, into: object)
            for (digest, location) in entries { try encoder.append(digest, location) }
            try encoder.finish()
            try storage.commit([object])
        } catch {
            storage.abandon(object)
            throw error
        }
        return try IndexSegment(key: key, in: storage)
    }

    /// Writes a segment for `entries` at a path outside any repository (tests, benchmarks).
    public static func write(entries: [(ChunkDigest, ChunkLocation)], to path: String) throws(CairnError) {
        try write(
            entries: entries, as: FileSystem.baseName(path),
            in: LocalDirectoryStorage(root: FileSystem.directoryName(path)))
    }
}
