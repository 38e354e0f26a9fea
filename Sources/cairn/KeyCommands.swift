import ArgumentParser
import CairnCore
import Foundation

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Manage the passphrases of an encrypted repository.",
        discussion: """
            Each key file in the repository's keys/ wraps the one master key under one passphrase.
            A lost passphrase with no other key, or lost key files, lose the backups: keep an export.
            """,
        // Not listed until `init --encryption` is (issue 14): only such a repository has keys.
        shouldDisplay: false,
        subcommands: [
            KeyListCommand.self, KeyAddCommand.self, KeyRemoveCommand.self, KeyExportCommand.self,
            KeyImportCommand.self,
        ]
    )
}

struct KeyListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the key files (no passphrase needed).")

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Print a JSON array.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let keys = try repository.openKeys()
            let rows = try keys.directory.entries().map(KeySummary.init)
            if json {
                print(try JSONCoding.encode(rows))
                return
            }
            print("repository \(keys.config.id), master key fingerprint \(keys.directory.fingerprint)")
            printTable(
                header: ["ID", "CREATED", "KDF", "HINT"],
                rows: rows.map { row in
                    guard row.problem == nil else { return [row.id, "?", "?", "UNUSABLE: \(row.problem!)"] }
                    let kdf =
                        row.kind == "host"
                        ? "host key" : row.kdf.map { "scrypt N=\($0.n) r=\($0.r) p=\($0.p)" } ?? ""
                    return [row.id, Terminal.humanTime(row.created ?? ""), kdf, row.hint ?? ""]
                })
        }
    }
}

/// One row of `cairn key list --json`: a contract for scripts; extend, do not rename.
struct KeySummary: Encodable {
    var id: String
    var created: String?
    var hint: String?
    var kdf: KDF?
    var fingerprint: String?
    /// `passphrase`, or `host` for a host key (`key add --new-host-key`); nil when unusable.
    var kind: String?
    /// Set when the file cannot be used: why.
    var problem: String?

    struct KDF: Encodable {
        var name: String
        var n: UInt64
        var r: UInt32
        var p: UInt32
    }

    init(_ entry: KeyDirectory.Entry) {
        id = entry.file?.id ?? entry.name
        created = entry.file?.created
        hint = entry.file?.hint
        kdf = entry.file.map { KDF(name: $0.kdf.name, n: $0.kdf.n, r: $0.kdf.r, p: $0.kdf.p) }
        fingerprint = entry.file?.fingerprint
        kind = entry.file.map { $0.isHostKey ? "host" : "passphrase" }
        problem = entry.problem
    }
}

struct KeyAddCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a passphrase, or a host key: wrap the master key (opened by an existing key) under a new one.",
        discussion: """
            With --new-host-key FILE, the new key is 32 random bytes written to FILE on this host
            (mode 0600): nightly runs open the repository with `--host-key FILE` or
            $CAIRN_HOST_KEY, without scrypt's cost. Remove the key (`cairn key remove ID`) when
            the host is retired or lost.
            """)

    @OptionGroup var repository: RepositoryOptions
    @OptionGroup var new: NewPassphraseOptions

    @Option(help: "A note saying whose passphrase this is (stored in the clear).")
    var hint: String?

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let keys = try repository.openKeys()
            // The passphrase is tried before anything is locked or written: a wrong one touches nothing.
            let (master, _) = try keys.unlock(try repository.secret())
            if let hostKeyPath = new.newHostKey {
                let (host, file) = try keys.addHostKey(master: master, hint: hint)
                let lock = try keys.lock(.shared, purpose: "cairn key add", wait: try repository.lockWaitSeconds())
                defer { withExtendedLifetime(lock) {} }
                // The host's file first: a key file without its secret anywhere would be dead weight.
                try host.write(to: hostKeyPath)
                do throws(CairnError) {
                    try keys.publish(file)
                } catch {
                    try? FileSystem.remove(hostKeyPath)
                    throw error
                }
                print("added host key \(file.id) to repository \(repository.path); its secret is in \(hostKeyPath)")
                return
            }
            let newPassphrase = try new.passphrase()
            let lock = try keys.lock(.shared, purpose: "cairn key add", wait: try repository.lockWaitSeconds())
            defer { withExtendedLifetime(lock) {} }
            let file = try keys.add(NewKey(passphrase: newPassphrase, hint: hint), master: master)
            print("added key \(file.id) to repository \(repository.path)")
        }
    }
}

