import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// A repository with two restore points (vm1: a.img and b.img; vm2: b.img), archived in memory.
final class ArchiveFixture {
    let dir = TemporaryDirectory("cairn-archive")
    let repository: Repository
    let ids: [RestorePointID]
    var a: String { dir.file("a.img") }
    var b: String { dir.file("b.img") }

    init(chunkBlockSize: Int = 64 << 10) throws {
        var gen = TestImage(seed: 21)
        try gen.makeImage(at: dir.file("a.img"), size: 6 << 20, extent: 200 << 10, stride: 512 << 10)
        try gen.makeImage(at: dir.file("b.img"), size: (3 << 20) + 4321, extent: 100 << 10, stride: 256 << 10)
        try Repository.create(at: dir.file("repo"), blockSize: chunkBlockSize, compressionLevel: 3)
        repository = try Repository(path: dir.file("repo"))
        let first = try BackupJob(
            repository: repository, group: "vm1",
            sources: [BackupSource(path: dir.file("a.img")), BackupSource(path: dir.file("b.img"))]
        ).run()
        let second = try BackupJob(
            repository: repository, group: "vm2", sources: [BackupSource(path: dir.file("b.img"))]
        ).run()
        ids = [first.id, second.id]
    }

    func write(blockSize: Int = 64 << 10, volumeSize: UInt64? = nil) throws -> [[UInt8]] {
        let sink = MemorySink()
        let writer = ArchiveWriter(repository: repository, ids: ids, sink: sink)
        writer.blockSize = blockSize
        writer.volumeSize = volumeSize
        _ = try writer.run()
        return sink.volumes
    }

    static func sources(_ volumes: [[UInt8]]) -> [any ArchiveByteSource] {
        volumes.enumerated().map { MemoryByteSource($0.element, name: "vol\($0.offset + 1)") }
    }

    /// Restores `disk` of point `index` from `volumes` and returns the output's SHA-256.
    func restore(_ volumes: [[UInt8]], point index: Int, disk: String, runLimit: Int? = nil) throws -> String {
        let out = dir.file("out-\(UUID().uuidString).img")
        var request = ArchiveRestoreRequest(point: .id(ids[index]), disk: disk, destination: out)
        request.force = true
        let restore = ArchiveRestore(sources: Self.sources(volumes), request: request)
        if let runLimit { restore.digestTableRunLimit = runLimit }
        _ = try restore.run()
        return try TestImage.sha256(of: out)
    }
}

/// Recomputes a block's payload and header CRCs after a test edited it (a forger's archive).
func reseal(_ volume: inout [UInt8], block: Int, blockSize: Int) {
    volume.withUnsafeMutableBytes { raw in
        let b = UnsafeMutableRawBufferPointer(rebasing: raw[block * blockSize..<(block + 1) * blockSize])
        let length = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 48, as: UInt32.self)))
        let payload = UnsafeRawBufferPointer(rebasing: b[64..<64 + length])
        b.storeBytes(of: CRC32.checksum(payload).littleEndian, toByteOffset: 56, as: UInt32.self)
        b.storeBytes(
            of: CRC32.checksum(UnsafeRawBufferPointer(rebasing: b[0..<60])).littleEndian, toByteOffset: 60,
            as: UInt32.self)
    }
}

@Suite struct ArchiveFormatTests {
    @Test func blockHeaderRoundTripAndEveryByteIsChecked() {
        let header = ArchiveBlockHeader(
            blockSize: 65536, archive: ArchiveID(high: 0x0102_0304_0506_0708, low: 0x090a_0b0c_0d0e_0f10), volume: 3,
            flags: [.catalog, .endOfVolume], sequence: 77, payloadLength: 100, firstRecordOffset: 12,
            payloadCRC: 0xdead_beef)
        var bytes = [UInt8](repeating: 0, count: 64)
        bytes.withUnsafeMutableBytes { header.store(into: $0) }
        #expect(Array(bytes[0..<8]) == Array("CAIRNARC".utf8))
        let parsed = bytes.withUnsafeBytes { ArchiveBlockHeader.parse($0) }
        #expect((try? parsed.get()) == header)
        for i in 10..<64 {
            var damaged = bytes
            damaged[i] ^= 0x40
            let result = damaged.withUnsafeBytes { ArchiveBlockHeader.parse($0) }
            #expect((try? result.get()) == nil, "byte \(i) flipped unnoticed")
        }
        var future = bytes
        future[8] = 2
        if case .failure(let box) = future.withUnsafeBytes({ ArchiveBlockHeader.parse($0) }) {
            #expect(box.failure == .unknownVersion(2))
        } else {
            Issue.record("version 2 accepted")
        }
    }

