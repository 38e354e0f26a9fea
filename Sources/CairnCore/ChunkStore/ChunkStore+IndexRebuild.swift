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
        let old = (try FileSystem.list("\(root)/index")).filter { $0.hasSuffix(".idx") && !$0.hasPrefix(".") }
        var report = IndexRebuildReport(packs: 0, chunks: 0, packsScanned: [], packsUnreadable: [], segmentsRemoved: 0)
        var entries: [(ChunkDigest, ChunkLocation)] = []
        var written: Set<String> = []
        func flush() throws(CairnError) {
            guard !entries.isEmpty else { return }
            let name = Self.newSegmentName()
            try IndexSegment.write(entries: entries, to: "\(root)/index/\(name)")
            written.insert(name)
            entries.removeAll(keepingCapacity: true)
        }
        for directory in try FileSystem.list("\(root)/packs") where FileSystem.isDirectory("\(root)/packs/\(directory)")
        {
            for name in try FileSystem.list("\(root)/packs/\(directory)")
            where name.hasSuffix(".pack") && !name.hasPrefix(".") {
                guard let id = PackID(hex: String(name.dropLast(5))) else { continue }
                let path = "\(root)/packs/\(directory)/\(name)"
                let reader: PackReader
                do {
                    reader = try PackReader(path: path, id: id)
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
        }
        try flush()
        for name in old where !written.contains(name) {
            try FileSystem.remove("\(root)/index/\(name)")
            report.segmentsRemoved += 1
        }
        try FileSystem.syncDirectory("\(root)/index")
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
        while offset + UInt64(PackFormat.recordHeaderSize) <= size {
            let header = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<PackFormat.recordHeaderSize])
            guard (try? file.read(into: header, at: offset)) == PackFormat.recordHeaderSize else { break }
            let stored = Int(UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 32, as: UInt32.self)))
            guard stored <= PackFormat.maxRecordPayload else { break }
            let payload = UnsafeMutableRawBufferPointer(
                rebasing: buffer[PackFormat.recordHeaderSize..<(PackFormat.recordHeaderSize + stored)])
            guard (try? file.read(into: payload, at: offset + UInt64(PackFormat.recordHeaderSize))) == stored else {
                break
            }
            let crc = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 44, as: UInt32.self))
            guard
                PackFormat.recordCRC(header: UnsafeRawBufferPointer(header), payload: UnsafeRawBufferPointer(payload))
                    == crc
            else { break }
            let record = UnsafeRawBufferPointer(
                rebasing: buffer[0..<(PackFormat.recordHeaderSize + stored)])
            guard (try? PackFormat.appendTableEntries(of: record, at: offset, to: &records)) != nil else { break }
            offset += UInt64(PackFormat.recordHeaderSize + stored)
        }
        return records
    }
}
