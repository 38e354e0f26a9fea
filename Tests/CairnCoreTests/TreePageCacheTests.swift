import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The host's copies of index pages: a copy is used only if it proves to be its page, a
/// damaged one is removed, and the cache stays within its bound, least recently used first.
struct TreePageCacheTests {
    let dir = TemporaryDirectory()

    func page(_ seed: UInt8, digests: Int = 1024) -> (ChunkDigest, [UInt8]) {
        let bytes = (0..<(digests * 32)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed) &* 131) }
        return (ChunkHasher().digest(bytes), bytes)
    }

    @Test func aKeptPageComesBackAndADamagedOneIsDropped() throws {
        let cache = TreePageCache(directory: dir.file("pages"))
        let (digest, bytes) = page(1)
        #expect(cache.page(digest) == nil)
        bytes.withUnsafeBytes { cache.keep(digest, $0) }
        #expect(cache.page(digest) == bytes)

        // One flipped byte: not that page any more.
        let file = dir.file("pages/\(digest.hex)")
        var damaged = bytes
        damaged[100] ^= 1
        try Data(damaged).write(to: URL(fileURLWithPath: file))
        #expect(cache.page(digest) == nil)
        #expect(!FileManager.default.fileExists(atPath: file), "a damaged copy is removed")

        // Not a whole number of digests, or larger than any page: never read as a page.
        try Data(bytes.prefix(33)).write(to: URL(fileURLWithPath: file))
        #expect(cache.page(digest) == nil)
        try Data(bytes + bytes).write(to: URL(fileURLWithPath: file))
        #expect(cache.page(digest) == nil)
    }

    @Test func trimKeepsTheMostRecentlyUsedWithinTheBound() throws {
        let size = UInt64(1024 * 32)
        let cache = TreePageCache(directory: dir.file("pages"), maxBytes: 3 * size)
        var digests: [ChunkDigest] = []
        for seed in 0..<5 {
            let (digest, bytes) = page(UInt8(seed))
            bytes.withUnsafeBytes { cache.keep(digest, $0) }
            // Ages a second apart, oldest first.
            let file = dir.file("pages/\(digest.hex)")
            try FileManager.default.setAttributes(
                [.modificationDate: Date(timeIntervalSinceNow: Double(seed - 10))], ofItemAtPath: file)
            digests.append(digest)
        }
        _ = cache.page(digests[0])  // used now: the newest
        cache.trim()
        let kept = try FileManager.default.contentsOfDirectory(atPath: dir.file("pages")).count
        #expect(kept == 3)
        #expect(cache.page(digests[0]) != nil && cache.page(digests[4]) != nil && cache.page(digests[3]) != nil)
        #expect(cache.page(digests[1]) == nil && cache.page(digests[2]) == nil)
    }
}
