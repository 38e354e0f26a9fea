/// What `ArchiveWriter.run` produced.
public struct ArchiveWriteResult: Sendable {
    public var archive: ArchiveID
    public var volumes: [String]
    public var points: [ArchivePointEntry]
    public var chunks: Int
    public var indexPages: Int
    /// Bytes of blocks written (every block is whole).
    public var bytes: UInt64
    /// Guest bytes of the archived disks.
    public var guestBytes: UInt64
    public var seconds: Double
}

/// Copies restore points from a repository into a sequential archive.
///
/// Record order: every restore point's manifest followed by all the pages of each disk's index
/// tree (pre-order: a page, then its children), for every point; then each chunk the indexes
/// need, once, in the order the points and disks first need them; then an end record. Because all
/// indexes precede all chunks, a reader knows every block's digest before any chunk arrives and
/// can restore any point in one pass. Chunks are copied as stored (compressed, with their pack
/// record header and CRC): nothing is recompressed. A chunk stored in a frame record travels in
/// that whole frame record, which brings its other members along: they count as written, so a
/// later need for them costs nothing.
///
/// Memory: one archive block, one chunk record, one index page per tree level, and the digests
/// already written in a `SpillingDigestMap` (at most 512 Ki in memory, the rest in sorted
/// temporary files; docs/ARCHIVE-FORMAT.md, "Memory").
public final class ArchiveWriter {
    public let repository: Repository
    public let ids: [RestorePointID]
    public let sink: any ArchiveSink
    public var blockSize = ArchiveFormat.defaultBlockSize
    public var volumeSize: UInt64?
    public var lockWait: Double?
    public var progress: (@Sendable (_ bytesDone: UInt64, _ guestTotal: UInt64, _ seconds: Double) -> Void)?

    public init(repository: Repository, ids: [RestorePointID], sink: any ArchiveSink) {
        self.repository = repository
        self.ids = ids
        self.sink = sink
    }

    public func run() throws(CairnError) -> ArchiveWriteResult {
        let clock = Stopwatch()
        try ArchiveFormat.validate(blockSize: blockSize)
        guard !ids.isEmpty else { throw CairnError(.usage, "name at least one restore point to archive") }
        let lock = try repository.lock(.shared, purpose: "cairn archive write", wait: lockWait)
        defer { _ = lock }

        var manifests: [(Manifest, [UInt8])] = []
        var seenIDs = Set<RestorePointID>()
        for id in ids where seenIDs.insert(id).inserted {
            // Plain bytes (opened if the repository seals them): an encrypted archive seals them
            // again under its own names, since the repository's name the manifest's group and time.
            let bytes = try repository.catalog.manifestBytes(id)
            let manifest = try Manifest.decode(bytes, path: repository.catalog.path(of: id))
            guard manifest.blockSize == repository.store.blockSize else {
                throw CairnError(
                    .damaged, "restore point \(id) has block size \(manifest.blockSize), not the repository's")
            }
            guard bytes.count + 4 + MetadataSeal.overhead <= ArchiveFormat.maxManifestBody else {
                throw CairnError(.damaged, "the manifest of restore point \(id) is larger than an archive carries")
            }
            manifests.append((manifest, bytes))
        }
        let guestTotal = manifests.reduce(UInt64(0)) { $0 + $1.0.totalSize }

        let archive = ArchiveID.random()
        let created = Timestamp.now().description
        var label = ArchiveLabel(
            format: Int(ArchiveFormat.version), archive: archive.hex, volume: 1, created: created,
            tool: BackupJob.toolVersion, archiveBlockSize: blockSize, chunkBlockSize: repository.store.blockSize,
            repository: repository.config.id, features: FormatFeature.written)
        var keys: ArchiveKeys?
        if let master = repository.store.keys {
            // Records travel as stored (sealed); the label carries the key files that open them.
            keys = ArchiveKeys(master: master, archive: archive)
            label.features = FormatFeature.written + [FormatFeature.encryption]
            // Their `created` (not authenticated, for people) would date the repository: dropped too.
            label.keys = try Self.keyFiles(of: repository).map { file in
                var file = file
                file.created = ArchiveKeys.hiddenTime
                return file
            }
            label.fingerprint = master.fingerprintHex
            // A time on the tape would say when the backups were taken; the repository's
            // (sealed) archive catalog keeps the real one.
            label.created = ArchiveKeys.hiddenTime
        }
        let blocks = try ArchiveBlockWriter(
            sink: sink, blockSize: blockSize, archive: archive, volumeSize: volumeSize, label: label)
        blocks.keys = keys
        let reader = ChunkReader(store: repository.store)
        // The chunks of the record read last (storage reused from record to record).
        var pages = 0
        // Chunks the chunk records carry (every member of a frame record), and the records.
        var chunks = 0
        var chunkRecords = 0
        do throws(CairnError) {
            // 1. Manifests and indexes.
            for (ordinal, (manifest, bytes)) in manifests.enumerated() {
                let body = keys.map { $0.manifestRecord(bytes, position: ordinal) } ?? bytes
                try blocks.appendRecord(.manifest, bytes: body, manifest: manifest)
                for disk in manifest.disks {
                    pages += try writeTree(
                        disk.root, level: 0, depth: disk.depth, reader: reader, blocks: blocks)
                }
            }
            // 2. Chunks, each once (frame records aside), in order of first need.
            let written = SpillingDigestMap(directory: ScratchDirectory.path)
            var done: UInt64 = 0
            var lastProgress = 0.0
            let zero = ZeroBlock.digest
            for (manifest, _) in manifests {
                // Settings files first: a few chunks, so a partial volume set still has them.
                for file in manifest.settings ?? [] {
                    for digest in file.chunkDigests where !written.contains(digest) {
                        let record = try reader.readStored(digest)
                        for member in record.members { try written.insert(member.digest, mask: 1) }
                        try blocks.appendRecord(.chunk, parts: [record.bytes], chunks: record.members.count)
                        chunks += record.members.count
                        chunkRecords += 1
                    }
                }
                for disk in manifest.disks {
                    let walk = DiskWalk(
                        store: repository.store, root: disk.root, depth: disk.depth, blockCount: disk.blockCount,
                        size: disk.size)
                    try walk.forEachBlock { (_, digest) throws(CairnError) in
                        done += UInt64(repository.store.blockSize)
                        guard digest != zero, !written.contains(digest) else { return }
                        let record = try reader.readStored(digest)
                        for member in record.members {
                            guard member.kind == .data else {
                                throw CairnError(
                                    .damaged,
                                    "chunk \(member.digest) of restore point \(manifest.id) is stored as an index page, not as data"
                                )
                            }
                            try written.insert(member.digest, mask: 1)
                        }
                        try blocks.appendRecord(.chunk, parts: [record.bytes], chunks: record.members.count)
                        chunks += record.members.count
                        chunkRecords += 1
                        if let progress, clock.elapsed - lastProgress >= 0.5 {
                            lastProgress = clock.elapsed
                            progress(min(done, guestTotal), guestTotal, clock.elapsed)
                        }
                    }
                }
            }
            // 3. The end record and the catalog.
            let end = ArchiveEnd(
                points: manifests.count, indexPages: pages, chunks: chunks,
                records: manifests.count + pages + chunkRecords)
            let endBytes = Array(try JSONCoding.encode(end).utf8)
            try blocks.appendRecord(.end, bytes: endBytes)
            try blocks.finish()
        } catch {
            sink.discard()
            if error.code == .interrupted {
                throw Cancellation.interrupted("no archive written (its unfinished volumes were removed)")
            }
            throw error
        }
        let result = ArchiveWriteResult(
            archive: archive, volumes: sink.volumeNames, points: blocks.allPoints, chunks: chunks, indexPages: pages,
            bytes: blocks.blocksWritten * UInt64(blockSize), guestBytes: guestTotal, seconds: clock.elapsed)
        try ArchiveCatalog.write(
            ArchiveCatalogEntry(
                format: 1, archive: archive.hex, created: created, volumes: result.volumes, archiveBlockSize: blockSize,
                bytes: result.bytes, chunks: chunks, indexPages: pages, points: result.points),
            to: repository)
        return result
    }

