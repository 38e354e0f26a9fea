import ArgumentParser
import CairnCore
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

struct ArchiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive",
        abstract: "Copy restore points to sequential archives (files, pipes, tape) and back.",
        discussion: "Format: docs/ARCHIVE-FORMAT.md. VOLUME `-` reads one stream from stdin.",
        subcommands: [
            ArchiveWriteCommand.self, ArchiveListCommand.self, ArchiveVerifyCommand.self, ArchiveRestoreCommand.self,
            ArchiveImportCommand.self, ArchiveCatalogCommand.self,
        ]
    )
}

func openVolumes(_ paths: [String]) throws(CairnError) -> [any ArchiveByteSource] {
    guard !paths.isEmpty else { throw CairnError(.usage, "name the archive's volumes (or - for stdin)") }
    if paths.contains("-") && paths.count > 1 {
        throw CairnError(.usage, "`-` reads the whole archive from stdin: give it alone")
    }
    var sources: [any ArchiveByteSource] = []
    for path in paths { sources.append(try FileByteSource.open(path)) }
    return sources
}

func printProblems(_ problems: [ArchiveProblem]) {
    for problem in problems { Terminal.printError("cairn: \(problem)") }
}

struct ArchiveWriteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write", abstract: "Write restore points to a new archive: PATH.001, PATH.002, … or - for stdout.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Restore points: GROUP@TIME or GROUP@latest.", completion: Completions.restorePoints)
    var ids: [String]

    @Option(
        help: "Volume base path (volumes PATH.001, …), - for stdout, or a tape device such as /dev/nst0.",
        completion: Completions.files)
    var to: String

    @Option(help: "Cut the archive into volumes of at most this size (e.g. 2T, 500M).")
    var volumeSize: String?

    @Option(help: "Archive block size: a power of two from 64K to 4M.")
    var blockSize = "256K"

    @Flag(help: "Overwrite existing volume files.")
    var force = false

    @Flag(help: "Print the summary as a JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open()
            var points: [RestorePointID] = []
            for id in ids { points.append(try repo.catalog.resolve(id)) }
            let block = try parseSize(blockSize, option: "--block-size")
            guard block <= UInt64(4 << 20) else {
                throw CairnError(.usage, "--block-size \(blockSize) is larger than 4M")
            }
            try ArchiveFormat.validate(blockSize: Int(block))
            let sink: any ArchiveSink
            if to == "-" && isatty(1) == 1 {
                throw CairnError(
                    .usage,
                    "--to - writes the archive to stdout, which is a terminal: redirect it to a file, a pipe or a tape (e.g. > vm1.cairnarc)"
                )
            }
            if to == "-" {
                sink = StreamSink(file: File.standard(.standardOutput, name: "stdout"), name: "-")
            } else if StreamSink.isCharacterDevice(to) {
                sink = StreamSink(file: try File.open(to, .readWrite), name: to)
            } else {
                sink = try VolumeFileSink(basePath: FileSystem.absolutePath(to), force: force)
            }
            let writer = ArchiveWriter(repository: repo, ids: points, sink: sink)
            writer.blockSize = Int(block)
            writer.volumeSize = try volumeSize.map { v throws(CairnError) in try parseSize(v, option: "--volume-size") }
            writer.lockWait = try repository.lockWaitSeconds()
            writer.progress = { done, total, seconds in
                let percent = total == 0 ? 100 : Int(Double(done) * 100 / Double(total))
                Terminal.progress("archiving: \(percent)% of \(Units.formatBytes(total)), \(rate(done, seconds))")
            }
            let result = try writer.run()
            Terminal.clearProgress()
            let summary = ArchiveWriteSummary(result)
            let text =
                json
                ? try JSONCoding.encode(summary)
                : "wrote archive \(result.archive) (\(counted(result.points.count, "restore point")), \(counted(result.chunks, "chunk")), \(counted(result.indexPages, "index page"))) to \(counted(result.volumes.count, "volume")): \(Units.formatBytes(result.bytes)) in \(Units.formatDecimal(result.seconds, places: 2)) s, \(rate(result.bytes, result.seconds))"
            // With --to -, stdout carries the archive: the summary goes to stderr.
            if to == "-" { Terminal.printError(text) } else { print(text) }
        }
    }
}

