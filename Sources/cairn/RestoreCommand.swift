import ArgumentParser
import CairnCore

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Rebuild a disk from a restore point, checking every chunk's digest.",
        discussion: "Name the restore point (GROUP@TIME, GROUP@latest), or a group and a time with --group and --at.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.")
    var id: String?

    @Option(help: "With --at: the group to restore from.")
    var group: String?

    @Option(help: "With --group: restore the newest restore point at or before this UTC time (2026-11-26T03:00:00Z).")
    var at: String?

    @Option(help: "Output file or block device.")
    var to: String?

    @Option(help: "Write the restore point's settings files (domain XML, .vmx) into this directory.")
    var configTo: String?

    @Option(
        help: ArgumentHelp(
            "Restore a libvirt domain's restore point (GROUP@TIME, GROUP@latest, or the domain's name for its latest): every disk and its domain XML, into --to-dir.",
            valueName: "id"))
    var domain: String?

    @Option(help: "With --domain: the directory to write the disks and the domain XML into.")
    var toDir: String?

    @Option(
        help: ArgumentHelp(
            "With --domain: define the restored domain in libvirt under this name (new UUID and MAC addresses, so it runs beside the original).",
            valueName: "name"))
    var define: String?

    @Option(help: "With --define: the libvirt connection URI.")
    var connect: String = Virsh.defaultURI

    @Option(help: "The disk to restore (its image's file name); needed when the restore point has several.")
    var disk: String?

    @OptionGroup var output: RestoreOutputOptions

    @Flag(help: "Overwrite an existing output file.")
    var force = false

    @Flag(help: "Write zeros where a chunk is damaged or missing instead of failing; the affected ranges are listed.")
    var allowDamaged = false

    @Flag(help: "Print the summary as a JSON object.")
    var json = false

    @Flag(help: "Print nothing but warnings and errors (no progress, no summary; --json still prints).")
    var quiet = false

    /// Exit status of a restore that `--allow-damaged` completed with zeros in place of damaged
    /// data: the output is incomplete, and a script must be able to tell (restic uses 3 alike).
    static let partialExitCode: Int32 = 12

    func run() throws {
        Terminal.quiet = quiet
        var partial = false
        try runReportingErrors { () throws(CairnError) in
            if let domain {
                try restoreDomain(domain)
                return
            }
            guard toDir == nil, define == nil else {
                throw CairnError(.usage, "--to-dir and --define go with --domain")
            }
            let (outputFormat, cluster) = try output.parsed()
            let repo = try repository.open()
            let pointID: RestorePointID
            switch (id, group, at) {
            case (let id?, nil, nil):
                pointID = try repo.catalog.resolve(id)
            case (nil, let group?, let at?):
                try GroupName.validate(group)
                guard let time = Timestamp(parsing: at) else {
                    throw CairnError(.usage, "--at \(at) is not a UTC time (use e.g. 2026-11-26T03:00:00Z)")
                }
                pointID = try repo.catalog.latest(in: group, atOrBefore: time)
            default:
                throw CairnError(
                    .usage, "name a restore point (GROUP@TIME or GROUP@latest), or give both --group and --at")
            }
            var settingsWritten: [String]?
            if let configTo {
                var settings = SettingsRestore(repository: repo)
                settings.force = force
                settings.lockWait = try repository.lockWaitSeconds()
                settingsWritten = try settings.run(pointID, to: configTo)
                guard !settingsWritten!.isEmpty else {
                    throw CairnError(.notFound, "restore point \(pointID) holds no settings files")
                }
                if !json && !quiet { for path in settingsWritten! { print("restored settings file \(path)") } }
            }
            guard let to else {
                guard configTo != nil else {
                    throw CairnError(.usage, "name the output with --to (or --config-to DIR)")
                }
                if json {
                    print(
                        try JSONCoding.encode(
                            SettingsOnlySummary(id: pointID.description, settings: settingsWritten ?? [])))
                }
                return
            }
            var request = RestoreRequest(id: pointID, disk: disk, destination: to)
            request.format = outputFormat
            request.force = force
            request.allowDamaged = allowDamaged
            request.clusterSize = cluster
            let job = RestoreJob(repository: repo, request: request)
            job.lockWait = try repository.lockWaitSeconds()
            job.progress = { p in
                let percent = p.bytesTotal == 0 ? 100 : Int(Double(p.bytesDone) * 100 / Double(p.bytesTotal))
                Terminal.progress(
                    "restoring: \(percent)% of \(Units.formatBytes(p.bytesTotal)), \(rate(p.bytesDone, p.seconds))")
            }
            let result = try job.run()
            Terminal.clearProgress()
            partial = !result.damaged.isEmpty
            for range in result.damaged {
                Terminal.printError(
                    "cairn: damaged: wrote zeros at disk offset \(range.offset), \(range.length) bytes (chunk \(range.chunk)): \(range.reason)"
                )
            }
            if json {
                print(
                    try JSONCoding.encode(
                        RestoreSummary(
                            id: pointID.description, result: result, to: to, format: output.format,
                            settings: settingsWritten)))
            } else if !quiet {
                print(
                    "restored \(pointID) disk \(result.disk.name) to \(to): \(Units.formatBytes(result.disk.size)), \(Units.formatBytes(result.bytesWritten)) of data written in \(Units.formatDecimal(result.seconds, places: 2)) s"
                )
            }
            if partial {
                Terminal.printError(
                    "cairn: the restore is incomplete: \(counted(result.damaged.count, "damaged range")) written as zeros (exit \(Self.partialExitCode))"
                )
            }
        }
        if partial { throw ExitCode(Self.partialExitCode) }
    }
}

