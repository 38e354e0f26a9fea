import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

@Suite struct TimestampTests {
    @Test(arguments: [
        (0 as Int64, "1970-01-01T00:00:00Z"), (951_782_400, "2000-02-29T00:00:00Z"),
        (1_795_662_000, "2026-11-26T03:00:00Z"), (4_107_542_399, "2100-02-28T23:59:59Z"),
    ])
    func formatsAndParses(seconds: Int64, text: String) {
        #expect(Timestamp(seconds: seconds).description == text)
        #expect(Timestamp(parsing: text) == Timestamp(seconds: seconds))
    }

    @Test func acceptsWhatPeopleType() {
        #expect(Timestamp(parsing: "2026-11-26") == Timestamp(parsing: "2026-11-26T00:00:00Z"))
        #expect(Timestamp(parsing: "2026-11-26 03:00") == Timestamp(parsing: "2026-11-26T03:00:00Z"))
        #expect(Timestamp(parsing: "2026-13-01") == nil)
        #expect(Timestamp(parsing: "yesterday") == nil)
        #expect(Timestamp(parsing: "2026-11-26T25:00") == nil)
    }

    @Test func restorePointIDs() {
        let id = RestorePointID(parsing: "vm-1.prod@2026-11-26T03:00:00Z")
        #expect(id?.group == "vm-1.prod")
        #expect(id?.description == "vm-1.prod@2026-11-26T03:00:00Z")
        #expect(RestorePointID(parsing: "../x@2026-11-26T03:00:00Z") == nil)
        #expect(RestorePointID(parsing: "vm") == nil)
    }
}

@Suite struct UnitsTests {
    @Test func sizes() {
        #expect(Units.parseSize("64K") == 65536)
        #expect(Units.parseSize("4MiB") == 4 << 20)
        #expect(Units.parseSize("1g") == 1 << 30)
        #expect(Units.parseSize("4096") == 4096)
        #expect(Units.parseSize("x") == nil)
        #expect(Units.parseSize("99999999999T") == nil)
    }

    @Test func durations() {
        #expect(Units.parseDuration("30s") == 30)
        #expect(Units.parseDuration("10m") == 600)
        #expect(Units.parseDuration("2h") == 7200)
        #expect(Units.parseDuration("45") == 45)
        #expect(Units.parseDuration("soon") == nil)
    }
}

@Suite struct CodecTests {
    @Test func sha256KnownAnswer() {
        #expect(
            SHA256Hasher().digest(Array("abc".utf8)).hex
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let zero = ChunkDigest(hex: ZeroBlock.digest.hex)
        #expect(zero == ZeroBlock.digest)
    }

    @Test func digestOrderIsByteOrder() {
        let a = ChunkDigest(hex: "00" + String(repeating: "ff", count: 31))!
        let b = ChunkDigest(hex: "01" + String(repeating: "00", count: 31))!
        #expect(a < b)
        #expect(a.prefix >> 56 == 0 && b.prefix >> 56 == 1)
    }

    @Test func zstdRoundTripAndIncompressible() throws {
        var gen = TestImage(seed: 5)
        let text = gen.textBytes(65536)
        let random = gen.randomBytes(65536)
        let encoder = ChunkEncoder(level: 3)
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.slotSize(rawLength: 65536), alignment: 64)
        defer { slot.deallocate() }
        for (bytes, compressible) in [(text, true), (random, false)] {
            let digest = SHA256Hasher().digest(bytes)
            let length = bytes.withUnsafeBytes { encoder.encode($0, digest: digest, kind: .data, into: slot) }.bytes
                .count
            let compression = slot[41]
            #expect(compression == (compressible ? 1 : 0))
            #expect((length < 65536 / 2) == compressible)
        }
    }

    @Test func zeroDetection() {
        var bytes = [UInt8](repeating: 0, count: 65536 + 3)
        #expect(bytes.withUnsafeBytes { $0.isAllZero })
        bytes[65538] = 1
        #expect(!bytes.withUnsafeBytes { $0.isAllZero })
        bytes[65538] = 0
        bytes[4097] = 9
        #expect(!bytes.withUnsafeBytes { $0.isAllZero })
    }
}

