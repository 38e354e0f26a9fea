/// The outcome of reading an archive: its restore points and whatever was found wrong.
public struct ArchiveReport: Sendable {
    public struct Point: Sendable, Encodable {
        public var id: String
        public var volume: Int
        public var disks: [ArchivePointEntry.Disk]
        /// True when its index is complete and every chunk it needs arrived intact (verify, import).
        public var intact: Bool
        public var problem: String?
    }

    public var archive: String?
    public var label: ArchiveLabel?
    public var volumes: Int
    public var points: [Point]
    public var records: Int
    public var indexPages: Int
    public var chunks: Int
    public var bytesRead: UInt64
    public var seconds: Double
    public var problems: [ArchiveProblem]
    /// The fault that ended the pass early, if any.
    public var fatal: CairnError?
    /// Whether the archive's records are sealed (label feature `encryption`).
    public var encrypted = false
    /// False when an encrypted archive was read without its passphrase: blocks, records and
    /// their CRCs were checked, but no chunk was opened, so `points` is empty (their names are
    /// sealed) and nothing was proved of the content.
    public var contentChecked = true
    /// Manifest records read (the restore points, also when their names could not be read).
    public var manifestRecords = 0

    /// The exit-worthy error: `.badArchive` for structural faults, `.damaged` for checksums; nil when clean.
    public var failure: CairnError? {
        if let fatal { return fatal }
        guard let first = problems.first else { return nil }
        let code: CairnError.Code = problems.contains { $0.code == .badArchive } ? .badArchive : .damaged
        let more = problems.count > 1 ? " (and \(problems.count - 1) more problems)" : ""
        return CairnError(code, "\(first)\(more)")
    }
}

/// `cairn archive verify` and `list`: one sequential pass, never seeking.
///
/// Verify checks every block header and payload CRC, every record header, every chunk and page
/// record's CRC, decompression and SHA-256, every index against its chunks (each digest an index
/// needs must arrive as a chunk record after the indexes: the chunk section follows every index),
/// the end record's counts and the last volume's catalog.
public enum ArchiveVerifier {
    /// `passphrase` opens an encrypted archive's keys (asked only for one). Without it, an
    /// encrypted archive's structure and checksums are checked and the report says its content
    /// was not (`contentChecked`).
    public static func verify(
        _ sources: [any ArchiveByteSource], passphrase: (() throws(CairnError) -> [UInt8])? = nil
    ) -> ArchiveReport {
        scan(sources, full: true, passphrase: passphrase)
    }

    /// Reads the manifests and indexes only (they all precede the chunks), then stops. An
    /// encrypted archive needs `passphrase`.
    public static func list(
        _ sources: [any ArchiveByteSource], passphrase: (() throws(CairnError) -> [UInt8])? = nil
    ) -> ArchiveReport {
        scan(sources, full: false, passphrase: passphrase)
    }

