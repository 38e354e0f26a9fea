import ArgumentParser
import CairnCore

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check manifests, indexes, packs and chunks; name every damaged chunk and who needs it.",
        discussion: """
            Exits 0 only if everything checked is intact, 7 if damage was found. The result is recorded
            beside each restore point checked and shown by `list` and `show`.
            """)

    @OptionGroup var repository: RepositoryOptions

    @Argument(
        help: "Restore points to check (GROUP@TIME, GROUP@latest); default: all, and every pack record.",
        completion: Completions.restorePoints)
    var ids: [String] = []

    @Option(
        help:
            "Check only this percentage of the chunks, rotating through the digest space (metadata is always checked whole)."
    )
    var sample: Double?

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Flag(help: "Print nothing when everything is intact (no progress, no verdict line): for cron.")
    var quiet = false

    @OptionGroup var metrics: MetricsOptions

    func run() throws {
        Terminal.quiet = quiet
        try runRecordingMetrics(metrics, command: "verify", repository: repository.path) {
            (run: inout RunMetrics) throws(CairnError) in
            if let sample, !(sample > 0 && sample <= 100) {
                throw CairnError(.usage, "--sample \(sample) is not a percentage above 0 and at most 100")
            }
            let repo = try repository.open(warnAboutDamage: false)
            let verifier = RepositoryVerifier(repository: repo)
            verifier.seen = repository.seenPoints(repo)
            if !ids.isEmpty {
                var points: [RestorePointID] = []
                for id in ids { points.append(try repo.catalog.resolve(id)) }
                verifier.points = points
            }
            verifier.samplePercent = sample
            verifier.lockWait = try repository.lockWaitSeconds()
            verifier.progress = { p in
                let percent = p.chunksTotal == 0 ? 100 : p.chunksDone * 100 / p.chunksTotal
                Terminal.progress("verifying: \(percent)% of \(p.chunksTotal) records, \(rate(p.bytesDone, p.seconds))")
            }
            let report = try verifier.run()
            Terminal.clearProgress()
            run.bytesRead = report.bytesChecked
            if json {
                print(try JSONCoding.encode(report))
            } else {
                printText(report)
            }
            if let failure = report.recordingFailure {
                Terminal.printError("cairn: warning: the verdict could not be recorded: \(failure)")
            }
            if !report.intact {
                let points = report.restorePoints.filter { $0.result != .intact }.count
                throw CairnError(
                    .damaged,
                    "verify found damage: \(report.damagedChunks.count) damaged chunk(s), \(points) damaged restore point(s), \(report.problems.count) other problem(s)"
                )
            }
        }
    }

    private func printText(_ report: VerifyReport) {
        for problem in report.problems { Terminal.printError("damaged: \(problem)") }
        for chunk in report.damagedChunks {
            var line = "damaged chunk \(chunk.digest) (\(chunk.kind)"
            if let pack = chunk.pack, let offset = chunk.offset { line += ", pack \(pack) offset \(offset)" }
            line += "): \(chunk.reason)"
            Terminal.printError(line)
            if chunk.neededBy.isEmpty { Terminal.printError("  needed by no restore point") }
            for use in chunk.neededBy {
                var offsets = use.offsets.prefix(8).map(String.init).joined(separator: ", ")
                let more = use.offsets.count - min(8, use.offsets.count) + use.moreOffsets
                if more > 0 { offsets += " and \(more) more" }
                Terminal.printError("  needed by \(use.restorePoint) disk \(use.disk) at byte offset \(offsets)")
            }
        }
        // Every damaged restore point is named, also when no chunk is to blame (a damaged manifest).
        for point in report.restorePoints where point.result != .intact {
            for problem in point.problems.prefix(8) {
                Terminal.printError("damaged: restore point \(point.id): \(problem)")
            }
            if point.problems.count > 8 {
                Terminal.printError("damaged: restore point \(point.id): and \(point.problems.count - 8) more problems")
            }
        }
        for warning in report.warnings { Terminal.printError("warning: \(warning)") }
        // Damage is printed above and fails the command; --quiet drops only the good news.
        guard !(quiet && report.intact) else { return }
        let verdict = report.intact ? "intact" : "DAMAGED"
        let mb = Double(report.bytesChecked) / 1e6
        let speed = report.seconds > 0 ? Units.formatDecimal(mb / report.seconds, places: 0) : "-"
        print(
            "\(verdict): \(counted(report.restorePoints.count, "restore point")), \(counted(report.segmentsChecked, "index segment")), \(counted(report.packsChecked, "pack")), \(counted(report.pagesChecked, "index page")), \(counted(report.chunksChecked, "chunk")) (\(Units.formatBytes(report.bytesChecked)), \(counted(report.recordsChecked, "record"))) checked, \(report.scope == .sample ? "sample of \(report.digestRange), " : "")\(Units.formatDecimal(report.seconds, places: 2)) s, \(speed) MB/s"
        )
    }
}