/// A repository made in-process, for tests of the store's formats.
func makeRepository(_ dir: TemporaryDirectory, blockSize: Int = 65536) throws -> Repository {
    try Repository.create(at: dir.file("repo"), blockSize: blockSize, compressionLevel: 3)
    return try Repository(path: dir.file("repo"))
}

@Suite struct ChunkStoreTests {
    /// Blocks compressed together in frame records come back one by one, in any order, through
    /// the index, through a rebuilt index, and through a record scan when the table is lost.
    @Test func frameRecordsRoundTrip() throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 9)
        let encoder = ChunkEncoder(level: 1)
        let blocks = (0..<40).map { i in i % 5 == 4 ? gen.randomBytes(65536) : gen.textBytes(i == 39 ? 4096 : 65536) }
        let digests = blocks.map { SHA256Hasher().digest($0) }
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.frameSlotSize(members: 16, rawLength: 16 * 65536), alignment: 64)
        defer { slot.deallocate() }
        // Frames of 16, 16 (gathered from scattered buffers) and 8 members; the first frame again adds nothing.
        var stored = 0
        var first: [UInt8] = []
        var writes = repo.store.beginWrite()
        for range in [0..<16, 16..<32, 32..<40] {
            let encoded = encoder.encodeFrame(count: range.count, into: slot) { k in
                blocks[range.lowerBound + k].withUnsafeBytes { ($0, digests[range.lowerBound + k]) }
            }
            let record = encoded.bytes
            #expect(encoded.members.map(\.digest) == Array(digests[range]))
            if range.lowerBound == 0 { first = Array(record) }
            #expect(record[40] == ChunkKind.frame.rawValue)
            stored += try writes.store(record: record).chunks
        }
        #expect(stored == 40)
        #expect(try first.withUnsafeBytes { try writes.store(record: $0).chunks } == 0)
        try writes.commit()

        func readAll(_ repository: Repository) throws {
            let reader = ChunkReader(store: repository.store)
            for i in (0..<40).shuffled() + Array(0..<40) {
                #expect(Array(try reader.read(digests[i])) == blocks[i])
            }
        }
        let reopened = try Repository(path: dir.file("repo"))
        let member = try #require(reopened.store.lookup(digests[20]))
        #expect(member.frameOffset == UInt32(4 * 65536))
        try readAll(reopened)

        // The pack's table lists members; a rebuild from it, or from the records, finds them all.
        let report = try reopened.store.rebuildIndex()
        #expect(report.chunks == 40)
        try readAll(try Repository(path: dir.file("repo")))
        let pack = try #require(try reopened.store.packFilesOnDisk().first)
        let path = reopened.store.packPath(pack)
        var bytes = try FileSystem.readAll(path, limit: 1 << 30)
        bytes[bytes.count - 60] ^= 0xff  // inside the table
        try FileSystem.writeAtomically(bytes, to: path)
        let scanned = try Repository(path: dir.file("repo")).store.rebuildIndex()
        #expect(scanned.packsScanned == [pack.hex] && scanned.chunks == 40)
        try readAll(try Repository(path: dir.file("repo")))

        // A flipped byte inside a frame's data is caught for the members that need it.
        let location = try #require(reopened.store.lookup(digests[3]))
        bytes[Int(location.offset) + 48 + 4 + 16 * 40 + 100] ^= 0x01
        try FileSystem.writeAtomically(bytes, to: path)
        let damaged = try Repository(path: dir.file("repo"))
        #expect(throws: CairnError.self) { try ChunkReader(store: damaged.store).read(digests[3]) }
    }

    @Test func storeCommitReopenAndRead() throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 6)
        let encoder = ChunkEncoder(level: 3)
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.slotSize(rawLength: 65536), alignment: 64)
        defer { slot.deallocate() }
        var chunks: [(ChunkDigest, [UInt8])] = []
        var writes = repo.store.beginWrite()
        for i in 0..<50 {
            let bytes = i % 2 == 0 ? gen.textBytes(65536) : gen.randomBytes(1000 + i)
            let digest = SHA256Hasher().digest(bytes)
            let n = bytes.withUnsafeBytes { encoder.encode($0, digest: digest, kind: .data, into: slot) }.bytes.count
            #expect(try writes.store(record: UnsafeRawBufferPointer(rebasing: slot[0..<n])).chunks == 1)
            // The same chunk again is not stored twice.
            #expect(try writes.store(record: UnsafeRawBufferPointer(rebasing: slot[0..<n])).chunks == 0)
            chunks.append((digest, bytes))
        }
        try writes.commit()

        let reopened = try Repository(path: dir.file("repo"))
        #expect(reopened.store.indexSegments.count == 1)
        let reader = ChunkReader(store: reopened.store)
        for (digest, bytes) in chunks {
            #expect(Array(try reader.read(digest)) == bytes)
        }
        let missing = SHA256Hasher().digest(Array("not stored".utf8))
        #expect(reopened.store.lookup(missing) == nil)
        #expect(throws: CairnError.self) { try reader.read(missing) }

        // The pack lists every record; its table survives a reread.
        let segment = reopened.store.indexSegments[0]
        try segment.checkIntegrity()
        let pack = try PackReader(path: "\(dir.file("repo"))/\(segment.packs[0].relativePath)", id: segment.packs[0])
        let table = try pack.readTable()
        #expect(Set(table.map(\.digest)) == Set(chunks.map(\.0)))
    }

    @Test func flippedByteInAPackIsCaught() throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 7)
        let bytes = gen.textBytes(65536)
        let digest = SHA256Hasher().digest(bytes)
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.slotSize(rawLength: 65536), alignment: 64)
        defer { slot.deallocate() }
        let n = bytes.withUnsafeBytes { ChunkEncoder(level: 3).encode($0, digest: digest, kind: .data, into: slot) }
            .bytes.count
        var writes = repo.store.beginWrite()
        try writes.store(record: UnsafeRawBufferPointer(rebasing: slot[0..<n]))
        try writes.commit()
        let location = try #require(repo.store.lookup(digest))
        let packPath = "\(dir.file("repo"))/\(location.pack.relativePath)"
        // Flip one byte in the middle of the record's payload.
        let file = try File.open(packPath, .readWrite)
        let at = location.offset + 48 + UInt64(location.storedLength / 2)
        var byte = try file.readBytes(count: 1, at: at)
        byte[0] ^= 0x10
        try file.write(byte, at: at)
        let reader = ChunkReader(store: try Repository(path: dir.file("repo")).store)
        let error = #expect(throws: CairnError.self) { try reader.read(digest) }
        #expect(error?.code == .damaged)
        #expect(error?.message.contains("CRC") == true)
    }

    @Test func indexSegmentLookupAndDamage() throws {
        let dir = TemporaryDirectory()
        var gen = TestImage(seed: 8)
        var entries: [(ChunkDigest, ChunkLocation)] = []
        let pack = PackID.random()
        for i in 0..<5000 {
            let d = ChunkDigest(bytes: gen.randomBytes(32))
            entries.append(
                (d, ChunkLocation(pack: pack, offset: UInt64(i * 100), storedLength: UInt32(i), rawLength: 65536)))
        }
        let path = dir.file("seg.idx")
        try IndexSegment.write(entries: entries, to: path)
        let segment = try IndexSegment(path: path)
        #expect(segment.entryCount == 5000)
        for (d, loc) in entries.prefix(500) { #expect(segment.lookup(d) == loc) }
        #expect(segment.lookup(ChunkDigest(bytes: gen.randomBytes(32))) == nil)
        try segment.checkIntegrity()

        let file = try File.open(path, .readWrite)
        var b = try file.readBytes(count: 1, at: 4000)
        b[0] ^= 1
        try file.write(b, at: 4000)
        #expect(throws: CairnError.self) { try IndexSegment(path: path).checkIntegrity() }
        try file.truncate(to: 3000)
        #expect(throws: CairnError.self) { try IndexSegment(path: path) }
    }

    /// Segments written before frame records (version 1, 48-byte entries) still read; frame
    /// offsets survive a version-2 round trip.
    @Test func indexSegmentVersionsOneAndTwo() throws {
        let dir = TemporaryDirectory()
        var gen = TestImage(seed: 12)
        let pack = PackID.random()
        var entries: [(ChunkDigest, ChunkLocation)] = []
        for i in 0..<300 {
            let frameOffset: UInt32? = i % 3 == 0 ? nil : UInt32(i % 32) * 65536
            let location = ChunkLocation(
                pack: pack, offset: UInt64(32 + i * 1000), storedLength: 900, rawLength: 65536,
                frameOffset: frameOffset)
            entries.append((ChunkDigest(bytes: gen.randomBytes(32)), location))
        }
        let path = dir.file("v2.idx")
        try IndexSegment.write(entries: entries, to: path)
        let v2 = try IndexSegment(path: path)
        for (d, loc) in entries { #expect(v2.lookup(d) == loc) }

        // The same entries as version 1 wrote them: 48 bytes each, no frame offset.
        let bytes = try FileSystem.readAll(path)
        let entriesStart = 32 + 16 + 1024
        var old = Array(bytes[0..<entriesStart])
        old.replaceSubrange(8..<12, with: [1, 0, 0, 0])
        for i in 0..<entries.count {
            let at = entriesStart + i * 52
            old += bytes[at..<(at + 48)]
        }
        let crc = CRC32.checksum(old)
        old += [UInt8(crc & 0xff), UInt8(crc >> 8 & 0xff), UInt8(crc >> 16 & 0xff), UInt8(crc >> 24)]
        old += [0, 0, 0, 0]
        old += Array("CAIRNIXE".utf8)
        let v1Path = dir.file("v1.idx")
        try FileSystem.writeAtomically(old, to: v1Path)
        let v1 = try IndexSegment(path: v1Path)
        try v1.checkIntegrity()
        for (d, loc) in entries where loc.frameOffset == nil { #expect(v1.lookup(d) == loc) }
    }

    @Test(arguments: [0, 1, 1023, 1024, 1025, 1024 * 1024 + 7])
    func indexTreeRoundTrip(blocks: Int) throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: UInt64(blocks))
        var digests: [ChunkDigest] = []
        digests.reserveCapacity(blocks)
        // Runs of equal digests, like a disk's zero blocks.
        for i in 0..<blocks { digests.append(i % 7 == 0 ? ZeroBlock.digest : ChunkDigest(bytes: gen.randomBytes(32))) }
        var writes = repo.store.beginWrite()
        let writer = IndexTreeWriter(store: repo.store, encoder: ChunkEncoder(level: 3))
        for d in digests { try writer.append(d, into: &writes) }
        let (root, depth) = try writer.finish(into: &writes)
        try writes.commit()
        #expect(depth == (blocks <= 1024 ? 1 : blocks <= 1024 * 1024 ? 2 : 3))

        let reader = try IndexTreeReader(
            reader: ChunkReader(store: repo.store), root: root, depth: depth, blockCount: UInt64(blocks))
        var index = 0
        while let d = try reader.next() {
            #expect(d == digests[index])
            index += 1
        }
        #expect(index == blocks)

        // The same digests give the same root: unchanged disks share their whole tree.
        var more = repo.store.beginWrite()
        let again = IndexTreeWriter(store: repo.store, encoder: ChunkEncoder(level: 3))
        for d in digests { try again.append(d, into: &more) }
        let (root2, _) = try again.finish(into: &more)
        #expect(root2 == root)
        #expect(again.pagesStored == 0)

        // Runs appended at once give the same tree as one by one.
        let runs = IndexTreeWriter(store: repo.store, encoder: ChunkEncoder(level: 3))
        var i = 0
        while i < blocks {
            var j = i
            while j < blocks && digests[j] == digests[i] { j += 1 }
            if j - i == 1 {
                try runs.append(digests[i], into: &more)
            } else {
                try runs.append(digests[i], count: UInt64(j - i), into: &more)
            }
            i = j
        }
        #expect(try runs.finish(into: &more).root == root)
    }

    @Test(arguments: [1023, 1024, 3000, 1024 * 1024, 1024 * 1024 + 1500])
    func repeatedAppendMatchesSingleAppends(run: Int) throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        let other = SHA256Hasher().digest(Array("x".utf8))
        var writes = repo.store.beginWrite()
        let single = IndexTreeWriter(store: repo.store, encoder: ChunkEncoder(level: 1))
        let batched = IndexTreeWriter(store: repo.store, encoder: ChunkEncoder(level: 1))
        // A few blocks, a long zero run, a few blocks: the run starts mid-page.
        for _ in 0..<5 {
            try single.append(other, into: &writes)
            try batched.append(other, into: &writes)
        }
        for _ in 0..<run { try single.append(ZeroBlock.digest, into: &writes) }
        try batched.append(ZeroBlock.digest, count: UInt64(run), into: &writes)
        for _ in 0..<7 {
            try single.append(other, into: &writes)
            try batched.append(other, into: &writes)
        }
        let a = try single.finish(into: &writes)
        let b = try batched.finish(into: &writes)
        #expect(a.root == b.root && a.depth == b.depth)
    }
}