struct KeyRemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove a passphrase's key file (never the last; the passphrase given must open another key).")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "The key's id (see `cairn key list`).")
    var id: String

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let keys = try repository.openKeys()
            let (_, opened) = try keys.unlock(try repository.secret())
            let lock = try keys.lock(.exclusive, purpose: "cairn key remove", wait: try repository.lockWaitSeconds())
            defer { withExtendedLifetime(lock) {} }
            try keys.remove(id: id, opened: opened)
            print("removed key \(id) from repository \(repository.path)")
        }
    }
}

struct KeyExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Copy a key file out of the repository, as a file or as text to print (still passphrase-sealed).")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "The key's id (optional when the repository has one key).")
    var id: String?

    @Option(name: .shortAndLong, help: "Write to this file (created with mode 0600).")
    var output: String?

    @Flag(help: "Write the printable paper form (to --output, else to standard output).")
    var paper = false

    @Flag(help: "Overwrite --output if it exists.")
    var force = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let keys = try repository.openKeys()
            let usable = try keys.directory.entries().compactMap(\.file).filter { !$0.isHostKey }
            let file: KeyFile
            if let id {
                guard let match = usable.first(where: { $0.id == id }) else {
                    throw CairnError(
                        .notFound,
                        "repository \(repository.path) has no usable passphrase key \(id) (host keys are not exported)")
                }
                file = match
            } else {
                guard usable.count == 1 else {
                    throw CairnError(
                        .usage, "the repository has \(usable.count) usable keys: name one (see `cairn key list`)")
                }
                file = usable[0]
            }
            let bytes: [UInt8]
            if paper {
                bytes = Array(PaperKey.text(of: file).utf8)
            } else {
                bytes = Array((try JSONCoding.encode(file, pretty: true) + "\n").utf8)
            }
            guard let output, output != "-" else {
                guard paper else { throw CairnError(.usage, "give --output FILE (or --paper to print it)") }
                FileHandle.standardOutput.write(Data(bytes))
                return
            }
            if FileSystem.exists(output) && !force {
                throw CairnError(.exists, "\(output) exists", remedy: .overwrite)
            }
            let handle = try File.open(output, .createOrTruncate)
            try handle.setPermissions(0o600)
            try handle.truncate(to: 0)
            try handle.write(bytes, at: 0)
            try handle.sync()
            Terminal.printError("cairn: exported key \(file.id) to \(output): keep it apart from its passphrase")
        }
    }
}

struct KeyImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Add an exported key file, or a paper key typed back in, to the repository.",
        discussion: "The key's own passphrase must open it (so a mistyped paper key is caught now, not in need).")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "The exported key file, or a text file with the paper key's numbered lines.")
    var file: String

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let keys = try repository.openKeys()
            let bytes = try FileSystem.readAll(file, limit: 1 << 20)
            let text = String(decoding: bytes, as: UTF8.self)
            let key: KeyFile
            if text.drop(while: \.isWhitespace).hasPrefix("{") {
                key = try KeyFile.parse(bytes, name: file)
            } else {
                key = try PaperKey.parse(text, created: Timestamp.now().description)
            }
            let secret = try repository.passphraseSource.passphrase()
            let lock = try keys.lock(.shared, purpose: "cairn key import", wait: try repository.lockWaitSeconds())
            defer { withExtendedLifetime(lock) {} }
            try keys.importKey(key, passphrase: secret)
            print("imported key \(key.id) into repository \(repository.path)")
        }
    }
}
