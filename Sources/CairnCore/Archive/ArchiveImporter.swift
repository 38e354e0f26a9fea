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
    /// The repository imported into; nil until an encrypted archive's label has made it, when
    /// the importer was made with `creatingRepositoryAt`.
    public private(set) var repository: Repository?
    /// Where a repository is made from an encrypted archive's keys (`creatingRepositoryAt`).
    public let newRepositoryPath: String?
    /// The storage it is made in when it is not a local directory (`creatingRepositoryIn`).
    let newRepositoryStorage: (storage: any RepositoryStorage, features: [String])?
    public let sources: [any ArchiveByteSource]
    public var lockWait: Double?
    /// The passphrase of an encrypted archive imported into a new repository (asked only then).
    public var passphrase: (() throws(CairnError) -> [UInt8])?
    /// Told when the new repository is made (the CLI says so).
    public var onCreate: ((String) -> Void)?

    public init(repository: Repository, sources: [any ArchiveByteSource]) {
        self.repository = repository
        newRepositoryPath = nil
        newRepositoryStorage = nil
        self.sources = sources
    }

    /// Imports into a repository made at `path` (missing or an empty directory) from the
    /// archive's label: only an encrypted archive can, since it carries its repository's id and
    /// key files, so the new repository opens with the same passphrase and holds the records as
    /// they are. An unencrypted archive needs a repository made with `cairn init`.
    public init(creatingRepositoryAt path: String, sources: [any ArchiveByteSource]) {
        repository = nil
        newRepositoryPath = path
        newRepositoryStorage = nil
        self.sources = sources
    }

    /// The same in `storage` (an object store with no repository under its prefix yet), whose
    /// config declares `features` besides encryption.
    public init(
        creatingRepositoryIn storage: any RepositoryStorage, features: [String], sources: [any ArchiveByteSource]
    ) {
        repository = nil
        newRepositoryPath = storage.location
        newRepositoryStorage = (storage, features)
        self.sources = sources
    }

    /// Whether `path` is where `init(creatingRepositoryAt:)` belongs: nothing there, or an
    /// empty directory.
    public static func isNewLocation(_ path: String) -> Bool {
        guard FileSystem.exists(path) else { return true }
        guard FileSystem.isDirectory(path), let names = try? FileSystem.list(path) else { return false }
        return names.isEmpty
    }

    /// The repository for an archive whose label is `label`, and the master key of its records:
    /// the repository's own when it is the archive's (same id and master key), or a new
    /// repository made from the label. Anything else is refused before anything is written.
    private func prepare(_ label: ArchiveLabel) throws(CairnError) -> (Repository, MasterKey?) {
        if let repository {
            let keys = repository.store.keys
            if label.isEncrypted {
                guard let keys else {
                    throw CairnError(
                        .usage,
                        "archive \(label.archive) is encrypted and repository \(repository.path) is not: import it into a new repository (`--repo` a new directory), which takes the archive's keys (Cairn does not decrypt archives into an unencrypted repository)"
                    )
                }
                guard label.repository.lowercased() == repository.config.id.lowercased(),
                    label.fingerprint?.lowercased() == keys.fingerprintHex
                else {
                    throw CairnError(
                        .usage,
                        "archive \(label.archive) was written from encrypted repository \(label.repository) (key \(label.fingerprint ?? "?")); repository \(repository.path) is \(repository.config.id) (key \(keys.fingerprintHex)): import it into that repository or a new one (re-encrypting under another key is not supported)"
                    )
                }
            } else if keys != nil {
                throw CairnError(
                    .usage,
                    "archive \(label.archive) is not encrypted and repository \(repository.path) is: import it into an unencrypted repository (Cairn does not encrypt an archive's records on import)"
                )
            }
            return (repository, keys)
        }
        let path = newRepositoryPath!
        guard label.isEncrypted else {
            throw CairnError(
                .repository,
                "repository \(path) does not exist: create it with `cairn init --repo \(path) --block-size \(label.chunkBlockSize)`, then import (only an encrypted archive makes its repository itself, from the keys it carries)",
                remedy: .createRepository)
        }
        guard let passphrase else {
            throw CairnError(
                .usage,
                "archive \(label.archive) is encrypted: importing it needs its passphrase (set CAIRN_PASSWORD_FILE or pass --password-command)"
            )
        }
        let secret = try passphrase()
        // Unlocked first: a wrong passphrase writes nothing.
        let master = try ArchiveKeys.unlock(label, passphrase: secret)
        let made: Repository
        if let (storage, features) = newRepositoryStorage {
            try Repository.create(in: storage, fromArchive: label, features: features)
            made = try Repository(storage: storage, passphrase: { () throws(CairnError) in secret })
        } else {
            try Repository.create(at: path, fromArchive: label)
            made = try Repository(path: path, passphrase: { () throws(CairnError) in secret })
        }
        guard made.store.keys?.fingerprintHex == master.fingerprintHex else {
            throw CairnError(.damaged, "the repository made at \(path) does not open with the archive's key")
        }
        repository = made
        onCreate?(path)
        return (made, made.store.keys)
    }

    public func run() throws(CairnError) -> ArchiveImportResult {
        let clock = Stopwatch()
        let scanner = ArchiveScanner(sources: sources)
        scanner.trackNeeds = true
        var checkedBlockSize = false
        var stored = 0
        var target: Repository?
        var keys: MasterKey?
        var lock: RepositoryLock?
        // The scanner's callbacks escape, so the transaction they store into is held in a box
        // they share; it is taken out to commit (an error before that abandons it).
        let writes = TransactionBox()
        defer { _ = lock }
        scanner.onLabel = { [unowned self] (label) throws(CairnError) in
            let (repository, master) = try self.prepare(label)
            lock = try repository.lock(.shared, purpose: "cairn archive import", wait: self.lockWait)
            try repository.markFeatures()
            target = repository
            keys = master
            writes.transaction = repository.store.beginWrite()
        }
        scanner.unlock = { (_) throws(CairnError) in keys }
        scanner.onManifest = { (_, manifest, _) throws(CairnError) in
            guard !checkedBlockSize, let store = target?.store else { return }
            guard manifest.blockSize == store.blockSize else {
                throw CairnError(
                    .usage,
                    "the archive holds chunks of block size \(manifest.blockSize), but repository \(target!.path) has block size \(store.blockSize): import into a repository created with `cairn init --block-size \(manifest.blockSize)`"
                )
            }
            checkedBlockSize = true
        }
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
            let stops: [CairnError.Code] = [.usage, .io, .interrupted, .passphrase, .repository, .exists, .notFound]
            if target == nil || stops.contains(error.code) {
                writes.transaction.take()?.abandon()
                throw error
            }
            fatal = error
        }
        guard let repository = target else {
            throw CairnError(.badArchive, "the archive has no volume label: nothing was imported")
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
}
