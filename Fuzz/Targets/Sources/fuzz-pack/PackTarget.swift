import CairnCore
import FuzzSupport

/// Pack files: footer, record table, record headers, frame member lists, and the chunk decoder
/// (CRC, zstd, SHA-256) behind verify and restore.
///
/// Input: one options byte, then the pack file. Options bit 0 repairs the checksums (record CRCs,
/// a frame's member-list digest, an uncompressed record's digest, the table CRC) so mutations
/// reach the fields behind them. The pack is named by the id in its footer and dropped into an
/// empty repository; then the table is read and the records scanned (as verify and rebuild-index
/// do), the index is rebuilt from it, and every index page record it holds becomes a one-disk
/// restore point, so verify and restore decode the pages and the data chunks they list.
@main
enum PackTarget {
    static let maxRestorePoints = 4

    static func main() {
        let scratch = Scratch("pack")
        let repository = FuzzRepository(in: scratch)
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            var pack = input.rest()
            if options & 1 != 0 { repairChecksums(&pack) }
            let id =
                pack.count >= PackFormat.footerSize
                ? PackID(bytes: Array(pack[(pack.count - 24)..<(pack.count - 8)])) : PackID(high: 1, low: 2)
            repository.clear()
            let path = "\(repository.path)/\(id.relativePath)"
            repository.write(pack, to: path)

            var records: [PackRecord] = []
            if let reader = try? PackReader(path: path, id: id) {
                records = (try? reader.readTable()) ?? reader.scanRecords()
            }
            guard let opened = try? repository.open(), (try? opened.rebuildIndex(wait: nil)) != nil else { return }

            var disks: [FuzzRepository.Disk] = []
            for record in records where record.kind == .indexPage && disks.count < maxRestorePoints {
                let blocks = UInt64(record.rawLength / 32)
                disks.append(
                    FuzzRepository.Disk(
                        name: "disk\(disks.count)", size: blocks * UInt64(FuzzRepository.blockSize), blockCount: blocks,
                        root: record.digest, depth: 1))
            }
            if !disks.isEmpty {
                repository.writeManifest(FuzzRepository.manifestBytes(group: "g", disks: disks), group: "g")
            }
            _ = try? RepositoryVerifier(repository: opened).run()
            let point = RestorePointID(parsing: "g@\(FuzzRepository.time)")!
            for (n, disk) in disks.enumerated() {
                var request = RestoreRequest(id: point, disk: disk.name, destination: "\(scratch.path)/restored.img")
                request.force = true
                request.allowDamaged = n % 2 == 1
                _ = try? RestoreJob(repository: opened, request: request).run()
                scratch.remove("restored.img")
            }
        }
    }

    /// Recomputes what a random mutation breaks first: each record's CRC (and the digest of a
    /// frame's member list or of an uncompressed chunk), walking records from the header, and
    /// the table's CRC. Lengths are checked here first: the harness must not trap itself.
    static func repairChecksums(_ pack: inout [UInt8]) {
        let hasher = SHA256Hasher()
        let end =
            pack.count >= PackFormat.headerSize + PackFormat.footerSize
            ? pack.count - PackFormat.footerSize : pack.count
        var at = PackFormat.headerSize
        while at + PackFormat.recordHeaderSize <= end, let stored = pack.le32(at: at + 32),
            Int(stored) <= end - at - PackFormat.recordHeaderSize
        {
            let payload = (at + PackFormat.recordHeaderSize)..<(at + PackFormat.recordHeaderSize + Int(stored))
            let kind = pack[at + 40]
            var digest: ChunkDigest?
            if kind == ChunkKind.frame.rawValue {
                if let count = pack.le32(at: payload.lowerBound), count <= UInt32(PackFormat.maxFrameMembers),
                    4 + Int(count) * PackFormat.frameMemberSize <= payload.count
                {
                    digest = hasher.digest(Array(pack[payload.lowerBound..<(payload.lowerBound + 4 + Int(count) * 40)]))
                }
            } else if pack[at + 41] == ChunkCompression.none.rawValue {
                digest = hasher.digest(Array(pack[payload]))
            }
            if let digest { pack.replaceSubrange(at..<(at + 32), with: digest.bytes) }
            let crc = pack.withUnsafeBytes { raw in
                CRC32.checksum(
                    UnsafeRawBufferPointer(rebasing: raw[payload]),
                    seed: CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[at..<(at + 44)])))
            }
            pack.setLE32(crc, at: at + 44)
            at = payload.upperBound
        }
        let footer = pack.count - PackFormat.footerSize
        if footer >= PackFormat.headerSize, let table = pack.le64(at: footer), table <= UInt64(footer) {
            pack.setLE32(pack.crc32(Int(table)..<footer), at: footer + 12)
        }
    }
}
