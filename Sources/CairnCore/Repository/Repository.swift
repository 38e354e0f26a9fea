import Foundation

/// An opened repository: its config, chunk store and catalog.
///
/// Layout (docs/FORMAT.md): `config`, `packs/`, `index/`, `points/`, `locks/`. Its objects are
/// read and written through `storage`: a local directory, or an object store.
public final class Repository: Sendable {
    /// Where the repository is, for messages and metrics: its directory, or its URL.
    public let path: String
    public let storage: any RepositoryStorage
    /// How its commands keep out of each other's way: flocks, or leases (`RepositoryLocking`).
    public let locking: any RepositoryLocking
    public let config: RepositoryConfig
    /// Whether `config` and its copy agree; commands warn when they do not, verify reports it.
    public let configHealth: ConfigHealth
    public let store: ChunkStore
    public let catalog: Catalog
    /// Told once when a lock this process needs is held by another (the CLI prints it).
    public let onLockWait: LockWaitObserver?

    /// Creates a new, empty repository at `path` (which must be missing or an empty directory).
    ///
    /// With `encryption`, the repository is encrypted: a new master key is wrapped under the
    /// given passphrase into `keys/`, and the config declares the `encryption` feature.
    @discardableResult
    public static func create(
        at path: String, blockSize: Int, compressionLevel: Int, encryption: NewKey? = nil
    ) throws(CairnError) -> RepositoryConfig {
        try checkSettings(blockSize: blockSize, compressionLevel: compressionLevel)
        let storage = try prepareDirectory(path)
        let config = try create(
            in: storage, blockSize: blockSize, compressionLevel: compressionLevel, encryption: encryption)
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
        return config
    }

    /// Makes the directory of a new repository (missing or empty before; its parent must exist)
    /// with its top-level folders; the caller writes the config and then syncs the parent.
    static func prepareDirectory(_ path: String) throws(CairnError) -> LocalDirectoryStorage {
        if FileSystem.exists(path) {
            guard FileSystem.isDirectory(path) else {
                throw CairnError(.exists, "\(path) exists and is not a directory")
            }
            guard try FileSystem.list(path).isEmpty else {
                if FileSystem.exists("\(path)/config") {
                    throw CairnError(.exists, "\(path) is already a Cairn repository")
                }
                throw CairnError(.exists, "\(path) is not empty: a repository needs a new or empty directory")
            }
        }
        let parent = FileSystem.directoryName(path)
        guard FileSystem.isDirectory(parent) else {
            throw CairnError(.notFound, "cannot create repository \(path): directory \(parent) does not exist")
        }
        try FileSystem.createDirectories(path)
        for sub in ["packs", "index", "points", "locks"] {
            try FileSystem.createDirectories("\(path)/\(sub)")
        }
        return LocalDirectoryStorage(root: path)
    }

    /// Creates a new repository in `storage` (an object store's bucket and prefix), declaring
    /// `features` beyond those this Cairn always writes (`objectStore` for a shared store).
    ///
    /// Refused when a config is there already; the config is published create-only, so of two
    /// hosts that create the same repository at once one is refused.
    @discardableResult
    public static func create(
        in storage: any RepositoryStorage, blockSize: Int, compressionLevel: Int, encryption: NewKey? = nil,
        features extra: [String] = []
    ) throws(CairnError) -> RepositoryConfig {
        try checkSettings(blockSize: blockSize, compressionLevel: compressionLevel)
        if try RepositoryConfig.isPresent(in: storage) {
            throw CairnError(.exists, "\(storage.location) is already a Cairn repository")
        }
        var config = RepositoryConfig.new(blockSize: blockSize, compressionLevel: compressionLevel)
        config.declare(extra)
        if let encryption {
            // The key file first: a config that declares encryption always has a key beside it.
            let master = MasterKey.generate(repositoryID: Hex.decode(config.id, count: 16)!)
            let file = try KeyFile.wrap(
                master, repositoryID: config.id, passphrase: encryption.passphrase, parameters: encryption.parameters,
                hint: encryption.hint)
            try KeyDirectory.write(file, into: storage)
            config.features = (config.features ?? []) + [FormatFeature.encryption]
            config.encryption = .current(fingerprint: master.fingerprintHex)
        }
        try config.write(to: storage, createOnly: true)
        return config
    }

