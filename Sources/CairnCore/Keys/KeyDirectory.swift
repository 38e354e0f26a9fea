/// The key files of an encrypted repository: `keys/ID`, one per passphrase or host key, each
/// mode 0600 (docs/FORMAT.md, "Key files").
///
/// Every file wraps the same master key, so any one passphrase opens the repository; adding a
/// passphrase writes a file, removing one deletes it (never the last).
public struct KeyDirectory: Sendable {
    /// Where the repository's objects are.
    public let storage: any RepositoryStorage
    /// The repository's id (hex), which every key file must name.
    public let repositoryID: String
    /// The master key's fingerprint from the config, which every key file must carry.
    public let fingerprint: String

    public init(storage: any RepositoryStorage, repositoryID: String, fingerprint: String) {
        self.storage = storage
        self.repositoryID = repositoryID
        self.fingerprint = fingerprint
    }

    public static let directoryName = "keys"
    /// The repository's location, for messages.
    var repositoryPath: String { storage.location }
    /// The key directory, for messages.
    public var path: String { storage.describe(Self.directoryName) }

    /// The key of key file `id`.
    static func key(of id: String) -> String { "\(directoryName)/\(id)" }

    /// Whether the repository has key `id`.
    func contains(_ id: String) -> Bool { storage.exists(Self.key(of: id)) }

    /// A file in `keys/`, read and checked, or what is wrong with it.
    public struct Entry: Sendable {
        public var name: String
        public var file: KeyFile?
        public var problem: String?
    }

    /// Every file in `keys/` (names sorted), each parsed or with its problem.
    public func entries() throws(CairnError) -> [Entry] {
        let prefix = Self.directoryName + "/"
        let names = try storage.list(prefix: prefix).map { String($0.dropFirst(prefix.count)) }
            .filter { !$0.isEmpty && !$0.contains("/") }
        // A local directory tells a missing keys/ from an empty one; an object store has no directories.
        let missing: Bool
        if let local = storage as? LocalDirectoryStorage {
            missing = !FileSystem.isDirectory(local.path(of: Self.directoryName))
        } else {
            missing = names.isEmpty
        }
        guard !missing else {
            throw CairnError(
                .damaged,
                "the key directory \(path) is missing: restore it from a backup, or import a key file with `cairn key import`"
            )
        }
        return names.map { name in
            do throws(CairnError) {
                guard let bytes = try storage.readIfPresent(Self.key(of: name), limit: KeyFile.maxFileSize) else {
                    throw CairnError(.damaged, "key file keys/\(name) was removed while it was read")
                }
                let file = try KeyFile.parse(bytes, name: "keys/\(name)")
                if let problem = problem(with: file, name: name) { return Entry(name: name, problem: problem) }
                return Entry(name: name, file: file)
            } catch {
                return Entry(name: name, problem: error.message)
            }
        }
    }

    /// Why `file` (named `name` in `keys/`) cannot be one of this repository's keys, or nil.
    func problem(with file: KeyFile, name: String?) -> String? {
        let label = name.map { "key file keys/\($0)" } ?? "key file \(file.id)"
        if file.repository.lowercased() != repositoryID.lowercased() {
            return "\(label) belongs to repository \(file.repository), not this one (\(repositoryID))"
        }
        if let name, name != file.id { return "\(label) says it is key \(file.id)" }
        if file.fingerprint.lowercased() != fingerprint.lowercased() {
            return
                "\(label) wraps a master key with fingerprint \(file.fingerprint), not the repository's \(fingerprint)"
        }
        return nil
    }

    /// The master key that `secret` opens, and the key file that opened it.
    public func unlock(_ secret: KeySecret) throws(CairnError) -> (key: MasterKey, file: KeyFile) {
        switch secret {
        case .passphrase(let passphrase): return try unlock(passphrase)
        case .hostKey(let hostKey): return try unlock(hostKey)
        }
    }

