/// The repository's record of its archives: `archives/<archive-id>.json`, one file per archive,
/// written atomically when the archive is complete. Says which restore points went to which
/// archive and volume, so an administrator knows which tapes to fetch.
public struct ArchiveCatalogEntry: Codable, Sendable, Equatable {
    public var format: Int
    public var archive: String
    public var created: String
    /// Where the volumes were written, in order (`-` for a stream).
    public var volumes: [String]
    public var archiveBlockSize: Int
    public var bytes: UInt64
    public var chunks: Int
    public var indexPages: Int
    public var points: [ArchivePointEntry]
}

public enum ArchiveCatalog {
    static func directory(_ repository: Repository) -> String { "\(repository.path)/archives" }

    /// The file's name in the repository, which an encrypted repository's seal binds.
    static func name(_ archive: String) -> String { "archives/\(archive).json" }

    /// In an encrypted repository the entry is sealed (`MetadataSeal`): it names restore
    /// points, disks and sizes.
    static func write(_ entry: ArchiveCatalogEntry, to repository: Repository) throws(CairnError) {
        var bytes = Array(try JSONCoding.encode(entry, pretty: true).utf8) + [10]
        if let keys = repository.store.keys { bytes = MetadataSeal(keys: keys).seal(bytes, name: name(entry.archive)) }
        try repository.storage.publish(bytes, as: name(entry.archive), .replace)
    }

    /// Every archive the repository wrote, oldest first.
    public static func entries(in repository: Repository) throws(CairnError) -> [ArchiveCatalogEntry] {
        let dir = directory(repository)
        var out: [ArchiveCatalogEntry] = []
        for name in try FileSystem.list(dir) where name.hasSuffix(".json") && !name.hasPrefix(".") {
            var bytes = try FileSystem.readAll("\(dir)/\(name)", limit: 64 << 20)
            if let keys = repository.store.keys {
                bytes = try MetadataSeal(keys: keys).open(bytes, name: "archives/\(name)")
            }
            out.append(
                try JSONCoding.decode(ArchiveCatalogEntry.self, from: bytes, what: "archive catalog \(dir)/\(name)"))
        }
        return out.sorted { ($0.created, $0.archive) < ($1.created, $1.archive) }
    }
}
