import ArgumentParser
import CairnCore

struct RepairCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Write again what the repository keeps twice (the config and its copy) from the intact one.",
        discussion: """
            Needs the repository alone, as gc does. A damaged chunk index is rebuilt by `cairn rebuild-index`;
            damaged chunks heal when a backup holds their data again.
            """)

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open(warnAboutDamage: false)
            let report = try repo.repair(lockWait: try repository.lockWaitSeconds())
            if json {
                print(try JSONCoding.encode(report))
                return
            }
            if report.repaired.isEmpty { print("nothing to repair: the config and its copy are intact") }
            for line in report.repaired { print("repaired: \(line)") }
        }
    }
}
