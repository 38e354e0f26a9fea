/// The byte layout of sequential archives (docs/ARCHIVE-FORMAT.md). All integers little-endian.
///
/// An archive is a stream of fixed-size blocks cut into volumes. Each block has a 64-byte header
/// that names the archive, the volume and the block's archive-wide sequence number, so a reader
/// detects truncation, gaps, duplicates and reordering from the headers alone. Data block payloads,
/// concatenated across blocks and volumes, form the record stream: manifests, index pages, chunks.
public enum ArchiveFormat {
    public static let magic: [UInt8] = Array("CAIRNARC".utf8)
    public static let version: UInt16 = 1
    public static let blockHeaderSize = 64
    public static let defaultBlockSize = 256 << 10
    public static let blockSizeRange = (64 << 10)...(4 << 20)
    /// A volume holds at least a label block, one data block and two catalog blocks.
    public static let minimumBlocksPerVolume = 4
    /// `firstRecordOffset` of a block in which no record begins.
    public static let noRecordStart: UInt32 = 0xFFFF_FFFF

    public static let recordMagic: [UInt8] = Array("CREC".utf8)
    /// Magic (4) + type (1) + reserved (3) + body length (4) + header CRC (4).
    public static let recordHeaderSize = 16
    /// Largest manifest record body (the repository's manifests are read with the same limit).
    public static let maxManifestBody = 16 << 20
    /// Largest chunk or index page record body: a pack record header and the biggest stored chunk
    /// or frame record payload.
    public static let maxChunkBody =
        PackFormat.recordHeaderSize + max(PackFormat.maxRecordPayload, ChunkReader.maxFramePayload)
    /// Largest end record, label or catalog.
    public static let maxSmallBody = 1 << 20
    public static let maxCatalogBytes = 64 << 20

    public static func validate(blockSize: Int) throws(CairnError) {
        guard blockSizeRange.contains(blockSize), blockSize & (blockSize - 1) == 0 else {
            throw CairnError(.usage, "archive block size \(blockSize) is not a power of two from 64 KiB to 4 MiB")
        }
    }
}

/// Block flags (header offset 36).
public struct ArchiveBlockFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The first block of a volume: its payload is the volume label (JSON).
    public static let label = ArchiveBlockFlags(rawValue: 1 << 0)
    /// A block of the volume catalog (JSON, split over one or more blocks).
    public static let catalog = ArchiveBlockFlags(rawValue: 1 << 1)
    /// The last block of a volume.
    public static let endOfVolume = ArchiveBlockFlags(rawValue: 1 << 2)
    /// The last block of the archive (always with `endOfVolume`).
    public static let endOfArchive = ArchiveBlockFlags(rawValue: 1 << 3)
    static let known: ArchiveBlockFlags = [.label, .catalog, .endOfVolume, .endOfArchive]
}

/// A 16-byte archive id, printed as 32 hex digits (the same shape as a pack id).
public typealias ArchiveID = PackID

/// The 64-byte header of every block.
///
/// ```
///  0  8  magic "CAIRNARC"          32  4  volume number (1-based)
///  8  2  format version (1)        36  4  flags (ArchiveBlockFlags)
/// 10  2  header size (64)          40  8  sequence number (archive-wide, from 0)
/// 12  4  block size (whole block)  48  4  payload length
/// 16 16  archive id                52  4  first record offset in payload, or 0xFFFFFFFF
///                                  56  4  CRC-32 of the payload bytes
///                                  60  4  CRC-32 of header bytes 0..<60
/// ```
public struct ArchiveBlockHeader: Sendable, Equatable {
    public var blockSize: UInt32
    public var archive: ArchiveID
    public var volume: UInt32
    public var flags: ArchiveBlockFlags
    public var sequence: UInt64
    public var payloadLength: UInt32
    public var firstRecordOffset: UInt32
    public var payloadCRC: UInt32

