public import CairnCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A repository in an S3 bucket, under a key prefix: `RepositoryStorage` on PUT, conditional PUT,
/// ranged GET, HEAD, ListObjectsV2 and DELETE (docs/ARCHITECTURE.md, "Storage").
///
/// What the local directory does with temporary names, fsync and rename, S3 does by itself: a
/// PUT is atomic (readers see the old object or the new one, never part of one) and durable
/// when it is answered. So a staged object is written to an unlinked local scratch file (never
/// visible, never left behind by a crash: `removeLeftovers` has nothing to find), hashed as it is
/// appended, and `commit` PUTs the batch with several in flight, each signed with its SHA-256 so
/// the store checks what it received. A create-only publish is `If-None-Match: *`.
public struct S3Storage: RepositoryStorage {
    public let client: S3Client
    public let bucket: String
    /// The keys' common prefix in the bucket: empty, or ending in `/`.
    public let prefix: String
    /// Where staged objects and mapped copies are kept while in use (unlinked at once).
    public let scratchDirectory: String
    /// PUTs in flight during a commit (each holds its object in memory while it is sent).
    public let uploadsInFlight: Int
    /// The read-ahead shared by every object opened here (`S3StoredObject`).
    public let windows: ReadWindows
    /// This host's copies of the index segments (`IndexSegmentCache`); nil downloads every
    /// segment that is mapped.
    public let cache: IndexSegmentCache?
    /// Objects `prepareCommit` started uploading, oldest first (at most `uploadsInFlight`).
    private let early = EarlyUploads()

    /// Largest object read whole into memory (a pack is about 32 MiB; an index segment less).
    static let maxObjectRead = 1 << 30

    public init(
        client: S3Client, bucket: String, prefix: String = "", scratchDirectory: String = "/var/tmp",
        uploadsInFlight: Int = 4, windows: ReadWindows = ReadWindows(), cacheDirectory: String? = nil
    ) {
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
        self.scratchDirectory = scratchDirectory
        self.uploadsInFlight = max(1, uploadsInFlight)
        self.windows = windows
        let identity = IndexSegmentCache.identity(endpoint: client.endpoint, bucket: bucket, prefix: self.prefix)
        cache = cacheDirectory.map { IndexSegmentCache(root: $0, identity: identity) }
    }

    public var location: String { "s3://\(bucket)/\(prefix)" }

    /// `ROOT/IDENTITY`, beside the cached segments (`IndexSegmentCache`): tree pages go there.
    public var hostCacheDirectory: String? { cache.map { FileSystem.directoryName($0.directory) } }

    func objectKey(_ key: String) -> String { prefix + key }

    public func stage(_ key: String) throws(CairnError) -> any StagedObject {
        try S3StagedObject(key: key, scratch: try scratchFile("stage"))
    }

    /// Starts the object's PUT at once (a pack is complete long before the job commits it), so
    /// that uploads overlap the compression of the next packs. An object uploaded early is
    /// visible before the commit, unreferenced: no index segment names it until the commit
    /// writes one, so a crash leaves an orphan pack, which gc removes. At most `uploadsInFlight`
    /// run at once; beyond that this waits for the oldest, holding the job back as a slow
    /// store must. A failed early upload is tried again by `commit`.
    public func prepareCommit(_ object: any StagedObject) throws(CairnError) {
        let staged = Self.s3(object)
        while let oldest = early.takeOldest(ifAtLeast: uploadsInFlight) { finishEarly(oldest) }
        let request = client.putRequest(
            bucket: bucket, key: objectKey(staged.key), body: try staged.contents(), payloadHash: staged.payloadHash,
            createOnly: false)
        early.started(staged.serial, key: objectKey(staged.key), try client.start(request))
    }