    /// The master key that `passphrase` opens, and the key file that opened it.
    ///
    /// Tries every usable passphrase key file (host keys are opened only by `unlock(_ hostKey:)`,
    /// so that a passphrase never costs a wasted scrypt per host). When none opens, throws
    /// `.passphrase` (one line; damaged or foreign files are named in it), or `.damaged` when
    /// there is no usable key file at all.
    public func unlock(_ passphrase: [UInt8]) throws(CairnError) -> (key: MasterKey, file: KeyFile) {
        let entries = try entries()
        var tried = 0
        for entry in entries {
            guard let file = entry.file, !file.isHostKey else { continue }
            tried += 1
            if let key = try file.unwrap(passphrase) { return (key, file) }
        }
        let problems = entries.compactMap(\.problem)
        guard tried > 0 else {
            throw CairnError(
                .damaged,
                "repository \(repositoryPath) has no usable passphrase key file"
                    + (problems.isEmpty ? " (keys/ holds none)" : ": " + problems.joined(separator: "; ")))
        }
        let which = tried == 1 ? "does not open the key" : "opens none of the \(tried) keys"
        throw CairnError(
            .passphrase,
            "the passphrase \(which) of repository \(repositoryPath)"
                + (problems.isEmpty ? "" : " (unusable: " + problems.joined(separator: "; ") + ")"))
    }

    /// The master key that `hostKey` opens: only its own key file is read, so a host key costs
    /// one small read and one HKDF, never a scrypt.
    public func unlock(_ hostKey: HostKey) throws(CairnError) -> (key: MasterKey, file: KeyFile) {
        guard hostKey.repository == repositoryID.lowercased() else {
            throw CairnError(
                .passphrase,
                "the host key is for repository \(hostKey.repository), not \(repositoryPath) (\(repositoryID))")
        }
        guard let bytes = try storage.readIfPresent(Self.key(of: hostKey.keyID), limit: KeyFile.maxFileSize) else {
            throw CairnError(
                .passphrase,
                "the host key opens key \(hostKey.keyID) of repository \(repositoryPath), which was removed (revoked): add a new one with `cairn key add --new-host-key FILE`"
            )
        }
        let file = try KeyFile.parse(bytes, name: "keys/\(hostKey.keyID)")
        if let problem = problem(with: file, name: hostKey.keyID) { throw CairnError(.damaged, problem) }
        guard let key = try file.unwrap(hostSecret: hostKey.secret) else {
            throw CairnError(
                .passphrase, "the host key does not open key \(hostKey.keyID) of repository \(repositoryPath)")
        }
        return (key, file)
    }

    /// Writes `file` as `keys/ID`, mode 0600, durably; never replaces a file.
    public func add(_ file: KeyFile) throws(CairnError) {
        if let problem = problem(with: file, name: nil) { throw CairnError(.usage, problem) }
        try Self.write(file, into: storage)
    }

    /// Writes `file` as `keys/ID` of `storage`: create-only, and owner-only where the storage
    /// has modes (a local directory: 0600 in a 0700 `keys/`).
    static func write(_ file: KeyFile, into storage: any RepositoryStorage) throws(CairnError) {
        try storage.publishPrivate(try file.fileBytes(), as: key(of: file.id))
    }

    /// Deletes key `id`, refusing if it is the last usable passphrase key file: a repository
    /// without one cannot be opened by a person, and its archives would carry no key.
    public func remove(id: String) throws(CairnError) {
        let entries = try entries()
        guard entries.contains(where: { $0.name == id }) else {
            throw CairnError(.notFound, "repository \(repositoryPath) has no key \(id) (see `cairn key list`)")
        }
        guard entries.contains(where: { $0.name != id && $0.file.map { !$0.isHostKey } == true }) else {
            throw CairnError(
                .usage,
                "key \(id) is the repository's last usable passphrase key: add another with `cairn key add` before removing it"
            )
        }
        try storage.delete([Self.key(of: id)])
    }
}
