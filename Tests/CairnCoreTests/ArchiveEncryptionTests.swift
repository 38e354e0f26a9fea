import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// An encrypted repository (fast scrypt) with one restore point of a disk that makes frame
/// records (text) and plain ones (random data), archived in memory.
final class EncryptedArchiveFixture {
    let dir = TemporaryDirectory("cairn-archive-encrypted")
    static let passphrase = Array("tape passphrase".utf8)
    static let fast = ScryptParameters(n: 1 << 10, r: 8, p: 1)
    let repository: Repository
    let id: RestorePointID
    var image: String { dir.file("secret-disk.img") }
    var repo: String { dir.file("repo") }

    init() throws {
        let image = dir.file("secret-disk.img")
        let repo = dir.file("repo")
        var gen = TestImage(seed: 1414)
        let file = try File.open(image, .createOrTruncate)
        try file.truncate(to: (6 << 20) + 777)
        try file.write(gen.textBytes(3 << 20), at: 0)
        try file.write(gen.randomBytes(1 << 20), at: 4 << 20)
        try Repository.create(
            at: repo, blockSize: 64 << 10, compressionLevel: 3,
            encryption: NewKey(passphrase: Self.passphrase, parameters: Self.fast))
        repository = try Repository(path: repo, passphrase: Self.secret(Self.passphrase))
        id = try BackupJob(repository: repository, group: "secret-vm", sources: [BackupSource(path: image)]).run().id
    }

    static func secret(_ bytes: [UInt8]) -> () throws(CairnError) -> [UInt8] {
        { () throws(CairnError) in bytes }
    }

    func write(blockSize: Int = 64 << 10, volumeSize: UInt64? = nil) throws -> [[UInt8]] {
        let sink = MemorySink()
        let writer = ArchiveWriter(repository: repository, ids: [id], sink: sink)
        writer.blockSize = blockSize
        writer.volumeSize = volumeSize
        _ = try writer.run()
        return sink.volumes
    }

    /// Restores the disk from `volumes` with `passphrase`; the output's SHA-256.
    func restore(_ volumes: [[UInt8]], passphrase: [UInt8] = EncryptedArchiveFixture.passphrase) throws -> String {
        let out = dir.file("out-\(UUID().uuidString).img")
        var request = ArchiveRestoreRequest(point: .id(id), disk: nil, destination: out)
        request.force = true
        let restore = ArchiveRestore(sources: ArchiveFixture.sources(volumes), request: request)
        restore.passphrase = Self.secret(passphrase)
        _ = try restore.run()
        return try TestImage.sha256(of: out)
    }

    func verify(_ volumes: [[UInt8]], passphrase: [UInt8]? = EncryptedArchiveFixture.passphrase) -> ArchiveReport {
        ArchiveVerifier.verify(ArchiveFixture.sources(volumes), passphrase: passphrase.map(Self.secret))
    }
}

