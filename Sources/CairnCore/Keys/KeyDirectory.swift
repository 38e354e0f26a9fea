/// The key files of an encrypted repository: `keys/ID`, one per passphrase, each mode 0600
/// (docs/FORMAT.md, "Key files").
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

    /// The master key that `passphrase` opens, and the key file that opened it.
    ///
    /// Tries every usable key file. When none opens, throws `.passphrase` (one line; damaged or
    /// foreign files are named in it), or `.damaged` when there is no usable key file at all.
    public func unlock(_ passphrase: [UInt8]) throws(CairnError) -> (key: MasterKey, file: KeyFile) {
        let entries = try entries()
        var tried = 0
        for entry in entries {
            guard let file = entry.file else { continue }
            tried += 1
            if let key = try file.unwrap(passphrase) { return (key, file) }
        }
        let problems = entries.compactMap(\.problem)
        guard tried > 0 else {
            throw CairnError(
                .damaged,
                "repository \(repositoryPath) has no usable key file"
                    + (problems.isEmpty ? " (keys/ is empty)" : ": " + problems.joined(separator: "; ")))
        }
        let which = tried == 1 ? "does not open the key" : "opens none of the \(tried) keys"
        throw CairnError(
            .passphrase,
            "the passphrase \(which) of repository \(repositoryPath)"
                + (problems.isEmpty ? "" : " (unusable: " + problems.joined(separator: "; ") + ")"))
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

    /// Deletes key `id`, refusing if it is the last usable key file (a repository without one
    /// cannot be opened, ever).
    public func remove(id: String) throws(CairnError) {
        let entries = try entries()
        guard entries.contains(where: { $0.name == id }) else {
            throw CairnError(.notFound, "repository \(repositoryPath) has no key \(id) (see `cairn key list`)")
        }
        guard entries.contains(where: { $0.name != id && $0.file != nil }) else {
            throw CairnError(
                .usage,
                "key \(id) is the repository's last usable key: add another with `cairn key add` before removing it")
        }
        try storage.delete([Self.key(of: id)])
    }
}
