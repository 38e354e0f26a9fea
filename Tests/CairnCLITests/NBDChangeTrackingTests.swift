import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Changed-block tracking through an NBD export's `qemu:dirty-bitmap:NAME` context, as libvirt's
/// incremental pull mode and `qemu-nbd -B` offer it: a night reads what the bitmap marks dirty,
/// and its restore point equals a full read's.
@Suite struct NBDChangeTrackingTests {
    static func cbt(_ summary: [String: Any]) -> [String: Any] {
        ((summary["disks"] as? [[String: Any]])?.first?["cbt"] as? [String: Any]) ?? [:]
    }

    static func night(
        _ repo: String, _ image: String, in dir: TemporaryDirectory, bitmap: String, flags: [String]
    ) throws -> [String: Any] {
        // A new socket each night, as libvirt's pull mode makes one per backup job.
        let socket = dir.file("nbd-\(UUID().uuidString.prefix(8)).sock")
        let server = try BackgroundServer(
            "qemu-nbd", ["-r", "-t", "-f", "qcow2", "-x", "vda", "-B", bitmap, "-k", socket, image], socket: socket)
        defer { server.stop() }
        let out = CairnProcess.run(
            ["backup", "--repo", repo, "--group", "vm", "--json"] + flags + [server.uri(export: "vda")])
        #expect(out.status == 0, "\(out.stderr)")
        return Fixture.json(out.stdout)
    }

    @Test func dirtyBitmapContextReadsOnlyWhatChanged() throws {
        let dir = TemporaryDirectory("cairn-nbd-cbt")
        let image = dir.file("guest.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "64M"])
        try QemuTools.check(
            "qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x12 32M 8M", image])
        try QemuTools.check("qemu-img", ["bitmap", "--add", "--enable", image, "b1"])
        let repo = NBDBackupTests.initRepository(dir)

        // Night 0: a full read that records b1 as started at its moment.
        let night0 = try Self.night(repo, image, in: dir, bitmap: "b1", flags: ["--checkpoint", "b1"])
        #expect(Self.cbt(night0)["started"] as? String == "b1")

        // The guest writes 1 MiB + 64 KiB; b2 starts where night 1's view is taken.
        try QemuTools.check(
            "qemu-io", ["-f", "qcow2", "-c", "write -P 0x21 1M 1M", "-c", "write -P 0x22 40M 64k", image])
        try QemuTools.check("qemu-img", ["bitmap", "--add", "--enable", image, "b2"])
        let night1 = try Self.night(
            repo, image, in: dir, bitmap: "b1",
            flags: ["--dirty-bitmap", "b1", "--checkpoint", "b2", "--cbt-sample", "4"])
        let cbt = Self.cbt(night1)
        #expect(cbt["used"] as? Bool == true, "\(cbt)")
        #expect(cbt["started"] as? String == "b2")
        // Read: the dirty bytes (whole 64 KiB blocks) plus a few sampled clean blocks.
        let read = night1["bytesRead"] as? Int ?? 0
        let dirty = (1 << 20) + (64 << 10)
        #expect(read >= dirty && read <= 2 * dirty, "read \(read) of \(dirty) dirty")

        // The restore point is exactly what a full read gives.
        let expected = try QemuTools.rawDigest(of: image, options: ["-f", "qcow2"])
        #expect(try NBDBackupTests.restoredDigest(repo, "vm@latest", in: dir) == expected)
        let other = dir.file("full")
        #expect(CairnProcess.run(["init", "--repo", other]).status == 0)
        let full = CairnProcess.run(["backup", "--repo", other, "--group", "vm", "vda=\(image)"])
        #expect(full.status == 0)
        func root(_ repo: String) -> String? {
            let show = Fixture.json(CairnProcess.run(["show", "--repo", repo, "vm@latest", "--json"]).stdout)
            return (show["disks"] as? [[String: Any]])?.first?["root"] as? String
        }
        #expect(root(repo) != nil && root(repo) == root(other))

        // A bitmap the server does not offer, or one no restore point recorded: a full read, with the reason.
        let missing = try Self.night(repo, image, in: dir, bitmap: "b1", flags: ["--dirty-bitmap", "b2"])
        #expect(Self.cbt(missing)["used"] as? Bool == false)
        #expect((Self.cbt(missing)["reason"] as? String)?.contains("does not offer") == true, "\(Self.cbt(missing))")
        let unrecorded = try Self.night(repo, image, in: dir, bitmap: "b2", flags: ["--dirty-bitmap", "b2"])
        #expect(Self.cbt(unrecorded)["used"] as? Bool == false)
        #expect(unrecorded["bytesRead"] as? Int ?? 0 >= 16 << 20)
    }
}
