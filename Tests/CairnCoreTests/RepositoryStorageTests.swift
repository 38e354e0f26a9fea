import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// The storage seam: what `LocalDirectoryStorage` promises, which an object store must promise too.
@Suite struct LocalDirectoryStorageTests {
    @Test func stagedObjectsAreInvisibleUntilCommitted() throws {
        let dir = TemporaryDirectory()
        let storage = LocalDirectoryStorage(root: dir.path)
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
        #expect(try storage.read("packs/ab/ab01.pack", count: 5, at: 6) == Array("world".utf8))
        #expect(try storage.open("packs/cd/cd02.pack").size == 3)
        // Nothing left under a temporary name.
        #expect(try FileSystem.list(dir.file("packs/ab")) == ["ab01.pack"])
    }

    @Test func abandonedObjectsLeaveNothing() throws {
        let dir = TemporaryDirectory()
        let storage = LocalDirectoryStorage(root: dir.path)
        let object = try storage.stage("index/x.idx")
        try object.append([0, 1])
        storage.abandon(object)
        #expect(try FileSystem.list(dir.file("index")).isEmpty)
        #expect(storage.removeLeftovers(dryRun: false) == 0)
    }

    @Test func createOnlyNeverReplaces() throws {
        let dir = TemporaryDirectory()
        let storage = LocalDirectoryStorage(root: dir.path)
        try storage.publish([1], as: "points/vm/a.manifest", .createOnly)
        let error = #expect(throws: CairnError.self) {
            try storage.publish([2], as: "points/vm/a.manifest", .createOnly)
        }
        #expect(error?.code == .exists)
        #expect(try storage.read("points/vm/a.manifest", count: 10, at: 0) == [1])
        try storage.publish([3], as: "points/vm/a.manifest", .replace)
        #expect(try storage.read("points/vm/a.manifest", count: 10, at: 0) == [3])
        // Neither left a temporary file behind.
        #expect(try FileSystem.list(dir.file("points/vm")) == ["a.manifest"])
    }

    @Test func deleteRemovesEmptiedFanOutDirectoriesOnly() throws {
        let dir = TemporaryDirectory()
        let storage = LocalDirectoryStorage(root: dir.path)
        for key in ["packs/ab/ab01.pack", "packs/ab/ab02.pack", "index/1.idx"] {
            let object = try storage.stage(key)
            try object.append([7])
            try storage.commit([object])
        }
        try storage.delete(["packs/ab/ab01.pack"])
        #expect(FileSystem.isDirectory(dir.file("packs/ab")))
        try storage.delete(["packs/ab/ab02.pack", "index/1.idx", "index/missing.idx"])
        #expect(!FileSystem.exists(dir.file("packs/ab")))
        #expect(FileSystem.isDirectory(dir.file("packs")))
        #expect(FileSystem.isDirectory(dir.file("index")))
        #expect(try storage.list(prefix: "").isEmpty)
    }
}

@Suite struct IndexSegmentEncoderTests {
    /// A pack offset a segment's 32-bit field cannot hold is an error, not a trap (and not a
    /// silently truncated location); found without writing 4 GiB by giving the encoder one.
    @Test func offsetBeyondFourGiBThrows() throws {
        let dir = TemporaryDirectory()
        let storage = LocalDirectoryStorage(root: dir.path)
        let pack = PackID.random()
        let digest = SHA256Hasher().digest(Array("far".utf8))
        var counts = [Int](repeating: 0, count: 256)
        counts[Int(digest.prefix >> 56)] = 1
        let object = try storage.stage("index/far.idx")
        defer { storage.abandon(object) }
        var encoder = try IndexSegmentEncoder(packs: [pack], fanoutCounts: counts, into: object)
        let far = ChunkLocation(pack: pack, offset: 1 << 32, storedLength: 100, rawLength: 100)
        let error = #expect(throws: CairnError.self) { try encoder.append(digest, far) }
        #expect(error?.code == .repository)
        #expect(error?.message.contains("4 GiB") == true)
        // The last offset a segment can address still works.
        let last = ChunkLocation(pack: pack, offset: UInt64(UInt32.max), storedLength: 100, rawLength: 100)
        try encoder.append(digest, last)
        try encoder.finish()
        try storage.commit([object])
        let segment = try IndexSegment(key: "index/far.idx", in: storage)
        #expect(segment.lookup(digest) == last)
        try segment.checkIntegrity()
    }

