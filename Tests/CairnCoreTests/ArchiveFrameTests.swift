import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// A repository whose backups make frame records (several MiB of compressible data in 64 KiB
/// blocks): vm1 holds big.img, vm2 holds small.img, which shares no chunk with it.
final class FrameArchiveFixture {
    let dir = TemporaryDirectory("cairn-archive-frames")
    let repository: Repository
    var ids: [RestorePointID]
    var big: String { dir.file("big.img") }
    var small: String { dir.file("small.img") }

    init() throws {
        var gen = TestImage(seed: 57)
        // 5 MiB of text, a hole, then 1 MiB of random data (a frame zstd cannot shrink).
        let file = try File.open(dir.file("big.img"), .createOrTruncate)
        try file.truncate(to: 8 << 20)
        try file.write(gen.textBytes(5 << 20), at: 0)
        try file.write(gen.randomBytes(1 << 20), at: 6 << 20)
        let other = try File.open(dir.file("small.img"), .createOrTruncate)
        try other.truncate(to: (2 << 20) + 999)
        try other.write(gen.textBytes((1 << 20) + 333), at: 512 << 10)
        try Repository.create(at: dir.file("repo"), blockSize: 64 << 10, compressionLevel: 3)
        repository = try Repository(path: dir.file("repo"))
        ids = []
        ids = [try backup("vm1", big), try backup("vm2", small)]
    }

    func backup(_ group: String, _ image: String) throws -> RestorePointID {
        try BackupJob(repository: repository, group: group, sources: [BackupSource(path: image)]).run().id
    }

    func write(_ points: [RestorePointID]? = nil, blockSize: Int = 64 << 10, volumeSize: UInt64? = nil) throws
        -> [[UInt8]]
    {
        let sink = MemorySink()
        let writer = ArchiveWriter(repository: repository, ids: points ?? ids, sink: sink)
        writer.blockSize = blockSize
        writer.volumeSize = volumeSize
        _ = try writer.run()
        return sink.volumes
    }

    /// Restores the only disk of `id` from `sources` and returns the output's SHA-256.
    func restore(_ sources: [any ArchiveByteSource], _ id: RestorePointID) throws -> String {
        let out = dir.file("out-\(UUID().uuidString).img")
        var request = ArchiveRestoreRequest(point: .id(id), disk: nil, destination: out)
        request.force = true
        _ = try ArchiveRestore(sources: sources, request: request).run()
        return try TestImage.sha256(of: out)
    }

    /// Imports `volumes` into a new repository, then restores `id` from it; returns the
    /// import's result and the restored image's SHA-256.
    func importThenRestore(_ volumes: [[UInt8]], _ id: RestorePointID) throws -> (ArchiveImportResult, String?) {
        let path = dir.file("imported-\(UUID().uuidString)")
        try Repository.create(at: path, blockSize: 64 << 10, compressionLevel: 3)
        let fresh = try Repository(path: path)
        let result = try ArchiveImporter(repository: fresh, sources: ArchiveFixture.sources(volumes)).run()
        guard result.imported.contains(id.description) else { return (result, nil) }
        let out = dir.file("from-import-\(UUID().uuidString).img")
        _ = try RestoreJob(
            repository: try Repository(path: path), request: RestoreRequest(id: id, disk: nil, destination: out)
        )
        .run()
        return (result, try TestImage.sha256(of: out))
    }

    /// A chunk record of an archive: where its header begins, its body's length, and whether
    /// it is a frame record.
    struct ChunkRecord {
        var location: ArchiveLocation
        var payloadOffset: Int
        var length: Int
        var isFrame: Bool
    }

    static func chunkRecords(_ volumes: [[UInt8]]) throws -> [ChunkRecord] {
        let reader = ArchiveRecordReader(blocks: ArchiveBlockReader(sources: ArchiveFixture.sources(volumes)))
        var found: [ChunkRecord] = []
        while let record = try reader.next() {
            guard record.type == .chunk else { continue }
            found.append(
                ChunkRecord(
                    location: record.location, payloadOffset: record.payloadOffset, length: record.body.count,
                    isFrame: record.body[40] == ChunkKind.frame.rawValue))
        }
        return found
    }
}

