import ArgumentParser
import CairnCore

struct RebuildIndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild-index",
        abstract: "Rebuild the chunk index from the pack files (after a damaged or lost index segment).",
        discussion: "Needs the repository alone: it takes the repository lock exclusively, as gc does.")

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            Log.setUp(verbose: repository.verbose)
            // Opened without its index: the index may be what is damaged.
            let repo = try Repository(path: repository.path, loadIndex: false)
            let lock = try RepositoryLock.acquire(
                path: "\(repo.path)/locks/repository.lock", kind: .exclusive, wait: try repository.lockWaitSeconds(),
                what: "repository \(repo.path)", purpose: "cairn rebuild-index")
            defer { _ = lock }
            try repo.markFeatures()
            let report = try repo.store.rebuildIndex()
            if json {
                print(try JSONCoding.encode(report))
                return
            }
            var line =
                "rebuilt the chunk index: \(report.chunks) chunks in \(report.packs) packs, \(report.segmentsRemoved) old segments removed"
            if !report.packsScanned.isEmpty {
                line += "; \(report.packsScanned.count) packs with a damaged table were scanned record by record"
            }
            print(line)
            for pack in report.packsUnreadable { Terminal.printError("cairn: warning: pack \(pack) could not be read") }
        }
    }
}
