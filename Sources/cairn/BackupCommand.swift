import ArgumentParser
import CairnCore

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup", abstract: "Make one restore point of a group from its disk images.")

    @OptionGroup var repository: RepositoryOptions

    @Option(
        help: "The group (usually the VM) the restore point belongs to; with --domain, the domain's name by default.")
    var group: String?

    @Option(
        help:
            "Back up this libvirt domain: every disk (a running domain through libvirt's pull-mode backup job, a shut-off one from its files) and its domain XML."
    )
    var domain: String?

    @Option(help: "With --domain: the libvirt connection URI.")
    var connect: String = Virsh.defaultURI

    @Option(
        help:
            "With --domain: where the backup job's NBD socket and scratch files go (room for what the guest rewrites meanwhile)."
    )
    var scratchDir: String = "/var/tmp"

    @Flag(
        help:
            "With --domain: freeze the guest's filesystems through its QEMU guest agent for the backup's moment; without an agent the restore point is crash-consistent."
    )
    var quiesce = false

    @Option(
        help:
            "Force the image format (raw, qcow2 or vmdk) instead of detecting it; raw backs up any file's bytes as they are.",
        completion: Completions.formats
    )
    var format: String?

    @Option(help: "Back up this internal qcow2 snapshot instead of the active layer.")
    var snapshot: String?

    @Option(
        name: .customLong("config"),
        help: "A settings file to keep with the restore point (a domain XML, a .vmx); repeat for more.")
    var settingsFiles: [String] = []

    @Flag(help: "Print the summary as a JSON object.")
    var json = false

    @Flag(help: "Print nothing but warnings and errors (no progress, no summary; --json still prints): for cron.")
    var quiet = false

    @OptionGroup var metrics: MetricsOptions

    @Flag(
        help:
            "Read image files even while a running QEMU holds them for writing. The copy is crash-inconsistent: prefer the NBD export of `virsh backup-begin` or an external snapshot."
    )
    var allowLive = false

    @Option(help: "Seconds an NBD server may stay silent before the backup fails.")
    var nbdTimeout: Double = NBDClient.Configuration.defaultTimeout

    @Option(
        name: .customLong("dirty-bitmap"),
        help: ArgumentHelp(
            "Read only what the persistent qcow2 bitmap NAME marks dirty (trusted only against a restore point that recorded NAME with --checkpoint).",
            valueName: "NAME"))
    var dirtyBitmap: String?

    @Option(
        help: ArgumentHelp(
            "Record that bitmap NAME was started at the moment of the image this backup reads.", valueName: "NAME"))
    var checkpoint: String?

    @Flag(
        help:
            "Changed-block tracking managed by Cairn for offline qcow2 images (adds and removes cairn.GROUP.* bitmaps)."
    )
    var cbt = false

    @Option(
        name: .customLong("full-every"),
        help: ArgumentHelp("With a bitmap: read in full every N nights.", valueName: "N"))
    var fullEvery: Int?

    @Option(
        name: .customLong("cbt-sample"),
        help: ArgumentHelp(
            "Clean blocks per disk to read anyway and check against the previous restore point (default 32).",
            valueName: "N"))
    var cbtSample: Int = ChangeTrackingOptions.defaultSampleBlocks

    @Argument(
        help: ArgumentHelp(
            "Disks as [NAME=]SOURCE: SOURCE is an image file, a block device or an NBD URI (nbd+unix:///EXPORT?socket=PATH, nbd://HOST[:PORT]/EXPORT); NAME defaults to the file name or the export name.",
            valueName: "source"), completion: Completions.files)
    var images: [String] = []

    func run() throws {
        Terminal.quiet = quiet
        try runRecordingMetrics(metrics, command: "backup", repository: repository.path, group: group ?? domain ?? "") {
            (run: inout RunMetrics) throws(CairnError) in
            let manifest: Manifest
            if let domain {
                manifest = try backUpDomain(domain)
            } else {
                manifest = try backUpSources()
            }
            run.bytesRead = manifest.stats.bytesRead
            run.bytesNew = manifest.stats.bytesNew
            run.bytesStored = manifest.stats.bytesStored
        }
    }

    private func backUpSources() throws(CairnError) -> Manifest {
        guard let group else { throw CairnError(.usage, "name the group with --group (or back up a --domain)") }
        guard !images.isEmpty else { throw CairnError(.usage, "name at least one image to back up") }
        var imageFormat: ImageFormat?
        if let format {
            guard let parsed = ImageFormat(rawValue: format) else {
                throw CairnError(.usage, "--format \(format) is not raw, qcow2 or vmdk")
            }
            imageFormat = parsed
        }
        guard nbdTimeout > 0, nbdTimeout.isFinite else {
            throw CairnError(.usage, "--nbd-timeout must be a positive number of seconds")
        }
        let sources = images.map { argument in
            var source = BackupSource(argument: argument, format: imageFormat, snapshot: snapshot)
            source.allowLive = allowLive
            source.nbdTimeout = nbdTimeout
            return source
        }
        try validateChangeTrackingFlags()
        let repo = try repository.open()
        let job = BackupJob(repository: repo, group: group, sources: sources)
        job.lockWait = try repository.lockWaitSeconds()
        job.settingsFiles = settingsFiles
        job.changeTracking = ChangeTrackingOptions(
            dirtyBitmap: dirtyBitmap, checkpoint: checkpoint, managed: cbt, fullEvery: fullEvery,
            sampleBlocks: cbtSample)
        job.progress = Terminal.showsProgress ? Self.showProgress : nil
        let result = try job.run()
        Terminal.clearProgress()
        repository.seenPoints(repo)?.record([result.id])
        if let warning = result.warning { Terminal.printError("cairn: warning: \(warning)") }
        if json {
            print(try JSONCoding.encode(BackupSummary(result.manifest)))
        } else if !quiet {
            print(Self.summaryLine(result))
            for disk in result.manifest.disks {
                if let line = ChangeTrackingText.line(disk) { print("  \(disk.name): \(line)") }
            }
        }
        return result.manifest
    }

    /// The change-tracking flags that cannot go together, named as the administrator typed them
    /// (the library checks the same rules in its own words).
    private func validateChangeTrackingFlags() throws(CairnError) {
        if cbt && (dirtyBitmap != nil || checkpoint != nil) {
            throw CairnError(
                .usage, "--cbt manages its own bitmaps: leave out --dirty-bitmap and --checkpoint, or leave out --cbt")
        }
        if let fullEvery, fullEvery < 1 { throw CairnError(.usage, "--full-every must be at least 1") }
        if fullEvery != nil && !cbt && dirtyBitmap == nil && checkpoint == nil {
            throw CairnError(.usage, "--full-every needs --cbt or --dirty-bitmap")
        }
        guard cbtSample >= 0 else { throw CairnError(.usage, "--cbt-sample must be 0 or more") }
    }

    private func backUpDomain(_ domain: String) throws(CairnError) -> Manifest {
        guard images.isEmpty else {
            throw CairnError(.usage, "--domain backs up the domain's own disks; name no images beside it")
        }
        guard format == nil, snapshot == nil, !allowLive else {
            throw CairnError(.usage, "--format, --snapshot and --allow-live do not apply to --domain")
        }
        guard dirtyBitmap == nil, checkpoint == nil, !cbt else {
            throw CairnError(
                .usage, "--domain manages libvirt checkpoints itself: leave out --dirty-bitmap, --checkpoint and --cbt")
        }
        if let fullEvery, fullEvery < 1 { throw CairnError(.usage, "--full-every must be at least 1") }
        guard cbtSample >= 0 else { throw CairnError(.usage, "--cbt-sample must be 0 or more") }
        guard nbdTimeout > 0, nbdTimeout.isFinite else {
            throw CairnError(.usage, "--nbd-timeout must be a positive number of seconds")
        }
        let repo = try repository.open()
        let job = DomainBackup(repository: repo, domainName: domain)
        job.virsh = Virsh(uri: connect)
        job.group = group
        job.scratchDirectory = scratchDir
        job.lockWait = try repository.lockWaitSeconds()
        job.nbdTimeout = nbdTimeout
        job.settingsFiles = settingsFiles
        job.quiesce = quiesce
        job.fullEvery = fullEvery
        job.sampleBlocks = cbtSample
        job.progress = Terminal.showsProgress ? Self.showProgress : nil
        let result = try job.run()
        Terminal.clearProgress()
        repository.seenPoints(repo)?.record([result.backup.id])
        if let warning = result.backup.warning { Terminal.printError("cairn: warning: \(warning)") }
        for warning in result.warnings { Terminal.printError("cairn: warning: \(warning)") }
        if json {
            print(try JSONCoding.encode(BackupSummary(result.backup.manifest)))
        } else if !quiet {
            print("\(Self.summaryLine(result.backup)); \(Self.domainLine(result.backup.manifest.domain))")
            for disk in result.backup.manifest.disks {
                if let line = ChangeTrackingText.line(disk) { print("  \(disk.name): \(line)") }
            }
        }
        return result.backup.manifest
    }

    /// How a domain was read, for the summary line.
    private static func domainLine(_ domain: Manifest.DomainRecord?) -> String {
        guard let domain, domain.mode == "pull" else { return "shut-off domain, read from its disk files" }
        let consistency = domain.quiesced == true ? "filesystems frozen by the guest agent" : "crash-consistent"
        let reading =
            domain.incremental.map { "incremental from checkpoint \($0)" }
            ?? "read in full (\(domain.fullReason ?? "no checkpoint"))"
        return
            "running domain, read through libvirt's backup job (\(consistency)), \(reading), checkpoint \(domain.checkpoint ?? "-")"
    }

    private static let showProgress: @Sendable (BackupProgress) -> Void = { p in
        let percent = p.bytesTotal == 0 ? 100 : Int(Double(p.bytesDone) * 100 / Double(p.bytesTotal))
        Terminal.progress(
            "\(p.disk): \(percent)% of \(Units.formatBytes(p.bytesTotal)) allocated (\(Units.formatBytes(p.virtualSize)) disk), \(Units.formatBytes(p.bytesNew)) new, \(rate(p.bytesDone, p.seconds))"
        )
    }

    private static func summaryLine(_ result: BackupResult) -> String {
        let stats = result.manifest.stats
        return
            "\(result.id): read \(Units.formatBytes(stats.bytesRead)), \(Units.formatBytes(stats.bytesNew)) new (\(Units.formatBytes(stats.bytesStored)) stored) in \(Units.formatDecimal(stats.seconds, places: 2)) s"
    }
}

