import CairnCore
import CairnS3
import CairnTestSupport
import Testing

@testable import CairnCore

/// What every `RepositoryStorage` promises, checked on each kind with the same code: a local
/// directory, and a prefix of a bucket on the real radosgw (`StorageKind.available`).
@Suite struct StorageConformanceTests {
    @Test(arguments: StorageKind.available)
    func stagedObjectsAreInvisibleUntilCommitted(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind)
        let storage = fixture.storage
        let a = try storage.stage("packs/ab/ab01.pack")
        let b = try storage.stage("packs/cd/cd02.pack")
        try a.append(Array("hello ".utf8))
        try a.append(Array("world".utf8))
        try b.append([1, 2, 3])
        #expect(a.size == 11)
        #expect(try storage.list(prefix: "packs/").isEmpty)
        #expect(!storage.exists("packs/ab/ab01.pack"))
        a.seal()
        b.seal()
        try storage.commit([a, b])
        #expect(try storage.list(prefix: "packs/") == ["packs/ab/ab01.pack", "packs/cd/cd02.pack"])
        #expect(try storage.list(prefix: "packs/ab") == ["packs/ab/ab01.pack"])
        #expect(try storage.list(prefix: "index/").isEmpty)
        #expect(storage.exists("packs/ab/ab01.pack"))
        #expect(try storage.read("packs/ab/ab01.pack", count: 5, at: 6) == Array("world".utf8))
        #expect(try storage.open("packs/cd/cd02.pack").size == 3)
    }

    @Test(arguments: StorageKind.available)
    func rangedReadsStopAtTheEnd(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind)
        let storage = fixture.storage
        var gen = TestImage(seed: 3)
        let bytes = gen.randomBytes(300_000)
        let object = try storage.stage("packs/ee/ee01.pack")
        try object.append(Array(bytes[..<100_000]))
        try object.append(Array(bytes[100_000...]))
        try storage.commit([object])
        let stored = try storage.open("packs/ee/ee01.pack")
        #expect(stored.size == 300_000)
        #expect(try stored.readBytes(count: 1000, at: 123_456) == Array(bytes[123_456..<124_456]))
        #expect(try stored.readBytes(count: 1000, at: 299_500) == Array(bytes[299_500...]))
        #expect(try stored.readBytes(count: 10, at: 300_000).isEmpty)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = try buffer.withUnsafeMutableBytes { try stored.read(into: $0, at: 200_000) }
        #expect(n == 4096 && buffer == Array(bytes[200_000..<204_096]))
        let mapped = try storage.map("packs/ee/ee01.pack")
        #expect(Array(mapped.bytes) == bytes)
    }

    @Test(arguments: StorageKind.available)
    func abandonedObjectsLeaveNothing(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind)
        let storage = fixture.storage
        let object = try storage.stage("index/x.idx")
        try object.append([0, 1])
        storage.abandon(object)
        #expect(try storage.list(prefix: "").isEmpty)
        #expect(!storage.exists("index/x.idx"))
        #expect(storage.removeLeftovers(dryRun: false) == 0)
    }

    @Test(arguments: StorageKind.available)
    func createOnlyNeverReplaces(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind)
        let storage = fixture.storage
        try storage.publish([1], as: "points/vm/a.manifest", .createOnly)
        let error = #expect(throws: CairnError.self) {
            try storage.publish([2], as: "points/vm/a.manifest", .createOnly)
        }
        #expect(error?.code == .exists)
        #expect(try storage.read("points/vm/a.manifest", count: 10, at: 0) == [1])
        try storage.publish([3], as: "points/vm/a.manifest", .replace)
        #expect(try storage.read("points/vm/a.manifest", count: 10, at: 0) == [3])
        #expect(try storage.list(prefix: "points/") == ["points/vm/a.manifest"])
    }

    @Test(arguments: StorageKind.available)
    func deleteIgnoresMissingKeys(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind)
        let storage = fixture.storage
        for key in ["packs/ab/ab01.pack", "packs/ab/ab02.pack", "index/1.idx"] {
            let object = try storage.stage(key)
            try object.append([7])
            try storage.commit([object])
        }
        try storage.delete(["packs/ab/ab01.pack"])
        #expect(try storage.list(prefix: "") == ["index/1.idx", "packs/ab/ab02.pack"])
        try storage.delete(["packs/ab/ab02.pack", "index/1.idx", "index/missing.idx"])
        #expect(try storage.list(prefix: "").isEmpty)
        let error = #expect(throws: CairnError.self) { try storage.open("index/1.idx") }
        #expect(error != nil)
    }

    /// The repository's own objects through the seam: a pack of chunk records written by
    /// `PackWriter` and committed, an index segment written by `IndexSegment.write`, then the
    /// index loaded (listed and mapped) and every record read back by its location and checked
    /// (CRC, digest).
    @Test(arguments: StorageKind.available)
    func packsAndIndexSegmentsRoundTrip(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "packs")
        let storage = fixture.storage
        var gen = TestImage(seed: 9)
        let chunks = (0..<24).map { i in
            i % 2 == 0 ? gen.randomBytes(20_000) : [UInt8](repeating: UInt8(i), count: 30_000)
        }
        let writer = try PackWriter(in: storage)
        let encoder = ChunkEncoder(level: 1)
        var entries: [(ChunkDigest, ChunkLocation)] = []
        for chunk in chunks {
            let digest = SHA256Hasher().digest(chunk)
            var slot = [UInt8](repeating: 0, count: ChunkEncoder.slotSize(rawLength: chunk.count))
            let table = try chunk.withUnsafeBytes { raw in
                try slot.withUnsafeMutableBytes { out in
                    try writer.append(record: encoder.encode(raw, digest: digest, kind: .data, into: out))
                }
            }
            entries += table.map { ($0.digest, $0.location(in: writer.id)) }
        }
        try writer.finish()
        try storage.commit([writer.object])
        try IndexSegment.write(entries: entries, as: "index/0001.idx", in: storage)

        let index = try ChunkIndex.load(from: storage)
        let reader = try PackReader(id: writer.id, in: storage)
        #expect(try reader.readTable().count == chunks.count)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for chunk in chunks {
            let digest = SHA256Hasher().digest(chunk)
            let location = try #require(index.lookup(digest))
            let record = try buffer.withUnsafeMutableBytes {
                try reader.readRecord(
                    at: location.offset, storedLength: Int(location.storedLength), expected: digest, into: $0)
            }
            #expect(record.header.digest == digest && record.header.rawLength == chunk.count)
        }
    }
}