@Suite struct ManifestTests {
    @Test func checksumCatchesAnyEdit() throws {
        let manifest = Manifest(
            format: 1, id: RestorePointID(parsing: "vm@2026-11-26T03:00:00Z")!, group: "vm",
            time: Timestamp(parsing: "2026-11-26T03:00:00Z")!, tool: "cairn test",
            repository: "r", blockSize: 65536,
            disks: [
                .init(
                    name: "d.img", size: 100, blockCount: 1, root: ZeroBlock.digest, depth: 1, zeroBlocks: 1,
                    changedBlocks: 0, source: SourceImageInfo(format: .raw, path: "/d.img", virtualSize: 100))
            ],
            stats: .init(bytesRead: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, seconds: 0.5), previous: nil)
        let bytes = try manifest.encoded()
        #expect(try Manifest.decode(bytes, path: "m") == manifest)
        for position in stride(from: 0, to: bytes.count - 1, by: 37) {
            var damaged = bytes
            damaged[position] ^= 0x01
            #expect(throws: CairnError.self) { try Manifest.decode(damaged, path: "m") }
        }
    }
}

@Suite struct RawImageTests {
    @Test func holesAreReportedWithoutReading() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("sparse.img")
        let file = try File.open(path, .createOrTruncate)
        try file.truncate(to: 16 << 20)
        try file.write([UInt8](repeating: 7, count: 1 << 20), at: 8 << 20)
        let image = try DiskImageOpener.open(path)
        #expect(image.virtualSize == 16 << 20)
        #expect(image.info.format == .raw)
        let head = try image.extent(at: 0, maxLength: 16 << 20)
        #expect(head.isZero && head.length == 8 << 20)
        let data = try image.extent(at: 8 << 20, maxLength: 16 << 20)
        #expect(!data.isZero && data.length == 1 << 20)
        let tail = try image.extent(at: 9 << 20, maxLength: 16 << 20)
        #expect(tail.isZero && tail.length == 7 << 20)
    }
}

