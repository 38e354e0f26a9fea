/// The byte layout of pack files (docs/FORMAT.md, "Pack files"). All integers little-endian.
///
/// A pack is `header | record* | table | footer`. Every record carries its digest, lengths and a
/// CRC-32, so a pack can be checked, and the chunk index rebuilt, from the pack alone.
public enum PackFormat {
    public static let headerMagic: [UInt8] = Array("CAIRNPK1".utf8)
    public static let footerMagic: [UInt8] = Array("CAIRNPKE".utf8)
    /// Magic (8) + pack id (16) + reserved (8).
    public static let headerSize = 32
    /// The header in front of every record (`RecordHeader`).
    public static let recordHeaderSize = RecordHeader.size
    /// Digest (32) + offset (8) + stored length (4) + raw length (4) + kind (1) + compression (1) + reserved (2) + CRC (4) + reserved (4).
    public static let tableEntrySize = 60
    /// Table offset (8) + entry count (4) + table CRC (4) + pack id (16) + magic (8).
    public static let footerSize = 40
    /// Largest chunk a pack may hold (4 MiB blocks, uncompressed) plus slack; bounds every allocation.
    public static let maxRecordPayload = 5 << 20

    /// Plain bytes a frame record may hold (2 MiB). zstd finds far more matches in 2 MiB than in
    /// one 64 KiB block: 5% less stored at level 1, 11% with level 2 tuned (docs/ARCHITECTURE.md).
    public static let maxFrameBytes = 2 << 20
    /// Digest (32) + raw length (4) + kind (1) + reserved (3), per member of a frame record
    /// (`RecordMembers`; public for readers outside the module, the pack fuzz target among them).
    public static let frameMemberSize = RecordMembers.entrySize
    /// Most members a frame may list: a whole frame of 4 KiB blocks.
    public static let maxFrameMembers = maxFrameBytes / 4096

    /// The CRC of a record: over its first 44 header bytes, then its stored payload.
    static func recordCRC(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> UInt32 {
        RecordHeader.crc(header: header, payload: payload)
    }
}

/// What a chunk holds.
public enum ChunkKind: UInt8, Sendable, Codable {
    /// A block of a guest disk.
    case data = 0
    /// A page of a restore point's index tree.
    case indexPage = 1
    /// A frame record: several chunks compressed together (only in pack records, never a
    /// chunk's own kind).
    case frame = 2
}

/// How a chunk's bytes are stored.
public enum ChunkCompression: UInt8, Sendable, Codable {
    case none = 0
    case zstd = 1
    /// In a pack's table only: the chunk is a member of the frame record at the entry's offset.
    case framed = 2
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
    /// For a frame member: where its bytes start in the frame's plain bytes.
    public var frameOffset: UInt32? = nil

    /// Where the index finds this chunk.
    public func location(in pack: PackID) -> ChunkLocation {
        ChunkLocation(
            pack: pack, offset: offset, storedLength: storedLength, rawLength: rawLength, frameOffset: frameOffset)
    }
}

extension PackFormat {
    /// Appends to `entries` the table entries of `record`, which lies at `offset` in its pack:
    /// the record itself, or for a frame record one entry per member. Returns how many it
    /// appended. The record's members come with it (from the encoder, or checked when read), so
    /// nothing is parsed here.
    @discardableResult
    static func appendTableEntries(
        of record: EncodedRecord, at offset: UInt64, to entries: inout [PackRecord]
    ) -> Int {
        let h = record.header
        guard h.isFrame else {
            entries.append(
                PackRecord(
                    digest: h.digest, offset: offset, storedLength: UInt32(h.storedLength),
                    rawLength: UInt32(h.rawLength), kind: h.kind, compression: h.compression, crc: h.crc))
            return 1
        }
        for m in record.members {
            entries.append(
                PackRecord(
                    digest: m.digest, offset: offset, storedLength: UInt32(h.storedLength),
                    rawLength: UInt32(m.rawLength),
                    kind: m.kind, compression: .framed, crc: h.crc, frameOffset: UInt32(m.offset)))
        }
        return record.members.count
    }
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
