import ArgumentParser
import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Rebuild a disk from a restore point, checking every chunk's digest.",
        discussion: "Name the restore point (GROUP@TIME, GROUP@latest), or a group and a time with --group and --at.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.", completion: Completions.restorePoints)
    var id: String?

    @Option(help: "With --at: the group to restore from.")
    var group: String?

    @Option(
        help:
            "With --group: restore the newest restore point at or before this time (2026-11-26T03:00:00Z, 2026-11-26T04:00:00+01:00; without a zone, local time per TZ)."
    )
    var at: String?

    @Option(help: "Output file or block device.", completion: Completions.files)
    var to: String?

    @Option(
        help: "Write the restore point's settings files (domain XML, .vmx) into this directory.",
        completion: Completions.directories)
    var configTo: String?

    @Option(
        help: ArgumentHelp(
            "Restore a libvirt domain's restore point (GROUP@TIME, GROUP@latest, or the domain's name for its latest): every disk and its domain XML, into --to-dir.",
            valueName: "id"))
    var domain: String?

    @Option(
        help: "With --domain: the directory to write the disks and the domain XML into.",
        completion: Completions.directories)
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
            let repo = try repository.open()
            let pointID: RestorePointID
            switch (id, group, at) {
            case (let id?, nil, nil):
                pointID = try repo.catalog.resolve(id)
            case (nil, let group?, let at?):
                pointID = try repo.catalog.resolve(try RestorePointSelector(group: group, at: at))
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
            let manifest = try repo.catalog.manifest(pointID)
            let targets = try Self.targets(of: manifest, disk: disk, to: to)
            var summaries: [RestoreSummary] = []
            for target in targets {
                let (format, cluster) = try output.resolved(for: target.disk, destination: target.path)
                var request = RestoreRequest(id: pointID, disk: target.disk.name, destination: target.path)
                request.format = format
                request.force = force
                request.allowDamaged = allowDamaged
                request.clusterSize = cluster
                request.vmdkSubformat = try output.vmdkSubformat(for: format)
                let job = RestoreJob(repository: repo, request: request)
                job.lockWait = try repository.lockWaitSeconds()
                job.progress = { p in
                    let percent = p.bytesTotal == 0 ? 100 : Int(Double(p.bytesDone) * 100 / Double(p.bytesTotal))
                    Terminal.progress(
                        "restoring \(target.disk.name): \(percent)% of \(Units.formatBytes(p.bytesTotal)), \(rate(p.bytesDone, p.seconds))"
                    )
                }
                let result = try job.run()
                Terminal.clearProgress()
                partial = partial || !result.damaged.isEmpty
                for range in result.damaged {
                    Terminal.printError(
                        "cairn: damaged: disk \(result.disk.name): wrote zeros at disk offset \(range.offset), \(range.length) bytes (chunk \(range.chunk)): \(range.reason)"
                    )
                }
                let summary = RestoreSummary(
                    id: pointID.description, result: result, to: target.path, format: format.rawValue,
                    settings: settingsWritten)
                summaries.append(summary)
                if !json && !quiet {
                    print(
                        "restored \(pointID) disk \(result.disk.name) to \(target.path) (\(format.rawValue)): \(Units.formatBytes(result.disk.size)), \(Units.formatBytes(result.bytesWritten)) of data written in \(Units.formatDecimal(result.seconds, places: 2)) s"
                    )
                }
            }
            if json {
                // One disk to a file: the object as always. A directory: every disk's object.
                if targets.count == 1 && !FileSystem.isDirectory(to) {
                    print(try JSONCoding.encode(summaries[0]))
                } else {
                    print(try JSONCoding.encode(DirectoryRestoreSummary(id: pointID.description, disks: summaries)))
                }
            }
            if partial {
                let ranges = summaries.reduce(0) { $0 + $1.damaged.count }
                Terminal.printError(
                    "cairn: the restore is incomplete: \(counted(ranges, "damaged range")) written as zeros (exit \(Self.partialExitCode))"
                )
            }
        }
        if partial { throw ExitCode(Self.partialExitCode) }
    }
}

extension RestoreCommand {
    /// Where each disk goes. `--to FILE` takes one disk (the one `--disk` names, or the only one);
    /// `--to DIR` (an existing directory) takes every disk, or the one `--disk` names, each as
    /// DIR/NAME (a name without an extension gets its output format's, `vda` → `vda.qcow2`).
    static func targets(of manifest: Manifest, disk: String?, to: String) throws(CairnError) -> [(
        disk: Manifest.DiskEntry, path: String
    )] {
        guard FileSystem.isDirectory(to) else {
            return [(try RestoreJob.selectDisk(manifest, disk), to)]
        }
        let disks =
            try disk.map { name throws(CairnError) in [try RestoreJob.selectDisk(manifest, name)] }
            ?? manifest.disks
        var seen = Set<String>()
        var targets: [(disk: Manifest.DiskEntry, path: String)] = []
        for entry in disks {
            var name = entry.name.split(separator: "/").last.map(String.init) ?? entry.name
            if !name.contains(".") {
                name += "." + (RestoreFormat(rawValue: entry.source.format.rawValue) ?? .raw).rawValue
            }
            guard seen.insert(name).inserted else {
                throw CairnError(
                    .usage,
                    "two disks of \(manifest.id) would both be restored as \(name): restore them one by one with --disk"
                )
            }
            targets.append((entry, "\(to.hasSuffix("/") ? String(to.dropLast()) : to)/\(name)"))
        }
        return targets
    }

