/// What `cairn archive import` did.
public struct ArchiveImportResult: Sendable {
    /// Restore points now in the repository from this archive.
    public var imported: [String]
    /// Restore points the repository already had (left untouched).
    public var alreadyPresent: [String]
    /// Restore points not imported, with the reason (a damaged index or missing chunks).
    public var skipped: [(id: String, reason: String)]
    public var chunksStored: Int
    public var report: ArchiveReport
}

/// Loads an archive's restore points and chunks into a repository (disaster recovery).
///
/// One sequential pass: every index page and chunk is checked (CRC, decompression, SHA-256)
/// before it is stored, as stored, with the repository's own record format. Chunks are made
/// durable first; a restore point's manifest is written last and only when its index is complete
/// and every chunk it needs arrived intact, so an imported restore point always restores.
public final class ArchiveImporter {
    public let repository: Repository
    public let sources: [any ArchiveByteSource]
    public var lockWait: Double?

    public init(repository: Repository, sources: [any ArchiveByteSource]) {
        self.repository = repository
        self.sources = sources
    }

    public func run() throws(CairnError) -> ArchiveImportResult {
        try repository.refuseEncrypted("archive import")
        let clock = Stopwatch()
        let lock = try repository.lock(.shared, purpose: "cairn archive import", wait: lockWait)
        defer { _ = lock }
        try repository.markFeatures()
        let store = repository.store
        let scanner = ArchiveScanner(sources: sources)
        scanner.trackNeeds = true
        var checkedBlockSize = false
        var stored = 0
        let repositoryPath = repository.path
        scanner.onManifest = { (_, manifest, _) throws(CairnError) in
            guard !checkedBlockSize else { return }
            guard manifest.blockSize == store.blockSize else {
                throw CairnError(
                    .usage,
                    "the archive holds chunks of block size \(manifest.blockSize), but repository \(repositoryPath) has block size \(store.blockSize): import into a repository created with `cairn init --block-size \(manifest.blockSize)`"
                )
            }
            checkedBlockSize = true
        }
        // The scanner's callbacks escape, so the transaction they store into is held in a box
        // they share; it is taken out to commit (an error before that abandons it).
        let writes = TransactionBox(store.beginWrite())
        scanner.onIndexPage = { (_, record) throws(CairnError) in
            stored += try writes.transaction!.store(record: record).chunks
        }
        scanner.onChunk = { (record, _) throws(CairnError) in
            // A frame record is stored whole, as the repository keeps it; only its new members are indexed.
            stored += try writes.transaction!.store(record: record).chunks
        }
        var fatal: CairnError?
        do throws(CairnError) {
            try scanner.run()
        } catch {
            if error.code == .usage || error.code == .io || error.code == .interrupted {
                writes.transaction.take()?.abandon()
                throw error
            }
            fatal = error
        }
        // A failed commit abandons what it could not make durable.
        try writes.transaction.take()?.commit()

        let missing = scanner.pointsMissingChunks()
        var imported: [String] = []
        var present: [String] = []
        var skipped: [(id: String, reason: String)] = []
        var reportPoints: [ArchiveReport.Point] = []
        for (i, point) in scanner.points.enumerated() {
            let m = point.manifest
            var problem: String?
            if let p = point.indexProblem {
                problem = "its index is damaged: \(p)"
            } else if !point.indexComplete {
                problem = "its index is incomplete"
            } else if missing.contains(i) {
                problem = "chunks it needs are missing or damaged in the archive"
            }
            reportPoints.append(
                ArchiveReport.Point(
                    id: m.id.description, volume: point.location.volume,
                    disks: m.disks.map {
                        ArchivePointEntry.Disk(name: $0.name, size: $0.size, blockCount: $0.blockCount)
                    },
                    intact: problem == nil, problem: problem))
            if let problem {
                skipped.append((m.id.description, problem))
                continue
            }
            let id = m.id
            if repository.catalog.exists(id) {
                present.append(m.id.description)
                continue
            }
            let groupLock = try repository.lock(.group(id.group), purpose: "cairn archive import", wait: lockWait)
            try repository.catalog.write(m, id: id)
            _ = groupLock
            imported.append(m.id.description)
        }
        let blocks = scanner.blocks
        let report = ArchiveReport(
            archive: blocks.archive?.hex, label: blocks.label, volumes: blocks.volumesRead, points: reportPoints,
            records: scanner.recordsRead, indexPages: scanner.pages, chunks: scanner.chunks,
            bytesRead: blocks.bytesRead,
            seconds: clock.elapsed, problems: blocks.problems, fatal: fatal)
        return ArchiveImportResult(
            imported: imported, alreadyPresent: present, skipped: skipped, chunksStored: stored, report: report)
    }
}

/// Holds a write transaction for callbacks that escape (a `~Copyable` value cannot be captured).
private final class TransactionBox {
    var transaction: ChunkWriteTransaction?

    init(_ transaction: consuming ChunkWriteTransaction) {
        self.transaction = consume transaction
    }
}
