import ArgumentParser
import CairnCore
import CairnS3

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Per group: the newest restore point and its age, the last verify and its age, the space used.",
        discussion: """
            Exits 0 when every group is fresh, \(StatusCommand.staleExitCode) when a group's newest restore point is older \
            than --max-age (or its last verify older than --max-verify-age, or it has none), and 7 when a group's \
            last verify found damage; so a monitoring check or a timer can alert on it.
            """)

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Only this group (repeatable); default: every group.")
    var group: [String] = []

    @Option(
        help: ArgumentHelp(
            "Fail (exit \(StatusCommand.staleExitCode)) if a group's newest restore point is older than this (e.g. 26h, 8d).",
            valueName: "duration"))
    var maxAge: String?

    @Option(
        help: ArgumentHelp(
            "Fail (exit \(StatusCommand.staleExitCode)) if a group's last verify is older than this, or it was never verified.",
            valueName: "duration"))
    var maxVerifyAge: String?

    @Flag(help: "Print a JSON object.")
    var json = false

    /// `status` found a group older than `--max-age` or `--max-verify-age` (README, "Exit codes").
    static let staleExitCode: Int32 = 13

    func run() throws {
        var stale = false
        try runReportingErrors { () throws(CairnError) in
            let maxAge = try duration(self.maxAge, option: "--max-age")
            let maxVerifyAge = try duration(self.maxVerifyAge, option: "--max-verify-age")
            let repo = try repository.open()
            let now = Timestamp.now()
            let names = group.isEmpty ? try repo.catalog.groups() : group
            var groups: [GroupStatus] = []
            for name in names {
                try GroupName.validate(name)
                let ids = try repo.catalog.points(in: name)
                guard !group.isEmpty || !ids.isEmpty else { continue }
                groups.append(try GroupStatus(name, ids: ids, catalog: repo.catalog, now: now))
            }
            for index in groups.indices {
                groups[index].judge(maxAge: maxAge, maxVerifyAge: maxVerifyAge)
            }
            let report = StatusReport(
                repository: FileSystem.realPath(repository.path) ?? repository.path, time: now.description,
                bytesUsed: try Self.bytesUsed(repo), maxAgeSeconds: maxAge, maxVerifyAgeSeconds: maxVerifyAge,
                groups: groups)
            if json {
                print(try JSONCoding.encode(report))
            } else {
                printText(report)
            }
            for g in groups where g.stale {
                Terminal.printError("cairn: group \(g.group): \(g.problems.joined(separator: "; "))")
                stale = true
            }
            if let damaged = groups.first(where: { $0.verified?.result == .damaged }) {
                throw CairnError(
                    .damaged,
                    "the last verify of group \(damaged.group) found damage (\(damaged.verified?.id.description ?? "?")): run `cairn verify`, then see README, \"Verify, prune, gc\""
                )
            }
        }
        if stale { throw ExitCode(Self.staleExitCode) }
    }

    private func duration(_ text: String?, option: String) throws(CairnError) -> Double? {
        guard let text else { return nil }
        guard let seconds = Units.parseDuration(text), seconds > 0 else {
            throw CairnError(.usage, "\(option) \(text) is not a duration (use e.g. 26h, 8d)")
        }
        return seconds
    }

    private func printText(_ report: StatusReport) {
        print("repository \(report.repository): \(Units.formatBytes(report.bytesUsed)) used")
        guard !report.groups.isEmpty else {
            print("no restore points")
            return
        }
        let rows = report.groups.map { g -> [String] in
            [
                g.group, "\(g.restorePoints)",
                g.latest.map { "\($0.id) (\(Self.age($0.ageSeconds)) ago)" } ?? "none",
                g.verified.map { "\($0.result) \($0.scope) (\(Self.age($0.ageSeconds)) ago)" } ?? "never",
                Units.formatBytes(g.bytesStored), g.stale ? "STALE" : "ok",
            ]
        }
        printTable(header: ["GROUP", "POINTS", "NEWEST", "VERIFIED", "STORED", "STATE"], rows: rows)
    }

    /// `3d 4h`, `5h 12m`, `40m`, `12s`: the two largest units are enough to judge an age.
    static func age(_ seconds: Int64) -> String {
        let s = max(0, seconds)
        let days = s / 86400
        let hours = s % 86400 / 3600
        let minutes = s % 3600 / 60
        if days > 0 { return "\(days)d \(hours)h" }
        if hours > 0 { return "\(hours)h \(minutes)m" }
        if minutes > 0 { return "\(minutes)m" }
        return "\(s)s"
    }

    /// Bytes of the repository's objects: an object store's listing, a directory's files.
    static func bytesUsed(_ repository: Repository) throws(CairnError) -> UInt64 {
        guard let s3 = repository.storage as? S3Storage else { return try bytesUsed(repository.path) }
        return try s3.client.list(bucket: s3.bucket, prefix: s3.prefix).reduce(0) { $0 + $1.size }
    }

    /// Bytes of the repository's files (packs, index, points), as `du --apparent-size` counts them.
    static func bytesUsed(_ root: String) throws(CairnError) -> UInt64 {
        var total: UInt64 = 0
        var pending = [root]
        // A repository is a few levels deep; the walk never follows a symlink out of it.
        while let directory = pending.popLast() {
            for name in try FileSystem.list(directory) {
                let path = "\(directory)/\(name)"
                if FileSystem.isDirectory(path) {
                    if FileSystem.realPath(path)?.hasPrefix(FileSystem.realPath(root) ?? root) ?? false {
                        pending.append(path)
                    }
                } else if let file = try? File.open(path, .readOnly) {
                    total += (try? file.size()) ?? 0
                }
            }
        }
        return total
    }
}