struct ArchiveWriteSummary: Encodable {
    var archive: String
    var volumes: [String]
    var points: [ArchivePointEntry]
    var chunks: Int
    var indexPages: Int
    var bytes: UInt64
    var seconds: Double

    init(_ r: ArchiveWriteResult) {
        archive = r.archive.hex
        volumes = r.volumes
        points = r.points
        chunks = r.chunks
        indexPages = r.indexPages
        bytes = r.bytes
        seconds = r.seconds
    }
}

struct ArchiveListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the restore points in an archive (reads up to its first chunk).")

    @Argument(help: "The archive's volumes in order, or - for stdin.", completion: Completions.files)
    var volumes: [String]

    @Flag(help: "Print a JSON array.")
    var json = false

    /// An encrypted archive's passphrase (hidden while encryption is, issue 14).
    @OptionGroup var passphraseSource: PassphraseOptions

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let source = passphraseSource
            let report = ArchiveVerifier.list(
                try openVolumes(volumes), passphrase: { () throws(CairnError) in try source.passphrase() })
            if report.points.isEmpty, let fatal = report.fatal { throw fatal }
            if json {
                print(try JSONCoding.encode(report.points.map(ArchiveListRow.init)))
            } else {
                print(
                    "archive \(report.archive ?? "?"), block size \(Units.formatBytes(UInt64(report.label?.archiveBlockSize ?? 0))), chunk block size \(Units.formatBytes(UInt64(report.label?.chunkBlockSize ?? 0)))"
                )
                let rows = report.points.map { p in
                    [
                        p.id, String(p.volume), p.disks.map(\.name).joined(separator: ","),
                        Units.formatBytes(p.disks.reduce(0) { $0 + $1.size }),
                    ]
                }
                printTable(header: ["ID", "VOLUME", "DISKS", "SIZE"], rows: rows)
            }
            printProblems(report.problems)
            if let fatal = report.fatal { throw fatal }
        }
    }
}

struct ArchiveListRow: Encodable {
    var id: String
    var volume: Int
    var size: UInt64
    var disks: [ArchivePointEntry.Disk]

    init(_ p: ArchiveReport.Point) {
        id = p.id
        volume = p.volume
        size = p.disks.reduce(0) { $0 + $1.size }
        disks = p.disks
    }
}

struct ArchiveVerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a whole archive in one sequential pass: blocks, records, chunks, indexes, catalog.")

    @Argument(help: "The archive's volumes in order, or - for stdin.", completion: Completions.files)
    var volumes: [String]

    @Flag(help: "Print the report as a JSON object.")
    var json = false

    /// An encrypted archive's passphrase: only from `--password-command` or
    /// `$CAIRN_PASSWORD_FILE` (never a prompt); without it, structure and checksums are checked.
    @OptionGroup var passphraseSource: PassphraseOptions

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let report = ArchiveVerifier.verify(try openVolumes(volumes), passphrase: passphraseSource.givenSource())
            if json {
                print(try JSONCoding.encode(ArchiveVerifySummary(report)))
            } else {
                for p in report.points {
                    print(p.intact ? "ok       \(p.id)" : "DAMAGED  \(p.id): \(p.problem ?? "")")
                }
                let verb =
                    report.failure != nil ? "checked" : report.contentChecked ? "verified" : "checked the structure of"
                print(
                    "\(verb) archive \(report.archive ?? "?"): \(counted(report.volumes, "volume")), \(counted(report.manifestRecords, "restore point")), \(counted(report.indexPages, "index page")), \(counted(report.chunks, "chunk")), \(Units.formatBytes(report.bytesRead)) in \(Units.formatDecimal(report.seconds, places: 2)) s, \(rate(report.bytesRead, report.seconds))"
                )
            }
            if !report.contentChecked && report.fatal == nil {
                Terminal.printError(
                    "cairn: archive \(report.archive ?? "?") is encrypted: its content was not checked (blocks, records and their checksums were), since no passphrase was given (CAIRN_PASSWORD_FILE or --password-command)"
                )
            }
            printProblems(report.problems)
            if let failure = report.failure { throw failure }
        }
    }
}

