import CairnCore
import FuzzSupport

/// Chunk index segments (memory-mapped): header, pack table, fan-out, entries, CRC footer.
///
/// Input: one options byte, then the segment file. Options bit 0 repairs the footer CRC. The
/// segment is opened, checked as verify checks it, searched for every digest it lists, and then
/// opened again as part of a repository that verify walks.
@main
enum IndexSegmentTarget {
    /// Entries looked up per input (a valid segment may list millions).
    static let maxLookups = 1 << 14

    static func main() {
        let scratch = Scratch("index-segment")
        let repository = FuzzRepository(in: scratch)
        let name = "0000000000000000-00000000.idx"
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            var segment = input.rest()
            if options & 1 != 0, segment.count >= 16 {
                segment.setLE32(segment.crc32(0..<(segment.count - 16)), at: segment.count - 16)
            }
            repository.clear()
            let path = "\(repository.path)/index/\(name)"
            repository.write(segment, to: path)
            if let opened = try? IndexSegment(path: path) {
                try? opened.checkIntegrity()
                for i in 0..<min(opened.entryCount, maxLookups) {
                    _ = opened.location(at: i)
                    _ = opened.lookup(opened.digest(at: i))
                }
                _ = opened.lookup(ZeroBlock.digest)
                _ = opened.lookup(ChunkDigest(w0: .max, w1: .max, w2: .max, w3: .max))
                _ = opened.lookup(ChunkDigest(w0: 0, w1: 0, w2: 0, w3: 0))
            }
            if let opened = try? repository.open() {
                _ = opened.store.lookup(ZeroBlock.digest)
                _ = try? RepositoryVerifier(repository: opened).run()
            }
        }
    }
}