/// `cairn backup --json`: a contract for scripts; extend, do not rename.
struct BackupSummary: Encodable {
    var id: RestorePointID
    var group: String
    var time: Timestamp
    var bytesRead: UInt64
    var bytesNew: UInt64
    var bytesStored: UInt64
    var chunksNew: Int
    var seconds: Double
    var disks: [DiskSummary]
    /// With `--domain`: the domain, how it was read, and the checkpoint created.
    var domain: Manifest.DomainRecord?

    struct DiskSummary: Encodable {
        var name: String
        var size: UInt64
        var changedBlocks: UInt64
        var zeroBlocks: UInt64
        var sourceKind: DiskSourceKind?
        var bytesRead: UInt64?
        var bytesSkipped: UInt64?
        /// Present when changed-block tracking was asked for: `used`, `bitmap`, `started`, `reason`.
        var cbt: Manifest.ChangeTracking?
    }

    init(_ m: Manifest) {
        id = m.id
        group = m.group
        time = m.time
        bytesRead = m.stats.bytesRead
        bytesNew = m.stats.bytesNew
        bytesStored = m.stats.bytesStored
        chunksNew = m.stats.chunksNew
        seconds = m.stats.seconds
        disks = m.disks.map {
            DiskSummary(
                name: $0.name, size: $0.size, changedBlocks: $0.changedBlocks, zeroBlocks: $0.zeroBlocks,
                sourceKind: $0.sourceKind, bytesRead: $0.bytesRead, bytesSkipped: $0.bytesSkipped, cbt: $0.cbt)
        }
        domain = m.domain
    }
}

/// One line a person reads about what changed-block tracking did for a disk.
enum ChangeTrackingText {
    static func line(_ disk: Manifest.DiskEntry) -> String? {
        guard let cbt = disk.cbt else { return nil }
        var text: String
        if cbt.used {
            text =
                "read with bitmap \(cbt.bitmap ?? "?"): \(Units.formatBytes(disk.bytesRead ?? 0)) read, "
                + "\(Units.formatBytes(disk.bytesSkipped ?? 0)) clean not read, \(cbt.sampledBlocks ?? 0) clean blocks checked"
        } else {
            text = "read in full: \(cbt.reason ?? "no bitmap was used")"
        }
        text += cbt.started.map { "; bitmap \($0) started" } ?? "; no bitmap started"
        return text
    }
}
