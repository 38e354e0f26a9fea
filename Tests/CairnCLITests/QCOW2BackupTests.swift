import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// qcow2 through the `cairn` binary: what is backed up is what `qemu-img convert` sees, and what
/// is restored as qcow2 is judged by `qemu-img check` and `qemu-img compare`.
@Suite struct QCOW2BackupTests {
    static let fixtures: String = {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()
        url.deleteLastPathComponent()
        return url.deletingLastPathComponent().appendingPathComponent("TestImages").path
    }()

    /// MANIFEST: name → (guest SHA-256, virtual size).
    static let manifest: [String: (String, UInt64)] = {
        let text = (try? String(contentsOfFile: fixtures + "/MANIFEST", encoding: .utf8)) ?? ""
        var out: [String: (String, UInt64)] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, let size = UInt64(f[2]) { out[String(f[0])] = (String(f[1]), size) }
        }
        return out
    }()

    static let images = manifest.keys.filter { !$0.contains("@") }.sorted()

    @Test(arguments: images)
    func backupAndRestoreMatchesQemu(name: String) throws {
        let (expected, size) = try #require(Self.manifest[name])
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "16K"]).status == 0)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "q", "--json", "\(Self.fixtures)/\(name)"])
        #expect(backup.status == 0, "\(backup.stderr)")

        let raw = dir.file("out.raw")
        let restored = CairnProcess.run(["restore", "--repo", repo, "q@latest", "--to", raw])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try TestImage.sha256(of: raw) == expected)

        let qcow = dir.file("out.qcow2")
        let asQcow = CairnProcess.run(["restore", "--repo", repo, "q@latest", "--to", qcow, "--format", "qcow2"])
        #expect(asQcow.status == 0, "\(asQcow.stderr)")
        let check = Subprocess.shell("qemu-img check '\(qcow)'")
        #expect(check.status == 0 && check.stdout.contains("No errors"), "\(check.stdout)\(check.stderr)")
        // Run in TestImages: QEMU resolves external data file names against its working directory.
        let compare = Subprocess.shell("cd '\(Self.fixtures)' && qemu-img compare '\(name)' '\(qcow)'")
        #expect(compare.status == 0, "\(compare.stdout)\(compare.stderr)")
        let info = Subprocess.shell("qemu-img info --output=json '\(qcow)'")
        #expect(info.stdout.contains("\"virtual-size\": \(size)"))

        let show = CairnProcess.run(["show", "--repo", repo, "q@latest", "--json"])
        #expect(show.stdout.contains("\"format\" : \"qcow2\""))
    }

    @Test func internalSnapshotIsBackedUpAtItsOwnSize() throws {
        let (expected, size) = try #require(Self.manifest["snap.qcow2@s1"])
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run([
            "backup", "--repo", repo, "--group", "s", "--snapshot", "s1", "\(Self.fixtures)/snap.qcow2",
        ])
        #expect(backup.status == 0, "\(backup.stderr)")
        let out = dir.file("s1.raw")
        #expect(CairnProcess.run(["restore", "--repo", repo, "s@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == expected)
        #expect(try File.open(out, .readOnly).size() == size)

        let missing = CairnProcess.run([
            "backup", "--repo", repo, "--group", "s", "--snapshot", "nope", "\(Self.fixtures)/snap.qcow2",
        ])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("s1"), "names the snapshots there are: \(missing.stderr)")
    }

    @Test func forcedRawFormatBacksUpTheContainerBytes() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = "\(Self.fixtures)/v3.qcow2"
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "f", "--format", "raw", image]).status == 0)
        // The name says qcow2, which would wrap the container bytes in a new qcow2: --format raw
        // brings the file back as it was.
        let out = dir.file("copy.qcow2")
        #expect(CairnProcess.run(["restore", "--repo", repo, "f@latest", "--to", out, "--format", "raw"]).status == 0)
        #expect(Subprocess.shell("cmp '\(image)' '\(out)'").status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "f", "--format", "bogus", image]).status == 64)
    }

    /// A qcow2 made at run time with qemu-io writes, changed, backed up twice, both nights restored.
    @Test func qcow2TwoNightsWithQemuIO() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("vm.qcow2")
        #expect(Subprocess.shell("qemu-img create -q -f qcow2 '\(image)' 64M").status == 0)
        #expect(
            Subprocess.shell(
                "qemu-io -c 'write -P 0x41 0 3M' -c 'write -P 0x42 20M 1M' -c 'write -z 1M 512K' '\(image)' >/dev/null"
            ).status == 0)
        let night0 = try QemuTools.rawDigest(of: image)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        #expect(
            Subprocess.shell("qemu-io -c 'write -P 0x43 40M 64K' -c 'discard 20M 1M' '\(image)' >/dev/null").status == 0
        )
        let night1 = try QemuTools.rawDigest(of: image)
        sleep(1)
        let second = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
        #expect(second.status == 0)
        let summary = try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as! [String: Any]
        #expect((summary["bytesRead"] as! Int) < 4 << 20, "unallocated clusters are not read")
        let list = CairnProcess.run(["list", "--repo", repo, "--json"])
        let rows = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as! [[String: Any]]
        for (row, expected) in zip(rows, [night0, night1]) {
            let out = dir.file("r.raw")
            try? FileManager.default.removeItem(atPath: out)
            #expect(CairnProcess.run(["restore", "--repo", repo, row["id"] as! String, "--to", out]).status == 0)
            #expect(try TestImage.sha256(of: out) == expected)
        }
    }

    @Test func refusedImagesCommitNothing() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        // Truncated: QEMU would read the missing tail as zeros; Cairn refuses.
        let truncated = dir.file("truncated.qcow2")
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/c64k.qcow2", toPath: truncated)
        let size = try File.open(truncated, .readOnly).size()
        try File.open(truncated, .readWrite).truncate(to: size - 70000)
        let good = dir.file("good.raw")
        var gen = TestImage(seed: 11)
        try gen.makeImage(at: good, size: 2 << 20)
        let outcome = CairnProcess.run(["backup", "--repo", repo, "--group", "bad", good, truncated])
        #expect(outcome.status == 6, "\(outcome.stderr)")
        #expect(outcome.stderr.split(separator: "\n").count == 1)
        #expect(outcome.stderr.contains("truncated.qcow2"))
        #expect(
            CairnProcess.run(["list", "--repo", repo, "--group", "bad", "--json"]).stdout.trimmingCharacters(
                in: .whitespacesAndNewlines) == "[]")

        // Encrypted: a key is required.
        let luks = dir.file("luks.qcow2")
        let made = QemuTools.makeEncryptedImage(format: "luks", at: luks, size: "4M")
        try #require(made, "qemu-img could not create a LUKS image")
        let encrypted = CairnProcess.run(["backup", "--repo", repo, "--group", "bad", luks])
        #expect(encrypted.status == 6)
        #expect(encrypted.stderr.contains("key"))
    }
}