@Suite struct ArchiveEncryptionTests {
    @Test func verifyChecksContentWithThePassphraseAndStructureWithout() throws {
        let fixture = try EncryptedArchiveFixture()
        // Small volumes: the sealed catalog of every volume, and records across volumes.
        let volumes = try fixture.write(volumeSize: 1 << 20)
        #expect(volumes.count > 1)

        let full = fixture.verify(volumes)
        #expect(full.failure == nil, "\(full.problems)")
        #expect(full.encrypted && full.contentChecked)
        #expect(full.points.map(\.id) == [fixture.id.description])
        #expect(full.points.allSatisfy { $0.intact })

        let structural = fixture.verify(volumes, passphrase: nil)
        #expect(structural.failure == nil, "\(structural.problems)")
        #expect(structural.encrypted && !structural.contentChecked)
        #expect(structural.points.isEmpty, "restore point names are sealed")
        #expect(structural.manifestRecords == 1)
        #expect(structural.chunks == full.chunks && structural.indexPages == full.indexPages)

        let wrong = fixture.verify(volumes, passphrase: Array("not it".utf8))
        #expect(wrong.fatal?.code == .passphrase)
        #expect(wrong.fatal?.message.contains("\n") == false)
        // Listing needs the passphrase: the names are sealed.
        #expect(ArchiveVerifier.list(ArchiveFixture.sources(volumes)).fatal?.code == .usage)
        #expect(
            ArchiveVerifier.list(
                ArchiveFixture.sources(volumes),
                passphrase: EncryptedArchiveFixture.secret(EncryptedArchiveFixture.passphrase)
            ).points.map(\.id) == [fixture.id.description])
    }

    @Test func theLabelCarriesKeyFilesAndNoNamesTimesOrSizesAreInTheClear() throws {
        let fixture = try EncryptedArchiveFixture()
        let volumes = try fixture.write()
        let label = try #require(ArchiveVerifier.verify(ArchiveFixture.sources(volumes)).label)
        #expect(label.features == ["frames", "encryption"])
        #expect(label.keys?.count == 1)
        #expect(label.fingerprint == fixture.repository.config.encryption?.fingerprint)
        #expect(label.created == ArchiveKeys.hiddenTime)
        let all = Data(volumes.flatMap { $0 })
        for needle in ["secret-vm", "secret-disk.img", fixture.id.time.description, "\((6 << 20) + 777)"] {
            #expect(all.range(of: Data(needle.utf8)) == nil, "\(needle) is readable in the archive")
        }
        // The repository's own record of the archive is sealed too.
        let catalog = try FileSystem.list(fixture.dir.file("repo/archives"))
        let bytes = try FileSystem.readAll(fixture.dir.file("repo/archives/\(catalog[0])"), limit: 1 << 20)
        #expect(Data(bytes).range(of: Data("secret-vm".utf8)) == nil)
        #expect(try ArchiveCatalog.entries(in: fixture.repository).first?.points.map(\.id) == [fixture.id.description])
    }

    @Test func restoreAndImportIntoANewRepositoryWithThePassphraseAlone() throws {
        let fixture = try EncryptedArchiveFixture()
        let volumes = try fixture.write(volumeSize: 1 << 20)
        #expect(volumes.count > 1)
        let original = try TestImage.sha256(of: fixture.image)
        #expect(try fixture.restore(volumes) == original)

        let fresh = fixture.dir.file("rebuilt")
        let importer = ArchiveImporter(creatingRepositoryAt: fresh, sources: ArchiveFixture.sources(volumes))
        importer.passphrase = EncryptedArchiveFixture.secret(EncryptedArchiveFixture.passphrase)
        let result = try importer.run()
        #expect(result.imported == [fixture.id.description])
        #expect(result.report.failure == nil, "\(result.report.problems)")

        let rebuilt = try Repository(
            path: fresh, passphrase: EncryptedArchiveFixture.secret(EncryptedArchiveFixture.passphrase))
        #expect(rebuilt.config.id == fixture.repository.config.id)
        let out = fixture.dir.file("from-rebuilt.img")
        _ = try RestoreJob(repository: rebuilt, request: RestoreRequest(id: fixture.id, disk: nil, destination: out))
            .run()
        #expect(try TestImage.sha256(of: out) == original)
        let verified = try RepositoryVerifier(repository: rebuilt).run()
        #expect(verified.intact, "\(verified.problems)")

        // Into the repository it came from: records as stored, the point already there.
        let again = try ArchiveImporter(repository: fixture.repository, sources: ArchiveFixture.sources(volumes)).run()
        #expect(again.alreadyPresent == [fixture.id.description])
    }

    @Test func importIsRefusedIntoAnotherKeyOrAnUnencryptedRepositoryAndAWrongPassphraseWritesNothing() throws {
        let fixture = try EncryptedArchiveFixture()
        let volumes = try fixture.write()
        let other = fixture.dir.file("other")
        try Repository.create(
            at: other, blockSize: 64 << 10, compressionLevel: 3,
            encryption: NewKey(passphrase: EncryptedArchiveFixture.passphrase, parameters: EncryptedArchiveFixture.fast)
        )
        let otherRepository = try Repository(
            path: other, passphrase: EncryptedArchiveFixture.secret(EncryptedArchiveFixture.passphrase))
        #expect {
            try ArchiveImporter(repository: otherRepository, sources: ArchiveFixture.sources(volumes)).run()
        } throws: { ($0 as? CairnError)?.code == .usage && "\($0)".contains("re-encrypting") }
        let plain = fixture.dir.file("plain")
        try Repository.create(at: plain, blockSize: 64 << 10, compressionLevel: 3)
        #expect {
            try ArchiveImporter(repository: try Repository(path: plain), sources: ArchiveFixture.sources(volumes)).run()
        } throws: { ($0 as? CairnError)?.code == .usage }
        #expect(try FileSystem.list("\(plain)/points").isEmpty)

        let fresh = fixture.dir.file("never")
        let importer = ArchiveImporter(creatingRepositoryAt: fresh, sources: ArchiveFixture.sources(volumes))
        importer.passphrase = EncryptedArchiveFixture.secret(Array("not it".utf8))
        #expect { try importer.run() } throws: { ($0 as? CairnError)?.code == .passphrase }
        #expect(!FileSystem.exists(fresh), "a wrong passphrase makes no repository")
        let out = fixture.dir.file("never.img")
        #expect { try fixture.restore(volumes, passphrase: Array("not it".utf8)) } throws: {
            ($0 as? CairnError)?.code == .passphrase
        }
        #expect(!FileSystem.exists(out))
    }

    /// A forger flips a byte of a sealed chunk record and fixes every CRC: only the seal
    /// catches it. Verify with the passphrase names the restore point; without it, it cannot.
    /// A plain flip is caught by the CRCs alone.
    @Test func aFlippedByteInASealedRecordIsNamed() throws {
        let fixture = try EncryptedArchiveFixture()
        let blockSize = 64 << 10
        var volume = try fixture.write(blockSize: blockSize)[0]
        let record = try #require(FrameArchiveFixture.chunkRecords([volume]).first)
        let (offsets, touched) = streamOffsets(
            volume, blockSize: blockSize, block: record.location.block, payloadOffset: record.payloadOffset,
            count: ArchiveFormat.recordHeaderSize + record.length)
        let body = Array(offsets[ArchiveFormat.recordHeaderSize...])

        var plainFlip = volume
        plainFlip[body[body.count - 1]] ^= 0x01
        let crcOnly = fixture.verify([plainFlip], passphrase: nil)
        #expect(crcOnly.failure?.code == .damaged)

        volume[body[body.count - 1]] ^= 0x01
        var pack = body.map { volume[$0] }
        let crc = pack.withUnsafeBytes { raw in
            RecordHeader.crc(header: raw, payload: UnsafeRawBufferPointer(rebasing: raw[RecordHeader.size...]))
        }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { pack[RecordHeader.crcOffset + i] = $0[i] } }
        for (k, offset) in body.enumerated() { volume[offset] = pack[k] }
        for block in touched { reseal(&volume, block: block, blockSize: blockSize) }

        let blind = fixture.verify([volume], passphrase: nil)
        #expect(blind.failure == nil && !blind.contentChecked)
        let report = fixture.verify([volume])
        #expect(report.failure?.code == .damaged)
        #expect(report.problems.contains { "\($0)".contains("fails authentication") }, "\(report.problems)")
        #expect(report.problems.contains { "\($0)".contains(fixture.id.description) }, "\(report.problems)")
        #expect(report.points.map(\.intact) == [false])
        #expect { try fixture.restore([volume]) } throws: { ($0 as? CairnError)?.code == .damaged }
    }

    /// docs/ARCHIVE-FORMAT.md's worked example (computed with Python's `cryptography`): the
    /// sealed points of volume 1's catalog, under the keys of docs/FORMAT.md's worked example.
    @Test func theWorkedExampleInArchiveFormatMD() throws {
        let master = MasterKey(
            master: SecretKey(bytes: Array(0..<32)), repositoryID: Hex.decode("00112233445566778899aabbccddeeff")!)
        let keys = ArchiveKeys(
            master: master, archive: try #require(ArchiveID(hex: "000102030405060708090a0b0c0d0e0f")))
        let sealed =
            "Q0FJUk5TTDGAgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2enwj6Cd4/SqNLrssoIMKm/I/ZUVA2uBla/kObbCZgbCkR3Kbi5rD/"
            + "CXXIDtNyI9nFjVIyxP4iXMOCnvFzsZMbH6AlyEWffmAyYpEBv6ELgMFPxQCk2KnR3jsx7TKW+c8Cqa1lUOUmcl0Eik8vr4/KXoES+MZE"
        let points = try keys.openPoints(sealed, volume: 1)
        #expect(points.map(\.id) == ["vm1@2026-11-26T03:00:00Z"])
        #expect(points.first?.disks.first?.size == 4096)
        // Bound to its volume: the same bytes do not open as volume 2's catalog.
        #expect(throws: CairnError.self) { try keys.openPoints(sealed, volume: 2) }
    }

    /// A manifest lost with a damaged block costs no other restore point its name: each sealed
    /// manifest carries its own position (docs/ARCHIVE-FORMAT.md, section 8).
    @Test func aLostManifestLeavesTheNextPointsReadable() throws {
        let dir = TemporaryDirectory("cairn-archive-lost-manifest")
        let path = dir.file("repo")
        try Repository.create(
            at: path, blockSize: 4096, compressionLevel: 3,
            encryption: NewKey(passphrase: EncryptedArchiveFixture.passphrase, parameters: EncryptedArchiveFixture.fast)
        )
        let repository = try Repository(
            path: path, passphrase: EncryptedArchiveFixture.secret(EncryptedArchiveFixture.passphrase))
        // 3072 distinct blocks: three index pages of 32 KiB of keyed ids, which do not compress,
        // so the next manifest begins in a later archive block.
        let big = dir.file("big.img")
        var stamped = [UInt8](repeating: 0, count: 12 << 20)
        for block in 0..<3072 {
            withUnsafeBytes(of: UInt32(block + 1)) { for k in 0..<4 { stamped[block * 4096 + k] = $0[k] } }
        }
        try File.open(big, .createOrTruncate).write(stamped, at: 0)
        let small = dir.file("small.img")
        var gen = TestImage(seed: 8)
        try File.open(small, .createOrTruncate).write(gen.randomBytes(100_000), at: 0)
        let first = try BackupJob(repository: repository, group: "first", sources: [BackupSource(path: big)]).run().id
        let second = try BackupJob(repository: repository, group: "second", sources: [BackupSource(path: small)]).run()
            .id
        let sink = MemorySink()
        let writer = ArchiveWriter(repository: repository, ids: [first, second], sink: sink)
        writer.blockSize = 64 << 10
        _ = try writer.run()
        var volume = sink.volumes[0]
        // Block 1 holds the first manifest: its payload fails its CRC now.
        volume[(64 << 10) + 64 + 100] ^= 0x01
        let secret = EncryptedArchiveFixture.secret(EncryptedArchiveFixture.passphrase)
        let report = ArchiveVerifier.verify([MemoryByteSource(volume, name: "v")], passphrase: secret)
        #expect(report.failure?.code == .damaged)
        #expect(report.points.map(\.id) == [second.description], "\(report.problems)")
        #expect(report.points.first?.intact == true, "\(report.problems)")
        var request = ArchiveRestoreRequest(point: .id(second), disk: nil, destination: dir.file("out.img"))
        request.force = true
        let restore = ArchiveRestore(sources: [MemoryByteSource(volume, name: "v")], request: request)
        restore.passphrase = secret
        _ = try restore.run()
        #expect(try TestImage.sha256(of: dir.file("out.img")) == TestImage.sha256(of: small))
    }
}
