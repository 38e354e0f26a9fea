import SystemPackage

/// Where a repository's objects live: the one seam between the repository's layout and the
/// medium that holds it.
///
/// Objects are named by keys relative to the repository (`packs/ab/ab12….pack`,
/// `index/….idx`, `points/vm1/….manifest`, `config`), with `/` between parts. Every operation is
/// one that an object store also offers (docs/ARCHITECTURE.md, "Storage"): an object is written
/// once and never changed (`stage` then `commit`), or published whole (`publish`, create-only
/// or replace); it is read by byte range, listed by prefix and deleted by key. There is no
/// rename, append to a committed object or directory: what a local directory needs for that
/// (temporary names, fsync, syncfs, rename, directory fsync) stays inside
/// `LocalDirectoryStorage`, and an object-store implementation maps the same calls to PUT,
/// conditional PUT, ranged GET, LIST and DELETE.
///
/// Nothing committed or published is visible before it is durable: a restore point can be made
/// visible (its manifest published) only after everything it names was committed.
public protocol RepositoryStorage: Sendable {
    /// Where the repository is, for messages (a directory path, or a URL).
    var location: String { get }

    /// Begins writing a new immutable object under `key`. Its bytes are appended in order and
    /// it stays invisible (listing and reading do not see it) until `commit(_:)`.
    func stage(_ key: String) throws(CairnError) -> any StagedObject

    /// Makes every staged object durable and then visible under its key, as one batch (a local
    /// directory syncs once for all of them). On failure none is known to be visible: the caller
    /// abandons them.
    func commit(_ objects: [any StagedObject]) throws(CairnError)

    /// Says that a staged object is complete (nothing more is appended) and will be committed:
    /// a storage may start making it durable now, beside the work that goes on, so that
    /// `commit(_:)` has less left to do. It must not become visible under its key any earlier
    /// than it would without the call, except where an unreferenced object is harmless (an
    /// object store: a pack no index segment names is an orphan gc removes). May wait, to bound
    /// the work in flight. The default does nothing.
    func prepareCommit(_ object: any StagedObject) throws(CairnError)

    /// Drops a staged object that will not be committed. Never fails: what cannot be removed now
    /// is left for `removeLeftovers`.
    func abandon(_ object: any StagedObject)

    /// Writes a small object whole, durably and atomically: readers see the old object (or none)
    /// or the new one, never part of it.
    func publish(_ bytes: [UInt8], as key: String, _ mode: PublishMode) throws(CairnError)

    /// Opens a committed object for reads by byte range.
    func open(_ key: String) throws(CairnError) -> any StoredObject

    /// Opens a committed object that is read in large records, each rarely (a pack): a local
    /// directory reads those around the page cache. The default: `open(_:)`.
    func openRecords(_ key: String) throws(CairnError) -> any StoredObject

    /// Maps a whole committed object into memory, for lookups in place (index segments): a local
    /// directory maps the file itself, an object store would map its locally cached copy.
    func map(_ key: String) throws(CairnError) -> MappedFile

    /// The keys of committed objects that start with `prefix`, sorted (objects being staged or
    /// published are not listed).
    func list(prefix: String) throws(CairnError) -> [String]

    /// Deletes objects; a key that does not exist is not an error. Durable when it returns.
    func delete(_ keys: [String]) throws(CairnError)

    /// Whether a committed object exists under `key`.
    func exists(_ key: String) -> Bool

    /// The whole object under `key`, or nil if there is none; an object larger than `limit` is
    /// damage (nothing Cairn writes there is that large). An object store answers it with one
    /// GET, where `exists`, `open` and a read would cost three requests.
    func readIfPresent(_ key: String, limit: Int) throws(CairnError) -> [UInt8]?

    /// Removes what interrupted writers left (objects staged or published by processes that are
    /// gone, or by this one). Returns how many there were; with `dryRun` nothing is removed.
    func removeLeftovers(dryRun: Bool) -> Int

