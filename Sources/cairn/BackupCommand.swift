import ArgumentParser
import CairnCore

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup", abstract: "Make one restore point of a group from its disk images.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "The group (usually the VM) the restore point belongs to.")
    var group: String

    @Option(
        help:
            "Force the image format (raw, qcow2 or vmdk) instead of detecting it; raw backs up any file's bytes as they are."
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
            valueName: "source"))
    var images: [String] = []

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
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
            let repo = try repository.open()
            let job = BackupJob(repository: repo, group: group, sources: sources)
            job.lockWait = try repository.lockWaitSeconds()
            job.settingsFiles = settingsFiles
            job.changeTracking = ChangeTrackingOptions(
                dirtyBitmap: dirtyBitmap, checkpoint: checkpoint, managed: cbt, fullEvery: fullEvery,
                sampleBlocks: cbtSample)
            job.progress = { p in
                let percent = p.bytesTotal == 0 ? 100 : Int(Double(p.bytesDone) * 100 / Double(p.bytesTotal))
                Terminal.progress(
                    "\(p.disk): \(percent)% of \(Units.formatBytes(p.bytesTotal)), \(Units.formatBytes(p.bytesNew)) new, \(rate(p.bytesDone, p.seconds))"
                )
            }
            let result = try job.run()
            Terminal.clearProgress()
            if let warning = result.warning { Terminal.printError("cairn: warning: \(warning)") }
            let stats = result.manifest.stats
            if json {
                print(try JSONCoding.encode(BackupSummary(result.manifest)))
            } else {
                print(
                    "\(result.id): read \(Units.formatBytes(stats.bytesRead)), \(Units.formatBytes(stats.bytesNew)) new (\(Units.formatBytes(stats.bytesStored)) stored) in \(Units.formatDecimal(stats.seconds, places: 2)) s"
                )
                for disk in result.manifest.disks {
                    if let line = ChangeTrackingText.line(disk) { print("  \(disk.name): \(line)") }
                }
            }
        }
    }
}

/// `cairn backup --json`: a contract for scripts; extend, do not rename.
struct BackupSummary: Encodable {
    var id: String
    var group: String
    var time: String
    var bytesRead: UInt64
    var bytesNew: UInt64
    var bytesStored: UInt64
    var chunksNew: Int
    var seconds: Double
    var disks: [DiskSummary]

    struct DiskSummary: Encodable {
        var name: String
        var size: UInt64
        var changedBlocks: UInt64
        var zeroBlocks: UInt64
        /// `file` or `nbd`.
        var sourceKind: String?
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
