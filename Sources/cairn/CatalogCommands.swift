import ArgumentParser
import CairnCore

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List restore points, oldest first.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Only this group.")
    var group: String?

    @Option(help: "Only this libvirt domain's restore points (its group: the domain's name).")
    var domain: String?

    @Flag(help: "Print a JSON array.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            guard group == nil || domain == nil else {
                throw CairnError(.usage, "give --group or --domain, not both")
            }
            let group = self.group ?? domain
            let repo = try repository.open()
            let ids: [RestorePointID]
            if let group {
                try GroupName.validate(group)
                ids = try repo.catalog.points(in: group)
            } else {
                ids = try repo.catalog.allPoints()
            }
            repository.seenPoints(repo)?.record(ids)
            var rows: [PointSummary] = []
            var damaged: [CairnError] = []
            for id in ids {
                // One unreadable manifest must not hide the others: it gets a row saying so.
                var row: PointSummary
                do throws(CairnError) {
                    row = PointSummary(try repo.catalog.manifest(id))
                } catch  where error.code == .damaged || error.code == .repository {
                    row = PointSummary(unreadable: id, problem: error.message)
                    damaged.append(error)
                }
                row.protected = repo.catalog.isProtected(id)
                row.verified = repo.catalog.verification(of: id).map { PointSummary.Verified($0) }
                rows.append(row)
            }
            if json {
                print(try JSONCoding.encode(rows))
            } else if rows.isEmpty {
                if group == nil { print("no restore points") }
            } else {
                let table = rows.map { r in
                    [
                        r.id.description, r.damaged == nil ? r.disks.map(\.name).joined(separator: ",") : "?",
                        Units.formatBytes(r.size), Units.formatBytes(r.bytesNew), Units.formatBytes(r.bytesStored),
                        r.verified.map { "\($0.result) \(Terminal.humanTime($0.time))" } ?? "never",
                        [r.protected ? "protected" : "", r.damaged == nil ? "" : "MANIFEST DAMAGED"]
                            .filter { !$0.isEmpty }.joined(separator: ", "),
                    ]
                }
                printTable(header: ["ID", "DISKS", "SIZE", "NEW", "STORED", "VERIFIED", "NOTES"], rows: table)
            }
            // A group that was named and has nothing is "not found", as for restore and prune
            // (exit 4); an empty repository is not an error.
            if let group, ids.isEmpty {
                throw CairnError(.notFound, "group \(group) has no restore points")
            }
            if let first = damaged.first {
                let more = damaged.count > 1 ? " (and \(damaged.count - 1) more damaged manifests)" : ""
                throw CairnError(first.code, first.message + more)
            }
        }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one restore point in detail.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.", completion: Completions.restorePoints)
    var id: String

    @Flag(help: "Print the manifest as JSON.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open()
            let pointID = try repo.catalog.resolve(id)
            let manifest = try repo.catalog.manifest(pointID)
            let verification = repo.catalog.verification(of: pointID)
            let protected = repo.catalog.isProtected(pointID)
            if json {
                print(
                    try JSONCoding.encode(
                        ShowSummary(manifest: manifest, protected: protected, verified: verification), pretty: true))
                return
            }
            let s = manifest.stats
            print("restore point \(manifest.id)")
            print("  time:        \(Terminal.humanTime(manifest.time))")
            print("  written by:  \(manifest.tool)")
            print("  block size:  \(Units.formatBytes(UInt64(manifest.blockSize)))")
            print("  walked from: \(manifest.previous?.description ?? "(none: first backup of the group)")")
            print("  protected:   \(protected ? "yes (prune keeps it, forget refuses it)" : "no")")
            if let v = verification {
                let scope =
                    v.scope == .sample
                    ? "sample of \(Units.formatDecimal(v.samplePercent ?? 0, places: 1))% of chunks" : "every chunk"
                print(
                    "  verified:    \(v.result) at \(Terminal.humanTime(v.time)) (\(scope), \(v.chunksChecked) blocks checked)"
                )
                for problem in v.problems { print("    \(problem)") }
            } else {
                print("  verified:    never")
            }
            print(
                "  read \(Units.formatBytes(s.bytesRead)), \(Units.formatBytes(s.bytesNew)) new, \(Units.formatBytes(s.bytesStored)) stored, \(s.chunksNew) new chunks, \(Units.formatDecimal(s.seconds, places: 2)) s"
            )
            for disk in manifest.disks {
                print("  disk \(disk.name)")
                print(
                    "    size:     \(disk.size) bytes (\(Units.formatBytes(disk.size))), \(disk.blockCount) blocks, \(disk.zeroBlocks) zero, \(disk.changedBlocks) changed"
                )
                var source = "\(disk.source.format) \(disk.source.path)"
                if let c = disk.source.clusterSize { source += ", cluster \(Units.formatBytes(c))" }
                if let v = disk.source.qcow2Version { source += ", qcow2 v\(v)" }
                if let snap = disk.source.snapshot { source += ", snapshot \(snap)" }
                print("    source:   \(source)")
                print("    index:    root \(disk.root), depth \(disk.depth)")
                if let kind = disk.sourceKind, let read = disk.bytesRead {
                    print(
                        "    read:     \(kind), \(Units.formatBytes(read)) read, \(Units.formatBytes(disk.bytesSkipped ?? 0)) skipped as unchanged"
                    )
                }
                if let line = ChangeTrackingText.line(disk) { print("    cbt:      \(line)") }
            }
            for file in manifest.settings ?? [] {
                print("  settings file \(file.name): \(file.size) bytes, sha256 \(file.digest)")
            }
        }
    }
}

