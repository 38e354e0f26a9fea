import Foundation

/// One image to back up, and the name its disk gets in the restore point.
public struct BackupSource: Sendable {
    /// Where the disk's bytes come from (a file, a block device, an NBD export).
    public var source: any DiskSource
    public var diskName: String
    public var format: ImageFormat?
    public var snapshot: String?
    /// Read a file even though a running QEMU holds it for writing (crash-inconsistent).
    public var allowLive = false
    /// Seconds an NBD server may stay silent before the backup fails.
    public var nbdTimeout = NBDClient.Configuration.defaultTimeout
    /// This disk's own changed-block tracking, instead of the job's: libvirt names each disk's
    /// export bitmap after the disk, and a raw disk has none.
    public var changeTracking: ChangeTrackingOptions?

    /// The source as the restore point records it: an absolute path, or an NBD URI.
    public var path: String { source.location }

    public init(
        source: any DiskSource, diskName: String? = nil, format: ImageFormat? = nil, snapshot: String? = nil
    ) {
        self.source = source
        self.diskName = diskName ?? source.defaultDiskName
        self.format = format
        self.snapshot = snapshot
    }

    /// An image path (made absolute) or an NBD URI (`nbd://…`, `nbd+unix://…`).
    public init(path: String, diskName: String? = nil, format: ImageFormat? = nil, snapshot: String? = nil) {
        self.init(source: DiskSources.source(for: path), diskName: diskName, format: format, snapshot: snapshot)
    }

    /// A file's base name, or an NBD URI's export name (`nbd` for the default export "").
    public static func defaultDiskName(_ path: String) -> String {
        DiskSources.source(for: path).defaultDiskName
    }

    /// Opens the source for this backup; `nbdContexts` adds a dirty bitmap's context.
    func open(nbdContexts: [String] = []) throws(CairnError) -> any DiskImage {
        try source.open(
            DiskOpenOptions(
                format: format, snapshot: snapshot, allowLive: allowLive, nbdTimeout: nbdTimeout,
                nbdContexts: nbdContexts))
    }

    /// Reads a command-line source, `[NAME=]SOURCE`.
    ///
    /// The argument is `NAME=SOURCE` only if it is not itself an existing path, the part before
    /// the first `=` is a valid disk name (as `GroupName.isValid`: letters, digits, `.`, `_`, `-`),
    /// and the rest is an NBD URI or an existing path. Otherwise the whole argument is the source,
    /// so a file whose name contains `=` keeps working.
    public init(argument: String, format: ImageFormat? = nil, snapshot: String? = nil) {
        if !FileSystem.exists(argument), !NBDURI.looksLikeURI(argument), let eq = argument.firstIndex(of: "=") {
            let name = String(argument[..<eq])
            let rest = String(argument[argument.index(after: eq)...])
            if GroupName.isValid(name) && (NBDURI.looksLikeURI(rest) || FileSystem.exists(rest)) {
                self.init(path: rest, diskName: name, format: format, snapshot: snapshot)
                return
            }
        }
        self.init(path: argument, format: format, snapshot: snapshot)
    }
}

/// Progress of a running backup, for the terminal's progress line.
///
/// `bytesDone` and `bytesTotal` count allocated data (what is not a hole or an unallocated
/// cluster), not the virtual size, so a sparse disk's progress reaches 100%.
public struct BackupProgress: Sendable {
    public var disk: String
    public var bytesDone: UInt64
    public var bytesTotal: UInt64
    public var bytesNew: UInt64
    public var seconds: Double
    /// The disk's virtual size, for the progress line.
    public var virtualSize: UInt64 = 0
}

/// What a finished backup reports.
public struct BackupResult: Sendable {
    public var id: RestorePointID
    public var manifest: Manifest
    /// Something the administrator may want to know that did not fail the backup.
    public var warning: String?
}

/// Makes one restore point of a group from a set of images.
///
/// Each image is walked beside the group's previous restore point: a block whose digest did not
/// change costs one SHA-256; only blocks new to the repository are compressed and stored. The
/// manifest is written last, after the job's `ChunkWriteTransaction.commit()` has made every chunk durable.
public final class BackupJob {
    public let repository: Repository
    public let group: String
    public let sources: [BackupSource]
    public var lockWait: Double?
    /// Settings files (domain XML, `.vmx`) to keep with the restore point.
    public var settingsFiles: [String] = []
    /// The libvirt domain the sources belong to, recorded in the manifest.
    public var domain: Manifest.DomainRecord?
    public var progress: (@Sendable (BackupProgress) -> Void)?
    /// Changed-block tracking (dirty bitmaps); off by default.
    public var changeTracking = ChangeTrackingOptions()
    public static let toolVersion = "cairn 0.1.0"

