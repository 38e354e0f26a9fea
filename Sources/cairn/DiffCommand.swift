import ArgumentParser
import CairnCore

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what differs between two restore points, per disk, without reading their data.",
        discussion: "Compares the disks' index trees: unchanged regions cost one comparison per index page.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "The older restore point (GROUP@TIME or GROUP@latest).", completion: Completions.restorePoints)
    var from: String

    @Argument(help: "The newer restore point.", completion: Completions.restorePoints)
    var to: String

    @Option(help: "Differing ranges to print per disk (all are counted).")
    var ranges = 20

    @Flag(help: "Print the differences as JSON.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open()
            let diff = try RestorePointDiff(
                repository: repo, from: try repo.catalog.resolve(from), to: try repo.catalog.resolve(to))
            if json {
                print(try JSONCoding.encode(diff))
                return
            }
            print("\(diff.from) → \(diff.to)")
            for disk in diff.disks {
                guard let before = disk.sizeFrom, let after = disk.sizeTo else {
                    let which = disk.sizeFrom == nil ? "only in \(diff.to)" : "only in \(diff.from)"
                    print("  disk \(disk.name): \(which) (\(Units.formatBytes(disk.sizeFrom ?? disk.sizeTo ?? 0)))")
                    continue
                }
                let count = disk.ranges.count + disk.moreRanges
                let resized =
                    before == after ? "" : ", resized \(Units.formatBytes(before)) → \(Units.formatBytes(after))"
                guard count > 0 else {
                    print("  disk \(disk.name): identical (\(Units.formatBytes(after)))")
                    continue
                }
                print(
                    "  disk \(disk.name): \(Units.formatBytes(disk.bytesDiffering)) differ in \(count) range\(count == 1 ? "" : "s")\(resized)"
                )
                for range in disk.ranges.prefix(max(0, ranges)) {
                    print("    offset \(range.offset), \(range.length) bytes")
                }
                if count > ranges && ranges >= 0 { print("    and \(count - min(count, ranges)) more ranges") }
            }
            for file in diff.settings {
                print("  settings file \(file.name): \(file.status)")
                if let unified = file.unified { print(unified, terminator: "") }
            }
        }
    }
}