    /// Waits for an early upload; one that failed (after the client's retries) is not marked
    /// done, so the commit sends it again.
    private func finishEarly(_ upload: EarlyUploads.Upload) {
        do throws(CairnError) {
            try client.checkPut(try client.finish(upload.pending), bucket: bucket, key: upload.key)
            early.done(upload.object)
        } catch {
            CairnLog.logger.info("\(error.message); the commit sends it again")
        }
    }

    public func commit(_ objects: [any StagedObject]) throws(CairnError) {
        let all = objects.map(Self.s3)
        // Early uploads first: each one done is not sent again.
        let ids = Set(all.map(\.serial))
        for upload in early.take(ids) { finishEarly(upload) }
        let uploaded = early.forget(ids)
        let staged = all.filter { !uploaded.contains($0.serial) }
        var next = 0
        while next < staged.count {
            let batch = staged[next..<min(staged.count, next + uploadsInFlight)]
            next = batch.endIndex
            // Start the batch, then wait for each; the client retries a failed one on its own.
            var pending: [(S3StagedObject, S3Client.Pending)] = []
            for object in batch {
                let body = try object.contents()
                let request = client.putRequest(
                    bucket: bucket, key: objectKey(object.key), body: body, payloadHash: object.payloadHash,
                    createOnly: false)
                pending.append((object, try client.start(request)))
            }
            var failure: CairnError?
            for (object, request) in pending {
                do throws(CairnError) {
                    try client.checkPut(try client.finish(request), bucket: bucket, key: objectKey(object.key))
                } catch {
                    if failure == nil { failure = error }
                }
            }
            if let failure { throw failure }
        }
        // A segment this host wrote is kept as it was sent, so no run here downloads it.
        if let cache {
            for object in all where IndexSegmentCache.name(of: object.key) != nil {
                if let bytes = try? object.contents() { _ = cache.keep(bytes, as: object.key, check: false) }
            }
        }
    }

    public func abandon(_ object: any StagedObject) {
        let staged = Self.s3(object)
        // An upload under way is let finish (its object, unreferenced, is an orphan for gc).
        let id = staged.serial
        for upload in early.take([id]) { finishEarly(upload) }
        _ = early.forget([id])
        staged.discard()
    }

    public func publish(_ bytes: [UInt8], as key: String, _ mode: PublishMode) throws(CairnError) {
        windows.forget(objectKey(key))
        do throws(CairnError) {
            try client.put(bucket: bucket, key: objectKey(key), body: bytes, createOnly: mode == .createOnly)
        } catch let error where error.code == .exists {
            // A lost reply to a PUT that the store did carry out is retried and then refused: the
            // object holding exactly these bytes is this publish, not a rival's.
            if let there = try? client.get(bucket: bucket, key: objectKey(key), limit: bytes.count + 1),
                there == bytes
            {
                return
            }
            throw CairnError(.exists, "\(key) exists already in \(location)")
        }
    }

    public func open(_ key: String) throws(CairnError) -> any StoredObject {
        guard let size = try client.head(bucket: bucket, key: objectKey(key)) else {
            throw CairnError(.notFound, "\(key) does not exist in \(location)")
        }
        return S3StoredObject(client: client, bucket: bucket, key: objectKey(key), size: size, windows: windows)
    }

    /// Maps an index segment's cached copy (`IndexSegmentCache`), downloading and keeping it
    /// first when there is none; any other object, or one that fails its checks, is downloaded
    /// to an unlinked scratch file and that is mapped: the mapping outlives the name, so nothing
    /// is left behind.
    public func map(_ key: String) throws(CairnError) -> MappedFile {
        var size: UInt64?
        if let cache, IndexSegmentCache.name(of: key) != nil {
            size = cache.knownSize(key)
            if size == nil { size = try client.head(bucket: bucket, key: objectKey(key)) }
            if let size, let copy = cache.cachedCopy(key, size: size) { return copy }
        }
        let bytes = try client.get(bucket: bucket, key: objectKey(key), limit: Self.maxObjectRead)
        if let size, UInt64(bytes.count) != size {
            throw CairnError(
                .io,
                "GET \(describe(key)): \(bytes.count) bytes came for an object of \(size): the store is broken")
        }
        if size != nil, let cache, let copy = cache.keep(bytes, as: key, check: true) { return copy }
        let path = try scratchFile("map")
        defer { try? FileSystem.remove(path) }
        let file = try File.open(path, .createNew)
        try file.write(bytes, at: 0)
        return try MappedFile(path: path)
    }

