import ArgumentParser
import CairnCore

/// Runs `body` on one restore point under its group's lock (and the repository's, shared).
private func withPointLocked(
    _ repository: RepositoryOptions, _ text: String, purpose: String,
    _ body: (Repository, RestorePointID) throws(CairnError) -> Void
) throws(CairnError) {
    let repo = try repository.open()
    let wait = try repository.lockWaitSeconds()
    let id = try repo.catalog.resolve(text)
    let repoLock = try RepositoryLock.acquire(
        path: "\(repo.path)/locks/repository.lock", kind: .shared, wait: wait, what: "repository \(repo.path)",
        purpose: purpose)
    let groupLock = try RepositoryLock.acquire(
        path: "\(repo.path)/locks/group.\(id.group).lock", kind: .exclusive, wait: wait, what: "group \(id.group)",
        purpose: "\(purpose) of \(id)")
    defer {
        _ = groupLock
        _ = repoLock
    }
    guard repo.catalog.exists(id) else { throw CairnError(.notFound, "restore point \(id) does not exist") }
    try body(repo, id)
}

struct ProtectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "protect", abstract: "Protect a restore point: prune never removes it and forget refuses it.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.")
    var id: String

    @Flag(help: "Print the result as a JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            try withPointLocked(repository, id, purpose: "cairn protect") { repo, point throws(CairnError) in
                try repo.catalog.protect(point)
                print(
                    json
                        ? try JSONCoding.encode(PointChange(id: point.description, protected: true))
                        : "protected \(point)")
            }
        }
    }
}

struct UnprotectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unprotect", abstract: "Remove a restore point's protection.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.")
    var id: String

    @Flag(help: "Print the result as a JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            try withPointLocked(repository, id, purpose: "cairn unprotect") { repo, point throws(CairnError) in
                try repo.catalog.unprotect(point)
                print(
                    json
                        ? try JSONCoding.encode(PointChange(id: point.description, protected: false))
                        : "unprotected \(point)")
            }
        }
    }
}

struct ForgetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove one restore point (not a protected one); `cairn gc` frees its space.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "GROUP@TIME or GROUP@latest.")
    var id: String

    @Flag(help: "Print the result as a JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            try withPointLocked(repository, id, purpose: "cairn forget") { repo, point throws(CairnError) in
                try repo.catalog.remove(point)
                print(
                    json
                        ? try JSONCoding.encode(PointChange(id: point.description, removed: true))
                        : "removed restore point \(point); run `cairn gc` to free its space")
            }
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
