import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// A VM's settings files go with its restore points: stored once, listed, restored, compared,
/// kept by gc and carried by archives (issue 12, "Settings, for any hypervisor").
@Suite struct SettingsFileTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.img") }
    var xml: String { dir.file("vm1.xml") }
    var vmx: String { dir.file("vm1.vmx") }

    static func domainXML(memory: Int, disks: [String]) -> String {
        var text = "<domain type='kvm'>\n  <name>vm1</name>\n  <memory unit='MiB'>\(memory)</memory>\n  <devices>\n"
        for (n, disk) in disks.enumerated() {
            text += "    <disk type='file' device='disk'>\n      <source file='\(disk)'/>\n"
            text += "      <target dev='vd\(Character(UnicodeScalar(97 + n)!))' bus='virtio'/>\n    </disk>\n"
        }
        for n in 0..<40 { text += "    <!-- filler line \(n) to span hunks -->\n" }
        return text + "  </devices>\n</domain>\n"
    }

    init() throws {
        var gen = TestImage(seed: 8)
        try gen.makeImage(at: image, size: 2 << 20)
        try Self.domainXML(memory: 2048, disks: ["/var/lib/libvirt/images/vm1.qcow2"])
            .write(toFile: xml, atomically: true, encoding: .utf8)
        // Bigger than a 4 KiB block, so it spans chunks.
        try (0..<400).map { "guestinfo.key\($0) = \"value \($0)\"" }.joined(separator: "\n")
            .write(toFile: vmx, atomically: true, encoding: .utf8)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
    }

    func backup() -> [String: Any] {
        let out = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm1", "--config", xml, "--config", vmx, "--json", image,
        ])
        #expect(out.status == 0, "\(out.stderr)")
        return Fixture.json(out.stdout)
    }

    func sameFile(_ a: String, _ b: String) -> Bool {
        FileManager.default.contentsEqual(atPath: a, andPath: b)
    }

    @Test func keptShownRestoredAndDiffed() throws {
        let first = backup()["id"] as! String
        let show = CairnProcess.run(["show", "--repo", repo, first])
        #expect(show.stdout.contains("settings file vm1.xml") && show.stdout.contains("settings file vm1.vmx"))
        let json = Fixture.json(CairnProcess.run(["show", "--repo", repo, first, "--json"]).stdout)
        #expect((json["settings"] as? [[String: Any]])?.map { $0["name"] as? String } == ["vm1.xml", "vm1.vmx"])

        // Unchanged disk and settings: nothing new is stored.
        sleep(1)
        #expect(backup()["chunksNew"] as? Int == 0)

        // A settings change: a disk added, memory cut.
        try Self.domainXML(memory: 1024, disks: ["/var/lib/libvirt/images/vm1.qcow2", "/srv/vm1-data.qcow2"])
            .write(toFile: xml, atomically: true, encoding: .utf8)
        let changed = dir.file("changed.xml")
        Subprocess.shell("cp '\(xml)' '\(changed)'")
        sleep(1)
        let third = backup()["id"] as! String

        let diff = CairnProcess.run(["diff", "--repo", repo, first, third, "--json"])
        #expect(diff.status == 0, "\(diff.stderr)")
        let settings = Fixture.json(diff.stdout)["settings"] as? [[String: Any]] ?? []
        #expect(settings.map { $0["status"] as? String } == ["changed", "same"])
        let unified = try #require(settings.first?["unified"] as? String)
        #expect(unified.contains("-  <memory unit='MiB'>2048</memory>"))
        #expect(unified.contains("+  <memory unit='MiB'>1024</memory>"))
        // The oracle: GNU patch turns the old text into the new one with it.
        let restoredOld = dir.file("old")
        #expect(
            CairnProcess.run(["restore", "--repo", repo, first, "--config-to", restoredOld]).status == 0)
        try unified.write(toFile: dir.file("p.diff"), atomically: true, encoding: .utf8)
        let patched = Subprocess.shell(
            "patch -s -o '\(dir.file("patched.xml"))' '\(restoredOld)/vm1.xml' '\(dir.file("p.diff"))'")
        #expect(patched.status == 0, "\(patched.stderr)\(patched.stdout)")
        #expect(sameFile(dir.file("patched.xml"), changed))
        #expect(
            CairnProcess.run(["diff", "--repo", repo, first, third]).stdout.contains("settings file vm1.xml: changed"))

        // The old settings come back exactly; an existing file needs --force.
        try Self.domainXML(memory: 2048, disks: ["/var/lib/libvirt/images/vm1.qcow2"])
            .write(toFile: dir.file("original.xml"), atomically: true, encoding: .utf8)
        #expect(sameFile("\(restoredOld)/vm1.xml", dir.file("original.xml")))
        #expect(sameFile("\(restoredOld)/vm1.vmx", vmx))
        let again = CairnProcess.run(["restore", "--repo", repo, first, "--config-to", restoredOld])
        #expect(again.status == 8)
        let both = CairnProcess.run([
            "restore", "--repo", repo, third, "--config-to", restoredOld, "--force", "--to", dir.file("out.img"),
            "--json",
        ])
        #expect(both.status == 0, "\(both.stderr)")
        #expect((Fixture.json(both.stdout)["settings"] as? [String])?.count == 2)
        #expect(sameFile("\(restoredOld)/vm1.xml", changed))
        #expect(sameFile(dir.file("out.img"), image))
    }

    @Test func gcVerifyAndArchivesKeepThem() throws {
        let first = backup()["id"] as! String
        try "changed".write(toFile: xml, atomically: true, encoding: .utf8)
        sleep(1)
        let second = backup()["id"] as! String
        #expect(CairnProcess.run(["forget", "--repo", repo, first]).status == 0)
        #expect(CairnProcess.run(["gc", "--repo", repo]).status == 0)
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 0, "\(verify.stderr)")
        let out = dir.file("after-gc")
        #expect(CairnProcess.run(["restore", "--repo", repo, second, "--config-to", out]).status == 0)
        #expect(sameFile("\(out)/vm1.vmx", vmx) && sameFile("\(out)/vm1.xml", xml))

        // Through an archive into a new repository.
        #expect(CairnProcess.run(["archive", "write", "--repo", repo, second, "--to", dir.file("a")]).status == 0)
        let archive = dir.file("a.001")
        #expect(CairnProcess.run(["archive", "verify", archive]).status == 0)
        let other = dir.file("other")
        #expect(CairnProcess.run(["init", "--repo", other, "--block-size", "4K"]).status == 0)
        let imported = CairnProcess.run(["archive", "import", "--repo", other, archive])
        #expect(imported.status == 0, "\(imported.stderr)")
        let fromArchive = dir.file("from-archive")
        #expect(CairnProcess.run(["restore", "--repo", other, second, "--config-to", fromArchive]).status == 0)
        #expect(sameFile("\(fromArchive)/vm1.vmx", vmx) && sameFile("\(fromArchive)/vm1.xml", xml))
        #expect(CairnProcess.run(["verify", "--repo", other]).status == 0)
    }

    @Test func badSettingsFilesCommitNothing() throws {
        let missing = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm1", "--config", dir.file("nope.xml"), image,
        ])
        #expect(missing.status == 4)
        #expect(missing.stderr.contains("nope.xml"))
        Subprocess.shell("truncate -s 2M '\(dir.file("huge.xml"))'")
        let huge = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm1", "--config", dir.file("huge.xml"), image,
        ])
        #expect(huge.status == 64)
        #expect(
            CairnProcess.run(["list", "--repo", repo, "--json"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                == "[]")
        #expect(Fixture.temporaryFiles(under: repo).isEmpty)
        let none = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", image])
        #expect(none.status == 0)
        let noSettings = CairnProcess.run(["restore", "--repo", repo, "vm1@latest", "--config-to", dir.file("x")])
        #expect(noSettings.status == 4)
    }
}