    public func list(prefix listed: String) throws(CairnError) -> [String] {
        let objects = try client.list(bucket: bucket, prefix: objectKey(listed)).map {
            (key: String($0.key.dropFirst(prefix.utf8.count)), size: $0.size)
        }
        // A listing of the whole index says which cached segments are still live.
        if let cache, "index/".hasPrefix(listed) {
            cache.listed(objects.filter { IndexSegmentCache.name(of: $0.key) != nil })
        }
        return objects.map(\.key).sorted()
    }

    public func delete(_ keys: [String]) throws(CairnError) {
        for key in keys { windows.forget(objectKey(key)) }
        var next = 0
        while next < keys.count {
            let batch = keys[next..<min(keys.count, next + uploadsInFlight)]
            next = batch.endIndex
            var pending: [(String, S3Client.Pending)] = []
            for key in batch {
                pending.append((key, try client.start(client.deleteRequest(bucket: bucket, key: objectKey(key)))))
            }
            var failure: CairnError?
            for (key, request) in pending {
                do throws(CairnError) {
                    try client.checkDelete(try client.finish(request), bucket: bucket, key: objectKey(key))
                } catch {
                    if failure == nil { failure = error }
                }
            }
            if let failure { throw failure }
        }
    }

    /// Whether the key exists; a store that cannot be asked counts as "no" (the caller's next
    /// read or write then reports why).
    /// One ranged GET of up to `limit` + 1 bytes: a 404 is absence, more than `limit` is damage.
    public func readIfPresent(_ key: String, limit: Int) throws(CairnError) -> [UInt8]? {
        let asked = limit < Int.max ? limit + 1 : limit
        let bytes: [UInt8]
        do throws(CairnError) {
            bytes = try client.get(bucket: bucket, key: objectKey(key), range: 0..<UInt64(asked), limit: asked)
        } catch  where error.code == .notFound {
            return nil
        }
        guard bytes.count <= limit else {
            throw CairnError(
                .damaged, "\(describe(key)) is larger than \(limit) bytes: it is not what Cairn writes there")
        }
        return bytes
    }

    public func exists(_ key: String) -> Bool {
        ((try? client.head(bucket: bucket, key: objectKey(key))) ?? nil) != nil
    }

    /// Nothing staged persists: scratch files are unlinked when made, and an unfinished PUT
    /// leaves no object.
    public func removeLeftovers(dryRun: Bool) -> Int { 0 }

    private func scratchFile(_ kind: String) throws(CairnError) -> String {
        try FileSystem.createDirectories(scratchDirectory)
        return "\(scratchDirectory)/.cairn-s3-\(kind)-\(getpid())-\(ScratchCounter.next())"
    }

    private static func s3(_ object: any StagedObject) -> S3StagedObject {
        guard let staged = object as? S3StagedObject else {
            preconditionFailure("an object staged by another storage was given to S3Storage")
        }
        return staged
    }
}

/// The PUTs `S3Storage.prepareCommit` started, oldest first, and the objects whose early upload
/// succeeded; shared by the copies of one storage. Objects are named by their serial (unique in
/// the process, never reused); each is taken out by the commit or abandon that ends it.
final class EarlyUploads: Sendable {
    struct Upload: Sendable {
        var object: Int
        /// The object's key in the bucket.
        var key: String
        var pending: S3Client.Pending
    }

    private struct State {
        var running: [Upload] = []
        var done: Set<Int> = []
    }

    private let state = Mutex(State())

