import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// Keyed chunk ids and sealed records (docs/FORMAT.md, "Encryption: the data path"), checked
/// against OpenSSL's command line and Python's `cryptography`, so the format can be
/// reimplemented from the document; and tampering, which must fail the way damage does.
@Suite struct SealedRecordTests {
    /// The worked example's keys (docs/FORMAT.md, "Key files").
    static let keys = MasterKey(
        master: SecretKey(bytes: Array(0..<32)),
        repositoryID: Hex.decode("00112233445566778899aabbccddeeff", count: 16)!)

    func openssl(_ arguments: [String], input: [UInt8]) -> String {
        let outcome = Subprocess.run("openssl", arguments, stdin: Data(input))
        #expect(outcome.status == 0, "openssl \(arguments): \(outcome.stderr)")
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: ":", with: "")
            .lowercased()
    }

    func hmac(key: SecretKey, _ message: [UInt8]) -> String {
        openssl(["mac", "-digest", "SHA256", "-macopt", "hexkey:\(Hex.encode(key.bytes))", "HMAC"], input: message)
    }

    /// AES-256-GCM opened by Python's `cryptography`, an implementation other than ours.
    func pythonOpen(key: String, sealed: [UInt8], aad: [UInt8]) -> String {
        let script = """
            import sys
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            k, s, a = (bytes.fromhex(x) for x in sys.stdin.read().split())
            print(AESGCM(k).decrypt(bytes(12), s, a).hex())
            """
        let input = "\(key) \(Hex.encode(sealed)) \(Hex.encode(aad))\n"
        let outcome = Subprocess.run("python3", ["-c", script], stdin: Data(input.utf8))
        #expect(outcome.status == 0, "python3: \(outcome.stderr)")
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Hidden object names (docs/FORMAT.md, "Hidden names") as `openssl mac` computes them.
    @Test func hiddenNamesAreHMACsUnderTheMetaKey() throws {
        let names = PointNames.keyed(MetadataSeal(keys: Self.keys))
        let id = RestorePointID(group: "vm1", time: try #require(Timestamp(parsing: "2026-12-02T15:05:40Z")))
        let group = hmac(key: Self.keys.metaKey, Array("cairn/v1/namegroup\nvm1".utf8))
        let point = hmac(key: Self.keys.metaKey, Array("cairn/v1/namepoint\nvm1\n2026-12-02T15:05:40Z".utf8))
        #expect(names.directory("vm1") == String(group.prefix(32)))
        #expect(names.stem(id) == String(point.prefix(32)))
        // The names docs/FORMAT.md gives for the worked example.
        #expect(Hex.encode(Self.keys.metaKey.bytes).hasPrefix("8ead7e6d"))
        #expect(names.directory("vm1") == "d6d89147bbcc38072fe89f28fc246517")
        #expect(names.stem(id) == "a1024abb250f6e8c6c62bb4a24e3dbad")
        #expect(PointNames.plain.directory("vm1") == "vm1" && PointNames.plain.stem(id) == "2026-12-02T15:05:40Z")
    }

    @Test func theKeyedIdIsHMACOfTheBlockUnderTheIdKey() {
        var gen = TestImage(seed: 7)
        let block = gen.textBytes(65536)
        #expect(Hex.encode(Self.keys.idKey.bytes) == "747eace3dce6d2b08af87e74e5e6f8fdf10fc3d5c0e76e7d8602fd87136680e3")
        let id = ChunkHasher(idKey: Self.keys.idKey).digest(block)
        #expect(id.hex == hmac(key: Self.keys.idKey, block))
        #expect(id != ChunkHasher().digest(block))
        #expect(ChunkHasher().digest(block) == SHA256Hasher().digest(block), "unencrypted ids stay plain SHA-256")
    }

    /// A record sealed by the codec, taken apart by hand as docs/FORMAT.md describes it.
    @Test(arguments: [false, true])
    func aSealedRecordOpensWithOpenSSLAndPython(compressible: Bool) throws {
        var gen = TestImage(seed: 11)
        let chunk = compressible ? gen.textBytes(65536) : gen.randomBytes(65536)
        let digest = ChunkHasher(idKey: Self.keys.idKey).digest(chunk)
        let encoder = ChunkEncoder(codec: SealedRecordCodec(dataKey: Self.keys.dataKey, level: 2))
        var slot = [UInt8](repeating: 0, count: ChunkEncoder.slotSize(rawLength: chunk.count))
        let record = slot.withUnsafeMutableBytes { out in
            chunk.withUnsafeBytes { Array(encoder.encode($0, digest: digest, kind: .data, into: out).bytes) }
        }
        let header = try #require(record.withUnsafeBytes { RecordHeader(parsing: $0) })
        #expect(header.compression == (compressible ? .zstd : .none))
        #expect(header.digest == digest && header.rawLength == chunk.count)
        let stored = Array(record[RecordHeader.size...])
        #expect(stored.count == header.storedLength)
        let salt = Array(stored[0..<32])
        let recordKey = hmac(key: Self.keys.dataKey, Array("cairn/v1/record".utf8) + salt)
        var aad = digest.bytes
        aad += withUnsafeBytes(of: UInt32(chunk.count).littleEndian, Array.init)
        aad += [ChunkKind.data.rawValue, header.compression.rawValue]
        let plain = pythonOpen(key: recordKey, sealed: Array(stored[32...]), aad: aad)
        if compressible {
            let zstd = Subprocess.run("zstd", ["-d", "-c"], stdin: Data(Hex.decode(plain, count: plain.count / 2)!))
            #expect(zstd.status == 0 && Array(zstd.stdout.utf8) == chunk, "zstd -d: \(zstd.stderr)")
        } else {
            #expect(plain == Hex.encode(chunk), "Python's AES-GCM opened other bytes")
        }
        // The decoder opens and proves it; with the same bytes under another digest it fails.
        let decoder = RecordDecoder(
            codec: SealedRecordCodec(dataKey: Self.keys.dataKey), hasher: ChunkHasher(idKey: Self.keys.idKey),
            outputBytes: 65536)
        let opened = try record.withUnsafeBytes { bytes throws(CairnError) in
            Array(try decoder.openProved(try EncodedRecord(checking: bytes)))
        }
        #expect(opened == chunk)
    }

    /// Altered bytes, a relabelled header (CRC made good again) and a record of another
    /// repository all fail as damage does.
    @Test func tamperingFailsAsDamage() throws {
        var gen = TestImage(seed: 12)
        let chunk = gen.textBytes(16384)
        let id = ChunkHasher(idKey: Self.keys.idKey).digest(chunk)
        let encoder = ChunkEncoder(codec: SealedRecordCodec(dataKey: Self.keys.dataKey, level: 2))
        var slot = [UInt8](repeating: 0, count: ChunkEncoder.slotSize(rawLength: chunk.count))
        let record = slot.withUnsafeMutableBytes { out in
            chunk.withUnsafeBytes { Array(encoder.encode($0, digest: id, kind: .data, into: out).bytes) }
        }
        let other = MasterKey(master: .random(), repositoryID: Array(repeating: 1, count: 16))
        func opens(_ bytes: [UInt8], keys: MasterKey = Self.keys) -> CairnError? {
            let decoder = RecordDecoder(
                codec: SealedRecordCodec(dataKey: keys.dataKey), hasher: ChunkHasher(idKey: keys.idKey),
                outputBytes: 65536)
            return bytes.withUnsafeBytes { raw -> CairnError? in
                do throws(CairnError) {
                    _ = try decoder.openProved(try EncodedRecord(checking: raw, checkCRC: false))
                    return nil
                } catch { return error }
            }
        }
        func resealed(_ bytes: [UInt8]) -> [UInt8] {
            var copy = bytes
            copy.withUnsafeMutableBytes { RecordHeader.seal($0, storedLength: bytes.count - RecordHeader.size) }
            return copy
        }
        #expect(opens(record) == nil)
        var flipped = record
        flipped[RecordHeader.size + 40] ^= 0x10
        #expect(opens(flipped)?.code == .damaged)
        var salted = record
        salted[RecordHeader.size] ^= 1
        #expect(opens(salted)?.code == .damaged)
        // Relabelled: another digest, or another kind, with a good CRC.
        var relabelled = record
        relabelled[0] ^= 1
        let error = opens(resealed(relabelled))
        #expect(
            error?.code == .damaged && error?.message.contains("fails authentication") == true,
            "\(String(describing: error))")
        var rekinded = record
        rekinded[40] = ChunkKind.indexPage.rawValue
        #expect(opens(resealed(rekinded))?.code == .damaged)
        #expect(opens(record, keys: other)?.code == .damaged)
        // A plain record (what an unencrypted repository holds) does not open either.
        let plainEncoder = ChunkEncoder(level: 2)
        let plain = slot.withUnsafeMutableBytes { out in
            chunk.withUnsafeBytes { Array(plainEncoder.encode($0, digest: id, kind: .data, into: out).bytes) }
        }
        #expect(opens(plain)?.code == .damaged)
    }

    @Test func aSealedFrameBindsItsMemberList() throws {
        var gen = TestImage(seed: 13)
        let blocks = [gen.textBytes(4096), gen.textBytes(4096), gen.randomBytes(4096)]
        let hasher = ChunkHasher(idKey: Self.keys.idKey)
        let ids = blocks.map { hasher.digest($0) }
        let encoder = ChunkEncoder(codec: SealedRecordCodec(dataKey: Self.keys.dataKey, level: 2))
        var slot = [UInt8](repeating: 0, count: ChunkEncoder.frameSlotSize(members: 3, rawLength: 3 * 4096))
        let pointers = blocks.map { bytes -> UnsafeMutableRawBufferPointer in
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
            p.copyBytes(from: bytes)
            return p
        }
        defer { for pointer in pointers { pointer.deallocate() } }
        let record = slot.withUnsafeMutableBytes { out in
            Array(encoder.encodeFrame(count: 3, into: out) { (UnsafeRawBufferPointer(pointers[$0]), ids[$0]) }.bytes)
        }
        let decoder = RecordDecoder(
            codec: SealedRecordCodec(dataKey: Self.keys.dataKey), hasher: ChunkHasher(idKey: Self.keys.idKey),
            outputBytes: 3 * 4096)
        let opened = try record.withUnsafeBytes { raw throws(CairnError) in
            Array(try decoder.openProved(try EncodedRecord(checking: raw)))
        }
        #expect(opened == blocks.flatMap { $0 })
    }
}
