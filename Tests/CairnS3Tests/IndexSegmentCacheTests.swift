import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import NIOHTTP1
import Synchronization
import Testing

/// The per-host cache of index segments on the real radosgw: a second backup downloads no
/// segment it has, a damaged copy is replaced, copies of deleted segments go. Requests are
/// counted by `S3Client.Options.onRequest`.
@Suite(.enabled(if: S3TestStore.runs, "no S3 store configured (CAIRN_TEST_S3_ENDPOINT)"))
final class IndexSegmentCacheTests {
    let dir = TemporaryDirectory()
    let prefix = S3TestStore.uniquePrefix("cache")
    let segmentGets = SegmentGets()
    let plain: S3Storage

    init() throws {
        plain = S3Storage(client: try S3TestStore.client(), bucket: S3TestStore.bucket, prefix: prefix)
    }

    deinit {
        if let keys = try? plain.list(prefix: "") { try? plain.delete(keys) }
    }

    /// A storage as one run on a host would open it, with the cache `cache` and its own client.
    func storage(cache: String) throws -> S3Storage {
        let counter = segmentGets
        let client = try S3TestStore.client { options in
            options.onRequest = { method, path in counter.saw(method, path) }
        }
        return S3Storage(client: client, bucket: S3TestStore.bucket, prefix: prefix, cacheDirectory: cache)
    }

    /// Segment GETs since the last call.
    func takeSegmentGets() -> Int { segmentGets.take() }

    func writeImage(_ seed: UInt8) throws -> String {
        let path = dir.file("vm.raw")
        var bytes = [UInt8](repeating: 0, count: 2 << 20)
        for i in stride(from: 0, to: bytes.count, by: 7) { bytes[i] = UInt8(truncatingIfNeeded: i / 4096) &+ seed }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// One nightly backup, as a new process would run it.
    func backup(_ seed: UInt8, cache: String) throws {
        let repository = try Repository(storage: try storage(cache: cache))
        _ = try BackupJob(repository: repository, group: "vm", sources: [BackupSource(path: try writeImage(seed))])
            .run()
    }

    func segmentKeys() throws -> [String] { try plain.list(prefix: "index/") }

    func cachedNames(_ cache: String) throws -> [String] {
        let storage = try storage(cache: cache)
        return try FileSystem.list(try #require(storage.cache).directory)
    }

    @Test func aSecondBackupDownloadsNoSegmentItHas() throws {
        let cache = dir.file("cache-hv1")
        try Repository.create(
            in: plain, blockSize: 64 << 10, compressionLevel: 1, features: [FormatFeature.objectStore])
        try backup(1, cache: cache)
        // The segment this host wrote was kept as it was sent: nothing to download.
        #expect(takeSegmentGets() == 0)
        #expect(try segmentKeys().count == 1)
        try backup(2, cache: cache)
        #expect(takeSegmentGets() == 0, "the second backup downloaded segments it had")
        let keys = try segmentKeys()
        #expect(keys.count == 2)
        #expect(try cachedNames(cache) == keys.map { FileSystem.baseName($0) }.sorted())
        for key in keys {
            let copy = try FileSystem.readAll(
                "\(try #require(try storage(cache: cache).cache).directory)/\(FileSystem.baseName(key))")
            #expect(copy == (try plain.readIfPresent(key, limit: 1 << 30)))
        }

        // Another host, with an empty cache, downloads each segment once, then never again.
        let other = dir.file("cache-hv2")
        try backup(3, cache: other)
        #expect(takeSegmentGets() == 2)
        try backup(4, cache: other)
        #expect(takeSegmentGets() == 0)

        // A segment deleted from the store (as compaction or gc does) leaves the cache at the
        // next listing.
        let gone = try #require(try segmentKeys().first)
        try plain.delete([gone])
        _ = try Repository(storage: try storage(cache: cache))
        let names = try cachedNames(cache)
        #expect(!names.contains(FileSystem.baseName(gone)))
        #expect(names == (try segmentKeys()).map { FileSystem.baseName($0) }.sorted())
        #expect(!names.contains { $0.hasPrefix(".") })
    }

    enum Damage: String, CaseIterable, CustomTestStringConvertible {
        case truncated, badMagic, longer, empty
        var testDescription: String { rawValue }
    }

    @Test(arguments: Damage.allCases)
    func aDamagedCachedCopyIsDownloadedAgain(damage: Damage) throws {
        let cache = dir.file("cache")
        try Repository.create(
            in: plain, blockSize: 64 << 10, compressionLevel: 1, features: [FormatFeature.objectStore])
        try backup(1, cache: cache)
        _ = takeSegmentGets()
        let key = try #require(try segmentKeys().first)
        let path = "\(try #require(try storage(cache: cache).cache).directory)/\(FileSystem.baseName(key))"
        let good = try FileSystem.readAll(path)
        var bad = good
        switch damage {
        case .truncated: bad.removeLast(100)
        case .badMagic: bad[0] ^= 0xFF
        case .longer: bad += [0, 1, 2]
        case .empty: bad = []
        }
        try FileSystem.remove(path)
        try Data(bad).write(to: URL(fileURLWithPath: path))

        let repository = try Repository(storage: try storage(cache: cache))
        #expect(repository.store.damagedSegments.isEmpty, "\(repository.store.damagedSegments)")
        #expect(repository.store.indexSegments.count == 1)
        #expect(takeSegmentGets() == 1)
        #expect(try FileSystem.readAll(path) == good)
        // And the next run maps it again without a download.
        _ = try Repository(storage: try storage(cache: cache))
        #expect(takeSegmentGets() == 0)
    }
}

/// GETs of objects under `index/` since the last `take()`, counted on the clients' threads.
final class SegmentGets: Sendable {
    private let count = Atomic<Int>(0)

    func saw(_ method: HTTPMethod, _ path: String) {
        if method == .GET, path.contains("/index/") { count.wrappingAdd(1, ordering: .relaxed) }
    }

    func take() -> Int { count.exchange(0, ordering: .relaxed) }
}
