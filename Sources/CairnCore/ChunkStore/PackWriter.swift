/// Appends chunk records to one new pack, staged in the repository's storage.
///
/// The pack becomes visible under its key only when its owner commits it (a write transaction,
/// or gc's rewriter), after its bytes are durable; an interrupted run leaves a staged object that
/// the storage removes later.
final class PackWriter {
    let id: PackID
    let storage: any RepositoryStorage
    /// The pack being written; committed by the owner, through `storage`.
    let object: any StagedObject
    private(set) var records: [PackRecord] = []

    var size: UInt64 { object.size }

    init(in storage: any RepositoryStorage) throws(CairnError) {
        id = PackID.random()
        self.storage = storage
        object = try storage.stage(id.relativePath)
        var header = ByteWriter(capacity: PackFormat.headerSize)
        header.append(PackFormat.headerMagic)
        header.append(id.bytes)
        header.zeros(8)
        do {
            try object.append(header.bytes)
        } catch {
            // On a full disk the object is created (an inode) but its header is not: the owner
            // never learns of this writer, so drop it here.
            storage.abandon(object)
            throw error
        }
    }

    /// Appends one record (header and payload, its members known); returns its table entries
    /// (one, or one per member of a frame record).
    @discardableResult
    func append(record: EncodedRecord) throws(CairnError) -> ArraySlice<PackRecord> {
        let first = records.count
        PackFormat.appendTableEntries(of: record, at: size, to: &records)
        do {
            try object.append(record.bytes)
        } catch {
            records.removeSubrange(first...)
            throw error
        }
        return records[first...]
    }

    /// Writes the table and footer. The pack is complete but not yet durable or visible.
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
        try object.append(table.bytes)
        // Start moving it to stable storage now, so the commit overlaps with the rest of the run.
        object.seal()
    }

    /// Discards the uncommitted pack.
    func abandon() {
        storage.abandon(object)
    }
}
