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

    /// Plain bytes a frame record may hold (2 MiB). zstd finds far more matches in 2 MiB than in
    /// one 64 KiB block: 5% less stored at level 1, 11% with level 2 tuned (docs/ARCHITECTURE.md).
    public static let maxFrameBytes = 2 << 20
    /// Member count (4) at the start of a frame record's payload.
    public static let frameCountSize = 4
    /// Digest (32) + raw length (4) + kind (1) + reserved (3), per member of a frame record.
    public static let frameMemberSize = 40
    /// Most members a frame may list: a whole frame of 4 KiB blocks.
    public static let maxFrameMembers = maxFrameBytes / 4096

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

/// One chunk listed at the start of a frame record's payload.
struct FrameMember: Equatable {
    var digest: ChunkDigest
    var rawLength: Int
    var kind: ChunkKind
    /// Where the member starts in the frame's plain bytes (the sum of the lengths before it).
    var offset: Int
}

extension PackFormat {
    /// Reads the member list at the start of a frame record's payload into `members` (emptied
    /// first, its storage kept, so readers that meet many frames allocate nothing per frame),
    /// checking that it is well formed and that the members add up to the frame's raw length.
    /// Returns the list's length (the frame's data follows it). `context` names the record in
    /// errors and is only built for one.
    static func frameMembers(
        payload: UnsafeRawBufferPointer, rawLength: Int, context: @autoclosure () -> String,
        into members: inout [FrameMember]
    ) throws(CairnError) -> Int {
        members.removeAll(keepingCapacity: true)
        guard payload.count >= frameCountSize else {
            throw CairnError(.damaged, "\(context()) is too short for a frame record")
        }
        let count = Int(UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        let listLength = frameCountSize + count * frameMemberSize
        guard count >= 1, count <= maxFrameMembers, listLength <= payload.count, rawLength <= maxFrameBytes else {
            throw CairnError(.damaged, "\(context()) has a malformed frame member list (\(count) members)")
        }
        members.reserveCapacity(count)
        var offset = 0
        for i in 0..<count {
            let at = frameCountSize + i * frameMemberSize
            let length = Int(UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: at + 32, as: UInt32.self)))
            guard let kind = ChunkKind(rawValue: payload[at + 36]), kind != .frame, length <= maxFrameBytes else {
                throw CairnError(.damaged, "\(context()) lists a malformed frame member \(i)")
            }
            members.append(
                FrameMember(
                    digest: ChunkDigest(loadingFrom: payload, at: at), rawLength: length, kind: kind, offset: offset))
            offset += length
        }
        guard offset == rawLength else {
            throw CairnError(.damaged, "\(context()): its frame members add up to \(offset) bytes, not \(rawLength)")
        }
        return listLength
    }

    /// Appends to `entries` the table entries of the record laid out in `record` (header and
    /// payload) at `offset` in its pack: the record itself, or for a frame record one entry per
    /// member. Returns how many it appended.
    @discardableResult
    static func appendTableEntries(
        of record: UnsafeRawBufferPointer, at offset: UInt64, to entries: inout [PackRecord]
    ) throws(CairnError) -> Int {
        let header = UnsafeRawBufferPointer(rebasing: record[0..<recordHeaderSize])
        let stored = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 32, as: UInt32.self))
        let raw = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 36, as: UInt32.self))
        let crc = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 44, as: UInt32.self))
        guard let kind = ChunkKind(rawValue: header[40]), let compression = ChunkCompression(rawValue: header[41]),
            compression != .framed
        else {
            throw CairnError(.damaged, "record at offset \(offset) has an unknown kind or compression")
        }
        guard kind == .frame else {
            entries.append(
                PackRecord(
                    digest: ChunkDigest(loadingFrom: header), offset: offset, storedLength: stored, rawLength: raw,
                    kind: kind, compression: compression, crc: crc))
            return 1
        }
        var members: [FrameMember] = []
        _ = try frameMembers(
            payload: UnsafeRawBufferPointer(rebasing: record[recordHeaderSize...]), rawLength: Int(raw),
            context: "frame record at offset \(offset)", into: &members)
        for m in members {
            entries.append(
                PackRecord(
                    digest: m.digest, offset: offset, storedLength: stored, rawLength: UInt32(m.rawLength),
                    kind: m.kind, compression: .framed, crc: crc, frameOffset: UInt32(m.offset)))
        }
        return members.count
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
