import ArgumentParser
import CairnCore

struct ProtectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "protect", abstract: "Protect a restore point: prune never removes it and forget refuses it.")

    @OptionGroup var repository: RepositoryOptions
    @OptionGroup var target: ProtectionTarget

    func run() throws { try target.setProtection(true, in: repository) }
}

struct UnprotectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unprotect", abstract: "Remove a restore point's protection.")

    @OptionGroup var repository: RepositoryOptions
    @OptionGroup var target: ProtectionTarget

    func run() throws { try target.setProtection(false, in: repository) }
}

/// What `protect` and `unprotect` share: the restore point, `--json`, and the change itself.
struct ProtectionTarget: ParsableArguments {
    @Argument(help: "GROUP@TIME or GROUP@latest.", completion: Completions.restorePoints)
    var id: String

    @Flag(help: "Print the result as a JSON object.")
    var json = false

    func setProtection(_ protected: Bool, in repository: RepositoryOptions) throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open()
            let point = try repo.catalog.resolve(id)
            let wait = try repository.lockWaitSeconds()
            if protected {
                try repo.protect(point, wait: wait)
            } else {
                try repo.unprotect(point, wait: wait)
            }
            print(
                json
                    ? try JSONCoding.encode(PointChange(id: point.description, protected: protected))
                    : "\(protected ? "protected" : "unprotected") \(point)")
        }
    }
}

struct ForgetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove one restore point (not a protected one); `cairn gc` frees its space.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.", completion: Completions.restorePoints)
    var id: String

    @Flag(help: "Print the result as a JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let repo = try repository.open()
            let point = try repo.catalog.resolve(id)
            try repo.forget(point, wait: try repository.lockWaitSeconds())
            print(
                json
                    ? try JSONCoding.encode(PointChange(id: point.description, removed: true))
                    : "removed restore point \(point); run `cairn gc` to free its space")
        }
    }
}

/// `cairn protect|unprotect|forget --json`: the restore point and what changed. A contract for
/// scripts; extend, do not rename.
struct PointChange: Encodable {
    var id: String
    var protected: Bool?
    var removed: Bool?
}