/// `cairn status --json`: a contract for scripts and monitoring; extend, do not rename.
struct StatusReport: Encodable {
    var repository: String
    /// When the status was taken (UTC).
    var time: String
    /// Bytes of every file in the repository.
    var bytesUsed: UInt64
    var maxAgeSeconds: Double?
    var maxVerifyAgeSeconds: Double?
    var groups: [GroupStatus]
}

/// One group in `cairn status --json`.
struct GroupStatus: Encodable {
    var group: String
    var restorePoints: Int
    var latest: Latest?
    /// The newest verify record among the group's restore points.
    var verified: Verified?
    /// Bytes the group's restore points added to the repository (their backups' `bytesStored`).
    var bytesStored: UInt64
    /// True when `--max-age` or `--max-verify-age` was given and the group fails it.
    var stale = false
    /// Why the group is stale, one line each.
    var problems: [String] = []

    struct Latest: Encodable {
        var id: String
        var time: String
        var ageSeconds: Int64
        /// The guest bytes of its disks.
        var size: UInt64?
        var damaged: String?
    }

    struct Verified: Encodable {
        /// The restore point the record belongs to.
        var id: RestorePointID
        var time: Timestamp
        var ageSeconds: Int64
        var result: VerificationResult
        var scope: VerificationScope
    }

    init(_ name: String, ids: [RestorePointID], catalog: Catalog, now: Timestamp) throws(CairnError) {
        group = name
        restorePoints = ids.count
        bytesStored = 0
        for id in ids {
            // A damaged manifest counts nothing here; `list` and `verify` name it.
            if let manifest = try? catalog.manifest(id) { bytesStored += manifest.stats.bytesStored }
            if let record = catalog.verification(of: id), verified.map({ record.time > $0.time }) ?? true {
                let time = record.time
                verified = Verified(
                    id: id, time: record.time, ageSeconds: now.seconds - time.seconds,
                    result: record.result, scope: record.scope)
            }
        }
        if let newest = ids.last {
            var latest = Latest(
                id: newest.description, time: newest.time.description, ageSeconds: now.seconds - newest.time.seconds)
            do throws(CairnError) {
                latest.size = try catalog.manifest(newest).totalSize
            } catch {
                latest.damaged = error.message
            }
            self.latest = latest
        }
    }

    mutating func judge(maxAge: Double?, maxVerifyAge: Double?) {
        if let maxAge {
            if let latest {
                if Double(latest.ageSeconds) > maxAge {
                    problems.append(
                        "newest restore point \(latest.id) is \(StatusCommand.age(latest.ageSeconds)) old, older than --max-age \(StatusCommand.age(Int64(maxAge)))"
                    )
                }
            } else {
                problems.append("no restore point")
            }
        }
        if let maxVerifyAge {
            if let verified {
                if Double(verified.ageSeconds) > maxVerifyAge {
                    problems.append(
                        "last verify is \(StatusCommand.age(verified.ageSeconds)) old, older than --max-verify-age \(StatusCommand.age(Int64(maxVerifyAge)))"
                    )
                }
            } else {
                problems.append("never verified")
            }
        }
        stale = !problems.isEmpty
    }
}