struct ArchiveVerifySummary: Encodable {
    var archive: String?
    var volumes: Int
    var points: [ArchiveReport.Point]
    var chunks: Int
    var indexPages: Int
    var bytes: UInt64
    var seconds: Double
    var problems: [String]
    var ok: Bool
    /// Whether the archive is encrypted, and whether its content was checked (false: encrypted
    /// and no passphrase given; only blocks, records and checksums were).
    var encrypted: Bool
    var contentChecked: Bool
    /// Restore points in the archive (manifest records; `points` is empty when they are sealed).
    var restorePoints: Int

    init(_ r: ArchiveReport) {
        encrypted = r.encrypted
        contentChecked = r.contentChecked
        restorePoints = r.manifestRecords
        archive = r.archive
        volumes = r.volumes
        points = r.points
        chunks = r.chunks
        indexPages = r.indexPages
        bytes = r.bytesRead
        seconds = r.seconds
        problems = r.problems.map(\.description) + (r.fatal.map { [$0.description] } ?? [])
        ok = r.failure == nil
    }
}

struct ArchiveRestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Rebuild a disk from an archive in one sequential pass, without a repository.",
        discussion: "Usage: cairn archive restore VOLUME... ID --to PATH (VOLUME - reads stdin).")

    @Argument(
        help: "The archive's volumes in order (or -), then the restore point's id: GROUP@TIME or GROUP@latest.",
        completion: Completions.files)
    var arguments: [String]

    @Option(help: "Output file or block device.", completion: Completions.files)
    var to: String

    @Option(help: "The disk to restore; needed when the restore point has several.")
    var disk: String?

    @OptionGroup var output: RestoreOutputOptions

    @Flag(help: "Overwrite an existing output file.")
    var force = false

    @Flag(help: "Print the summary as a JSON object.")
    var json = false

    /// An encrypted archive's passphrase (hidden while encryption is, issue 14).
    @OptionGroup var passphraseSource: PassphraseOptions

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            guard arguments.count >= 2 else {
                throw CairnError(.usage, "give the archive's volumes (or -) and then the restore point id")
            }
            _ = try output.parsed()  // a bad --format or --cluster-size fails before the archive is read
            let id = try RestorePointSelector(parsing: arguments.last!)
            var request = ArchiveRestoreRequest(point: id, disk: disk, destination: to)
            request.force = force
            // As `cairn restore`: --format, else the destination's extension, else the format the
            // disk was backed up from (raw onto a block device).
            let output = output
            let destination = to
            request.chooseOutput = { disk throws(CairnError) in
                let (format, cluster) = try output.resolved(for: disk, destination: destination)
                return RestoreOutputChoice(
                    format: format, clusterSize: cluster, vmdkSubformat: try output.vmdkSubformat(for: format))
            }
            let restore = ArchiveRestore(sources: try openVolumes(Array(arguments.dropLast())), request: request)
            let source = passphraseSource
            restore.passphrase = { () throws(CairnError) in try source.passphrase() }
            restore.progress = { read, written, seconds in
                Terminal.progress(
                    "restoring: \(Units.formatBytes(read)) of archive read, \(Units.formatBytes(written)) written, \(rate(read, seconds))"
                )
            }
            let result = try restore.run()
            Terminal.clearProgress()
            printProblems(result.problems)
            if json {
                print(try JSONCoding.encode(ArchiveRestoreSummary(result, to: to, format: result.format.rawValue)))
                return
            }
            print(
                "restored \(result.id) disk \(result.disk.name) to \(to) (\(result.format.rawValue)): \(Units.formatBytes(result.disk.size)), \(Units.formatBytes(result.bytesWritten)) of data written, \(Units.formatBytes(result.bytesRead)) of archive read in \(Units.formatDecimal(result.seconds, places: 2)) s"
            )
        }
    }
}