    /// The in-memory writer (backup, gc, rebuild) and the streaming merge (compaction) share the
    /// encoder: a merged segment passes its CRC and answers every lookup of its inputs.
    @Test func compactionWritesThroughTheSameEncoder() throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 21)
        let packs = [PackID.random(), PackID.random()]
        let entries = (0..<3000).map { i in
            (
                ChunkDigest(bytes: gen.randomBytes(32)),
                ChunkLocation(
                    pack: packs[i % 2], offset: UInt64(i) * 5000, storedLength: 4000, rawLength: 65536,
                    frameOffset: i % 3 == 0 ? UInt32(i) : nil)
            )
        }
        let storage = repo.storage
        try IndexSegment.write(entries: Array(entries[..<1500]), as: "index/1.idx", in: storage)
        try IndexSegment.write(entries: Array(entries[1500...]), as: "index/2.idx", in: storage)
        let reopened = try Repository(path: dir.file("repo"))
        #expect(try reopened.store.compactIndex() == 2)
        let merged = try #require(reopened.store.indexSegments.first)
        try merged.checkIntegrity()
        #expect(merged.entryCount == entries.count)
        #expect(try ChunkIndex.segmentKeys(in: storage) == [merged.key])
        for (digest, location) in entries { #expect(merged.lookup(digest) == location) }
    }
}

@Suite struct ChunkWriteTransactionTests {
    func record(_ bytes: [UInt8]) -> [UInt8] {
        var slot = [UInt8](repeating: 0, count: ChunkEncoder.slotSize(rawLength: bytes.count))
        let digest = SHA256Hasher().digest(bytes)
        let n = bytes.withUnsafeBytes { raw in
            slot.withUnsafeMutableBytes {
                ChunkEncoder(level: 1).encode(raw, digest: digest, kind: .data, into: $0).bytes.count
            }
        }
        return Array(slot[0..<n])
    }

    /// An abandoned transaction, or one dropped unfinished by an error, leaves no pack, no
    /// segment and no chunk findable; a committed one is seen by a new process.
    @Test(arguments: [false, true])
    func uncommittedWritesLeaveNothing(explicitly: Bool) throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 5)
        let bytes = gen.randomBytes(5000)
        let digest = SHA256Hasher().digest(bytes)
        do {
            var writes = repo.store.beginWrite()
            #expect(try record(bytes).withUnsafeBytes { try writes.store(record: $0).chunks } == 1)
            #expect(repo.store.contains(digest), "the job's own lookups see what it stored")
            if explicitly { writes.abandon() }
        }
        #expect(!repo.store.contains(digest))
        #expect(try repo.storage.list(prefix: "packs/").isEmpty)
        #expect(try repo.storage.list(prefix: "index/").isEmpty)
        let files = (FileManager.default.subpaths(atPath: dir.file("repo/packs")) ?? []).filter {
            !FileSystem.isDirectory(dir.file("repo/packs/\($0)"))
        }
        #expect(files.isEmpty, "no temporary pack is left")

        var writes = repo.store.beginWrite()
        _ = try record(bytes).withUnsafeBytes { try writes.store(record: $0) }
        #expect(writes.chunksWritten == 1)
        try writes.commit()
        let reopened = try Repository(path: dir.file("repo"))
        #expect(reopened.store.contains(digest))
        #expect(try reopened.store.packFilesOnDisk().count == 1)
    }
}

/// `--repo`: a directory, or `s3://BUCKET[/PREFIX]`, parsed in one place.
@Suite struct RepositoryLocationTests {
    @Test func directoriesAndObjectStores() throws {
        #expect(try RepositoryLocation(parsing: "/srv/cairn") == .directory("/srv/cairn"))
        #expect(try RepositoryLocation(parsing: "cairn-repo") == .directory("cairn-repo"))
        #expect(try RepositoryLocation(parsing: "s3://backups") == .objectStore(bucket: "backups", prefix: ""))
        #expect(try RepositoryLocation(parsing: "s3://backups/") == .objectStore(bucket: "backups", prefix: ""))
        #expect(
            try RepositoryLocation(parsing: "s3://backups/site-a/cairn")
                == .objectStore(bucket: "backups", prefix: "site-a/cairn/"))
        #expect(
            try RepositoryLocation(parsing: "s3://backups/site-a/").description == "s3://backups/site-a/")
    }

    @Test(arguments: [
        "s3://", "s3://ab", "s3://Backups", "s3://-x-bucket", "s3://bucket./p", "s3://bucket//p",
        "s3://bucket/a/../b", "s3://bucket/./a", "s3://bucket/a?b",
    ])
    func malformedObjectStoreLocationsAreUsageErrors(text: String) {
        #expect(throws: CairnError.self) { try RepositoryLocation(parsing: text) }
        do throws(CairnError) {
            _ = try RepositoryLocation(parsing: text)
        } catch {
            #expect(error.code == .usage && error.message.contains("expected s3://BUCKET"))
        }
    }
}
