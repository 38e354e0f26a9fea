import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// The verifier in-process: a mark set capped to a few entries splits the work into passes over
/// slices of the digest space, and still checks every chunk exactly once.
@Suite struct RepositoryVerifierTests {
    @Test(arguments: [1_000_000, 300, 37])
    func passesCoverEveryChunkOnce(maxMarked: Int) throws {
        let dir = TemporaryDirectory()
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 71)
        try gen.makeImage(at: image, size: 2 << 20, extent: 512 << 10, stride: 512 << 10)
        try Repository.create(at: dir.file("repo"), blockSize: 4096, compressionLevel: 3)
        let repository = try Repository(path: dir.file("repo"))
        _ = try BackupJob(repository: repository, group: "vm", sources: [BackupSource(path: image)]).run()

        let verifier = RepositoryVerifier(repository: repository)
        verifier.maxMarkedPerPass = maxMarked
        let report = try verifier.run()
        #expect(report.intact)
        #expect(report.chunksChecked == 512, "2 MiB of data in 4 KiB blocks, all distinct")
        #expect(report.bytesChecked == 2 << 20)
        #expect(report.recordsChecked == 512 + report.pagesChecked)
    }

    @Test func slicesPartitionTheDigestSpace() {
        let whole = DigestSlice.whole
        let parts = whole.split(7)
        #expect(parts.reduce(UInt128(0)) { $0 + $1.length } == UInt128(1) << 64)
        let sample = DigestSlice(start: UInt64.max - 5, percent: 25)
        #expect(sample.contains(ChunkDigest(w0: UInt64(0).bigEndian, w1: 0, w2: 0, w3: 0)), "wraps around")
        #expect(sample.end == UInt64.max - 5 &+ (UInt64(1) << 62))
    }
}