    public init(repository: Repository, group: String, sources: [BackupSource]) {
        self.repository = repository
        self.group = group
        self.sources = sources
    }

    public func run() throws(CairnError) -> BackupResult {
        try GroupName.validate(group)
        guard !sources.isEmpty else { throw CairnError(.usage, "name at least one image to back up") }
        var seen = Set<String>()
        for source in sources where !seen.insert(source.diskName).inserted {
            throw CairnError(
                .usage, "two images are both named \(source.diskName): a restore point needs distinct disk names")
        }
        guard settingsFiles.count <= SettingsFile.maxFiles else {
            throw CairnError(.usage, "at most \(SettingsFile.maxFiles) settings files go with one restore point")
        }
        var settingsNames = Set<String>()
        for path in settingsFiles where !settingsNames.insert(FileSystem.baseName(path)).inserted {
            throw CairnError(
                .usage,
                "two settings files are both named \(FileSystem.baseName(path)): a restore point needs distinct names")
        }
        let clock = Stopwatch()
        // One guard for both files: a second shared lock of this process on the repository
        // would make the upgrade below fail against itself.
        let repoLock = try repository.lock(.group(group), purpose: "cairn backup", wait: lockWait)
        defer { _ = repoLock }
        try changeTracking.validate()
        for source in sources { try source.changeTracking?.validate() }
        repository.removeLeftovers()
        try repository.markFeatures()
        // Another backup may have committed while this one waited for the lock: see its chunks
        // (below, its restore point also becomes the base), so nothing it stored is stored again.
        try repository.store.reloadSegments()

        let catalog = repository.catalog
        let previousID = try catalog.points(in: group).last
        let previous = try previousID.map { id throws(CairnError) in try catalog.manifest(id) }
        let id = try RestorePointID.next(in: group, after: previousID)
        let time = id.time
        let previousDamaged = previousID.map { catalog.verification(of: $0)?.result == .damaged } ?? false
        func base(of source: BackupSource) -> Manifest.DiskEntry? {
            guard let previous, previous.blockSize == repository.config.blockSize else { return nil }
            return previous.disk(named: source.diskName)
        }

        // Managed checkpoints start the next bitmap before anything is read.
        var tracking: [DiskChangeTracking?] = []
        for source in sources {
            let options = source.changeTracking ?? changeTracking
            guard options.isRequested else {
                tracking.append(nil)
                continue
            }
            let disk = DiskChangeTracking(
                options: options, source: source, id: id, previousID: previousID, base: base(of: source),
                previousDamaged: previousDamaged)
            disk.prepare()
            tracking.append(disk)
        }

        // Open every image before storing anything: a bad image fails the run with nothing written.
        var images: [(BackupSource, any DiskImage)] = []
        for (index, source) in sources.enumerated() {
            let options = source.changeTracking ?? changeTracking
            let exported = options.exportBitmap ?? options.dirtyBitmap
            let image = try source.open(nbdContexts: exported.map { [NBDDirtyBitmap.context(forBitmap: $0)] } ?? [])
            tracking[index]?.attach(image)
            images.append((source, image))
        }
        try Self.checkFormatsUnchanged(images, group: group, catalog: catalog)

        let store = repository.store
        var transaction = store.beginWrite()
        var disks: [Manifest.DiskEntry] = []
        var warning: String?
        var bytesRead: UInt64 = 0
        var bytesNew: UInt64 = 0
        var settings: [SettingsFile] = []
        let stored: Result<Void, CairnError>
        do throws(CairnError) {
            for path in settingsFiles { settings.append(try SettingsFile.store(path: path, into: &transaction)) }
            for (index, (source, image)) in images.enumerated() {
                let disk = tracking[index]
                var pass = DiskBackup(
                    store: store, image: image, name: source.diskName, base: base(of: source), progress: progress,
                    clock: clock, changes: disk?.map,
                    sampleBlocks: (source.changeTracking ?? changeTracking).sampleBlocks)
                var diskRead: UInt64 = 0
                var entry: Manifest.DiskEntry
                CairnLog.logger.info(
                    "disk \(source.diskName): started, \(Units.formatBytes(image.virtualSize)) from \(source.path)")
                do throws(CairnError) {
                    entry = try pass.run(into: &transaction)
                } catch {
                    // A bitmap that lied or failed to read costs a full read, never the backup.
                    guard let disk, let why = pass.abandonReason else { throw error }
                    disk.giveUp(
                        "\(why): the bitmap is not trusted and the disk was read in full; restore points made with it "
                            + "since the last full read may be wrong")
                    diskRead += pass.bytesRead
                    bytesNew += pass.bytesNew
                    pass = DiskBackup(
                        store: store, image: image, name: source.diskName, base: base(of: source), progress: progress,
                        clock: clock)
                    entry = try pass.run(into: &transaction)
                }
                diskRead += pass.bytesRead
                entry.sourceKind = image.info.kind ?? .file
                entry.bytesRead = diskRead
                entry.bytesSkipped = pass.bytesSkipped
                entry.cbt = disk?.record(used: pass.changes != nil, sampledBlocks: pass.sampledBlocks)
                disks.append(entry)
                CairnLog.logger.info(
                    "disk \(source.diskName): finished, \(Units.formatBytes(diskRead)) read, \(Units.formatBytes(pass.bytesNew)) new, \(entry.changedBlocks) blocks changed"
                )
                bytesRead += diskRead
                bytesNew += pass.bytesNew
            }
            stored = .success(())
        } catch {
            stored = .failure(error)
        }
        let bytesStored = transaction.storedBytesWritten
        let chunksNew = transaction.chunksWritten
        switch stored {
        case .success: try transaction.commit()
        case .failure(let error) where error.code == .interrupted:
            throw Self.keepStoredWork(transaction, stored: bytesStored)
        case .failure(let error):
            transaction.abandon()
            throw error
        }
        let manifest = Manifest(
            format: Manifest.currentFormat, id: id, group: group, time: time,
            tool: Self.toolVersion, repository: repository.config.id, blockSize: repository.config.blockSize,
            disks: disks,
            stats: .init(
                bytesRead: bytesRead, bytesNew: bytesNew, bytesStored: bytesStored, chunksNew: chunksNew,
                seconds: clock.elapsed),
            previous: previousID, settings: settings.isEmpty ? nil : settings, domain: domain)
        try TestHook.hold("CAIRN_TEST_HOLD_BEFORE_COMMIT")
        // A lease another host took over (this run stalled past its expiry) commits nothing.
        try repoLock.check()
        try catalog.write(manifest, id: id)
        // Only now may the bitmaps the new restore point no longer needs go.
        var notes: [String] = []
        for disk in tracking.compactMap({ $0 }) {
            disk.finish()
            notes += disk.warnings
        }
        if !notes.isEmpty { warning = notes.joined(separator: "; ") }
        store.treePages?.trim()
        // Housekeeping once the restore point is safe: merge index segments if no other cairn
        // process is using the repository. A failure here costs nothing but speed.
        if store.needsCompaction && repoLock.tryUpgradeToExclusive() {
            do {
                try store.compactIndex()
            } catch {
                warning = [warning, "index compaction was skipped: \(error.description)"].compactMap { $0 }.joined(
                    separator: "; ")
            }
        }
        return BackupResult(id: id, manifest: manifest, warning: warning)
    }

    /// After SIGINT/SIGTERM: makes the chunks stored so far durable and indexed (packs synced,
    /// then a segment naming them, as every commit does), so the next backup finds them instead
    /// of storing them again. No restore point names them; gc reclaims them if none ever does.
    private static func keepStoredWork(_ transaction: consuming ChunkWriteTransaction, stored: UInt64) -> CairnError {
        do {
            // A failed commit abandons what it could not make durable.
            try transaction.commit()
        } catch {
            return Cancellation.interrupted("nothing committed (what was stored could not be kept: \(error))")
        }
        guard stored > 0 else { return Cancellation.interrupted("nothing committed") }
        return Cancellation.interrupted(
            "nothing committed (no restore point; the \(Units.formatBytes(stored)) stored so far is kept, so the next backup does not store it again)"
        )
    }
}