/// Offsets in `volume` of `count` record-stream bytes starting at `payloadOffset` of `block`'s
/// payload, and the blocks they lie in: a record continues in the next block's payload.
func streamOffsets(_ volume: [UInt8], blockSize: Int, block: Int, payloadOffset: Int, count: Int) -> ([Int], Set<Int>) {
    var offsets: [Int] = []
    var blocks = Set<Int>()
    var b = block
    var p = payloadOffset
    while offsets.count < count {
        let length = volume.withUnsafeBytes {
            Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: b * blockSize + 48, as: UInt32.self)))
        }
        if p >= length {
            b += 1
            p = 0
            continue
        }
        offsets.append(b * blockSize + 64 + p)
        blocks.insert(b)
        p += 1
    }
    return (offsets, blocks)
}

@Suite struct ArchiveFrameTests {
    /// Small archive blocks and volumes (a frame record spans blocks and volumes), and big ones.
    @Test(arguments: [(64 << 10, UInt64(1 << 20)), (1 << 20, nil)])
    func framesRoundTripBitForBit(archiveBlockSize: Int, volumeSize: UInt64?) throws {
        let fixture = try FrameArchiveFixture()
        let volumes = try fixture.write(blockSize: archiveBlockSize, volumeSize: volumeSize)
        let records = try FrameArchiveFixture.chunkRecords(volumes)
        #expect(records.contains { $0.isFrame }, "the backup made frames, and the archive carries them")

        let report = ArchiveVerifier.verify(ArchiveFixture.sources(volumes))
        #expect(report.failure == nil, "\(report.problems)")
        #expect(report.points.allSatisfy { $0.intact })
        #expect(report.chunks > records.count, "a frame record counts each chunk it carries")

        #expect(
            try fixture.restore(ArchiveFixture.sources(volumes), fixture.ids[0]) == TestImage.sha256(of: fixture.big))
        #expect(
            try fixture.restore(ArchiveFixture.sources(volumes), fixture.ids[1]) == TestImage.sha256(of: fixture.small))
        // The volumes as one stream, as from a pipe or a tape.
        let stream = [MemoryByteSource(volumes.flatMap { $0 }, name: "stream")]
        #expect(try fixture.restore(stream, fixture.ids[0]) == TestImage.sha256(of: fixture.big))

        // Import stores the frames as they came; the new repository restores bit for bit.
        let (imported, restored) = try fixture.importThenRestore(volumes, fixture.ids[0])
        #expect(imported.imported == fixture.ids.map(\.description))
        #expect(restored == (try TestImage.sha256(of: fixture.big)))
    }

    /// Archiving only a later backup: the frames it shares with the first carry a block that
    /// changed since, which no index in the archive needs. That is not an error.
    @Test func frameMembersNobodyNeedsRideAlong() throws {
        let fixture = try FrameArchiveFixture()
        var gen = TestImage(seed: 99)
        try File.open(fixture.big, .readWrite).write(gen.randomBytes(64 << 10), at: 3 * (64 << 10))
        let later = try fixture.backup("vm1", fixture.big)
        let volumes = try fixture.write([later])
        let report = ArchiveVerifier.verify(ArchiveFixture.sources(volumes))
        #expect(report.failure == nil, "\(report.problems)")
        #expect(report.points.map(\.intact) == [true])
        #expect(try fixture.restore(ArchiveFixture.sources(volumes), later) == TestImage.sha256(of: fixture.big))
        let (imported, restored) = try fixture.importThenRestore(volumes, later)
        #expect(imported.imported == [later.description])
        #expect(restored == (try TestImage.sha256(of: fixture.big)))
    }

    /// A chunk that two frame records hold (the repository indexes it in the first) arrives twice.
    @Test func aChunkInTwoFramesArrivesTwiceHarmlessly() throws {
        let fixture = try FrameArchiveFixture()
        let store = fixture.repository.store
        let first = try File.open(fixture.big, .readOnly).readBytes(count: 64 << 10, at: 0)
        var gen = TestImage(seed: 5)
        let fresh = gen.textBytes(64 << 10)
        let both = first + fresh
        let hasher = SHA256Hasher()
        let digests = [hasher.digest(first), hasher.digest(fresh)]
        let encoder = ChunkEncoder(level: 3)
        var slot = [UInt8](repeating: 0, count: ChunkEncoder.frameSlotSize(members: 2, rawLength: both.count))
        let length = both.withUnsafeBytes { raw in
            slot.withUnsafeMutableBytes { out in
                encoder.encodeFrame(count: 2, into: out) { k in
                    (UnsafeRawBufferPointer(rebasing: raw[(k * 65536)..<((k + 1) * 65536)]), digests[k])
                }.bytes.count
            }
        }
        var writes = store.beginWrite()
        let stored = try slot.withUnsafeBytes {
            try writes.store(record: UnsafeRawBufferPointer(rebasing: $0[0..<length]))
        }
        #expect(stored.chunks == 1, "only the new member is indexed")
        try writes.commit()
        let pair = fixture.dir.file("pair.img")
        try File.open(pair, .createOrTruncate).write(both, at: 0)
        let id = try fixture.backup("vm3", pair)

        let volumes = try fixture.write([fixture.ids[0], id])
        let report = ArchiveVerifier.verify(ArchiveFixture.sources(volumes))
        #expect(report.failure == nil, "\(report.problems)")
        #expect(report.points.allSatisfy { $0.intact })
        #expect(try fixture.restore(ArchiveFixture.sources(volumes), id) == TestImage.sha256(of: pair))
        let (imported, restored) = try fixture.importThenRestore(volumes, id)
        #expect(imported.report.failure == nil)
        #expect(restored == (try TestImage.sha256(of: pair)))
    }

    enum Forgery: CaseIterable {
        /// A flipped byte: the archive block's CRC catches it.
        case flip
        /// Archive CRCs fixed up: the frame record's own CRC catches it.
        case blockCRCs
        /// Every CRC fixed up: decompression or a member's SHA-256 catches it.
        case allCRCs
    }

    @Test(arguments: Forgery.allCases)
    func aDamagedFrameIsCaughtAndNamed(_ forgery: Forgery) throws {
        let fixture = try FrameArchiveFixture()
        let bs = 64 << 10
        var volume = try fixture.write(blockSize: bs)[0]
        // vm1's chunks come first: its first frame record (a text window, compressed).
        let frame = try #require(try FrameArchiveFixture.chunkRecords([volume]).first { $0.isFrame })
        let (body, blocks) = streamOffsets(
            volume, blockSize: bs, block: frame.location.block, payloadOffset: frame.payloadOffset + 16,
            count: frame.length)
        // A byte in the middle of the compressed data.
        volume[body[frame.length / 2]] ^= 0x5A
        if forgery == .allCRCs {
            var record = body.map { volume[$0] }
            record.withUnsafeMutableBytes { raw in
                let crc = PackFormat.recordCRC(
                    header: UnsafeRawBufferPointer(rebasing: raw[0..<48]),
                    payload: UnsafeRawBufferPointer(rebasing: raw[48...]))
                raw.storeBytes(of: crc.littleEndian, toByteOffset: 44, as: UInt32.self)
            }
            for k in 44..<48 { volume[body[k]] = record[k] }
        }
        if forgery != .flip {
            for block in blocks { reseal(&volume, block: block, blockSize: bs) }
        }
        let damagedBlock = forgery == .flip ? body[frame.length / 2] / bs : frame.location.block

        let report = ArchiveVerifier.verify([MemoryByteSource(volume, name: "v")])
        #expect(report.failure?.code == .damaged, "\(report.problems)")
        #expect(report.problems.contains { $0.location?.block == damagedBlock }, "\(report.problems)")
        #expect(
            report.problems.contains { $0.message.contains("needed by \(fixture.ids[0])") }, "\(report.problems)")
        if forgery != .flip {
            #expect(report.problems.contains { $0.message.contains("frame record") }, "\(report.problems)")
        }
        #expect(report.points.map(\.intact) == [false, true])

        // vm2 still restores and imports; vm1 refuses, naming the damage.
        #expect(
            try fixture.restore([MemoryByteSource(volume, name: "v")], fixture.ids[1])
                == TestImage.sha256(of: fixture.small))
        do {
            _ = try fixture.restore([MemoryByteSource(volume, name: "v")], fixture.ids[0])
            Issue.record("a restore through a damaged frame succeeded")
        } catch let error as CairnError {
            #expect(error.code == .damaged)
            #expect(error.message.contains("block \(damagedBlock)"), "\(error.message)")
        }
        let (imported, _) = try fixture.importThenRestore([volume], fixture.ids[1])
        #expect(imported.imported == [fixture.ids[1].description])
        #expect(imported.skipped.map(\.id) == [fixture.ids[0].description])
    }
}
