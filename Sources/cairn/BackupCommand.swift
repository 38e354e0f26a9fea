import ArgumentParser
import CairnCore

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup", abstract: "Make one restore point of a group from its disk images.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "The group (usually the VM) the restore point belongs to.")
    var group: String

    @Option(help: "Force the image format (raw or qcow2) instead of detecting it.")
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
                    throw CairnError(.usage, "--format \(format) is not raw or qcow2")
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
            DiskSummary(name: $0.name, size: $0.size, changedBlocks: $0.changedBlocks, zeroBlocks: $0.zeroBlocks)
        }
    }
}
