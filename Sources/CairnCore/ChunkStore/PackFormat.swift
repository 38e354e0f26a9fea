/// The byte layout of pack files (docs/FORMAT.md, "Pack files"). All integers little-endian.
///
/// A pack is `header | record* | table | footer`. Every record carries its digest, lengths and a
/// CRC-32, so a pack can be checked, and the chunk index rebuilt, from the pack alone.
public enum PackFormat {
    public static let headerMagic: [UInt8] = Array("CAIRNPK1".utf8)
    public static let footerMagic: [UInt8] = Array("CAIRNPKE".utf8)
    /// Magic (8) + pack id (16) + reserved (8).
    public static let headerSize = 32
    /// Digest (32) + stored length (4) + raw length (4) + kind (1) + compression (1) + reserved (2) + CRC (4).
    public static let recordHeaderSize = 48
    /// Digest (32) + offset (8) + stored length (4) + raw length (4) + kind (1) + compression (1) + reserved (2) + CRC (4) + reserved (4).
    public static let tableEntrySize = 60
    /// Table offset (8) + entry count (4) + table CRC (4) + pack id (16) + magic (8).
    public static let footerSize = 40
    /// Largest chunk a pack may hold (4 MiB blocks, uncompressed) plus slack; bounds every allocation.
    public static let maxRecordPayload = 5 << 20

    public static func recordHeader(
        digest: ChunkDigest, storedLength: Int, rawLength: Int, kind: ChunkKind, compression: ChunkCompression,
        crc: UInt32
    ) -> [UInt8] {
        var w = ByteWriter(capacity: recordHeaderSize)
        w.append(digest)
        w.le(UInt32(storedLength))
        w.le(UInt32(rawLength))
        w.le(kind.rawValue)
        w.le(compression.rawValue)
        w.le(UInt16(0))
        w.le(crc)
        return w.bytes
    }

    /// Writes a record header into `buffer` (which must hold `recordHeaderSize` bytes) without allocating.
    static func storeRecordHeader(
        into buffer: UnsafeMutableRawBufferPointer, digest: ChunkDigest, storedLength: Int, rawLength: Int,
        kind: ChunkKind, compression: ChunkCompression, crc: UInt32
    ) {
        digest.store(to: buffer, at: 0)
        buffer.storeBytes(of: UInt32(storedLength).littleEndian, toByteOffset: 32, as: UInt32.self)
        buffer.storeBytes(of: UInt32(rawLength).littleEndian, toByteOffset: 36, as: UInt32.self)
        buffer.storeBytes(of: kind.rawValue, toByteOffset: 40, as: UInt8.self)
        buffer.storeBytes(of: compression.rawValue, toByteOffset: 41, as: UInt8.self)
        buffer.storeBytes(of: UInt16(0), toByteOffset: 42, as: UInt16.self)
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: 44, as: UInt32.self)
    }

    /// The CRC of a record: over its first 44 header bytes, then its stored payload.
    static func recordCRC(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> UInt32 {
        CRC32.checksum(payload, seed: CRC32.checksum(UnsafeRawBufferPointer(rebasing: header[0..<44])))
    }
}

/// What a chunk holds.
public enum ChunkKind: UInt8, Sendable, Codable {
    /// A block of a guest disk.
    case data = 0
    /// A page of a restore point's index tree.
    case indexPage = 1
}

/// How a chunk's bytes are stored.
public enum ChunkCompression: UInt8, Sendable, Codable {
    case none = 0
    case zstd = 1
}

/// A pack's record as listed in its table: where a chunk lives and how it is stored.
public struct PackRecord: Sendable, Equatable {
    public var digest: ChunkDigest
    /// Offset of the record header within the pack.
    public var offset: UInt64
    public var storedLength: UInt32
    public var rawLength: UInt32
    public var kind: ChunkKind
    public var compression: ChunkCompression
    public var crc: UInt32
}

/// A pack's name: 16 random bytes, printed as 32 hex digits.
public struct PackID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public static func random() -> PackID {
        var generator = SystemRandomNumberGenerator()
        return PackID(high: generator.next(), low: generator.next())
    }

    public init?(hex: String) {
        guard hex.utf8.count == 32, let h = UInt64(hex.prefix(16), radix: 16), let l = UInt64(hex.suffix(16), radix: 16)
        else { return nil }
        high = h
        low = l
    }

    public var hex: String {
        func pad(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return pad(high) + pad(low)
    }

    public var description: String { hex }

    public var bytes: [UInt8] {
        var w = ByteWriter(capacity: 16)
        w.be(high)
        w.be(low)
        return w.bytes
    }

    public init(bytes: [UInt8]) {
        var r = ByteReader(bytes, context: "pack id")
        high = (try? r.be(UInt64.self)) ?? 0
        low = (try? r.be(UInt64.self)) ?? 0
    }

    public static func < (a: PackID, b: PackID) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// `packs/ab/ab….pack` relative to the repository.
    public var relativePath: String { "packs/\(hex.prefix(2))/\(hex).pack" }
}
