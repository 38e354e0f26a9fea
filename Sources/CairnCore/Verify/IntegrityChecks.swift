/// Checks verify makes beyond what everyday readers do, so that one flipped byte anywhere in a
/// pack, an index segment or a manifest is caught (docs/INTEGRITY.md, "What verify proves").

extension PackReader {
    /// The 32-byte header: magic, the pack id its file name promises, reserved zeros.
    func checkHeader() throws(CairnError) {
        let bytes = try object.readBytes(count: PackFormat.headerSize, at: 0)
        guard bytes.count == PackFormat.headerSize, Array(bytes[0..<8]) == PackFormat.headerMagic else {
            throw CairnError(.damaged, "pack \(id) has a damaged header (bad magic at offset 0)")
        }
        guard PackID(bytes: Array(bytes[8..<24])) == id else {
            throw CairnError(.damaged, "pack \(id) has a damaged header (its pack id at offset 8 is not \(id))")
        }
        guard bytes[24..<32].allSatisfy({ $0 == 0 }) else {
            throw CairnError(.damaged, "pack \(id) has a damaged header (reserved bytes at offset 24 are not zero)")
        }
    }

    /// Records must tile the space between header and table exactly: no byte goes unchecked.
    func checkLayout(_ records: [PackRecord]) throws(CairnError) {
        let tableOffset = size - UInt64(PackFormat.footerSize) - UInt64(records.count * PackFormat.tableEntrySize)
        var expected = UInt64(PackFormat.headerSize)
        var previous: PackRecord?
        for r in records.sorted(by: { $0.offset < $1.offset }) {
            defer { previous = r }
            if let previous, previous.frameOffset != nil, r.frameOffset != nil, previous.offset == r.offset {
                guard previous.storedLength == r.storedLength, previous.crc == r.crc else {
                    throw CairnError(.damaged, "pack \(id) lists one frame record at offset \(r.offset) two ways")
                }
                continue  // another member of the same frame record
            }
            guard r.offset == expected else {
                throw CairnError(
                    .damaged,
                    "pack \(id) has \(r.offset > expected ? "a gap" : "overlapping records") at offset \(min(expected, r.offset))"
                )
            }
            expected = r.offset + UInt64(PackFormat.recordHeaderSize) + UInt64(r.storedLength)
        }
        guard expected == tableOffset else {
            throw CairnError(
                .damaged, "pack \(id): its records end at offset \(expected) but its table starts at \(tableOffset)")
        }
    }
}

extension IndexSegment {
    /// The CRC in the footer covers everything before it; this checks the footer's own reserved bytes.
    func checkFooter() throws(CairnError) {
        let b = map.bytes
        let reserved = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: b.count - 12, as: UInt32.self))
        guard reserved == 0 else {
            throw CairnError(
                .damaged, "chunk index segment \(name) has a damaged footer (reserved bytes at offset \(b.count - 12))")
        }
    }
}

extension Manifest {
    /// Decodes a manifest and also insists on its exact byte form (`LINE\nsha256 HEX\n`), which
    /// `decode` tolerates loosely (it trims white space after the checksum).
    static func decodeStrictly(_ bytes: [UInt8], path: String) throws(CairnError) -> Manifest {
        let manifest = try decode(bytes, path: path)
        guard let newline = bytes.firstIndex(of: 10) else {
            throw CairnError(.damaged, "manifest \(path) is damaged: no checksum line")
        }
        let line = Array(bytes[..<newline])
        let expected = line + Array("\nsha256 \(SHA256Hasher().digest(line).hex)\n".utf8)
        guard expected == bytes else {
            throw CairnError(
                .damaged, "manifest \(path) is damaged: bytes after its checksum line differ from the written form")
        }
        return manifest
    }
}
