import CairnCore
import CairnS3
import Synchronization
import Testing

/// The shared read-ahead of an S3 repository, over objects held in memory: every read returns
/// the object's own bytes whatever was kept before, in-order readers cost one fetch per window
/// each even when several interleave, and what is kept stays bounded. (The GETs a real restore
/// saves are counted against radosgw in `ObjectStoreCLITests`.)
struct ReadWindowsTests {
    /// Objects of deterministic bytes, and the ranges fetched from them.
    final class Objects: Sendable {
        let contents: [String: [UInt8]]
        let fetched = Mutex<[(String, Range<UInt64>)]>([])

        init(_ sizes: [String: Int]) {
            var contents: [String: [UInt8]] = [:]
            for (n, (key, size)) in sizes.sorted(by: { $0.key < $1.key }).enumerated() {
                var x = UInt64(n + 1) &* 0x9E37_79B9_7F4A_7C15
                contents[key] = (0..<size).map { _ in
                    x ^= x << 13
                    x ^= x >> 7
                    x ^= x << 17
                    return UInt8(truncatingIfNeeded: x)
                }
            }
            self.contents = contents
        }

        func fetch(_ key: String, _ range: Range<UInt64>) throws(CairnError) -> [UInt8] {
            fetched.withLock { $0.append((key, range)) }
            guard let bytes = contents[key], range.upperBound <= UInt64(bytes.count) else {
                throw CairnError(.io, "fetch beyond \(key)")
            }
            return Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)])
        }

        var fetchCount: Int { fetched.withLock { $0.count } }

        func read(_ windows: ReadWindows, _ key: String, count: Int, at offset: Int) throws -> [UInt8] {
            let size = UInt64(contents[key]!.count)
            var out = [UInt8](repeating: 0xEE, count: count)
            let n = try out.withUnsafeMutableBytes { buffer in
                try windows.read(key, size: size, into: buffer, at: UInt64(offset)) { range throws(CairnError) in
                    try fetch(key, range)
                }
            }
            return Array(out[0..<n])
        }

        func expected(_ key: String, count: Int, at offset: Int) -> [UInt8] {
            let bytes = contents[key]!
            guard offset < bytes.count else { return [] }
            return Array(bytes[offset..<min(bytes.count, offset + count)])
        }
    }

    @Test func everyReadReturnsTheObjectsOwnBytes() throws {
        let objects = Objects(["a": 300_000, "b": 70_001, "c": 5])
        let windows = ReadWindows(windowBytes: 65_536, slots: 3)
        var x: UInt64 = 12345
        func next(_ bound: Int) -> Int {
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((x >> 33) % UInt64(bound))
        }
        for _ in 0..<2000 {
            let key = ["a", "b", "c"][next(3)]
            let size = objects.contents[key]!.count
            let offset = next(size + 10)
            let count = [1, 17, 4096, 65_535, 65_536, 200_000][next(6)]
            let got = try objects.read(windows, key, count: count, at: offset)
            #expect(got == objects.expected(key, count: count, at: offset), "\(key) \(count) at \(offset)")
        }
    }

    @Test func interleavedInOrderReadersCostOneFetchPerWindowEach() throws {
        let size = 1 << 20
        let objects = Objects(["p1": size, "p2": size, "p3": size])
        let windows = ReadWindows(windowBytes: 128 << 10, slots: 4)
        let record = 10_000
        var offset = 0
        while offset < size {
            for key in ["p1", "p2", "p3"] {
                #expect(
                    try objects.read(windows, key, count: record, at: offset)
                        == objects.expected(key, count: record, at: offset))
            }
            offset += record
        }
        // A record that straddles a window's end starts the next window, so a window holds
        // whole records only: at most size / (window - record) + 1 fetches per reader.
        let perReader = size / ((128 << 10) - record) + 1
        #expect(objects.fetchCount <= 3 * perReader, "\(objects.fetchCount) fetches")
        #expect(windows.counts.hits >= 3 * (size / record) - objects.fetchCount)
    }

    @Test func aReadAsLargeAsAWindowIsFetchedExactlyAndNotKept() throws {
        let objects = Objects(["big": 1 << 20])
        let windows = ReadWindows(windowBytes: 64 << 10, slots: 2)
        _ = try objects.read(windows, "big", count: 100, at: 0)
        #expect(objects.fetched.withLock { $0.last!.1 } == 0..<(64 << 10))
        _ = try objects.read(windows, "big", count: 200 << 10, at: 300_000)
        #expect(objects.fetched.withLock { $0.last!.1 } == 300_000..<(300_000 + (200 << 10)))
        // The small window is still there: the next small read at its start costs nothing.
        let before = objects.fetchCount
        _ = try objects.read(windows, "big", count: 100, at: 50)
        #expect(objects.fetchCount == before)
    }

    @Test func theLeastRecentlyUsedWindowGoesAndForgottenKeysAreFetchedAgain() throws {
        let objects = Objects(["a": 1 << 20, "b": 1 << 20, "c": 1 << 20])
        let windows = ReadWindows(windowBytes: 4096, slots: 2)
        _ = try objects.read(windows, "a", count: 10, at: 0)
        _ = try objects.read(windows, "b", count: 10, at: 0)
        _ = try objects.read(windows, "a", count: 10, at: 100)  // a is now the newest
        _ = try objects.read(windows, "c", count: 10, at: 0)  // b goes
        #expect(objects.fetchCount == 3)
        _ = try objects.read(windows, "a", count: 10, at: 200)
        #expect(objects.fetchCount == 3)
        _ = try objects.read(windows, "b", count: 10, at: 0)
        #expect(objects.fetchCount == 4)
        windows.forget("a")
        _ = try objects.read(windows, "a", count: 10, at: 0)
        #expect(objects.fetchCount == 5)
    }

    @Test func aFailedFetchKeepsNothingAndIsReported() throws {
        let windows = ReadWindows(windowBytes: 4096, slots: 2)
        var buffer = [UInt8](repeating: 0, count: 10)
        #expect(throws: CairnError.self) {
            try buffer.withUnsafeMutableBytes { out in
                try windows.read("x", size: 100, into: out, at: 0) { _ throws(CairnError) in
                    throw CairnError(.io, "GET failed")
                }
            }
        }
        #expect(windows.counts.fetches == 0)
        let n = try buffer.withUnsafeMutableBytes { out in
            try windows.read("x", size: 100, into: out, at: 95) { range throws(CairnError) in
                [UInt8](repeating: 7, count: range.count)
            }
        }
        #expect(n == 5 && buffer[0..<5].allSatisfy { $0 == 7 })
    }
}
