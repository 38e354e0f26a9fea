import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// gc in several passes over the digest space frees the same and keeps every restore point whole.
@Suite struct GarbageCollectorTests {
    @Test(arguments: [2_000_000, 50, 7])
    func markingInSlicesKeepsEverythingNeeded(maxLivePerPass: Int) throws {
        let dir = TemporaryDirectory()
        let repo = try makeRepository(dir, blockSize: 4096)
        let image = dir.file("d.img")
        var gen = TestImage(seed: 51)
        try gen.makeImage(at: image, size: 2 << 20, extent: 128 << 10, stride: 256 << 10)
        let first = try BackupJob(repository: repo, group: "g", sources: [BackupSource(path: image)]).run()
        try gen.scatterWrites(at: image, count: 30)
        sleep(1)
        let second = try BackupJob(repository: repo, group: "g", sources: [BackupSource(path: image)]).run()
        let expected = try TestImage.sha256(of: image)
        // Drop the first restore point: its own chunks become garbage.
        try FileSystem.remove(repo.catalog.path(of: first.id))

        let reopened = try Repository(path: dir.file("repo"))
        let gc = GarbageCollector(repository: reopened)
        gc.maxLivePerPass = maxLivePerPass
        gc.liveThreshold = 0.99  // rewrite every pack that lost anything
        let report = try gc.run()
        #expect(report.recordsDead > 0)
        #expect(report.bytesFreed > 0)
        #expect(report.segmentsAfter == 1)

        let after = try Repository(path: dir.file("repo"))
        let verify = RepositoryVerifier(repository: after)
        #expect(try verify.run().intact)
        let out = dir.file("out.img")
        _ = try RestoreJob(repository: after, request: RestoreRequest(id: second.id, disk: nil, destination: out)).run()
        #expect(try TestImage.sha256(of: out) == expected)
    }
}
