import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// A backup whose store fails under it: full (HTTP 507) or restarted. Either a clean one-line
/// error and no restore point, or a retried success; never a committed partial restore point.
extension ObjectStoreCLITests {
    var gatewayPort: UInt16 { UInt16(URL(string: endpoint)?.port ?? 0) }

    func points() -> [String] {
        Fixture.jsonArray(cairn(["list", "--repo", url, "--json"]).stdout).compactMap { $0["id"] as? String }
    }

    /// Through a proxy that forwards everything to radosgw but answers pack uploads with 507
    /// InsufficientCapacity: the backup fails naming the full store, commits nothing, and the
    /// repository verifies and takes the next backup once there is room again.
    @Test func aFullStoreFailsTheBackupCleanly() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 51)
        try gen.makeImage(at: image, size: 16 << 20, extent: 1 << 20, stride: 2 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        let before = points()
        _ = try gen.scatterWrites(at: image, count: 8)

        let port = gatewayPort
        let proxy = try HostileHTTPServer { _, head in
            let line = head.prefix { $0 != "\r" }
            guard line.hasPrefix("PUT "), line.contains("/packs/") else { return .forward(port: port) }
            return HostileHTTPServer.reply(
                507, "<Error><Code>InsufficientCapacity</Code><Message>the cluster is full</Message></Error>")
        }
        let full = cairn(
            ["backup", "--repo", url, "--group", "vm", image],
            environment: ["CAIRN_S3_ENDPOINT": proxy.endpoint, "CAIRN_CACHE_DIR": dir.file("cache-proxy")])
        #expect(full.status != 0)
        #expect(full.stderr.contains("507") && full.stderr.contains("full"), "\(full.stderr)")
        #expect(full.stderr.split(separator: "\n").count == 1, "\(full.stderr)")
        #expect(proxy.requests > 1, "the proxy forwarded nothing")
        #expect(points() == before)

        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        let out = dir.file("out.raw")
        #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }

    /// radosgw stopped just before a backup writes its manifest and started again a second
    /// later: the backup's requests are retried through it (or it fails with one clean line);
    /// either way no partial restore point, and the repository verifies.
    @Test func aGatewayRestartBeforeTheCommitIsRetriedOrFailsCleanly() throws {
        guard let ceph = S3TestStore.environment["CAIRN_TEST_CEPH_DIR"] else {
            if S3TestStore.inCI { throw S3TestStore.Missing() }
            return
        }
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 52)
        try gen.makeImage(at: image, size: 16 << 20, extent: 1 << 20, stride: 2 << 20)
        let held = try heldRun(["backup", "--repo", url, "--group", "vm", "--json", image])
        #expect(held.reachedHold)
        try RadosGatewayTests.rgwCtl("stop", ceph)
        held.release()
        usleep(1_000_000)
        try RadosGatewayTests.rgwCtl("start", ceph)
        let outcome = held.finish()
        let stderr = outcome.stderr
        let listed = points()
        if outcome.status == 0 {
            #expect(listed.count == 1)
            let out = dir.file("out.raw")
            #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out]).status == 0)
            #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        } else {
            #expect(listed.isEmpty, "a failed backup left \(listed)")
            #expect(stderr.split(separator: "\n").count == 1, "\(stderr)")
        }
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }
}