@Suite struct CompactionTests {
    @Test func mergedIndexAnswersEveryLookupNewestFirst() throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 12)
        let encoder = ChunkEncoder(level: 1)
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.slotSize(rawLength: 65536), alignment: 64)
        defer { slot.deallocate() }
        var stored: [(ChunkDigest, [UInt8])] = []
        for _ in 0..<12 {
            var writes = repo.store.beginWrite()
            for _ in 0..<40 {
                let bytes = gen.randomBytes(2000)
                let digest = SHA256Hasher().digest(bytes)
                let n = bytes.withUnsafeBytes { encoder.encode($0, digest: digest, kind: .data, into: slot) }.bytes
                    .count
                try writes.store(record: UnsafeRawBufferPointer(rebasing: slot[0..<n]))
                stored.append((digest, bytes))
            }
            try writes.commit()
        }
        // A digest listed twice: an older segment points nowhere useful, the newest is right.
        let (dupDigest, _) = stored[0]
        let real = try #require(repo.store.lookup(dupDigest))
        var stale = real
        stale.offset += 1
        try IndexSegment.write(
            entries: [(dupDigest, stale)], to: "\(dir.file("repo"))/index/0000000000000000-00000000.idx")

        let reopened = try Repository(path: dir.file("repo"))
        #expect(reopened.store.indexSegments.count == 13)
        #expect(reopened.store.needsCompaction)
        #expect(try reopened.store.compactIndex() == 13)
        #expect(reopened.store.indexSegments.count == 1)
        try reopened.store.indexSegments[0].checkIntegrity()
        #expect(reopened.store.indexSegments[0].entryCount == stored.count)

        let again = try Repository(path: dir.file("repo"))
        #expect(try FileSystem.list("\(dir.file("repo"))/index").count == 1)
        let reader = ChunkReader(store: again.store)
        for (digest, bytes) in stored { #expect(Array(try reader.read(digest)) == bytes) }
        #expect(again.store.lookup(dupDigest) == real)
    }
}
