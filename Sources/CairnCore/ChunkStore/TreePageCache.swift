#if canImport(Glibc)
    import Glibc
#endif

/// This host's copies of the index pages its backups wrote and read last, so that the next
/// night's backup of a group reads the previous restore point's index tree without a request
/// to the store (issue 15: "the last tree pages of its own groups").
///
/// Only for storage several hosts share over a network (`RepositoryStorage.hostCacheDirectory`)
/// and only for unencrypted repositories: an encrypted one's pages would lie here in the clear.
/// A page is named by its digest, the SHA-256 of its bytes, so a copy is checked whole each
/// time it is used and one that fails is removed and read from the store: the cache can only
/// save requests, never change what a backup sees. Layout: `DIR/HEX` (32 KiB at most each),
/// written as `.HEX.tmp-PID` and renamed; not synced (a copy lost to a crash is read again).
/// Bounded: `trim()` (after each backup) removes the least recently used copies beyond
/// `maxBytes`.
public final class TreePageCache: Sendable {
    public let directory: String
    public let maxBytes: UInt64

    public static let defaultMaxBytes: UInt64 = 64 << 20

    public init(directory: String, maxBytes: UInt64 = TreePageCache.defaultMaxBytes) {
        self.directory = directory
        self.maxBytes = maxBytes
    }

    private func path(_ digest: ChunkDigest) -> String { "\(directory)/\(digest.hex)" }

    /// The page's bytes, if a copy is here and proves to be that page.
    public func page(_ digest: ChunkDigest) -> [UInt8]? {
        let file = path(digest)
        guard FileSystem.exists(file), let bytes = try? FileSystem.readAll(file, limit: IndexTree.pageBytes) else {
            return nil
        }
        guard bytes.count % ChunkDigest.byteCount == 0, ChunkHasher().digest(bytes) == digest else {
            CairnLog.logger.warning("the cached index page \(file) is damaged: it is removed and read from the store")
            try? FileSystem.remove(file)
            return nil
        }
        _ = utimes(file, nil)  // recently used: the last to go at `trim()`
        return bytes
    }

    /// Keeps a copy of a page (its plain bytes; `digest` their SHA-256). Never fails: a copy
    /// that cannot be written is only a request the next run makes.
    public func keep(_ digest: ChunkDigest, _ bytes: UnsafeRawBufferPointer) {
        let file = path(digest)
        guard bytes.count <= IndexTree.pageBytes, !FileSystem.exists(file) else { return }
        let temporary = FileSystem.temporaryName(for: file)
        do throws(CairnError) {
            try FileSystem.createDirectories(directory)
            let out = try File.open(temporary, .createOrTruncate)
            try out.write(bytes, at: 0)
            try FileSystem.rename(temporary, to: file)
        } catch {
            try? FileSystem.remove(temporary)
            CairnLog.logger.info("index page \(digest) not cached: \(error.message)")
        }
    }

    /// Removes the least recently used copies until at most `maxBytes` are kept (and
    /// unfinished copies of processes that are gone).
    public func trim() {
        guard let names = try? FileSystem.list(directory) else { return }
        var copies: [(name: String, used: Int, size: UInt64)] = []
        var total: UInt64 = 0
        for name in names {
            var info = stat()
            guard stat("\(directory)/\(name)", &info) == 0 else { continue }
            if name.hasPrefix(".") {
                if let pid = Int32(name.split(separator: "-").last ?? ""), pid != getpid(), kill(pid, 0) != 0 {
                    try? FileSystem.remove("\(directory)/\(name)")
                }
                continue
            }
            copies.append((name, info.st_mtim.tv_sec, UInt64(info.st_size)))
            total += UInt64(info.st_size)
        }
        guard total > maxBytes else { return }
        for copy in copies.sorted(by: { $0.used < $1.used }) where total > maxBytes {
            try? FileSystem.remove("\(directory)/\(copy.name)")
            total -= copy.size
        }
    }
}