    private static func checkSettings(blockSize: Int, compressionLevel: Int) throws(CairnError) {
        try RepositoryConfig.validate(blockSize: blockSize)
        guard (1...19).contains(compressionLevel) else {
            throw CairnError(.usage, "compression level \(compressionLevel) is not between 1 and 19")
        }
    }

    /// Opens the repository in the directory `path`. `loadIndex: false` skips the chunk index
    /// (for `rebuild-index`).
    ///
    /// An encrypted repository is opened only with a passphrase that opens one of its key files
    /// (`passphrase` is asked only then); without one it is refused, never read as plain.
    public convenience init(
        path: String, loadIndex: Bool = true, onLockWait: LockWaitObserver? = nil,
        passphrase: (() throws(CairnError) -> [UInt8])? = nil, secret: (() throws(CairnError) -> KeySecret)? = nil
    ) throws(CairnError) {
        guard FileSystem.exists(path) else {
            throw CairnError(.repository, "repository \(path) does not exist", remedy: .createRepository)
        }
        if access("\(path)/config", R_OK) != 0 && errno == EACCES {
            throw CairnError(.repository, "cannot read repository \(path): permission denied")
        }
        guard FileSystem.isDirectory(path) else {
            throw CairnError(.repository, "\(path) is not a Cairn repository (it has no config file)")
        }
        try self.init(
            storage: LocalDirectoryStorage(root: path), loadIndex: loadIndex, onLockWait: onLockWait,
            passphrase: passphrase, secret: secret)
    }

    /// Opens the repository in `storage` (a local directory or an object store). An encrypted
    /// one opens with `secret` (a passphrase or a host key) when given, else `passphrase`.
    public init(
        storage: any RepositoryStorage, loadIndex: Bool = true, onLockWait: LockWaitObserver? = nil,
        passphrase: (() throws(CairnError) -> [UInt8])? = nil, secret: (() throws(CairnError) -> KeySecret)? = nil
    ) throws(CairnError) {
        let path = storage.location
        self.path = path
        self.storage = storage
        locking = storage.makeLocking()
        self.onLockWait = onLockWait
        guard try RepositoryConfig.isPresent(in: storage) else {
            throw CairnError(.repository, "\(path) is not a Cairn repository (it has no config file)")
        }
        (config, configHealth) = try Self.readConfig(storage)
        var unlocker = secret
        if unlocker == nil, let passphrase {
            unlocker = { () throws(CairnError) -> KeySecret in KeySecret.passphrase(try passphrase()) }
        }
        let keys = try Self.unlock(storage, config, unlocker)
        store = try ChunkStore(
            storage: storage, blockSize: config.blockSize, compressionLevel: Int32(config.compressionLevel),
            packTargetSize: UInt64(config.packSize), loadIndex: loadIndex, keys: keys)
        catalog = Catalog(storage: storage, seal: keys.map(MetadataSeal.init))
    }

    /// The keys of an encrypted repository, opened by `secret`; nil for an unencrypted one.
    /// Nothing is written or locked before this succeeds, so a wrong passphrase touches nothing.
    static func unlock(
        _ storage: any RepositoryStorage, _ config: RepositoryConfig,
        _ secret: (() throws(CairnError) -> KeySecret)?
    ) throws(CairnError) -> MasterKey? {
        let path = storage.location
        let declared = config.features?.contains(FormatFeature.encryption) == true
        guard declared || config.encryption != nil else { return nil }
        guard declared, let encryption = config.encryption,
            encryption.cipher == KeyFile.cipherName, encryption.chunkIDs == "hmac-sha256"
        else {
            throw CairnError(
                .repository,
                "repository \(path) uses the format feature '\(FormatFeature.encryption)' with settings this Cairn does not know (or without any): its config was made by another Cairn or is damaged"
            )
        }
        guard let secret else {
            throw CairnError(.repository, "repository \(path) is encrypted: its passphrase is needed to open it")
        }
        let directory = KeyDirectory(storage: storage, repositoryID: config.id, fingerprint: encryption.fingerprint)
        return try directory.unlock(try secret()).key
    }

    /// Takes the locks `scope` needs, waiting up to `wait` seconds for each (nil: fail at once).
    ///
    /// The one place that knows the lock files (docs/INTEGRITY.md, "Locks"); held until the
    /// returned value is released. `purpose` ("cairn backup") is what other processes are told.
    public func lock(_ scope: LockScope, purpose: String, wait: Double?) throws(CairnError) -> RepositoryLock {
        try locking.acquire(
            scope, purpose: purpose, wait: wait, onWait: onLockWait, groupFileName: catalog.names.directory)
    }