    /// Writes the header, with its CRC, into the first 64 bytes of `block`.
    func store(into block: UnsafeMutableRawBufferPointer) {
        ArchiveFormat.magic.withUnsafeBytes { block.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 8) }
        block.storeBytes(of: ArchiveFormat.version.littleEndian, toByteOffset: 8, as: UInt16.self)
        block.storeBytes(of: UInt16(ArchiveFormat.blockHeaderSize).littleEndian, toByteOffset: 10, as: UInt16.self)
        block.storeBytes(of: blockSize.littleEndian, toByteOffset: 12, as: UInt32.self)
        block.storeBytes(of: archive.high.bigEndian, toByteOffset: 16, as: UInt64.self)
        block.storeBytes(of: archive.low.bigEndian, toByteOffset: 24, as: UInt64.self)
        block.storeBytes(of: volume.littleEndian, toByteOffset: 32, as: UInt32.self)
        block.storeBytes(of: flags.rawValue.littleEndian, toByteOffset: 36, as: UInt32.self)
        block.storeBytes(of: sequence.littleEndian, toByteOffset: 40, as: UInt64.self)
        block.storeBytes(of: payloadLength.littleEndian, toByteOffset: 48, as: UInt32.self)
        block.storeBytes(of: firstRecordOffset.littleEndian, toByteOffset: 52, as: UInt32.self)
        block.storeBytes(of: payloadCRC.littleEndian, toByteOffset: 56, as: UInt32.self)
        let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: block[0..<60]))
        block.storeBytes(of: crc.littleEndian, toByteOffset: 60, as: UInt32.self)
    }

    /// What is wrong with a header's fixed fields, before its CRC is trusted.
    enum ParseFailure: Equatable {
        case notAnArchive
        case unknownVersion(UInt16)
        case badCRC
        case malformed(String)
    }

    /// Parses the first 64 bytes of a block: magic, version, CRC, then the fields.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<ArchiveBlockHeader, ParseFailureBox> {
        guard bytes.count >= ArchiveFormat.blockHeaderSize,
            ArchiveFormat.magic.withUnsafeBytes({ memcmpEqual($0, UnsafeRawBufferPointer(rebasing: bytes[0..<8])) })
        else { return .failure(ParseFailureBox(.notAnArchive)) }
        let version = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
        guard version == ArchiveFormat.version else { return .failure(ParseFailureBox(.unknownVersion(version))) }
        let crc = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 60, as: UInt32.self))
        guard CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<60])) == crc else {
            return .failure(ParseFailureBox(.badCRC))
        }
        let headerSize = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
        guard headerSize == UInt16(ArchiveFormat.blockHeaderSize) else {
            return .failure(ParseFailureBox(.malformed("header size \(headerSize), not 64")))
        }
        let header = ArchiveBlockHeader(
            blockSize: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
            archive: ArchiveID(
                high: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))),
            volume: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 32, as: UInt32.self)),
            flags: ArchiveBlockFlags(
                rawValue: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 36, as: UInt32.self))),
            sequence: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 40, as: UInt64.self)),
            payloadLength: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 48, as: UInt32.self)),
            firstRecordOffset: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 52, as: UInt32.self)),
            payloadCRC: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 56, as: UInt32.self)))
        guard ArchiveFormat.blockSizeRange.contains(Int(header.blockSize)),
            header.blockSize & (header.blockSize - 1) == 0
        else {
            return .failure(
                ParseFailureBox(.malformed("block size \(header.blockSize) is not a power of two from 64 KiB to 4 MiB"))
            )
        }
        guard Int(header.payloadLength) <= Int(header.blockSize) - ArchiveFormat.blockHeaderSize else {
            return .failure(ParseFailureBox(.malformed("payload length \(header.payloadLength) exceeds the block")))
        }
        guard header.flags.isSubset(of: ArchiveBlockFlags.known) else {
            return .failure(ParseFailureBox(.malformed("unknown flags 0x\(String(header.flags.rawValue, radix: 16))")))
        }
        if header.firstRecordOffset != ArchiveFormat.noRecordStart && header.firstRecordOffset >= header.payloadLength {
            return .failure(
                ParseFailureBox(.malformed("first record offset \(header.firstRecordOffset) lies beyond the payload")))
        }
        return .success(header)
    }

    struct ParseFailureBox: Error {
        var failure: ParseFailure
        init(_ failure: ParseFailure) { self.failure = failure }
    }
}

func memcmpEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    for i in 0..<a.count where a[i] != b[i] { return false }
    return true
}

/// What a record holds (record header offset 4).
public enum ArchiveRecordType: UInt8, Sendable {
    /// A restore point's manifest, byte for byte as the repository stores it.
    case manifest = 1
    /// One page of a disk's index tree: a pack record (48-byte header + stored bytes).
    case indexPage = 2
    /// One data chunk, or a frame record of several: a pack record (48-byte header + stored bytes).
    case chunk = 3
    /// The end of the record stream: JSON counts (`ArchiveEnd`).
    case end = 4

    var name: String {
        switch self {
        case .manifest: return "manifest"
        case .indexPage: return "index page"
        case .chunk: return "chunk"
        case .end: return "end"
        }
    }

    var maxBody: Int {
        switch self {
        case .manifest: return ArchiveFormat.maxManifestBody
        case .indexPage, .chunk: return ArchiveFormat.maxChunkBody
        case .end: return ArchiveFormat.maxSmallBody
        }
    }
}