    /// Publishes, create-only, an object only the repository's owner may read (a key file). A
    /// local directory makes it mode 0600 in a 0700 directory; an object store has no modes, its
    /// bucket policy decides (the default: a create-only `publish`).
    func publishPrivate(_ bytes: [UInt8], as key: String) throws(CairnError)

    /// How commands on this storage keep out of each other's way (docs/INTEGRITY.md, "Locks"): a
    /// local directory takes flocks, which its kernel releases with a dead process; storage
    /// shared by hosts takes leases that expire (the default, `LeaseLocking`).
    func makeLocking() -> any RepositoryLocking

    /// A directory of this host's own for what it may keep of this repository between runs
    /// (an object store's cached index segments and tree pages), or nil when reading the
    /// repository is as cheap as reading a copy (a local directory: the default).
    var hostCacheDirectory: String? { get }
}

extension RepositoryStorage {
    public func prepareCommit(_ object: any StagedObject) throws(CairnError) {}

    public var hostCacheDirectory: String? { nil }

    public func openRecords(_ key: String) throws(CairnError) -> any StoredObject { try open(key) }

    public func publishPrivate(_ bytes: [UInt8], as key: String) throws(CairnError) {
        try publish(bytes, as: key, .createOnly)
    }

    public func makeLocking() -> any RepositoryLocking { LeaseLocking(storage: self) }

    /// `key` as a person reads it in a message: the location and the key.
    public func describe(_ key: String) -> String {
        location.hasSuffix("/") ? location + key : "\(location)/\(key)"
    }

    /// A small object's bytes (at most `limit`), or nil when there is none under `key`.
    public func readIfPresent(_ key: String, limit: Int) throws(CairnError) -> [UInt8]? {
        guard exists(key) else { return nil }
        let object: any StoredObject
        do throws(CairnError) {
            object = try open(key)
        } catch  where error.code == .notFound || error.errno == .noSuchFileOrDirectory {
            return nil  // deleted between the two calls
        }
        guard object.size <= UInt64(limit) else {
            throw CairnError(
                .damaged, "\(describe(key)) is larger than \(limit) bytes: it is not what Cairn writes there")
        }
        return try object.readBytes(count: Int(object.size), at: 0)
    }
}

extension RepositoryStorage {
    /// Reads `count` bytes at `offset` of an object (fewer at its end).
    public func read(_ key: String, count: Int, at offset: UInt64) throws(CairnError) -> [UInt8] {
        try open(key).readBytes(count: count, at: offset)
    }
}

/// How `publish` treats an object that already exists.
public enum PublishMode: Sendable {
    /// Fail with `.exists` if the key exists (an object store's `If-None-Match: *`): restore
    /// points and other objects that are written once.
    case createOnly
    /// Replace what is there (config, markers, the healing list).
    case replace
}

/// An object being written: appended to in order by its one writer, then committed or abandoned
/// through the storage that staged it.
public protocol StagedObject: AnyObject {
    /// The key it will have once committed.
    var key: String { get }
    /// Bytes appended so far.
    var size: UInt64 { get }
    /// Appends bytes at the end.
    func append(_ bytes: UnsafeRawBufferPointer) throws(CairnError)
    /// Says the object is complete: the storage may begin moving it to stable storage now, so
    /// the commit overlaps with the rest of the run (a local file starts its writeback).
    func seal()
}

extension StagedObject {
    public func append(_ bytes: [UInt8]) throws(CairnError) {
        try bytes.withBytesThrowing { raw throws(CairnError) in try append(raw) }
    }
}

/// A committed object, read by byte range from any thread.
public protocol StoredObject: Sendable {
    /// Bytes in the object.
    var size: UInt64 { get }
    /// Reads up to `buffer.count` bytes at `offset`; fewer only at the end of the object.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int
    /// Reads `count` bytes at `offset` (fewer at the end of the object).
    func readBytes(count: Int, at offset: UInt64) throws(CairnError) -> [UInt8]
}