    /// Runs `body` holding the locks `scope` needs.
    public func withLock<T>(
        _ scope: LockScope, purpose: String, wait: Double?, _ body: () throws(CairnError) -> T
    ) throws(CairnError) -> T {
        let lock = try lock(scope, purpose: purpose, wait: wait)
        defer { withExtendedLifetime(lock) {} }
        return try body()
    }

    /// Reads `config`, falling back to its copy when `config` is damaged (never when it is of
    /// an unknown version: a newer Cairn wrote it, and the copy may be older).
    static func readConfig(
        _ storage: any RepositoryStorage, alsoKnown: Set<String> = []
    ) throws(CairnError) -> (RepositoryConfig, ConfigHealth) {
        let copyPath = storage.describe(RepositoryConfig.copyName)
        let primaryPath = storage.describe(RepositoryConfig.key)
        var health = ConfigHealth()
        let copy: RepositoryConfig?
        var copyError: CairnError?
        if storage.exists(RepositoryConfig.copyName) {
            do throws(CairnError) {
                copy = try RepositoryConfig.read(RepositoryConfig.copyName, from: storage, alsoKnown: alsoKnown)
            } catch {
                copy = nil
                copyError = error
            }
        } else {
            copy = nil
        }
        let primary: RepositoryConfig
        do throws(CairnError) {
            guard storage.exists(RepositoryConfig.key) else {
                throw CairnError(.damaged, "the repository config \(primaryPath) is missing")
            }
            primary = try RepositoryConfig.read(RepositoryConfig.key, from: storage, alsoKnown: alsoKnown)
        } catch  where error.code == .damaged {
            guard let copy else {
                let also = copyError.map { " Its copy is damaged too: \($0.message)." } ?? ""
                throw CairnError(
                    .damaged,
                    "\(error.message).\(also) The block size and compression of the repository are unknown without it: put back a config from a backup of the repository"
                )
            }
            health.primaryDamage = error.message
            return (copy, health)
        }
        if primary.checksum == nil {
            if let copy, copy.checksum != nil {
                // A damaged key can hide the checksum itself; the copy says there was one.
                health.primaryDamage =
                    "the repository config \(primaryPath) is damaged: it has no checksum, and its copy has one"
                return (copy, health)
            }
            if copy == nil && copyError == nil {
                health.unsealed = true
                return (primary, health)
            }
        }
        if let copyError {
            health.copyProblem = copyError.message
        } else if let copy {
            // Both checksums were proved, so equal checksums mean equal bytes.
            if copy.checksum != primary.checksum || !copy.sameSettings(as: primary) {
                health.copyProblem = "the repository config's copy \(copyPath) differs from the config"
            }
        } else {
            health.copyProblem = "the repository config's copy \(copyPath) is missing"
        }
        return (primary, health)
    }

    /// Removes files that interrupted runs left behind (`.NAME.tmp-PID` whose process is gone, or
    /// is this one: a command calls this before it writes anything). Returns how many there were;
    /// with `dryRun` nothing is removed.
    @discardableResult
    public func removeLeftovers(dryRun: Bool = false) -> Int {
        storage.removeLeftovers(dryRun: dryRun)
    }
}

enum ProcessLiveness {
    static func isAlive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }
}

/// JSON in one place: sorted keys, so files and `--json` output are stable for scripts.
public enum JSONCoding {
    public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) throws(CairnError) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            throw CairnError(.io, "cannot encode JSON", cause: "\(error)")
        }
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws(CairnError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch let error as DecodingError {
            throw CairnError(.damaged, "\(what) is damaged: \(describe(error))")
        } catch {
            throw CairnError(.damaged, "\(what) is damaged: it is not valid JSON")
        }
    }

    /// What a decoding failure means, in words (Foundation's own description names Swift types
    /// and coding paths).
    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            let keys = (path + (last.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return "field \"" + keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[") + "\""
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "\(field(context.codingPath, key)) is missing"
        case .typeMismatch(let type, let context):
            return "\(field(context.codingPath)) is not \(type == String.self ? "a string" : "a \(type)")"
        case .valueNotFound(_, let context):
            return "\(field(context.codingPath)) is null"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "it is not valid JSON" : "\(field(context.codingPath)) is not valid"
        @unknown default:
            return "it cannot be read"
        }
    }
}
