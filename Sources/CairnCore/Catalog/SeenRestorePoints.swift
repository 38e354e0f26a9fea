import Foundation

/// What this host has seen of an encrypted repository: the newest restore point of each group,
/// so that a repository rolled back to an older copy (newer restore points gone, but no prune
/// or forget removed them) is detected the next time this host opens it.
///
/// Without the key nobody can forge a restore point, but anyone who holds the files can put an
/// older copy of them back, or delete the newest manifests: each file still opens. What tells
/// the difference is memory outside the repository, as borg keeps in its security directory. A
/// removal by prune or forget, on any host, leaves a sealed tombstone (`Catalog.recordRemoval`),
/// so only a removal that did not go through Cairn counts as a roll-back.
///
/// Kept in `DIRECTORY/REPOSITORY-ID.seen` (JSON, `0600`): the directory is the host's state
/// directory (`$CAIRN_STATE_DIR`, else `$XDG_STATE_HOME/cairn`, else `~/.local/state/cairn`),
/// not its cache: deleting a cache must not forget what was seen. An unreadable file counts as
/// nothing seen (and is replaced): it can only make the check weaker, never fail a backup.
public struct SeenRestorePoints: Sendable {
    public let file: String
    private let catalog: Catalog

    /// For an encrypted repository; nil for an unencrypted one, where anyone with the files can
    /// forge anything and a tombstone would prove nothing.
    public init?(repository: Repository, directory: String) {
        guard repository.store.isEncrypted else { return nil }
        file = "\(directory)/\(repository.config.id).seen"
        catalog = repository.catalog
    }

    /// The state directory from the environment, as `init(repository:directory:)` wants it.
    public static func defaultDirectory(environment: [String: String]? = nil) -> String {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if let dir = environment["CAIRN_STATE_DIR"], !dir.isEmpty { return dir }
        if let dir = environment["XDG_STATE_HOME"], !dir.isEmpty { return "\(dir)/cairn" }
        return "\(environment["HOME"] ?? "/root")/.local/state/cairn"
    }

    struct Record: Codable {
        /// Group → the newest restore point's time this host has seen.
        var newest: [String: Timestamp]
    }

    private func load() -> Record {
        guard let bytes = try? FileSystem.readAll(file, limit: 16 << 20),
            let record = try? JSONCoding.decode(Record.self, from: bytes, what: "\(file)")
        else { return Record(newest: [:]) }
        return record
    }

    /// Restore points this host saw that are gone without a tombstone, one line each.
    /// One existence check per group seen: no listing, so every command can afford it.
    public func rolledBack() -> [String] {
        load().newest.sorted { $0.key < $1.key }.compactMap { group, time in
            let id = RestorePointID(group: group, time: time)
            guard !catalog.exists(id), !catalog.wasRemoved(id) else { return nil }
            return
                "restore point \(id), seen by this host, is gone and no prune or forget removed it: the repository was rolled back to an older copy, or its files were deleted by hand (\(file) records what this host saw)"
        }
    }

    /// Remembers `ids` as seen: each group's newest is the newest of what was known and these.
    /// Best effort: a host whose state directory cannot be written still backs up.
    public func record(_ ids: [RestorePointID]) {
        guard !ids.isEmpty else { return }
        var record = load()
        var changed = false
        for id in ids where record.newest[id.group].map({ $0 < id.time }) ?? true {
            record.newest[id.group] = id.time
            changed = true
        }
        guard changed, let text = try? JSONCoding.encode(record, pretty: true) else { return }
        let directory = FileSystem.directoryName(file)
        try? FileSystem.createDirectories(directory)
        try? FileSystem.writeAtomically(Array((text + "\n").utf8), to: file)
        chmod(file, 0o600)
    }
}