/// One row of `cairn list --json`: a contract for scripts; extend, do not rename.
struct PointSummary: Encodable {
    var id: RestorePointID
    var group: String
    var time: Timestamp
    var size: UInt64
    var bytesNew: UInt64
    var bytesStored: UInt64
    var disks: [Disk]
    /// Added by `cairn protect`; prune keeps it.
    var protected = false
    /// The last `cairn verify` that checked this restore point, if any.
    var verified: Verified?
    /// Set when the manifest cannot be read: what is wrong with it (the other fields are then
    /// only what the file name tells: id, group, time).
    var damaged: String?

    struct Verified: Encodable {
        var time: Timestamp
        var result: VerificationResult
        var scope: VerificationScope
        var samplePercent: Double?

        init(_ r: VerificationRecord) {
            time = r.time
            result = r.result
            scope = r.scope
            samplePercent = r.samplePercent
        }
    }

    struct Disk: Encodable {
        var name: String
        var size: UInt64
        var format: ImageFormat
    }

    init(_ m: Manifest) {
        id = m.id
        group = m.group
        time = m.time
        size = m.totalSize
        bytesNew = m.stats.bytesNew
        bytesStored = m.stats.bytesStored
        disks = m.disks.map { Disk(name: $0.name, size: $0.size, format: $0.source.format) }
    }

    init(unreadable id: RestorePointID, problem: String) {
        self.id = id
        group = id.group
        time = id.time
        size = 0
        bytesNew = 0
        bytesStored = 0
        disks = []
        damaged = problem
    }
}

func printTable(header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count)
        }
        .joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

/// `cairn show --json`: the manifest's keys, plus `protected` and `verified` (extend, do not rename).
struct ShowSummary: Encodable {
    var manifest: Manifest
    var protected: Bool
    var verified: VerificationRecord?

    enum ExtraKeys: String, CodingKey { case protected, verified }

    func encode(to encoder: any Encoder) throws {
        try manifest.encode(to: encoder)
        var container = encoder.container(keyedBy: ExtraKeys.self)
        try container.encode(protected, forKey: .protected)
        try container.encodeIfPresent(verified, forKey: .verified)
    }
}
