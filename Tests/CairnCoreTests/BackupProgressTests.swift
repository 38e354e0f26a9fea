import CairnCore
import CairnTestSupport
import Foundation
import Synchronization
import Testing

/// The progress line counts allocated data, not the virtual size: on a sparse disk it runs to
/// 100% of what `qemu-img map` calls data instead of stalling where the data ends.
@Suite struct BackupProgressTests {
    /// Bytes `qemu-img map` reports as data (the oracle for "allocated").
    static func mappedData(_ image: String, format: String) throws -> UInt64 {
        let json = try QemuTools.check("qemu-img", ["map", "--output=json", "-f", format, image])
        let extents = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] ?? []
        return extents.filter { $0["data"] as? Bool == true }.reduce(0) { $0 + UInt64($1["length"] as? Int ?? 0) }
    }

    @Test(arguments: ["raw", "qcow2"])
    func progressCountsAllocatedDataAndEndsAtAllOfIt(format: String) throws {
        let dir = TemporaryDirectory()
        let image = dir.file("sparse.\(format)")
        _ = try QemuTools.check("qemu-img", ["create", "-q", "-f", format, image, "1G"])
        // 3 MiB at the start, 1 MiB near the end: the 1 GiB disk is 0.4% data.
        _ = try QemuTools.check(
            "qemu-io", ["-f", format, "-c", "write -P 0x33 0 3M", "-c", "write -P 0x44 1000M 1M", image])
        let expected = try Self.mappedData(image, format: format)
        #expect(expected == 4 << 20)

        try Repository.create(at: dir.file("repo"), blockSize: 64 << 10, compressionLevel: 1)
        let repo = try Repository(path: dir.file("repo"))
        let seen = ProgressLog()
        let job = BackupJob(repository: repo, group: "g", sources: [BackupSource(path: image)])
        job.progress = { p in seen.withLock { $0.append(p) } }
        let result = try job.run()
        #expect(result.manifest.stats.bytesRead == expected)

        let reports = seen.withLock { $0 }
        let last = try #require(reports.last)
        #expect(last.bytesTotal == expected)
        #expect(last.bytesDone == last.bytesTotal)
        #expect(last.virtualSize == 1 << 30)
        #expect(reports.allSatisfy { $0.bytesDone <= $0.bytesTotal && $0.bytesTotal == expected })
    }
}

/// The reports a backup made, from its writer thread.
final class ProgressLog: Sendable {
    private let reports = Mutex<[BackupProgress]>([])

    func withLock<R: Sendable>(_ body: (inout [BackupProgress]) -> R) -> R { reports.withLock { body(&$0) } }
}
