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
            // Opened without its index: the index may be what is damaged.
            let repo = try repository.open(warnAboutDamage: false, loadIndex: false)
            let report = try repo.rebuildIndex(wait: try repository.lockWaitSeconds())
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
