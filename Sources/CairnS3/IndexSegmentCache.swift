public import CairnCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// This host's copies of one repository's index segments, so that a run maps the segments it
/// already has instead of downloading the whole index again.
///
/// A segment key is never written twice (its name is its creation time and a random tail) and a
/// segment object is never changed, so a copy, once checked, stays right for as long as its key
/// is listed. Layout: `ROOT/IDENTITY/index/NAME.idx`, IDENTITY naming the endpoint, bucket and
/// prefix (`identity(endpoint:bucket:prefix:)`). A copy is written as `.NAME.idx.tmp-PID-N`,
/// fsynced and renamed, so a crash never leaves part of one under its final name. Copies whose
/// keys a listing of `index/` no longer names (compaction or gc deleted them) are removed then,
/// so the cache is as large as the live index: 52 bytes per chunk, plus each segment's tables.
///
/// The cache only saves downloads: a copy that cannot be written or read is left aside with a
/// warning in the log and the segment is read from the store.
public final class IndexSegmentCache: Sendable {
    /// `ROOT/IDENTITY/index`.
    public let directory: String
    /// Sizes of the segment objects as the last listing (or this process's own commit) gave them.
    private let sizes = Mutex<[String: UInt64]>([:])

    public init(root: String, identity: String) {
        directory = "\(root)/\(identity)/index"
    }

    /// `HOST-PORT-BUCKET[-PREFIX]-HASH`: readable, with every character outside `A-Za-z0-9._-`
    /// made `_`, and 16 hex digits of the SHA-256 of `ENDPOINT/BUCKET/PREFIX`, so two stores or
    /// prefixes never share a directory.
    public static func identity(endpoint: S3Endpoint, bucket: String, prefix: String) -> String {
        let trimmed = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        let readable = [endpoint.host, String(endpoint.port), bucket, trimmed].filter { !$0.isEmpty }
            .joined(separator: "-")
        let safe = String(
            readable.unicodeScalars.prefix(100).map {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || "._-".unicodeScalars.contains($0) ? Character($0) : "_"
            })
        let hash = SHA256Hasher().digest(Array("\(endpoint)/\(bucket)/\(prefix)".utf8)).hex.prefix(16)
        return "\(safe)-\(hash)"
    }

    /// The name a key is cached under, or nil for a key that is not an index segment.
    static func name(of key: String) -> String? {
        guard key.hasPrefix("index/"), key.hasSuffix(".idx") else { return nil }
        let name = key.dropFirst("index/".count)
        guard !name.contains("/"), !name.hasPrefix(".") else { return nil }
        return String(name)
    }

    func path(_ name: String) -> String { "\(directory)/\(name)" }

    /// The size the store has for `key`, when a listing or a commit said.
    func knownSize(_ key: String) -> UInt64? { sizes.withLock { $0[key] } }

    /// Remembers the listed segments and removes the copies of every other one, and unfinished
    /// copies whose writers are gone.
    func listed(_ segments: [(key: String, size: UInt64)]) {
        let live = Dictionary(segments.map { ($0.key, $0.size) }, uniquingKeysWith: { a, _ in a })
        sizes.withLock { $0 = live }
        let names = Set(live.keys.compactMap(Self.name(of:)))
        for file in (try? FileSystem.list(directory)) ?? [] {
            if file.hasPrefix(".") {
                guard let pid = Self.writer(of: file), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else {
                    continue
                }
            } else if names.contains(file) {
                continue
            }
            try? FileSystem.remove(path(file))
        }
    }

    /// The PID in `.NAME.tmp-PID-N`.
    static func writer(of file: String) -> Int32? {
        guard let range = file.range(of: ".tmp-", options: .backwards) else { return nil }
        return Int32(file[range.upperBound...].prefix { $0 >= "0" && $0 <= "9" })
    }

    /// The checked copy of `key`, or nil when there is none (or it was damaged and is removed).
    /// `size` is the object's size in the store.
    func cachedCopy(_ key: String, size: UInt64) -> MappedFile? {
        guard let name = Self.name(of: key) else { return nil }
        let path = path(name)
        guard FileSystem.exists(path) else { return nil }
        do throws(CairnError) {
            let map = try MappedFile(path: path)
            let actual = try File.open(path, .readOnly).size()
            guard actual == size else {
                throw CairnError(.damaged, "it is \(actual) bytes, not \(size) as \(key) is in the store")
            }
            // The reader's own checks: magic, version, and counts that fit the bytes exactly.
            _ = try IndexSegment(path: path)
            return map
        } catch {
            CairnLog.logger.warning("the cached copy \(path) is damaged, so it is downloaded again: \(error)")
            try? FileSystem.remove(path)
            return nil
        }
    }

    /// Keeps `bytes`, the whole object `key`, after checking them as the segment reader and
    /// `verify` do; returns the copy's map, or nil when they fail (the caller maps them from a
    /// scratch file, and the index reports the damage) or the cache cannot be written.
    func keep(_ bytes: [UInt8], as key: String, check: Bool) -> MappedFile? {
        guard let name = Self.name(of: key) else { return nil }
        let final = path(name)
        let temporary = "\(directory)/.\(name).tmp-\(getpid())-\(ScratchCounter.next())"
        do throws(CairnError) {
            try FileSystem.createDirectories(directory)
            do throws(CairnError) {
                let file = try File.open(temporary, .createNew)
                try file.write(bytes, at: 0)
                try file.sync()
                if check {
                    let segment = try IndexSegment(path: temporary)
                    try segment.checkIntegrity()
                }
            } catch {
                try? FileSystem.remove(temporary)
                if error.code == .damaged || error.code == .repository { return nil }
                throw error
            }
            try FileSystem.rename(temporary, to: final)
            sizes.withLock { $0[key] = UInt64(bytes.count) }
            return try MappedFile(path: final)
        } catch {
            CairnLog.logger.warning("cannot keep a copy of \(key) in \(directory): \(error)")
            return nil
        }
    }
}