    private func restoreDomain(_ domain: String) throws(CairnError) {
        guard id == nil, group == nil, at == nil, to == nil, configTo == nil, disk == nil else {
            throw CairnError(
                .usage, "--domain names the restore point and restores every disk: give it with --to-dir only")
        }
        guard let toDir else { throw CairnError(.usage, "name the directory to restore the domain into with --to-dir") }
        if let define, !GroupName.isValid(define) {
            throw CairnError(.usage, "--define \(define) is not a plain name (letters, digits, -, _, .)")
        }
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

/// `cairn restore --to DIR --json`: every restored disk's summary.
struct DirectoryRestoreSummary: Encodable {
    var id: String
    var disks: [RestoreSummary]
}

/// `cairn restore --config-to DIR --json` without `--to`.
struct SettingsOnlySummary: Encodable {
    var id: String
    var settings: [String]
}

/// `--format` and `--cluster-size`, shared by `restore` and `archive restore`.
struct RestoreOutputOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Output format: raw, qcow2 or vmdk. Default: the one the output's extension names (.raw, .img, .qcow2, .vmdk), else the format the disk was backed up from (raw onto a block device or from an NBD source)."
        ), completion: Completions.formats)
    var format: String?

    @Option(
        help:
            "With --format vmdk: monolithicSparse (default; for vmkfstools -i on ESXi) or streamOptimized (for OVF/OVA import).",
        completion: Completions.vmdkSubformats
    )
    var subformat: String?

    @Option(help: "qcow2 output cluster size: a power of two from 512 to 2M (default: the source's, else 64K).")
    var clusterSize: String?

    /// The format as given, or raw (for `archive restore`, which has no manifest at hand).
    func parsed() throws(CairnError) -> (RestoreFormat, UInt64) {
        try resolved(recordedFormat: nil, recordedCluster: nil, blockDevice: false, namedFormat: nil)
    }

    /// The format for restoring `disk` to `destination`: `--format` when given; else the disk's
    /// recorded source format when Cairn writes it (an admin who backed up vm1-root.qcow2 expects
    /// a qcow2 back), raw onto a block device.
    func resolved(for disk: Manifest.DiskEntry, destination: String) throws(CairnError) -> (RestoreFormat, UInt64) {
        var st = stat()
        let device = stat(destination, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK
        return try resolved(
            recordedFormat: disk.source.kind == .nbd ? nil : disk.source.format,
            recordedCluster: disk.source.clusterSize, blockDevice: device,
            namedFormat: Self.formatNamed(by: destination))
    }

    /// The format a destination's extension names (`.raw`, `.img`, `.qcow2`, ...): `--to
    /// vm1.raw` of a disk backed up from a qcow2 means a raw file, not a qcow2 in a `.raw`.
    static func formatNamed(by destination: String) -> RestoreFormat? {
        guard let dot = destination.lastIndex(of: "."), !destination[dot...].contains("/") else { return nil }
        let ext = destination[destination.index(after: dot)...].lowercased()
        return ext == "img" ? .raw : RestoreFormat(rawValue: ext)
    }

    private func resolved(
        recordedFormat: ImageFormat?, recordedCluster: UInt64?, blockDevice: Bool, namedFormat: RestoreFormat?
    ) throws(CairnError) -> (RestoreFormat, UInt64) {
        let outputFormat: RestoreFormat
        if let format {
            guard let parsed = RestoreFormat(rawValue: format) else {
                throw CairnError(
                    .usage,
                    "--format \(format) is not \(RestoreFormat.allCases.map(\.rawValue).joined(separator: " or "))")
            }
            outputFormat = parsed
        } else if blockDevice {
            outputFormat = .raw
        } else if let namedFormat {
            outputFormat = namedFormat
        } else {
            outputFormat = recordedFormat.flatMap { RestoreFormat(rawValue: $0.rawValue) } ?? .raw
        }
        guard let clusterSize else {
            let recorded = recordedCluster ?? 0
            let usable = recorded >= 512 && recorded <= 2 << 20 && recorded & (recorded - 1) == 0
            return (outputFormat, usable ? recorded : 65536)
        }
        let cluster = try parseSize(clusterSize, option: "--cluster-size")
        guard cluster >= 512, cluster <= 2 << 20, cluster & (cluster - 1) == 0 else {
            throw CairnError(.usage, "--cluster-size \(clusterSize) is not a power of two from 512 to 2M")
        }
        return (outputFormat, cluster)
    }

    /// The VMDK kind `--subformat` names (monolithicSparse when not given), for an output of
    /// `format` (a subformat goes only with a VMDK output).
    func vmdkSubformat(for format: RestoreFormat) throws(CairnError) -> VMDKSubformat {
        guard let subformat else { return .monolithicSparse }
        guard format == .vmdk else {
            throw CairnError(.usage, "--subformat goes with --format vmdk")
        }
        guard let kind = VMDKSubformat(rawValue: subformat) else {
            throw CairnError(.usage, "--subformat \(subformat) is not monolithicSparse or streamOptimized")
        }
        return kind
    }
}
