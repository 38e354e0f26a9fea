import CairnCore
import FuzzSupport

/// Index trees (pages of block digests) and the disk walk behind verify and restore.
///
/// Pages are chunks named by their SHA-256, so a mutated page is simply missing; to reach the
/// tree reader with hostile pages, this target stores whatever pages the input gives, correctly
/// named, and points a restore point at the first. Input:
///
/// ```
/// 0  1  options: depth = 1 + (bits 0-1); bit 4 restores with --allow-damaged; bit 5 as qcow2
/// 1  4  block count (little-endian, the low 20 bits)
/// 5  2  bytes to take off the disk size (block count × 4 KiB), bit 15: add instead
/// 7  …  pages: a 2-byte big-endian length (at most 32 KiB: one full page), then the page
/// ```
///
/// Inside a page, a 32-byte entry `FF FF n …` becomes the digest of page `i + 1 + n` (so trees
/// of any depth can be written, pages referring forward only), `FF FE n …` the digest of data
/// chunk `n % 4`, `FF FD …` the zero block; anything else stays as it is.
@main
enum IndexTreeTarget {
    static func main() {
        let scratch = Scratch("index-tree")
        let repository = FuzzRepository(in: scratch)
        let hasher = SHA256Hasher()
        // Data chunks a tree can list: full blocks and a short one (a block count or size mismatch).
        let data: [FuzzRepository.Chunk] = (0..<4).map { n in
            FuzzRepository.Chunk(
                bytes: [UInt8](repeating: UInt8(n + 1), count: n == 3 ? 1000 : FuzzRepository.blockSize), kind: .data)
        }
        let dataDigests = data.map { hasher.digest($0.bytes) }
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            let depth = 1 + Int(options & 3)
            var count: UInt64 = 0
            for i in 0..<4 { count |= UInt64(input.byte()) << (8 * UInt64(i)) }
            count &= 0xF_FFFF
            let adjust = UInt64(input.byte()) << 8 | UInt64(input.byte())
            let full = count * UInt64(FuzzRepository.blockSize)
            let size = adjust & 0x8000 != 0 ? full + (adjust & 0x7FFF) : full - min(full, adjust)
            var pages: [[UInt8]] = []
            var body = input.rest()[...]
            while body.count >= 2, pages.count < 64 {
                let length = min(Int(body[body.startIndex]) << 8 | Int(body[body.startIndex + 1]), 32768)
                body = body.dropFirst(2)
                pages.append(Array(body.prefix(length)))
                body = body.dropFirst(length)
            }
            // Resolve references back to front, so every page a page names is final.
            var digests = [ChunkDigest](repeating: ZeroBlock.digest, count: pages.count)
            for i in pages.indices.reversed() {
                var page = pages[i]
                var at = 0
                while at + 32 <= page.count {
                    if page[at] == 0xFF {
                        var replacement: ChunkDigest?
                        switch page[at + 1] {
                        case 0xFF:
                            let target = i + 1 + Int(page[at + 2])
                            if target < pages.count { replacement = digests[target] }
                        case 0xFE: replacement = dataDigests[Int(page[at + 2]) % dataDigests.count]
                        case 0xFD: replacement = ZeroBlock.digest
                        default: break
                        }
                        if let replacement { page.replaceSubrange(at..<(at + 32), with: replacement.bytes) }
                    }
                    at += 32
                }
                pages[i] = page
                digests[i] = hasher.digest(page)
            }
            repository.clear()
            repository.writePack(data + pages.map { FuzzRepository.Chunk(bytes: $0, kind: .indexPage) })
            let disk = FuzzRepository.Disk(
                name: "disk", size: size, blockCount: count, root: digests.first ?? ZeroBlock.digest, depth: depth)
            repository.writeManifest(FuzzRepository.manifestBytes(group: "g", disks: [disk]), group: "g")
            guard let opened = try? repository.open() else { return }
            _ = try? RepositoryVerifier(repository: opened).run()
            var request = RestoreRequest(
                id: RestorePointID(parsing: "g@\(FuzzRepository.time)")!, disk: nil,
                destination: "\(scratch.path)/restored.img")
            request.force = true
            request.allowDamaged = options & 0x10 != 0
            request.format = options & 0x20 != 0 ? .qcow2 : .raw
            _ = try? RestoreJob(repository: opened, request: request).run()
            scratch.remove("restored.img")
        }
    }
}
