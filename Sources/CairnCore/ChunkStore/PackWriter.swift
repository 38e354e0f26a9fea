/// Appends chunk records to one new pack file under a temporary name.
///
/// The pack becomes visible under its real name only when the chunk store commits it, after
/// its bytes are durable; an interrupted run leaves a `.tmp-PID` file that is cleaned up later.
final class PackWriter {
    let id: PackID
    let finalPath: String
    let temporaryPath: String
    private let file: File
    private(set) var size: UInt64
    private(set) var records: [PackRecord] = []

    init(repositoryPath: String) throws(CairnError) {
        id = PackID.random()
        finalPath = "\(repositoryPath)/\(id.relativePath)"
        temporaryPath = FileSystem.temporaryName(for: finalPath)
        try FileSystem.createDirectories(FileSystem.directoryName(finalPath))
        file = try File.open(temporaryPath, .createNew)
        var header = ByteWriter(capacity: PackFormat.headerSize)
        header.append(PackFormat.headerMagic)
        header.append(id.bytes)
        header.zeros(8)
        do {
            try file.write(header.bytes, at: 0)
        } catch {
            // On a full disk the file is created (an inode) but its header is not: the store never
            // learns of this writer, so remove the file here.
            try? FileSystem.remove(temporaryPath)
            throw error
        }
        size = UInt64(PackFormat.headerSize)
    }

    /// Appends one record (header and payload, its members known); returns its table entries
    /// (one, or one per member of a frame record).
    @discardableResult
    func append(record: EncodedRecord) throws(CairnError) -> ArraySlice<PackRecord> {
        let first = records.count
        PackFormat.appendTableEntries(of: record, at: size, to: &records)
        do {
            try file.write(record.bytes, at: size)
        } catch {
            records.removeSubrange(first...)
            throw error
        }
        size += UInt64(record.bytes.count)
        return records[first...]
    }

    /// Writes the table and footer. The file is complete but not yet synced or renamed.
    func finish() throws(CairnError) {
        var table = ByteWriter(capacity: records.count * PackFormat.tableEntrySize + PackFormat.footerSize)
        for r in records {
            table.append(r.digest)
            table.le(r.offset)
            table.le(r.storedLength)
            table.le(r.rawLength)
            table.le(r.kind.rawValue)
            table.le(r.compression.rawValue)
            table.le(UInt16(0))
            table.le(r.crc)
            table.le(r.frameOffset ?? 0)
        }
        let tableCRC = CRC32.checksum(table.bytes)
        let tableOffset = size
        table.le(tableOffset)
        table.le(UInt32(records.count))
        table.le(tableCRC)
        table.append(id.bytes)
        table.append(PackFormat.footerMagic)
        try file.write(table.bytes, at: size)
        size += UInt64(table.count)
        // Start writing it to disk now, so the commit's syncfs overlaps with the rest of the run.
        file.startWriteback()
    }

    /// Discards the unfinished pack.
    func abandon() {
        try? FileSystem.remove(temporaryPath)
    }
}
