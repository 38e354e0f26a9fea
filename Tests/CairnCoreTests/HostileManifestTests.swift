import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Hostile manifests found by the `index-tree` fuzz target (Fuzz/README.md): a manifest with an
/// intact checksum but fields that disagree must be refused, never trap.
@Suite struct HostileManifestTests {
    /// A disk size far below its block count × block size: restore computed `size - offset`
    /// for the later blocks and trapped on the underflow.
    @Test func sizeSmallerThanTheBlocksIsRefused() throws {
        let directory = TemporaryDirectory()
        let repo = directory.file("repo")
        try Repository.create(at: repo, blockSize: 4096, compressionLevel: 1)
        let image = directory.file("disk.img")
        #expect(
            FileManager.default.createFile(
                atPath: image, contents: Data((0..<12288).map { UInt8(truncatingIfNeeded: $0 % 251 + 1) })))
        let repository = try Repository(path: repo)
        let result = try BackupJob(repository: repository, group: "vm", sources: [BackupSource(path: image)]).run()
        let path = repository.catalog.path(of: result.id)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first.map(String.init))
        #expect(line.contains("\"size\":12288"))
        let hostile = line.replacingOccurrences(of: "\"size\":12288", with: "\"size\":100")
        let digest = SHA256Hasher().digest(Array(hostile.utf8))
        try "\(hostile)\nsha256 \(digest.hex)\n".write(toFile: path, atomically: true, encoding: .utf8)

        var request = RestoreRequest(id: result.id, disk: nil, destination: directory.file("out.img"))
        request.allowDamaged = true
        do throws(CairnError) {
            _ = try RestoreJob(repository: try Repository(path: repo), request: request).run()
            Issue.record("restore of a manifest whose size disagrees with its blocks succeeded")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.message.contains("does not match its 3 blocks"))
        }
    }
}