struct ArchiveImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Load an archive's restore points and chunks into a repository.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "The archive's volumes in order, or - for stdin.", completion: Completions.files)
    var volumes: [String]

    @Flag(help: "Print the summary as a JSON object (also when some restore points were skipped).")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let sources = try openVolumes(volumes)
            let importer: ArchiveImporter
            let objectStorage = try repository.objectStorage()
            if let storage = objectStorage, try !RepositoryConfig.isPresent(in: storage) {
                importer = ArchiveImporter(
                    creatingRepositoryIn: storage, features: [FormatFeature.objectStore], sources: sources)
                let source = repository.passphraseSource
                importer.passphrase = { () throws(CairnError) in try source.passphrase() }
                importer.onCreate = { path in
                    Terminal.printError("cairn: made repository \(path) from the archive's repository id and key files")
                }
            } else if objectStorage == nil, ArchiveImporter.isNewLocation(repository.path) {
                // Only an encrypted archive can make its repository (it carries the keys).
                importer = ArchiveImporter(creatingRepositoryAt: repository.path, sources: sources)
                let source = repository.passphraseSource
                importer.passphrase = { () throws(CairnError) in try source.passphrase() }
                importer.onCreate = { path in
                    Terminal.printError("cairn: made repository \(path) from the archive's repository id and key files")
                }
            } else {
                importer = ArchiveImporter(repository: try repository.open(), sources: sources)
            }
            importer.lockWait = try repository.lockWaitSeconds()
            let result = try importer.run()
            if json {
                print(try JSONCoding.encode(ArchiveImportSummary(result)))
            } else {
                for id in result.imported { print("imported \(id)") }
                for id in result.alreadyPresent { print("present  \(id) (already in the repository)") }
                for (id, reason) in result.skipped { print("SKIPPED  \(id): \(reason)") }
                print(
                    "stored \(result.chunksStored) new chunks and index pages from archive \(result.report.archive ?? "?")"
                )
            }
            printProblems(result.report.problems)
            if let failure = result.report.failure { throw failure }
            if let first = result.skipped.first {
                throw CairnError(
                    .damaged,
                    "\(counted(result.skipped.count, "restore point")) not imported (\(first.id): \(first.reason))")
            }
        }
    }
}

struct ArchiveCatalogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog",
        abstract: "List the archives this repository wrote: which restore point is on which volume.")

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Print a JSON array.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open()
            let entries = try ArchiveCatalog.entries(in: repo)
            if json {
                print(try JSONCoding.encode(entries))
                return
            }
            if entries.isEmpty {
                print("no archives")
                return
            }
            var rows: [[String]] = []
            for e in entries {
                for p in e.points {
                    let volume = p.volume <= e.volumes.count ? e.volumes[p.volume - 1] : String(p.volume)
                    rows.append([e.archive, e.created, p.id, String(p.volume), volume])
                }
            }
            printTable(header: ["ARCHIVE", "CREATED", "ID", "VOLUME", "WHERE"], rows: rows)
        }
    }
}

/// `cairn archive restore --json`: a contract for scripts; extend, do not rename.
struct ArchiveRestoreSummary: Encodable {
    var id: String
    var disk: String
    var to: String
    var format: String
    var size: UInt64
    var bytesWritten: UInt64
    var bytesRead: UInt64
    var seconds: Double
    var problems: [String]

    init(_ result: ArchiveRestoreResult, to: String, format: String) {
        id = result.id
        disk = result.disk.name
        self.to = to
        self.format = format
        size = result.disk.size
        bytesWritten = result.bytesWritten
        bytesRead = result.bytesRead
        seconds = result.seconds
        problems = result.problems.map(\.description)
    }
}

/// `cairn archive import --json`: a contract for scripts; extend, do not rename.
struct ArchiveImportSummary: Encodable {
    var archive: String?
    var imported: [String]
    var alreadyPresent: [String]
    var skipped: [Skipped]
    var chunksStored: Int
    var problems: [String]

    struct Skipped: Encodable {
        var id: String
        var reason: String
    }

    init(_ result: ArchiveImportResult) {
        archive = result.report.archive
        imported = result.imported
        alreadyPresent = result.alreadyPresent
        skipped = result.skipped.map { Skipped(id: $0.id, reason: $0.reason) }
        chunksStored = result.chunksStored
        problems = result.report.problems.map(\.description)
    }
}
