import CairnCore

/// A local directory taken as storage that several hosts share: every call goes to
/// `LocalDirectoryStorage`, but commands keep out of each other's way by leases, as on an
/// object store (the protocol's default `makeLocking`), so gc runs in two phases beside backups.
/// The fuzz targets of what only shared storage parses (condemned lists, leases) run on it
/// without a network store.
public struct SharedDirectoryStorage: RepositoryStorage {
    let local: LocalDirectoryStorage

    public init(root: String) { local = LocalDirectoryStorage(root: root) }

    public var location: String { local.location }
    public func stage(_ key: String) throws(CairnError) -> any StagedObject { try local.stage(key) }
    public func commit(_ objects: [any StagedObject]) throws(CairnError) { try local.commit(objects) }
    public func abandon(_ object: any StagedObject) { local.abandon(object) }
    public func publish(_ bytes: [UInt8], as key: String, _ mode: PublishMode) throws(CairnError) {
        try local.publish(bytes, as: key, mode)
    }
    public func open(_ key: String) throws(CairnError) -> any StoredObject { try local.open(key) }
    public func map(_ key: String) throws(CairnError) -> MappedFile { try local.map(key) }
    public func list(prefix: String) throws(CairnError) -> [String] { try local.list(prefix: prefix) }
    public func delete(_ keys: [String]) throws(CairnError) { try local.delete(keys) }
    public func exists(_ key: String) -> Bool { local.exists(key) }
    public func removeLeftovers(dryRun: Bool) -> Int { local.removeLeftovers(dryRun: dryRun) }
}
