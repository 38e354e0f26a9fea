import ArgumentParser
import CairnCore

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Free the space no restore point needs: delete dead packs, rewrite sparse ones, rewrite the index.",
        discussion: """
            On a local directory gc needs the repository alone: backups wait for it (--lock-wait) or fail at once naming gc. \
            On an object store (s3://) gc runs beside backups in two phases: it condemns what no restore point needs, \
            and a later gc deletes it once --grace has passed and every backup that began before is done.
            """)

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Only report what gc would free.")
    var dryRun = false

    @Option(
        help: ArgumentHelp(
            "Object stores: keep what this run condemns at least this long (e.g. 30m, 6h; default 1h) before a later gc deletes it.",
            discussion:
                "Restores and serves that opened the index before gc condemned finish within it; backups are waited for however long they run."
        ))
    var grace: String?

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
            if let grace {
                guard let seconds = Units.parseDuration(grace) else {
                    throw CairnError(.usage, "--grace \(grace) is not a duration (use e.g. 30m, 6h, 0s)")
                }
                gc.grace = seconds
            }
            let r = try gc.run()
            if !dryRun { run.bytesFreed = r.bytesFreed }
            if json {
                print(try JSONCoding.encode(r))
                return
            }
            guard !quiet else { return }
            let verb = dryRun ? "would free" : "freed"
            if r.twoPhase {
                print(
                    "gc \(verb) \(Units.formatBytes(r.bytesFreed)) (\(Units.formatBytes(r.bytesBefore)) → \(Units.formatBytes(r.bytesAfter))): \(counted(r.chunksLive, "live chunk")) in \(counted(r.restorePoints, "restore point")); earlier condemned packs: \(r.condemnedDeleted) deleted, \(r.condemnedRevived) revived, \(counted(r.condemnedListsPending, "list")) not yet due; now \(r.packsCondemned) packs condemned (\(r.packsDeleted) dead, \(r.orphanPacksDeleted) orphans, \(r.packsRewritten) rewritten into \(r.packsWritten)), \(r.packsKept) kept; \(Units.formatDecimal(r.seconds, places: 2)) s"
                )
                return
            }
            print(
                "gc \(verb) \(Units.formatBytes(r.bytesFreed)) (\(Units.formatBytes(r.bytesBefore)) → \(Units.formatBytes(r.bytesAfter))): \(counted(r.chunksLive, "live chunk")) in \(counted(r.restorePoints, "restore point")), \(counted(r.recordsDead, "dead record")); packs: \(r.packsKept) kept, \(r.packsRewritten) rewritten into \(r.packsWritten), \(r.packsDeleted) deleted, \(r.orphanPacksDeleted) orphans deleted; \(r.leftoversRemoved) leftovers removed; \(Units.formatDecimal(r.seconds, places: 2)) s"
            )
        }
    }
}