    func started(_ object: Int, key: String, _ pending: S3Client.Pending) {
        state.withLock { $0.running.append(Upload(object: object, key: key, pending: pending)) }
    }

    /// The oldest running upload, if `limit` or more are running.
    func takeOldest(ifAtLeast limit: Int) -> Upload? {
        state.withLock { $0.running.count >= limit ? $0.running.removeFirst() : nil }
    }

    /// The running uploads of `objects`.
    func take(_ objects: Set<Int>) -> [Upload] {
        state.withLock { state in
            let taken = state.running.filter { objects.contains($0.object) }
            state.running.removeAll { objects.contains($0.object) }
            return taken
        }
    }

    func done(_ object: Int) {
        state.withLock { _ = $0.done.insert(object) }
    }

    /// Which of `objects` were uploaded early; all of them are forgotten.
    func forget(_ objects: Set<Int>) -> Set<Int> {
        state.withLock { state in
            let uploaded = state.done.intersection(objects)
            state.done.subtract(objects)
            return uploaded
        }
    }
}

/// Unique scratch names within the process.
enum ScratchCounter {
    private static let value = Atomic<Int>(0)
    static func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).newValue }
}

/// An object being written: an unlinked scratch file, hashed as it grows.
final class S3StagedObject: StagedObject {
    let key: String
    /// Names the object in `EarlyUploads`: unique in the process, never reused.
    let serial = ScratchCounter.next()
    private let file: File
    private let hasher = SHA256Hasher()
    private(set) var size: UInt64 = 0
    private var hash: String?
    init(key: String, scratch path: String) throws(CairnError) {
        self.key = key
        file = try File.open(path, .createNew)
        try FileSystem.remove(path)  // the descriptor keeps it; a crash leaves nothing
        hasher.start()
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws(CairnError) {
        precondition(hash == nil, "append to a sealed object \(key)")
        try file.write(bytes, at: size)
        hasher.update(bytes)
        size += UInt64(bytes.count)
    }

    func seal() {
        if hash == nil { hash = hasher.finish().hex }
    }

    /// The hex SHA-256 of everything appended (sealing the object if it was not).
    var payloadHash: String {
        seal()
        return hash!
    }

    func contents() throws(CairnError) -> [UInt8] {
        try file.readBytes(count: Int(size), at: 0)
    }

    func discard() {
        try? file.truncate(to: 0)
    }
}

/// A committed object, read by ranged GETs through the storage's shared `ReadWindows`, so the
/// next reads of neighbouring records (a pack is read in record order by restore and verify) cost
/// no request.
final class S3StoredObject: StoredObject {
    let client: S3Client
    let bucket: String
    let key: String
    let size: UInt64
    let windows: ReadWindows

    init(client: S3Client, bucket: String, key: String, size: UInt64, windows: ReadWindows) {
        self.client = client
        self.bucket = bucket
        self.key = key
        self.size = size
        self.windows = windows
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int {
        try windows.read(key, size: size, into: buffer, at: offset) { range throws(CairnError) in try fetch(range) }
    }

    func readBytes(count: Int, at offset: UInt64) throws(CairnError) -> [UInt8] {
        guard offset < size, count > 0 else { return [] }
        let wanted = Int(min(UInt64(count), size - offset))
        var bytes = [UInt8](repeating: 0, count: wanted)
        var n = 0
        var failure: CairnError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(CairnError) { n = try read(into: buffer, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return n == wanted ? bytes : Array(bytes[0..<n])
    }

    private func fetch(_ range: Range<UInt64>) throws(CairnError) -> [UInt8] {
        let bytes = try client.get(bucket: bucket, key: key, range: range, limit: range.count)
        guard bytes.count == range.count else {
            throw CairnError(
                .io,
                "GET s3://\(bucket)/\(key): \(bytes.count) bytes came for \(range.count) at offset \(range.lowerBound): "
                    + "the object changed or the store is broken")
        }
        return bytes
    }
}
