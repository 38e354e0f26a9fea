import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// Verify's read-ahead (`PackSpan`): records taken from a span are the records a read gives,
/// a record the span holds only in part is read on its own, and a span of a pack cut short
/// fails a record past the cut by name, as without one.
@Suite struct PackSpanTests {
    /// A repository with one pack of plain records and a frame record; its blocks by digest.
    func packWithRecords(_ dir: TemporaryDirectory) throws -> (Repository, [ChunkDigest: [UInt8]]) {
        let repo = try makeRepository(dir)
        var gen = TestImage(seed: 21)
        let encoder = ChunkEncoder(level: 1)
        let blocks = (0..<24).map { i in i % 3 == 0 ? gen.randomBytes(65536) : gen.textBytes(65536) }
        let digests = blocks.map { SHA256Hasher().digest($0) }
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.frameSlotSize(members: 8, rawLength: 8 * 65536), alignment: 64)
        defer { slot.deallocate() }
        var writes = repo.store.beginWrite()
        for i in 0..<16 {
            let record = blocks[i].withUnsafeBytes { encoder.encode($0, digest: digests[i], kind: .data, into: slot) }
            _ = try writes.store(record: record)
        }
        let frame = encoder.encodeFrame(count: 8, into: slot) { k in
            blocks[16 + k].withUnsafeBytes { ($0, digests[16 + k]) }
        }
        _ = try writes.store(record: frame)
        try writes.commit()
        return (try Repository(path: dir.file("repo")), Dictionary(uniqueKeysWithValues: zip(digests, blocks)))
    }

    @Test func recordsFromASpanAreTheRecordsReadAndOnesItCutsAreRead() throws {
        let dir = TemporaryDirectory()
        let (repo, blocks) = try packWithRecords(dir)
        let packs = try repo.store.packFilesOnDisk()
        #expect(packs.count == 1)
        let pack = try repo.store.packReader(packs[0])
        let records = try pack.readTable().sorted { $0.offset < $1.offset }
        // A span that starts inside the third record (past the alignment it is rounded down
        // to) and ends inside a middle one.
        let cut = records[records.count / 2]
        let span = try #require(try PackSpan(reading: (records[2].offset + 5000)..<(cut.offset + 100), of: pack))
        #expect(span.offset > records[2].offset && span.offset < records[3].offset)
        let reader = ChunkReader(store: repo.store)
        reader.span = span
        for record in records {
            let end = record.offset + UInt64(PackFormat.recordHeaderSize) + UInt64(record.storedLength)
            let held = span.bytes(at: record.offset, count: Int(end - record.offset)) != nil
            #expect(held == (record.offset >= span.offset && end <= cut.offset + 100), "record at \(record.offset)")
            let bytes = try reader.read(record.digest, at: record.location(in: pack.id))
            #expect(Array(bytes) == blocks[record.digest])
        }
        #expect(span.bytes(at: span.offset, count: 0) != nil)
        #expect(span.bytes(at: span.offset &- 1, count: 1) == nil)
        #expect(span.bytes(at: UInt64.max - 2, count: 10) == nil)
        // A range larger than any record Cairn writes (a hostile table's claim) is not read ahead.
        #expect(try PackSpan(reading: 0..<UInt64(PackSpan.bufferBytes + 1), of: pack) == nil)
        #expect(try PackSpan(reading: 100..<UInt64.max, of: pack) == nil)
    }

    @Test func aSpanOfAPackCutShortFailsTheRecordsPastTheCut() throws {
        let dir = TemporaryDirectory()
        let (repo, _) = try packWithRecords(dir)
        let id = try repo.store.packFilesOnDisk()[0]
        let records = try repo.store.packReader(id).readTable().sorted { $0.offset < $1.offset }
        let last = try #require(records.last)
        let path = dir.file("repo") + "/" + id.relativePath
        // Cut inside the last record: a fresh reader sees the shorter file.
        #expect(truncate(path, off_t(last.offset + 10)) == 0)
        let store = try Repository(path: dir.file("repo")).store
        let pack = try PackReader(path: path, id: id)
        let span = try #require(
            try PackSpan(
                reading: records[0].offset..<(last.offset + UInt64(PackFormat.recordHeaderSize) + 65536), of: pack))
        let reader = ChunkReader(store: store)
        reader.span = span
        do throws(CairnError) {
            _ = try reader.read(last.digest, at: last.location(in: id))
            Issue.record("a record past the end of a truncated pack was read")
        } catch {
            #expect(error.code == .damaged && error.message.contains("cut off"), "\(error)")
        }
        #expect(throws: Never.self) { try reader.read(records[0].digest, at: records[0].location(in: id)) }
    }
}
