import ArgumentParser
import CairnCore

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Free the space no restore point needs: delete dead packs, rewrite sparse ones, rewrite the index.",
        discussion: "gc needs the repository alone: backups wait for it (--lock-wait) or fail at once naming gc.")

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Only report what gc would free.")
    var dryRun = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Flag(help: "Print nothing but warnings and errors: for cron.")
    var quiet = false

    @OptionGroup var metrics: MetricsOptions

    func run() throws {
        try runRecordingMetrics(metrics, command: "gc", repository: repository.path) {
            (run: inout RunMetrics) throws(CairnError) in
            let repo = try repository.open()
            let gc = GarbageCollector(repository: repo)
            gc.dryRun = dryRun
            gc.lockWait = try repository.lockWaitSeconds()
            let r = try gc.run()
            if !dryRun { run.bytesFreed = r.bytesFreed }
            if json {
                print(try JSONCoding.encode(r))
                return
            }
            guard !quiet else { return }
            let verb = dryRun ? "would free" : "freed"
            print(
                "gc \(verb) \(Units.formatBytes(r.bytesFreed)) (\(Units.formatBytes(r.bytesBefore)) → \(Units.formatBytes(r.bytesAfter))): \(counted(r.chunksLive, "live chunk")) in \(counted(r.restorePoints, "restore point")), \(counted(r.recordsDead, "dead record")); packs: \(r.packsKept) kept, \(r.packsRewritten) rewritten into \(r.packsWritten), \(r.packsDeleted) deleted, \(r.orphanPacksDeleted) orphans deleted; \(r.leftoversRemoved) leftovers removed; \(Units.formatDecimal(r.seconds, places: 2)) s"
            )
        }
    }
}
