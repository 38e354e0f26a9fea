import CairnCore
import FuzzSupport

/// Restore point manifests: the checksum line, the JSON, and what list, verify and restore do
/// with the fields (sizes, block counts, depths, root digests, ids).
///
/// Input: one options byte, then the manifest file. Options bit 0 treats the body as the JSON
/// line and appends its checksum line, so mutations reach the decoder and the fields' users;
/// bit 1 restores with --allow-damaged; bit 2 restores as qcow2. The repository holds one small
/// tree (a page listing two data blocks, root digest in the seeds) for manifests to name.
@main
enum ManifestTarget {
    static let maxDisks = 4

    static func main() {
        let scratch = Scratch("manifest")
        let repository = FuzzRepository(in: scratch)
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            var manifest = input.rest()
            if options & 1 != 0 { manifest = FuzzRepository.withChecksumLine(manifest) }
            repository.clear()
            writeTree(repository)
            repository.writeManifest(manifest, group: "g")
            guard let opened = try? repository.open() else { return }
            let catalog = opened.catalog
            for id in (try? catalog.allPoints()) ?? [] {
                guard let decoded = try? catalog.manifest(id) else { continue }
                _ = decoded.totalSize
                _ = decoded.id
                for disk in decoded.disks.prefix(maxDisks) {
                    _ = disk.root
                    var request = RestoreRequest(id: id, disk: disk.name, destination: "\(scratch.path)/restored.img")
                    request.force = true
                    request.allowDamaged = options & 2 != 0
                    request.format = options & 4 != 0 ? .qcow2 : .raw
                    _ = try? RestoreJob(repository: opened, request: request).run()
                    scratch.remove("restored.img")
                }
            }
            _ = try? catalog.resolve("g@latest")
            _ = try? RepositoryVerifier(repository: opened).run()
        }
    }

    /// The tree the seeds' manifests name: a leaf page listing two data blocks (make-corpus.sh
    /// prints its root digest).
    static func writeTree(_ repository: FuzzRepository) {
        let hasher = SHA256Hasher()
        let blocks = [
            [UInt8](repeating: 0x61, count: FuzzRepository.blockSize),
            [UInt8](repeating: 0x62, count: FuzzRepository.blockSize),
        ]
        let page = blocks.flatMap { hasher.digest($0).bytes }
        repository.writePack(blocks.map { .init(bytes: $0, kind: .data) } + [.init(bytes: page, kind: .indexPage)])
    }
}