    @Test(arguments: [(4 << 10, 64 << 10), (64 << 10, 256 << 10), (1 << 20, 64 << 10)])
    func roundTripRestoresBitForBit(chunkBlockSize: Int, archiveBlockSize: Int) throws {
        let fixture = try ArchiveFixture(chunkBlockSize: chunkBlockSize)
        let volumes = try fixture.write(blockSize: archiveBlockSize)
        #expect(volumes.count == 1)
        #expect(volumes[0].count % archiveBlockSize == 0)
        let report = ArchiveVerifier.verify(ArchiveFixture.sources(volumes))
        #expect(report.failure == nil, "\(report.problems)")
        #expect(report.points.map(\.id) == fixture.ids.map(\.description))
        #expect(report.points.allSatisfy { $0.intact })
        #expect(try fixture.restore(volumes, point: 0, disk: "a.img") == TestImage.sha256(of: fixture.a))
        #expect(try fixture.restore(volumes, point: 0, disk: "b.img") == TestImage.sha256(of: fixture.b))
        #expect(try fixture.restore(volumes, point: 1, disk: "b.img") == TestImage.sha256(of: fixture.b))
    }

    /// A disk with more blocks than the digest table holds in memory: runs spill to disk and merge.
    @Test func restoreSpillsTheDigestTableToDisk() throws {
        let fixture = try ArchiveFixture(chunkBlockSize: 4 << 10)
        let volumes = try fixture.write()
        #expect(try fixture.restore(volumes, point: 0, disk: "a.img", runLimit: 37) == TestImage.sha256(of: fixture.a))
        #expect(
            try fixture.restore(volumes, point: 1, disk: "b.img", runLimit: 1000) == TestImage.sha256(of: fixture.b))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.dir.path).filter {
            $0.hasPrefix(".cairn-restore")
        }
        #expect(leftovers.isEmpty, "temporary runs are removed: \(leftovers)")
    }

    @Test func spillingDigestMapBehavesLikeADictionary() throws {
        let dir = TemporaryDirectory()
        var gen = TestImage(seed: 43)
        let digests = (0..<500).map { _ in ChunkDigest(bytes: gen.randomBytes(32)) }
        for limit in [10_000, 33, 1] {
            let map = SpillingDigestMap(directory: dir.path, memoryLimit: limit)
            var model: [ChunkDigest: UInt64] = [:]
            for step in 0..<2000 {
                let digest = digests[Int(gen.next() % 500)]
                let bit = UInt64(1) << (gen.next() % 8)
                if step % 3 == 0 {
                    #expect(map.take(digest) == model.removeValue(forKey: digest))
                } else {
                    try map.insert(digest, mask: bit)
                    model[digest, default: 0] |= bit
                }
                #expect(map.contains(digest) == (model[digest] != nil))
            }
            #expect(map.remaining.count == model.count)
            #expect(map.unionOfRemaining == model.values.reduce(0, |))
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(leftovers.isEmpty, "runs are removed with their map: \(leftovers)")
    }

    /// Writer and verifier with a tiny memory limit: every "which chunks" question goes to disk.
    @Test func archiveRoundTripWithSpilledDigestSets() throws {
        let saved = SpillingDigestMap.defaultMemoryLimit
        SpillingDigestMap.defaultMemoryLimit = 5
        defer { SpillingDigestMap.defaultMemoryLimit = saved }
        let fixture = try ArchiveFixture(chunkBlockSize: 4 << 10)
        let volumes = try fixture.write()
        let report = ArchiveVerifier.verify(ArchiveFixture.sources(volumes))
        #expect(report.failure == nil, "\(report.problems)")
        #expect(report.points.allSatisfy { $0.intact })
        #expect(try fixture.restore(volumes, point: 0, disk: "a.img") == TestImage.sha256(of: fixture.a))
        // Cut the archive short of its chunks: verify names the points missing them.
        var cut = volumes
        cut[0] = Array(cut[0].prefix(cut[0].count / 2))
        let damaged = ArchiveVerifier.verify(ArchiveFixture.sources(cut))
        #expect(!damaged.points.allSatisfy { $0.intact })
    }

    @Test func digestTableFindsEveryBlockInMemoryAndSpilled() throws {
        let dir = TemporaryDirectory()
        var gen = TestImage(seed: 41)
        // 3,000 blocks over 700 digests, so most digests are needed by several blocks.
        let digests = (0..<700).map { _ in ChunkDigest(bytes: gen.randomBytes(32)) }
        let blocks = (0..<3000).map { (UInt64($0), digests[Int(gen.next() % 700)]) }
        for limit in [100_000, 64, 1] {
            let table = BlockDigestTable(directory: dir.path, runLimit: limit)
            for (block, digest) in blocks { try table.append(digest, block: block) }
            try table.finish()
            for digest in digests {
                let expected = blocks.filter { $0.1 == digest }.map(\.0)
                let found = table.range(of: digest).map { table.block(at: $0) }
                #expect(Set(found) == Set(expected))
            }
            #expect(table.range(of: ChunkDigest(bytes: gen.randomBytes(32))).isEmpty)
        }
    }

    @Test func chunksAreWrittenOncePerArchive() throws {
        let fixture = try ArchiveFixture()
        let report = ArchiveVerifier.verify(ArchiveFixture.sources(try fixture.write()))
        // vm2's only disk is vm1's b.img: it adds index pages but no chunks.
        var distinct = Set<ChunkDigest>()
        let manifest = try fixture.repository.catalog.manifest(fixture.ids[0])
        for disk in manifest.disks {
            let walk = DiskWalk(
                store: fixture.repository.store, root: disk.root, depth: disk.depth, blockCount: disk.blockCount,
                size: disk.size)
            try walk.forEachBlock { (_, d) throws(CairnError) in if d != ZeroBlock.digest { distinct.insert(d) } }
        }
        #expect(report.chunks == distinct.count)
    }

    @Test func spanningVolumesStayWithinTheirSize() throws {
        let fixture = try ArchiveFixture()
        let volumeSize: UInt64 = 5 * 64 << 10
        let volumes = try fixture.write(blockSize: 64 << 10, volumeSize: volumeSize)
        #expect(volumes.count > 3)
        #expect(volumes.allSatisfy { UInt64($0.count) <= volumeSize })
        let report = ArchiveVerifier.verify(ArchiveFixture.sources(volumes))
        #expect(report.failure == nil, "\(report.problems)")
        #expect(report.volumes == volumes.count)
        // One stream holding every volume reads the same as the volumes one by one.
        #expect(ArchiveVerifier.verify([MemoryByteSource(volumes.flatMap { $0 }, name: "stream")]).failure == nil)
        #expect(try fixture.restore(volumes, point: 0, disk: "a.img") == TestImage.sha256(of: fixture.a))
    }

    @Test func recordsLargerThanABlockSpanBlocks() throws {
        // 1 MiB chunks of random data do not compress: each record spans 17 blocks of 64 KiB.
        let fixture = try ArchiveFixture(chunkBlockSize: 1 << 20)
        let volumes = try fixture.write(blockSize: 64 << 10, volumeSize: 8 * 64 << 10)
        #expect(ArchiveVerifier.verify(ArchiveFixture.sources(volumes)).failure == nil)
        #expect(try fixture.restore(volumes, point: 1, disk: "b.img") == TestImage.sha256(of: fixture.b))
    }

    @Test func reorderedDuplicatedAndMissingBlocksAreStructuralFaults() throws {
        let fixture = try ArchiveFixture()
        let bs = 64 << 10
        let volume = try fixture.write(blockSize: bs)[0]
        let blocks = stride(from: 0, to: volume.count, by: bs).map { Array(volume[$0..<$0 + bs]) }
        #expect(blocks.count > 5)
        var swapped = blocks
        swapped.swapAt(2, 3)
        var duplicated = blocks
        duplicated.insert(blocks[2], at: 3)
        var gap = blocks
        gap.remove(at: 2)
        for (name, edited, message) in [
            ("swapped", swapped, "out of order"), ("duplicated", duplicated, "duplicated"), ("gap", gap, "missing"),
        ] {
            let report = ArchiveVerifier.verify([MemoryByteSource(edited.flatMap { $0 }, name: name)])
            #expect(report.fatal?.code == .badArchive, "\(name)")
            #expect(report.fatal?.message.contains(message) == true, "\(name): \(String(describing: report.fatal))")
            #expect(report.fatal?.message.contains("volume 1 block") == true)
        }
        let truncated = Array(volume.dropLast(bs + 100))
        let report = ArchiveVerifier.verify([MemoryByteSource(truncated, name: "cut")])
        #expect(report.fatal?.message.contains("truncated") == true, "\(String(describing: report.fatal))")
    }

    @Test func aFlippedByteLosesOnlyWhatItHits() throws {
        let fixture = try ArchiveFixture()
        let bs = 64 << 10
        var volume = try fixture.write(blockSize: bs)[0]
        // The last data block holds chunks of b.img (chunks come in order of first need: a.img's first).
        // Damage one in the middle of a.img's chunks instead: a block after the index blocks.
        let target = 4 * bs + 1000
        volume[target] ^= 0xFF
        let report = ArchiveVerifier.verify([MemoryByteSource(volume, name: "v")])
        #expect(report.failure?.code == .damaged)
        #expect(report.problems.first?.location?.block == 4)
        #expect(report.points[0].intact == false)
        #expect(report.points[1].intact == true)
        // vm2 (b.img only) still restores bit for bit; vm1's a.img refuses with the damage named.
        #expect(try fixture.restore([volume], point: 1, disk: "b.img") == TestImage.sha256(of: fixture.b))
        #expect(throws: CairnError.self) { try fixture.restore([volume], point: 0, disk: "a.img") }
    }

    /// A damaged block in the middle of a record that spans many blocks loses that record only:
    /// the blocks after it in which no record begins are part of the lost record, not faults.
    @Test func damageInsideALongRecordLosesOnlyThatRecord() throws {
        let fixture = try ArchiveFixture(chunkBlockSize: 1 << 20)
        let bs = 64 << 10
        var volume = try fixture.write(blockSize: bs)[0]
        let reader = ArchiveRecordReader(blocks: ArchiveBlockReader(sources: [MemoryByteSource(volume, name: "v")]))
        var longest: (block: Int, length: Int) = (0, 0)
        while let record = try reader.next() {
            if record.type == .chunk && record.body.count > longest.length {
                longest = (record.location.block, record.body.count)
            }
        }
        #expect(longest.length > 3 * bs, "a record spans more than three blocks")
        volume[(longest.block + 2) * bs + 5000] ^= 0xFF
        let report = ArchiveVerifier.verify([MemoryByteSource(volume, name: "v")])
        #expect(report.failure?.code == .damaged, "\(report.problems)")
        #expect(!report.problems.contains { $0.code == .badArchive }, "\(report.problems)")
        #expect(report.problems.first?.location?.block == longest.block + 2)
    }

    @Test func aChunkWithAValidCRCButTheWrongContentIsCaughtByItsDigest() throws {
        let fixture = try ArchiveFixture()
        let bs = 2 << 20  // room for a whole frame record of a.img inside one block
        var volume = try fixture.write(blockSize: bs)[0]
        // Find a chunk record that only vm1's a.img needs (none of its chunks is one of b.img's),
        // lying wholly inside one block.
        let manifest = try fixture.repository.catalog.manifest(fixture.ids[1])
        let disk = manifest.disks[0]
        let tree = try IndexTreeReader(
            reader: ChunkReader(store: fixture.repository.store), root: disk.root,
            depth: disk.depth, blockCount: disk.blockCount)
        var bDigests = Set<ChunkDigest>()
        while let digest = try tree.next() { bDigests.insert(digest) }
        let reader = ArchiveRecordReader(blocks: ArchiveBlockReader(sources: [MemoryByteSource(volume, name: "v")]))
        var found: (block: Int, start: Int, length: Int)?
        while let record = try reader.next() {
            guard record.type == .chunk else { continue }
            var chunks: [PackRecord] = []
            PackFormat.appendTableEntries(
                of: try EncodedRecord(checking: record.body, malformed: .badArchive), at: 0, to: &chunks)
            if chunks.allSatisfy({ !bDigests.contains($0.digest) }),
                record.payloadOffset + 16 + record.body.count <= bs - 64
            {
                found = (record.location.block, record.payloadOffset + 16, record.body.count)
                break
            }
        }
        let (block, start, length) = try #require(found)
        // A forger's edit: change a stored byte, then fix every CRC so only the SHA-256 can tell.
        let body = block * bs + 64 + start
        volume[body + 48 + length / 2] ^= 0x55
        volume.withUnsafeMutableBytes { raw in
            let record = UnsafeRawBufferPointer(rebasing: raw[body..<body + length])
            let crc = PackFormat.recordCRC(
                header: UnsafeRawBufferPointer(rebasing: record[0..<48]),
                payload: UnsafeRawBufferPointer(rebasing: record[48...]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: body + 44, as: UInt32.self)
        }
        reseal(&volume, block: block, blockSize: bs)
        let report = ArchiveVerifier.verify([MemoryByteSource(volume, name: "v")])
        #expect(report.failure?.code == .damaged)
        #expect(
            report.problems.contains {
                $0.location?.block == block && $0.message.contains("needed by \(fixture.ids[0])")
            }, "\(report.problems)")
        #expect(report.points.map(\.intact) == [false, true])
        #expect(try fixture.restore([volume], point: 1, disk: "b.img") == TestImage.sha256(of: fixture.b))
        #expect(throws: CairnError.self) { try fixture.restore([volume], point: 0, disk: "a.img") }
    }

    @Test func lengthsFromHeadersAreCheckedBeforeAllocating() throws {
        let fixture = try ArchiveFixture()
        let bs = 64 << 10
        var volume = try fixture.write(blockSize: bs)[0]
        // The first record (a manifest) begins at the payload of block 1: claim 4 GiB for it.
        let start = bs + 64
        volume.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(0xFFFF_FFF0).littleEndian, toByteOffset: start + 8, as: UInt32.self)
            let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[start..<start + 12]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: start + 12, as: UInt32.self)
        }
        reseal(&volume, block: 1, blockSize: bs)
        let report = ArchiveVerifier.verify([MemoryByteSource(volume, name: "forged")])
        #expect(report.failure != nil)
        #expect(report.problems.contains { $0.message.contains("claims 4294967280 bytes") }, "\(report.problems)")
    }

    @Test func notAnArchiveAndUnknownVersion() throws {
        let garbage = MemoryByteSource(Array(repeating: 7, count: 300_000), name: "garbage")
        #expect(ArchiveVerifier.verify([garbage]).fatal?.message.contains("is not a Cairn archive") == true)
        let fixture = try ArchiveFixture()
        var volume = try fixture.write()[0]
        volume[8] = 9
        let fatal = ArchiveVerifier.verify([MemoryByteSource(volume, name: "future")]).fatal
        #expect(fatal?.code == .badArchive)
        #expect(fatal?.message.contains("format version 9") == true)
    }
}
