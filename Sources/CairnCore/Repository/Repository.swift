import Foundation

/// An opened repository directory: its config, chunk store and catalog.
///
/// Layout (docs/FORMAT.md): `config`, `packs/`, `index/`, `points/`, `locks/`. Its objects are
/// read and written through `storage`.
public final class Repository: Sendable {
    public let path: String
    public let storage: LocalDirectoryStorage
    public let config: RepositoryConfig
    /// Whether `config` and its copy agree; commands warn when they do not, verify reports it.
    public let configHealth: ConfigHealth
    public let store: ChunkStore
    public let catalog: Catalog
    /// Told once when a lock this process needs is held by another (the CLI prints it).
    public let onLockWait: LockWaitObserver?

    /// Creates a new, empty repository at `path` (which must be missing or an empty directory).
    @discardableResult
    ///
    /// With `encryption`, the repository is encrypted: a new master key is wrapped under the
    /// given passphrase into `keys/`, and the config declares the `encryption` feature.
    public static func create(
        at path: String, blockSize: Int, compressionLevel: Int, encryption: NewKey? = nil
    ) throws(CairnError) -> RepositoryConfig {
        try RepositoryConfig.validate(blockSize: blockSize)
        guard (1...19).contains(compressionLevel) else {
            throw CairnError(.usage, "compression level \(compressionLevel) is not between 1 and 19")
        }
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
        var config = RepositoryConfig.new(blockSize: blockSize, compressionLevel: compressionLevel)
        if let encryption {
            // The key file first: a config that declares encryption always has a key beside it.
            let master = MasterKey.generate(repositoryID: Hex.decode(config.id, count: 16)!)
            let file = try KeyFile.wrap(
                master, repositoryID: config.id, passphrase: encryption.passphrase, parameters: encryption.parameters,
                hint: encryption.hint)
            try KeyDirectory.write(file, into: "\(path)/\(KeyDirectory.directoryName)")
            config.features = (config.features ?? []) + [FormatFeature.encryption]
            config.encryption = .current(fingerprint: master.fingerprintHex)
        }
        try config.write(repository: path)
        try FileSystem.syncDirectory(parent)
        return config
    }

    /// Opens the repository. `loadIndex: false` skips the chunk index (for `rebuild-index`).
    ///
    /// An encrypted repository is opened only with a passphrase that opens one of its key files
    /// (`passphrase` is asked only then); without one it is refused, never read as plain.
    public init(
        path: String, loadIndex: Bool = true, onLockWait: LockWaitObserver? = nil,
        passphrase: (() throws(CairnError) -> [UInt8])? = nil
    ) throws(CairnError) {
        self.path = path
        storage = LocalDirectoryStorage(root: path)
        self.onLockWait = onLockWait
        guard FileSystem.exists(path) else {
            throw CairnError(.repository, "repository \(path) does not exist", remedy: .createRepository)
        }
        if access("\(path)/config", R_OK) != 0 && errno == EACCES {
            throw CairnError(.repository, "cannot read repository \(path): permission denied")
        }
        let hasConfig = FileSystem.exists("\(path)/config") || FileSystem.exists("\(path)/\(RepositoryConfig.copyName)")
        guard FileSystem.isDirectory(path), hasConfig else {
            throw CairnError(.repository, "\(path) is not a Cairn repository (it has no config file)")
        }
        (config, configHealth) = try Self.readConfig(path)
        let keys = try Self.unlock(path, config, passphrase)
        store = try ChunkStore(
            storage: storage, blockSize: config.blockSize, compressionLevel: Int32(config.compressionLevel),
            packTargetSize: UInt64(config.packSize), loadIndex: loadIndex, keys: keys)
        catalog = Catalog(storage: storage, seal: keys.map(MetadataSeal.init))
    }

    /// The keys of an encrypted repository, opened by `passphrase`; nil for an unencrypted one.
    /// Nothing is written or locked before this succeeds, so a wrong passphrase touches nothing.
    static func unlock(
        _ path: String, _ config: RepositoryConfig, _ passphrase: (() throws(CairnError) -> [UInt8])?
    ) throws(CairnError) -> MasterKey? {
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
        guard let passphrase else {
            throw CairnError(.repository, "repository \(path) is encrypted: its passphrase is needed to open it")
        }
        let directory = KeyDirectory(repositoryPath: path, repositoryID: config.id, fingerprint: encryption.fingerprint)
        return try directory.unlock(try passphrase()).key
    }

    /// Takes the locks `scope` needs, waiting up to `wait` seconds for each (nil: fail at once).
    ///
    /// The one place that knows the lock files (docs/INTEGRITY.md, "Locks"); held until the
    /// returned value is released. `purpose` ("cairn backup") is what other processes are told.
    public func lock(_ scope: LockScope, purpose: String, wait: Double?) throws(CairnError) -> RepositoryLock {
        try RepositoryLock.acquire(
            root: path, scope: scope, purpose: purpose, wait: wait, onWait: onLockWait,
            groupFileName: catalog.names.directory)
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
        _ path: String, alsoKnown: Set<String> = []
    ) throws(CairnError) -> (RepositoryConfig, ConfigHealth) {
        let copyPath = "\(path)/\(RepositoryConfig.copyName)"
        var health = ConfigHealth()
        let copy: RepositoryConfig?
        var copyError: CairnError?
        if FileSystem.exists(copyPath) {
            do throws(CairnError) {
                copy = try RepositoryConfig.read(file: copyPath, alsoKnown: alsoKnown)
            } catch {
                copy = nil
                copyError = error
            }
        } else {
            copy = nil
        }
        let primary: RepositoryConfig
        do throws(CairnError) {
            guard FileSystem.exists("\(path)/config") else {
                throw CairnError(.damaged, "the repository config \(path)/config is missing")
            }
            primary = try RepositoryConfig.read(file: "\(path)/config", alsoKnown: alsoKnown)
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
                    "the repository config \(path)/config is damaged: it has no checksum, and its copy has one"
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