/// The record header: `CREC`, type, 3 reserved bytes, body length, CRC-32 of the first 12 bytes.
enum ArchiveRecordHeader {
    static func store(type: ArchiveRecordType, bodyLength: Int, into buffer: UnsafeMutableRawBufferPointer) {
        ArchiveFormat.recordMagic.withUnsafeBytes {
            buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 4)
        }
        buffer.storeBytes(of: type.rawValue, toByteOffset: 4, as: UInt8.self)
        buffer.storeBytes(of: UInt8(0), toByteOffset: 5, as: UInt8.self)
        buffer.storeBytes(of: UInt16(0), toByteOffset: 6, as: UInt16.self)
        buffer.storeBytes(of: UInt32(bodyLength).littleEndian, toByteOffset: 8, as: UInt32.self)
        let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<12]))
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: 12, as: UInt32.self)
    }

    /// Type and body length, or a reason the 16 bytes are not a record header.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<(ArchiveRecordType, Int), CairnError> {
        guard
            ArchiveFormat.recordMagic.withUnsafeBytes({
                memcmpEqual($0, UnsafeRawBufferPointer(rebasing: bytes[0..<4]))
            })
        else { return .failure(CairnError(.badArchive, "no record header (magic CREC) where a record should begin")) }
        let crc = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        guard CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<12])) == crc else {
            return .failure(CairnError(.damaged, "a record header fails its CRC"))
        }
        guard let type = ArchiveRecordType(rawValue: bytes[4]) else {
            return .failure(CairnError(.badArchive, "unknown record type \(bytes[4])"))
        }
        let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        guard length <= type.maxBody else {
            return .failure(
                CairnError(
                    .badArchive, "a \(type.name) record claims \(length) bytes, more than the \(type.maxBody) allowed"))
        }
        return .success((type, length))
    }
}

/// The volume label: the payload of each volume's first block.
public struct ArchiveLabel: Codable, Sendable, Equatable {
    public var format: Int
    public var archive: String
    public var volume: Int
    public var created: String
    public var tool: String
    /// Bytes per archive block.
    public var archiveBlockSize: Int
    /// The block size of the repository the restore points came from (chunks are this big).
    public var chunkBlockSize: Int
    /// The id of the repository the restore points came from.
    public var repository: String
    /// The format features a reader must understand (`FormatFeature`): `["frames"]`. Absent in
    /// archives written before the list existed (which may hold frame records all the same).
    public var features: [String]? = nil
    /// Encrypted archives only (feature `encryption`): the source repository's key files, each
    /// wrapping its master key under one passphrase (never the key itself), and the master key's
    /// fingerprint, which every one of them must carry.
    public var keys: [KeyFile]? = nil
    public var fingerprint: String? = nil

    /// Whether the archive's records are sealed (feature `encryption`).
    public var isEncrypted: Bool { ArchiveKeys.isEncrypted(self) }
}

/// The volume catalog: the payload of the catalog blocks at a volume's end.
public struct ArchiveVolumeCatalog: Codable, Sendable, Equatable {
    public var format: Int
    public var archive: String
    public var volume: Int
    /// True on the archive's last volume, whose `points` then lists every restore point of the archive.
    public var last: Bool
    /// The number of volumes; only on the last volume.
    public var volumes: Int?
    /// Sequence numbers of this volume's first and last data blocks (equal to the label's + 1 when
    /// the volume holds one data block).
    public var firstSequence: UInt64
    public var dataBlocks: Int
    /// Records that begin in this volume.
    public var records: Int
    public var chunks: Int
    public var indexPages: Int
    /// Restore points whose manifest record begins in this volume (every point on the last volume).
    /// Empty in an encrypted archive, whose catalog carries them in `sealedPoints`.
    public var points: [ArchivePointEntry]
    /// Encrypted archives only: `points` as JSON, sealed (`ArchiveKeys.sealPoints`), in base64.
    public var sealedPoints: String? = nil
}

/// A restore point in an archive.
public struct ArchivePointEntry: Codable, Sendable, Equatable {
    public var id: String
    /// The volume in which its manifest record begins.
    public var volume: Int
    public var disks: [Disk]

    public struct Disk: Codable, Sendable, Equatable {
        public var name: String
        public var size: UInt64
        public var blockCount: UInt64
    }

    init(_ manifest: Manifest, volume: Int) {
        id = manifest.id.description
        self.volume = volume
        disks = manifest.disks.map { Disk(name: $0.name, size: $0.size, blockCount: $0.blockCount) }
    }
}

/// The body of the end record.
public struct ArchiveEnd: Codable, Sendable, Equatable {
    public var points: Int
    public var indexPages: Int
    public var chunks: Int
    /// Records before the end record.
    public var records: Int
}
