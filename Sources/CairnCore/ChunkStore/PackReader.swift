/// Reads and checks one pack: its footer and table, and single records. Immutable, and its reads
/// are positional, so any number of threads may read one pack at once.
public final class PackReader: Sendable {
    public let id: PackID
    /// The pack's file or object, for messages.
    public let path: String
    let object: any StoredObject
    public let size: UInt64

    /// Opens the pack `id` of a repository's storage.
    convenience init(id: PackID, in storage: any RepositoryStorage) throws(CairnError) {
        try self.init(id: id, path: "\(storage.location)/\(id.relativePath)") { () throws(CairnError) in
            try storage.openRecords(id.relativePath)
        }
    }

    /// Opens a pack file outside any repository (tests).
    public convenience init(path: String, id: PackID) throws(CairnError) {
        try self.init(id: id, path: path) { () throws(CairnError) in
            let file = try File.open(path, .readOnly)
            return LocalObject(file: file, size: try file.size())
        }
    }

    private init(id: PackID, path: String, open: () throws(CairnError) -> any StoredObject) throws(CairnError) {
        self.path = path
        self.id = id
        do {
            object = try open()
        } catch let error where error.code == .notFound {
            throw CairnError(.damaged, "pack \(id) is missing (\(path))")
        }
        size = object.size
    }

    /// Reads the pack's table of records, checking footer, magic and CRC.
    public func readTable() throws(CairnError) -> [PackRecord] {
        let minimum = UInt64(PackFormat.headerSize + PackFormat.footerSize)
        guard size >= minimum else {
            throw CairnError(.damaged, "pack \(id) is truncated: \(size) bytes, less than a header and footer")
        }
        let footerBytes = try object.readBytes(count: PackFormat.footerSize, at: size - UInt64(PackFormat.footerSize))
        var footer = ByteReader(footerBytes, context: "footer of pack \(id)")
        let tableOffset = try footer.le(UInt64.self)
        let count = try footer.le(UInt32.self)
        let tableCRC = try footer.le(UInt32.self)
        let packID = PackID(bytes: try footer.bytes(16))
        let magic = try footer.bytes(8)
        guard magic == PackFormat.footerMagic, packID == id else {
            throw CairnError(.damaged, "pack \(id) has a damaged footer (bad magic or pack id at offset \(size - 40))")
        }
        let tableLength = UInt64(count) * UInt64(PackFormat.tableEntrySize)
        // `tableOffset` is read from the file: compared before any sum it is part of can overflow.
        guard tableOffset >= UInt64(PackFormat.headerSize), tableOffset <= size,
            size - tableOffset == tableLength + UInt64(PackFormat.footerSize)
        else {
            throw CairnError(
                .damaged,
                "pack \(id) has a damaged footer: table at \(tableOffset) with \(count) entries does not fit the file")
        }
        let tableBytes = try object.readBytes(count: Int(tableLength), at: tableOffset)
        guard CRC32.checksum(tableBytes) == tableCRC else {
            throw CairnError(.damaged, "pack \(id) has a damaged record table (CRC mismatch at offset \(tableOffset))")
        }
        var r = ByteReader(tableBytes, context: "record table of pack \(id)")
        var records: [PackRecord] = []
        records.reserveCapacity(Int(count))
        for _ in 0..<count {
            let digest = try r.digest()
            let offset = try r.le(UInt64.self)
            let stored = try r.le(UInt32.self)
            let raw = try r.le(UInt32.self)
            let kind = ChunkKind(rawValue: try r.le(UInt8.self))
            let compression = ChunkCompression(rawValue: try r.le(UInt8.self))
            try r.skip(2)
            let crc = try r.le(UInt32.self)
            let frameOffset = try r.le(UInt32.self)
            guard let kind, let compression, kind != .frame,
                offset <= tableOffset,
                UInt64(RecordHeader.size) + UInt64(stored) <= tableOffset - offset
            else {
                throw CairnError(.damaged, "pack \(id) lists a record at offset \(offset) that does not fit the pack")
            }
            records.append(
                PackRecord(
                    digest: digest, offset: offset, storedLength: stored, rawLength: raw, kind: kind,
                    compression: compression, crc: crc, frameOffset: compression == .framed ? frameOffset : nil))
        }
        return records
    }

    /// Reads up to `buffer.count` bytes at `offset` unchecked, fewer only where the pack ends:
    /// a `PackSpan`'s bytes, whose records are checked one by one as they are used.
    func readSpan(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int {
        try object.read(into: buffer, at: offset)
    }

    /// Reads the record at `offset` into `buffer` and checks it (`EncodedRecord(checking:)`:
    /// lengths, kind, a frame's member list, the CRC unless `checkCRC` is false) and that it is
    /// what the index expects: `expected` is the chunk's digest, or nil for a frame record
    /// (whose members the caller proves). The record lies in `buffer` until the next read, or
    /// in `span` when that holds all of it (nothing is read then).
    func readRecord(
        at offset: UInt64, storedLength: Int, expected digest: ChunkDigest?, into buffer: UnsafeMutableRawBufferPointer,
        checkCRC: Bool = true, maxChunk: Int = PackFormat.maxRecordPayload, from span: PackSpan? = nil
    ) throws(CairnError) -> EncodedRecord {
        let what = digest.map { "chunk \($0)" } ?? "frame record"
        let total = RecordHeader.size + storedLength
        guard total <= buffer.count else {
            throw CairnError(
                .damaged, "\(what) in pack \(id) claims \(storedLength) stored bytes, more than any record")
        }
        let region: UnsafeRawBufferPointer
        if let span, span.pack == id, let held = span.bytes(at: offset, count: total) {
            region = held
        } else {
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<total])
            let n = try object.read(into: target, at: offset)
            guard n == total else {
                throw CairnError(
                    .damaged, "\(what) in pack \(id) at offset \(offset) is cut off: the pack is truncated")
            }
            region = UnsafeRawBufferPointer(target)
        }
        let record = try EncodedRecord(
            checking: region, checkCRC: checkCRC, maxChunk: maxChunk,
            place: " in pack \(id) at offset \(offset)")
        guard digest.map({ record.header.digest == $0 && !record.header.isFrame }) ?? record.header.isFrame else {
            throw CairnError(.damaged, "record at offset \(offset) in pack \(id) is not \(what)")
        }
        return record
    }
}
