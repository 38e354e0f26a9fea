/// The 48-byte header in front of every pack record (docs/FORMAT.md, "Records"), read and
/// written only here. All integers little-endian:
///
///     0  digest (32)   32 stored length (4)   36 raw length (4)   40 kind (1)
///     41 compression (1)   42 reserved (2)   44 CRC-32 (4)
///
/// Archives carry the same records unchanged (docs/ARCHIVE-FORMAT.md), so this one type also
/// reads the records of an archive.
public struct RecordHeader: Sendable, Equatable {
    /// Bytes in a header.
    public static let size = 48
    /// Where the CRC sits; it covers the header bytes before it, then the stored payload.
    static let crcOffset = 44

    /// The chunk's digest; for a frame record, the SHA-256 of its member list.
    public var digest: ChunkDigest
    /// Payload bytes after the header (for a frame, its member list and its data).
    public var storedLength: Int
    /// Plain bytes of the chunk, or of all of a frame's members.
    public var rawLength: Int
    public var kind: ChunkKind
    /// `.none` or `.zstd`: `.framed` is a table entry's value, never a record's.
    public var compression: ChunkCompression
    public var crc: UInt32

    public init(
        digest: ChunkDigest, storedLength: Int, rawLength: Int, kind: ChunkKind, compression: ChunkCompression,
        crc: UInt32 = 0
    ) {
        self.digest = digest
        self.storedLength = storedLength
        self.rawLength = rawLength
        self.kind = kind
        self.compression = compression
        self.crc = crc
    }

    /// Reads the header in the first 48 bytes of `bytes`; nil if there are fewer, or the kind or
    /// compression byte names nothing a record may hold.
    public init?(parsing bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.size, let kind = ChunkKind(rawValue: bytes[40]),
            let compression = ChunkCompression(rawValue: bytes[41]), compression != .framed
        else { return nil }
        self.init(
            digest: ChunkDigest(loadingFrom: bytes),
            storedLength: Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 32, as: UInt32.self))),
            rawLength: Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 36, as: UInt32.self))),
            kind: kind, compression: compression,
            crc: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: Self.crcOffset, as: UInt32.self)))
    }

    var isFrame: Bool { kind == .frame }

    /// Header and payload together.
    var recordLength: Int { Self.size + storedLength }

    /// Writes the header into the first 48 bytes of `buffer` without allocating. Lengths are at
    /// most `PackFormat.maxRecordPayload`, far below `UInt32.max`.
    func store(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size && storedLength <= UInt32.max && rawLength <= UInt32.max)
        digest.store(to: buffer, at: 0)
        buffer.storeBytes(of: UInt32(storedLength).littleEndian, toByteOffset: 32, as: UInt32.self)
        buffer.storeBytes(of: UInt32(rawLength).littleEndian, toByteOffset: 36, as: UInt32.self)
        buffer.storeBytes(of: kind.rawValue, toByteOffset: 40, as: UInt8.self)
        buffer.storeBytes(of: compression.rawValue, toByteOffset: 41, as: UInt8.self)
        buffer.storeBytes(of: UInt16(0), toByteOffset: 42, as: UInt16.self)
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: Self.crcOffset, as: UInt32.self)
    }

    /// The header as bytes (for tests and tools that build packs by hand).
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, count in
            store(into: UnsafeMutableRawBufferPointer(buffer))
            count = Self.size
        }
    }

    /// The CRC-32 of a record: over the first 44 bytes of its header, then its stored payload.
    static func crc(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> UInt32 {
        CRC32.checksum(payload, seed: CRC32.checksum(UnsafeRawBufferPointer(rebasing: header[0..<crcOffset])))
    }

    /// Computes the CRC of the record laid out in `record` (header, then `storedLength` payload
    /// bytes) and writes it into the header.
    static func seal(_ record: UnsafeMutableRawBufferPointer, storedLength: Int) {
        let header = UnsafeRawBufferPointer(rebasing: record[0..<size])
        let payload = UnsafeRawBufferPointer(rebasing: record[size..<(size + storedLength)])
        record.storeBytes(
            of: crc(header: header, payload: payload).littleEndian, toByteOffset: crcOffset, as: UInt32.self)
    }
}
