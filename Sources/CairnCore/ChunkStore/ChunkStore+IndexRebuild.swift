/// Rebuilding the chunk index from the packs alone.
///
/// Every pack lists its records in a CRC-checked table, and every record carries its own digest,
/// lengths and CRC, so the index is derived data: when a segment is damaged (or lost), it can be
/// made again. A pack whose table is damaged is scanned record by record instead. New segments
/// are written (durably, at most `flushThreshold` entries each, so memory stays bounded) before
/// the old ones are removed; a crash in between leaves duplicates, which are harmless.
extension ChunkStore {
    public struct IndexRebuildReport: Sendable, Codable {
        public var packs: Int
        public var chunks: Int
        /// Packs whose table was damaged and whose records were scanned one by one.
        public var packsScanned: [String]
        /// Packs that could not be read at all.
        public var packsUnreadable: [String]
        public var segmentsRemoved: Int
    }

    func rebuildIndex() throws(CairnError) -> IndexRebuildReport {
        let old = try ChunkIndex.segmentKeys(in: storage)
        var report = IndexRebuildReport(packs: 0, chunks: 0, packsScanned: [], packsUnreadable: [], segmentsRemoved: 0)
        var entries: [(ChunkDigest, ChunkLocation)] = []
        var written: Set<String> = []
        func flush() throws(CairnError) {
            guard !entries.isEmpty else { return }
            let key = Self.newSegmentKey()
            try IndexSegment.write(entries: entries, as: key, in: storage)
            written.insert(key)
            entries.removeAll(keepingCapacity: true)
        }
        for id in try packFilesOnDisk() {
            let reader: PackReader
            do {
                reader = try PackReader(id: id, in: storage)
            } catch {
                report.packsUnreadable.append(id.hex)
                continue
            }
            var records: [PackRecord]
            do {
                records = try reader.readTable()
            } catch {
                records = reader.scanRecords()
                report.packsScanned.append(id.hex)
            }
            report.packs += 1
            for r in records {
                let location = r.location(in: id)
                // A copy verify found damaged is left out when the pack holds nothing better.
                if distrusted[r.digest] == location { continue }
                entries.append((r.digest, location))
                report.chunks += 1
            }
            if entries.count >= Self.flushThreshold { try flush() }
        }
        try flush()
        let removed = old.filter { !written.contains($0) }
        try storage.delete(removed)
        report.segmentsRemoved = removed.count
        try reloadSegments()
        if needsCompaction { try compactIndex() }
        return report
    }
}

extension PackReader {
    /// The records of a pack whose table cannot be trusted, found by walking record headers from
    /// the start and keeping each whose CRC holds. Stops at the first record that does not.
    public func scanRecords() -> [PackRecord] {
        var records: [PackRecord] = []
        var offset = UInt64(PackFormat.headerSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: PackFormat.recordHeaderSize + PackFormat.maxRecordPayload, alignment: 64)
        defer { buffer.deallocate() }
        while offset + UInt64(RecordHeader.size) <= size {
            let head = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<RecordHeader.size])
            guard (try? object.read(into: head, at: offset)) == RecordHeader.size,
                let header = RecordHeader(parsing: UnsafeRawBufferPointer(head)),
                header.storedLength <= PackFormat.maxRecordPayload
            else { break }
            let region = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<header.recordLength])
            guard (try? object.read(into: region, at: offset)) == header.recordLength,
                let record = try? EncodedRecord(checking: UnsafeRawBufferPointer(region))
            else { break }
            PackFormat.appendTableEntries(of: record, at: offset, to: &records)
            offset += UInt64(header.recordLength)
        }
        return records
    }
}
