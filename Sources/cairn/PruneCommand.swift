import ArgumentParser
import CairnCore

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove restore points no --keep-* rule keeps (run `cairn gc` afterwards to free space).",
        discussion: """
            Rules run in the order within, last, hourly, daily, weekly, monthly, yearly; each counts only
            periods no earlier rule covered, so the counts add up (as in Proxmox Backup Server). Periods are
            UTC calendar periods; weeks start on Monday. Protected restore points are always kept.
            """)

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Only this group (repeatable); default: every group.")
    var group: [String] = []

    @Option(help: "Keep the newest N restore points.") var keepLast = 0
    @Option(help: "Keep the newest restore point of each of the last N hours that have one.") var keepHourly = 0
    @Option(help: "… of each of the last N days.") var keepDaily = 0
    @Option(help: "… of each of the last N weeks (Monday to Sunday).") var keepWeekly = 0
    @Option(help: "… of each of the last N months.") var keepMonthly = 0
    @Option(help: "… of each of the last N years.") var keepYearly = 0
    @Option(help: "Keep every restore point at most this much older than the group's newest (e.g. 7d, 12h).")
    var keepWithin: String?

    @Flag(help: "Only show what would be kept and removed, and why.")
    var dryRun = false

    @Flag(help: "Print the decisions as JSON.")
    var json = false

    @Flag(help: "Print nothing but warnings and errors: for cron.")
    var quiet = false

    @OptionGroup var metrics: MetricsOptions

    func run() throws {
        try runRecordingMetrics(
            metrics, command: "prune", repository: repository.path, group: group.count == 1 ? group[0] : ""
        ) { (run: inout RunMetrics) throws(CairnError) in
            var policy = RetentionPolicy()
            for (name, value) in [
                ("--keep-last", keepLast), ("--keep-hourly", keepHourly), ("--keep-daily", keepDaily),
                ("--keep-weekly", keepWeekly), ("--keep-monthly", keepMonthly), ("--keep-yearly", keepYearly),
            ] where value < 0 {
                throw CairnError(.usage, "\(name) \(value) is negative")
            }
            policy.keepLast = keepLast
            policy.keepHourly = keepHourly
            policy.keepDaily = keepDaily
            policy.keepWeekly = keepWeekly
            policy.keepMonthly = keepMonthly
            policy.keepYearly = keepYearly
            if let keepWithin {
                guard let seconds = Units.parseDuration(keepWithin) else {
                    throw CairnError(.usage, "--keep-within \(keepWithin) is not a duration (use e.g. 7d, 12h, 2w)")
                }
                policy.keepWithin = seconds
            }
            let repo = try repository.open()
            let pruner = Pruner(repository: repo, policy: policy)
            pruner.groups = group.isEmpty ? nil : group
            pruner.dryRun = dryRun
            pruner.lockWait = try repository.lockWaitSeconds()
            let results = try pruner.run()
            if json {
                print(try JSONCoding.encode(PruneSummary(dryRun: dryRun, groups: results)))
                return
            }
            guard !quiet else { return }
            for result in results {
                for d in result.decisions {
                    print("\(d.keep ? "keep  " : (dryRun ? "remove" : "removed")) \(d.id)  (\(d.reason))")
                }
                print(
                    "group \(result.group): \(result.kept) kept, \(result.removed) \(dryRun ? "would be removed" : "removed")"
                )
            }
            if !dryRun && results.contains(where: { $0.removed > 0 }) {
                print("run `cairn gc` to free the space only the removed restore points used")
            }
        }
    }
}

/// `cairn prune --json`: a contract for scripts; extend, do not rename.
struct PruneSummary: Encodable {
    var dryRun: Bool
    var groups: [Pruner.GroupResult]
}