    /// The repository's usable passphrase key files (the ones that wrap its master key), for the
    /// label. Host keys stay out: a tape is read with a passphrase, long after any host is gone.
    static func keyFiles(of repository: Repository) throws(CairnError) -> [KeyFile] {
        guard let fingerprint = repository.config.encryption?.fingerprint else { return [] }
        let directory = KeyDirectory(
            storage: repository.storage, repositoryID: repository.config.id, fingerprint: fingerprint)
        let files = try directory.entries().compactMap(\.file).filter { !$0.isHostKey }
        guard !files.isEmpty else {
            throw CairnError(
                .damaged, "repository \(repository.path) has no usable passphrase key file to put in the archive")
        }
        return files
    }

    /// Writes a page and, below the leaves, its children, depth first. Returns pages written.
    private func writeTree(
        _ digest: ChunkDigest, level: Int, depth: Int, reader: ChunkReader, blocks: ArchiveBlockWriter
    ) throws(CairnError) -> Int {
        guard depth >= 1, depth <= 8 else { throw CairnError(.damaged, "index tree depth \(depth) is impossible") }
        let plain = Array(try reader.read(digest))
        guard plain.count % ChunkDigest.byteCount == 0 else {
            throw CairnError(.damaged, "index page \(digest) has \(plain.count) bytes, not a whole number of digests")
        }
        let record = try reader.readStored(digest)
        // Readers take pages from plain records only; the repository never frames them.
        guard record.header.kind == .indexPage else {
            throw CairnError(.damaged, "index page \(digest) is not stored as a plain index page record")
        }
        try blocks.appendRecord(.indexPage, parts: [record.bytes])
        var count = 1
        if level < depth - 1 {
            let children = plain.withUnsafeBytes { raw in
                (0..<(raw.count / 32)).map { ChunkDigest(loadingFrom: raw, at: $0 * 32) }
            }
            for child in children {
                count += try writeTree(
                    child, level: level + 1, depth: depth, reader: reader, blocks: blocks)
            }
        }
        return count
    }
}
