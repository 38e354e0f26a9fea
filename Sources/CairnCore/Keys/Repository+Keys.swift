/// A passphrase and how to wrap the master key under it (`init --encryption`, `key add`).
public struct NewKey: Sendable {
    public var passphrase: [UInt8]
    public var parameters: ScryptParameters
    public var hint: String?

    public init(passphrase: [UInt8], parameters: ScryptParameters = .standard, hint: String? = nil) {
        self.passphrase = passphrase
        self.parameters = parameters
        self.hint = hint
    }
}

/// The keys of an encrypted repository, opened without its chunk store: what `cairn key` needs.
///
/// Reads the config as `Repository` does (falling back to its copy), accepting the
/// `encryption` feature that data commands of this Cairn refuse (`FormatFeature.keysOnly`).
public struct RepositoryKeys: Sendable {
    /// Where the repository is, for messages.
    public let path: String
    public let storage: any RepositoryStorage
    public let config: RepositoryConfig
    public let directory: KeyDirectory

    /// The keys of the repository in the directory `path`.
    public init(path: String) throws(CairnError) {
        try self.init(storage: LocalDirectoryStorage(root: path))
    }

    public init(storage: any RepositoryStorage) throws(CairnError) {
        let path = storage.location
        guard try RepositoryConfig.isPresent(in: storage) else {
            throw CairnError(.repository, "\(path) is not a Cairn repository (it has no config file)")
        }
        self.path = path
        self.storage = storage
        (config, _) = try Repository.readConfig(storage, alsoKnown: FormatFeature.keysOnly)
        guard let encryption = config.encryption, config.features?.contains(FormatFeature.encryption) == true else {
            throw CairnError(
                .usage,
                "repository \(path) is not encrypted: it has no keys (create one with `cairn init --encryption`)")
        }
        directory = KeyDirectory(storage: storage, repositoryID: config.id, fingerprint: encryption.fingerprint)
    }

    /// The master key `passphrase` opens (`.passphrase` if none).
    public func unlock(_ passphrase: [UInt8]) throws(CairnError) -> (key: MasterKey, file: KeyFile) {
        try directory.unlock(passphrase)
    }

    /// The master key `secret` (a passphrase or a host key) opens (`.passphrase` if none).
    public func unlock(_ secret: KeySecret) throws(CairnError) -> (key: MasterKey, file: KeyFile) {
        try directory.unlock(secret)
    }

    /// Makes a host key for `master` (opened by `unlock`): a new key file in `keys/`, and the
    /// secret that opens it, which the caller writes to the host (`HostKey.write`).
    public func addHostKey(master: MasterKey, hint: String?) throws(CairnError) -> (HostKey, KeyFile) {
        let keyID = SecureRandom.bytes(KeyFile.idSize)
        let host = HostKey.make(repository: config.id.lowercased(), keyID: Hex.encode(keyID))
        let file = try KeyFile.wrap(
            master, repositoryID: config.id, hostSecret: host.secret, hint: hint, id: keyID)
        return (host, file)
    }

    /// Writes a key file made by `addHostKey` into `keys/`.
    public func publish(_ file: KeyFile) throws(CairnError) { try directory.add(file) }

    /// Wraps `master` (opened by `unlock`) under a new passphrase; returns the new file.
    public func add(_ new: NewKey, master: MasterKey) throws(CairnError) -> KeyFile {
        let file = try KeyFile.wrap(
            master, repositoryID: config.id, passphrase: new.passphrase, parameters: new.parameters, hint: new.hint)
        try directory.add(file)
        return file
    }

    /// Adds a key file made elsewhere (an export, a paper copy) after checking that it belongs
    /// here and that `passphrase` opens it.
    public func importKey(_ file: KeyFile, passphrase: [UInt8]) throws(CairnError) {
        if let problem = directory.problem(with: file, name: nil) { throw CairnError(.usage, problem) }
        guard try file.unwrap(passphrase) != nil else {
            throw CairnError(.passphrase, "the passphrase does not open key file \(file.id)")
        }
        if directory.contains(file.id) {
            throw CairnError(.exists, "repository \(path) has key \(file.id) already")
        }
        try directory.add(file)
    }

    /// Removes key `id`. `opened` is the key file the caller's passphrase opened, which must be
    /// another: whoever removes a key proves the repository stays open to them.
    public func remove(id: String, opened: KeyFile) throws(CairnError) {
        guard opened.id != id else {
            throw CairnError(
                .usage, "the passphrase given opens key \(id) itself: give the passphrase of a key that stays")
        }
        try directory.remove(id: id)
    }
}

extension RepositoryKeys {
    /// Takes the repository's locks for a change to `keys/` (docs/INTEGRITY.md, "Locks"):
    /// shared to add a key, exclusive to remove one, so two removals never race past the last.
    public func lock(_ scope: LockScope, purpose: String, wait: Double?) throws(CairnError) -> RepositoryLock {
        try storage.makeLocking().acquire(scope, purpose: purpose, wait: wait, onWait: nil)
    }
}
