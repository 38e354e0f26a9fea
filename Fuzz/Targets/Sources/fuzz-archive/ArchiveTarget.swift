import CairnCore
import FuzzSupport

/// Sequential archives: block headers, the record stream across blocks, labels, manifests,
/// index and chunk records, the end record and the catalog; read as `archive verify`, `list`,
/// `restore` and `import` read them (from memory: the reader never seeks, so a memory source
/// runs the same code as a volume file or a pipe).
///
/// Input: one options byte, then the archive in compact form: each block's 64-byte header and
/// payload without the zero padding that fills the block (the harness pads it back), so seeds
/// stay small although blocks are at least 64 KiB. Options: bit 0 repairs every block's payload
/// and header CRCs; bit 1 also restores the first restore point listed; bit 2 also imports the
/// archive into an empty repository.
@main
enum ArchiveTarget {
    /// Largest archive built from one input.
    static let maxArchiveBytes = 32 << 20

    static func main() {
        let scratch = Scratch("archive")
        let repository = FuzzRepository(in: scratch)
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            let archive = expand(input.rest(), repair: options & 1 != 0)
            _ = ArchiveVerifier.verify([MemoryByteSource(archive, name: "fuzz.cairn")])
            let listing = ArchiveVerifier.list([MemoryByteSource(archive, name: "fuzz.cairn")])
            if options & 2 != 0, let point = listing.points.first,
                let selector = try? RestorePointSelector(parsing: point.id)
            {
                var request = ArchiveRestoreRequest(
                    point: selector, disk: nil, destination: "\(scratch.path)/restored.img")
                request.force = true
                _ = try? ArchiveRestore(sources: [MemoryByteSource(archive, name: "fuzz.cairn")], request: request)
                    .run()
                scratch.remove("restored.img")
            }
            if options & 4 != 0 {
                repository.clear()
                if let opened = try? repository.open() {
                    _ = try? ArchiveImporter(
                        repository: opened, sources: [MemoryByteSource(archive, name: "fuzz.cairn")]
                    ).run()
                }
            }
        }
    }

    /// Turns the compact form back into blocks: each header is followed by its payload, then by
    /// zeros up to the block size the header states (when that size is a valid one).
    static func expand(_ compact: [UInt8], repair: Bool) -> [UInt8] {
        let header = ArchiveFormat.blockHeaderSize
        var out: [UInt8] = []
        var at = 0
        while at < compact.count, out.count < maxArchiveBytes {
            guard at + header <= compact.count, let blockSize = compact.le32(at: at + 12),
                let payloadLength = compact.le32(at: at + 48),
                ArchiveFormat.blockSizeRange.contains(Int(blockSize)), blockSize & (blockSize - 1) == 0
            else {
                out += compact[at...]
                break
            }
            let room = Int(blockSize) - header
            let given = min(Int(payloadLength), room, compact.count - at - header)
            var block = Array(compact[at..<(at + header + given)])
            block += [UInt8](repeating: 0, count: Int(blockSize) - block.count)
            if repair {
                block.setLE32(block.crc32(header..<(header + min(Int(payloadLength), room))), at: 56)
                block.setLE32(block.crc32(0..<60), at: 60)
            }
            out += block
            at += header + given
        }
        return out
    }
}
