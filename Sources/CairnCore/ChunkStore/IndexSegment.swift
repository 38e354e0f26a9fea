/// Where a stored chunk lives.
public struct ChunkLocation: Sendable, Equatable {
    public var pack: PackID
    /// Offset of the record header in the pack.
    public var offset: UInt64
    public var storedLength: UInt32
    public var rawLength: UInt32
    /// Nil for a chunk stored alone; for a member of a frame record (at `offset`, of
    /// `storedLength`), where its `rawLength` bytes start in the frame's plain bytes.
    public var frameOffset: UInt32?

    public init(pack: PackID, offset: UInt64, storedLength: UInt32, rawLength: UInt32, frameOffset: UInt32? = nil) {
        self.pack = pack
        self.offset = offset
        self.storedLength = storedLength
        self.rawLength = rawLength
        self.frameOffset = frameOffset
    }

    /// How index segments write "not in a frame".
    static let notFramed = UInt32.max
}

/// One immutable, sorted file of the chunk index: digest → pack, offset, lengths.
///
/// Layout (docs/FORMAT.md, "Chunk index segments"): header, pack table, 256-entry fan-out by the
/// digest's first byte, 52-byte entries sorted by digest (48 in version 1, which had no frames),
/// CRC footer. Searched through a memory
/// map: a lookup is one fan-out read and a binary search over the pages it touches.
///
/// Sendable without the compiler's check because it holds a memory map (a C pointer): the map
/// is read-only and lives as long as the segment, and every other property is immutable after
/// `init`, so any number of threads may search one segment at once.
public final class IndexSegment: @unchecked Sendable {
    public static let magic: [UInt8] = Array("CAIRNIX1".utf8)
    public static let footerMagic: [UInt8] = Array("CAIRNIXE".utf8)
    /// Version written; version 1 (no frame offsets) is still read.
    static let version: UInt32 = 2
    static let headerSize = 32
    static let entrySize = 52
    static let fanoutSize = 256 * 4
    static let footerSize = 16

    /// The segment's file or object, for messages.
    public let path: String
    /// Its key in the repository's storage (`index/NAME`).
    public let key: String
    public let name: String
    let map: MappedFile
    public let packs: [PackID]
    public let entryCount: Int
    /// Bytes per entry in this file: 48 (version 1) or 52.
    let entryStride: Int
    private let fanoutOffset: Int
    private let entriesOffset: Int

    /// Opens the segment `key` of a repository's storage.
    convenience init(key: String, in storage: any RepositoryStorage) throws(CairnError) {
        try self.init(key: key, path: "\(storage.location)/\(key)", map: try storage.map(key))
    }

    /// Opens a segment file outside any repository (tests, benchmarks).
    public convenience init(path: String) throws(CairnError) {
        try self.init(key: FileSystem.baseName(path), path: path, map: try MappedFile(path: path))
    }

    init(key: String, path: String, map: MappedFile) throws(CairnError) {
        self.path = path
        self.key = key
        self.name = FileSystem.baseName(key)
        self.map = map
        let bytes = map.bytes
        let fixed = Self.headerSize + Self.fanoutSize + Self.footerSize
        guard bytes.count >= fixed, Array(bytes[0..<8]) == Self.magic else {
            throw CairnError(
                .damaged,
                "chunk index segment \(path) is not a Cairn index segment (bad magic or truncated): rebuild the index with `cairn rebuild-index`"
            )
        }
        let version = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard version == 1 || version == Self.version else {
            throw CairnError(
                .repository,
                "chunk index segment \(path) has format version \(version); this Cairn reads versions 1 and \(Self.version)"
            )
        }
        let stride = version == 1 ? 48 : Self.entrySize
        let packCount = UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let entries = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        // Both counts come from disk: bound each by the bytes there are before multiplying, so a
        // flipped bit is reported as damage instead of overflowing.
        let variable = UInt64(bytes.count - fixed)
        let fits =
            packCount <= variable / 16 && entries <= (variable - packCount * 16) / UInt64(stride)
            && packCount * 16 + entries * UInt64(stride) == variable
        guard fits else {
            throw CairnError(
                .damaged,
                "chunk index segment \(path) is damaged: its header lists \(packCount) packs and \(entries) entries, which do not fit its \(bytes.count) bytes (rebuild the index with `cairn rebuild-index`)"
            )
        }
        var packs: [PackID] = []
        packs.reserveCapacity(Int(packCount))
        for i in 0..<Int(packCount) {
            let at = Self.headerSize + i * 16
            packs.append(PackID(bytes: Array(bytes[at..<at + 16])))
        }
        self.packs = packs
        entryCount = Int(entries)
        entryStride = stride
        fanoutOffset = Self.headerSize + Int(packCount) * 16
        entriesOffset = fanoutOffset + Self.fanoutSize
    }

    private func fanout(_ i: Int) -> Int {
        Int(UInt32(littleEndian: map.bytes.loadUnaligned(fromByteOffset: fanoutOffset + i * 4, as: UInt32.self)))
    }

    public func digest(at index: Int) -> ChunkDigest {
        ChunkDigest(loadingFrom: map.bytes, at: entriesOffset + index * entryStride)
    }

    public func location(at index: Int) -> ChunkLocation? {
        let at = entriesOffset + index * entryStride + 32
        let b = map.bytes
        let pack = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        guard pack < packs.count else { return nil }
        var frameOffset: UInt32?
        if entryStride > 48 {
            let raw = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 16, as: UInt32.self))
            if raw != ChunkLocation.notFramed { frameOffset = raw }
        }
        return ChunkLocation(
            pack: packs[pack],
            offset: UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self))),
            storedLength: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self)),
            rawLength: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self)),
            frameOffset: frameOffset)
    }

    /// - Complexity: O(log n) over the entries sharing the digest's first byte.
    public func lookup(_ digest: ChunkDigest) -> ChunkLocation? {
        let first = Int(digest.prefix >> 56)
        var lo = first == 0 ? 0 : fanout(first - 1)
        var hi = fanout(first)
        guard lo <= hi, hi <= entryCount else { return nil }
        while lo < hi {
            let mid = (lo + hi) / 2
            let d = self.digest(at: mid)
            if d == digest { return location(at: mid) }
            if d < digest { lo = mid + 1 } else { hi = mid }
        }
        return nil
    }

    /// Checks the whole file's CRC (verify does this; lookups trust the header checks).
    public func checkIntegrity() throws(CairnError) {
        let b = map.bytes
        let body = UnsafeRawBufferPointer(rebasing: b[0..<(b.count - Self.footerSize)])
        let stored = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: b.count - Self.footerSize, as: UInt32.self))
        guard Array(b[(b.count - 8)...]) == Self.footerMagic, CRC32.checksum(body) == stored else {
            throw CairnError(
                .damaged,
                "chunk index segment \(name) fails its CRC: it is damaged (rebuild the index with `cairn rebuild-index`)"
            )
        }
        var previous: ChunkDigest?
        for i in 0..<entryCount {
            let d = digest(at: i)
            if let previous, !(previous < d) {
                throw CairnError(.damaged, "chunk index segment \(name) is not sorted at entry \(i)")
            }
            previous = d
        }
    }
}