    static func scan(
        _ sources: [any ArchiveByteSource], full: Bool, passphrase: (() throws(CairnError) -> [UInt8])?
    ) -> ArchiveReport {
        let clock = Stopwatch()
        let scanner = ArchiveScanner(sources: sources)
        scanner.unlock = ArchiveKeys.unlocker(passphrase: passphrase, required: !full, operation: "archive list")
        scanner.trackNeeds = full
        scanner.stopAtChunks = !full
        var workers: ArchiveChunkWorkers?
        if full {
            // Chunks are decompressed and hashed on one worker per core; the hash is the check.
            // Unowned: the scanner holds this closure, so a strong capture would keep both alive.
            scanner.onChunkRecord = { [unowned scanner] (record, location, chunks) throws(CairnError) in
                if workers == nil {
                    workers = ArchiveChunkWorkers(
                        chunkBlockSize: scanner.blocks.label!.chunkBlockSize, keys: scanner.keys?.master
                    ) {
                        (_, _, _) throws(CairnError) in
                    }
                }
                try workers!.submit(record, location: location, chunks: chunks)
            }
        }
        var fatal: CairnError?
        do throws(CairnError) {
            try scanner.run()
            for damage in try workers?.finish() ?? [] {
                try scanner.chunkFailed(damage.chunks, problem: damage.problem)
            }
        } catch {
            workers?.stop()
            fatal = error
        }
        let blocks = scanner.blocks
        if full && fatal == nil { checkCatalog(scanner) }
        let missing = full ? scanner.pointsMissingChunks() : []
        let points = scanner.points.indices.map { i -> ArchiveReport.Point in
            let p = scanner.points[i]
            var problem = p.indexProblem
            if problem == nil && !p.indexComplete { problem = "its index is incomplete" }
            if problem == nil && missing.contains(i) { problem = "chunks it needs are missing or damaged" }
            if problem == nil && full && fatal != nil && !p.indexComplete {
                problem = "the archive ends before its data"
            }
            return ArchiveReport.Point(
                id: p.manifest.id.description, volume: p.location.volume,
                disks: p.manifest.disks.map {
                    ArchivePointEntry.Disk(name: $0.name, size: $0.size, blockCount: $0.blockCount)
                },
                intact: problem == nil, problem: problem)
        }
        var problems = blocks.problems
        if full {
            let (missingCount, example) = scanner.needs.remaining
            if missingCount > 0 && fatal == nil, let example {
                problems.append(
                    ArchiveProblem(
                        location: nil,
                        message:
                            "\(missingCount) chunks the indexes need are not in the archive intact (e.g. \(example.digest)\(scanner.describe(example.mask)))",
                        code: .damaged))
            }
        }
        return ArchiveReport(
            archive: blocks.archive?.hex, label: blocks.label, volumes: blocks.volumesRead, points: points,
            records: scanner.recordsRead, indexPages: scanner.pages, chunks: scanner.chunks,
            bytesRead: blocks.bytesRead,
            seconds: clock.elapsed, problems: problems, fatal: fatal, encrypted: scanner.encrypted,
            contentChecked: scanner.contentReadable, manifestRecords: scanner.manifestRecords)
    }

    /// The end record's counts and the last volume's catalog against what the pass saw.
    private static func checkCatalog(_ scanner: ArchiveScanner) {
        let blocks = scanner.blocks
        if let end = scanner.end, blocks.problems.isEmpty {
            let points = scanner.contentReadable ? scanner.points.count : scanner.manifestRecords
            if end.points != points || end.chunks != scanner.chunks || end.indexPages != scanner.pages {
                blocks.report(
                    nil,
                    "the end record counts \(end.points) restore points, \(end.indexPages) index pages and \(end.chunks) chunks; the archive holds \(points), \(scanner.pages) and \(scanner.chunks)",
                    .badArchive)
            } else if end.records != scanner.recordsRead - 1 {
                blocks.report(
                    nil,
                    "the end record counts \(end.records) records before it; the archive holds \(scanner.recordsRead - 1)",
                    .badArchive)
            }
        }
        guard let last = blocks.catalogs.last, last.last else {
            blocks.report(nil, "the last volume's catalog is missing or damaged", .badArchive)
            return
        }
        if last.volumes != blocks.volumesRead {
            blocks.report(
                nil, "the last catalog counts \(last.volumes ?? 0) volumes; \(blocks.volumesRead) were read",
                .badArchive)
        }
        var listed = last.points.map(\.id)
        if let keys = scanner.keys {
            do throws(CairnError) {
                guard let sealed = last.sealedPoints else {
                    throw CairnError(
                        .badArchive, "the last volume's catalog of an encrypted archive has no sealed points")
                }
                listed = try keys.openPoints(sealed, volume: last.volume).map(\.id)
            } catch {
                blocks.report(nil, error.message, error.code)
                return
            }
        } else if scanner.encrypted {
            listed = []
        }
        let seen = scanner.points.map(\.manifest.id.description)
        if blocks.problems.isEmpty && listed != seen {
            blocks.report(
                nil,
                "the catalog lists restore points \(listed.joined(separator: ", ")); the archive holds \(seen.joined(separator: ", "))",
                .badArchive)
        }
        let chunkSum = blocks.catalogs.reduce(0) { $0 + $1.chunks }
        if blocks.problems.isEmpty && blocks.catalogs.count == blocks.volumesRead && chunkSum != scanner.chunks {
            blocks.report(
                nil, "the volume catalogs count \(chunkSum) chunks; the archive holds \(scanner.chunks)", .badArchive)
        }
    }
}