extension RestoreCommand {
    private func restoreDomain(_ domain: String) throws(CairnError) {
        guard id == nil, group == nil, at == nil, to == nil, configTo == nil, disk == nil else {
            throw CairnError(
                .usage, "--domain names the restore point and restores every disk: give it with --to-dir only")
        }
        guard let toDir else { throw CairnError(.usage, "name the directory to restore the domain into with --to-dir") }
        let repo = try repository.open()
        let pointID = try repo.catalog.resolve(domain.contains("@") ? domain : "\(domain)@latest")
        var job = DomainRestore(repository: repo)
        job.virsh = Virsh(uri: connect)
        job.force = force
        job.lockWait = try repository.lockWaitSeconds()
        job.progress = { p in
            let percent = p.bytesTotal == 0 ? 100 : Int(Double(p.bytesDone) * 100 / Double(p.bytesTotal))
            Terminal.progress(
                "restoring: \(percent)% of \(Units.formatBytes(p.bytesTotal)), \(rate(p.bytesDone, p.seconds))")
        }
        let result = try job.run(pointID, to: toDir, define: define)
        Terminal.clearProgress()
        if json {
            print(try JSONCoding.encode(DomainRestoreSummary(id: pointID.description, result: result)))
            return
        }
        guard !quiet else { return }
        for disk in result.disks {
            print(
                "restored \(pointID) disk \(disk.disk.name) to \(result.paths[disk.disk.name] ?? "?"): \(Units.formatBytes(disk.disk.size)), \(Units.formatBytes(disk.bytesWritten)) of data written"
            )
        }
        print("wrote the domain XML \(result.xmlPath)")
        if let defined = result.defined { print("defined domain \(defined) (new UUID and MAC addresses)") }
    }
}

/// `cairn restore --domain --json`.
struct DomainRestoreSummary: Encodable {
    var id: String
    var disks: [Disk]
    var xml: String
    var defined: String?

    struct Disk: Encodable {
        var name: String
        var to: String
        var size: UInt64
        var bytesWritten: UInt64
    }

    init(id: String, result: DomainRestoreResult) {
        self.id = id
        disks = result.disks.map {
            Disk(
                name: $0.disk.name, to: result.paths[$0.disk.name] ?? "", size: $0.disk.size,
                bytesWritten: $0.bytesWritten)
        }
        xml = result.xmlPath
        defined = result.defined
    }
}

/// `cairn restore --json`.
struct RestoreSummary: Encodable {
    var id: String
    var disk: String
    var to: String
    var format: String
    var size: UInt64
    var bytesWritten: UInt64
    var seconds: Double
    var damaged: [DamagedRange]
    /// Settings files written by `--config-to`.
    var settings: [String]?

    init(id: String, result: RestoreResult, to: String, format: String, settings: [String]?) {
        self.id = id
        disk = result.disk.name
        self.to = to
        self.format = format
        size = result.disk.size
        bytesWritten = result.bytesWritten
        seconds = result.seconds
        damaged = result.damaged
        self.settings = settings
    }
}

/// `cairn restore --config-to DIR --json` without `--to`.
struct SettingsOnlySummary: Encodable {
    var id: String
    var settings: [String]
}

/// `--format` and `--cluster-size`, shared by `restore` and `archive restore`.
struct RestoreOutputOptions: ParsableArguments {
    @Option(help: "Output format: raw (default) or qcow2.")
    var format = "raw"

    @Option(help: "qcow2 output cluster size: a power of two from 512 to 2M.")
    var clusterSize = "64K"

    func parsed() throws(CairnError) -> (RestoreFormat, UInt64) {
        guard let outputFormat = RestoreFormat(rawValue: format) else {
            throw CairnError(.usage, "--format \(format) is not raw or qcow2")
        }
        let cluster = try parseSize(clusterSize, option: "--cluster-size")
        guard cluster >= 512, cluster <= 2 << 20, cluster & (cluster - 1) == 0 else {
            throw CairnError(.usage, "--cluster-size \(clusterSize) is not a power of two from 512 to 2M")
        }
        return (outputFormat, cluster)
    }
}
