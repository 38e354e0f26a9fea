import Foundation

/// An opened repository directory: its config, chunk store and catalog.
///
/// Layout (docs/FORMAT.md): `config`, `packs/`, `index/`, `points/`, `locks/`.
public final class Repository: @unchecked Sendable {
    public let path: String
    public let config: RepositoryConfig
    public let store: ChunkStore
    public let catalog: Catalog

    /// Creates a new, empty repository at `path` (which must be missing or an empty directory).
    @discardableResult
    public static func create(at path: String, blockSize: Int, compressionLevel: Int) throws(CairnError)
        -> RepositoryConfig
    {
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
        let config = RepositoryConfig.new(blockSize: blockSize, compressionLevel: compressionLevel)
        try FileSystem.writeAtomically(
            Array(try JSONCoding.encode(config, pretty: true).utf8) + [10], to: "\(path)/config")
        try FileSystem.syncDirectory(parent)
        return config
    }

    /// Opens the repository. `loadIndex: false` skips the chunk index (for `rebuild-index`).
    public init(path: String, loadIndex: Bool = true) throws(CairnError) {
        self.path = path
        guard FileSystem.exists(path) else {
            throw CairnError(
                .repository, "repository \(path) does not exist (create it with `cairn init --repo \(path)`)")
        }
        if access("\(path)/config", R_OK) != 0 && errno == EACCES {
            throw CairnError(.repository, "cannot read repository \(path): permission denied")
        }
        guard FileSystem.isDirectory(path), FileSystem.exists("\(path)/config") else {
            throw CairnError(.repository, "\(path) is not a Cairn repository (it has no config file)")
        }
        let bytes = try FileSystem.readAll("\(path)/config", limit: 1 << 20)
        struct VersionProbe: Decodable {
            var format: String?
            var version: Int?
        }
        let probe = try? JSONDecoder().decode(VersionProbe.self, from: Data(bytes))
        guard let probe, probe.format == RepositoryConfig.formatName, let version = probe.version else {
            throw CairnError(.repository, "\(path) is not a Cairn repository (its config file is not a Cairn config)")
        }
        guard version == RepositoryConfig.currentVersion else {
            throw CairnError(
                .repository,
                "repository \(path) has format version \(version); this Cairn reads version \(RepositoryConfig.currentVersion) (use a Cairn that knows version \(version))"
            )
        }
        let config: RepositoryConfig
        do {
            config = try JSONDecoder().decode(RepositoryConfig.self, from: Data(bytes))
        } catch {
            throw CairnError(.repository, "the config file of repository \(path) is damaged", cause: "\(error)")
        }
        try RepositoryConfig.validate(blockSize: config.blockSize)
        self.config = config
        store = try ChunkStore(
            root: path, blockSize: config.blockSize, compressionLevel: Int32(config.compressionLevel),
            packTargetSize: UInt64(config.packSize), loadIndex: loadIndex)
        catalog = Catalog(root: "\(path)/points")
    }

    /// Removes files that interrupted runs left behind (`.NAME.tmp-PID` whose process is gone, or
    /// is this one: a command calls this before it writes anything). Returns how many there were;
    /// with `dryRun` nothing is removed.
    @discardableResult
    public func removeLeftovers(dryRun: Bool = false) -> Int {
        var removed = 0
        for dir in leftoverDirectories() {
            for name in (try? FileSystem.list(dir)) ?? [] where name.hasPrefix(".") {
                guard let range = name.range(of: ".tmp-"), let pid = Int32(name[range.upperBound...]) else { continue }
                guard pid == getpid() || !ProcessLiveness.isAlive(pid) else { continue }
                if !dryRun { try? FileSystem.remove("\(dir)/\(name)") }
                removed += 1
            }
        }
        return removed
    }

    private func leftoverDirectories() -> [String] {
        var dirs = ["\(path)/index", "\(path)/points", "\(path)/verify", "\(path)/packs"]
        for sub in (try? FileSystem.list("\(path)/packs")) ?? [] { dirs.append("\(path)/packs/\(sub)") }
        for group in (try? FileSystem.list("\(path)/points")) ?? [] { dirs.append("\(path)/points/\(group)") }
        return dirs
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
        } catch {
            throw CairnError(.damaged, "\(what) is not valid", cause: "\(error)")
        }
    }
}
