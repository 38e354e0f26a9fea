import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Archives of encrypted repositories (issue 14): sealed records carried as stored, the key
/// files in every label, a tape that restores, verifies and imports with the passphrase alone.
@Suite struct EncryptedArchiveTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    static let group = "marker-vm-group"
    static let diskName = "marker-disk-name.img"
    var image: String { dir.file(Self.diskName) }
    /// 1 MiB of seeded random bytes: incompressible, so an unencrypted archive holds them verbatim.
    let marker: [UInt8]

    init() throws {
        try "tape passphrase\n".write(toFile: dir.file("pass"), atomically: true, encoding: .utf8)
        try "not it\n".write(toFile: dir.file("wrong"), atomically: true, encoding: .utf8)
        var gen = TestImage(seed: 2027)
        marker = try gen.makeMarkedImage(at: dir.file(Self.diskName))
        let created = run(["init", "--repo", repo, "--encryption"])
        #expect(created.status == 0, "\(created.stderr)")
    }

    /// `cairn ARGS` with `$CAIRN_PASSWORD_FILE` set to the file `password` (nil: none).
    @discardableResult
    func run(_ arguments: [String], password: String? = "pass") -> CairnProcess.Outcome {
        CairnProcess.run(arguments, environment: password.map { ["CAIRN_PASSWORD_FILE": dir.file($0)] } ?? [:])
    }

    /// Backs up the image into `repository` (a second later than anything before, so the
    /// restore point's time differs from the key file's) and archives it in volumes of 1 MiB
    /// under `base`; returns the restore point id and the volume paths.
    func archive(_ repository: String, to base: String) -> (id: String, volumes: [String]) {
        sleep(1)
        let backup = run(["backup", "--repo", repository, "--group", Self.group, image, "--json"])
        #expect(backup.status == 0, "\(backup.stderr)")
        let id = Fixture.json(backup.stdout)["id"] as? String ?? "?"
        let wrote = run([
            "archive", "write", "--repo", repository, "\(Self.group)@latest", "--to", base, "--volume-size", "1M",
            "--block-size", "64K",
        ])
        #expect(wrote.status == 0, "\(wrote.stderr)")
        let volumes = (try? FileSystem.list(FileSystem.directoryName(base)))?.filter {
            $0.hasPrefix(FileSystem.baseName(base) + ".")
        }.sorted().map { "\(FileSystem.directoryName(base))/\($0)" }
        return (id, volumes ?? [])
    }

    func needles(_ id: String) -> [(String, [UInt8])] {
        let time = String(id.split(separator: "@").last ?? "")
        return [
            ("marker start", Array(marker[0..<64])), ("marker middle", Array(marker[(512 << 10)..<((512 << 10) + 64)])),
            ("marker end", Array(marker[(marker.count - 64)...])), ("group name", Array(Self.group.utf8)),
            ("disk name", Array(Self.diskName.utf8)), ("restore point time", Array(time.utf8)),
            ("disk size", Array("\(8 << 20)".utf8)),
        ]
    }

    @Test func theMarkerAndTheNamesAppearInNoVolumeOfAnEncryptedArchive() throws {
        try FileSystem.createDirectories(dir.file("tapes"))
        let (id, volumes) = archive(repo, to: dir.file("tapes/arc"))
        #expect(volumes.count > 1, "\(volumes)")
        for (what, needle) in needles(id) {
            #expect(
                EncryptionDataTests.files(under: dir.file("tapes"), containing: needle).isEmpty,
                "\(what) found in the encrypted archive")
        }
        // The same archive of an unencrypted repository holds them: the search can fail.
        let plain = dir.file("plain")
        #expect(run(["init", "--repo", plain]).status == 0)
        try FileSystem.createDirectories(dir.file("plain-tapes"))
        let (plainID, _) = archive(plain, to: dir.file("plain-tapes/arc"))
        for (what, needle) in needles(plainID) where what != "disk size" {
            #expect(
                !EncryptionDataTests.files(under: dir.file("plain-tapes"), containing: needle).isEmpty,
                "\(what) not found in the plain archive")
        }
    }

    @Test func verifyWithAndWithoutThePassphraseAndRestoreRawAndQCOW2() throws {
        let (id, volumes) = archive(repo, to: dir.file("arc"))
        let full = run(["archive", "verify", "--json"] + volumes)
        #expect(full.status == 0, "\(full.stderr)")
        let report = Fixture.json(full.stdout)
        #expect(report["contentChecked"] as? Bool == true && report["encrypted"] as? Bool == true)
        #expect((report["points"] as? [[String: Any]])?.first?["id"] as? String == id)

        let blind = run(["archive", "verify", "--json"] + volumes, password: nil)
        #expect(blind.status == 0, "\(blind.stderr)")
        let structural = Fixture.json(blind.stdout)
        #expect(structural["contentChecked"] as? Bool == false && structural["ok"] as? Bool == true)
        #expect(structural["restorePoints"] as? Int == 1)
        #expect(blind.stderr.contains("content was not checked"), "\(blind.stderr)")
        let text = run(["archive", "verify"] + volumes, password: nil)
        #expect(text.status == 0 && text.stdout.contains("checked the structure of archive"), "\(text.stdout)")

        for format in ["raw", "qcow2"] {
            let out = dir.file("out.\(format)")
            let restored = run(["archive", "restore"] + volumes + [id, "--to", out, "--format", format])
            #expect(restored.status == 0, "\(format): \(restored.stderr)")
            let compare = try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", format, image, out])
            #expect(compare.status == 0, "\(format): \(compare.standardOutput)\(compare.standardError)")
        }
        // A stream from stdin too.
        let stream = volumes.reduce(Data()) { $0 + ((try? Data(contentsOf: URL(fileURLWithPath: $1))) ?? Data()) }
        let piped = CairnProcess.run(
            ["archive", "restore", "-", "\(Self.group)@latest", "--to", dir.file("piped.raw")],
            environment: ["CAIRN_PASSWORD_FILE": dir.file("pass")], stdin: stream)
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(try TestImage.sha256(of: dir.file("piped.raw")) == TestImage.sha256(of: image))
    }

    @Test func importIntoANewRepositoryWithThePassphraseAloneThenRestoreAndVerify() throws {
        let (id, volumes) = archive(repo, to: dir.file("arc"))
        let fresh = dir.file("rebuilt")
        let imported = run(["archive", "import", "--repo", fresh, "--json"] + volumes)
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(Fixture.json(imported.stdout)["imported"] as? [String] == [id])
        #expect(imported.stderr.contains("made repository"), "\(imported.stderr)")
        #expect(run(["verify", "--repo", fresh]).status == 0)
        let out = dir.file("from-rebuilt.raw")
        let restored = run(["restore", "--repo", fresh, id, "--to", out])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        // Into the same repository again: present already.
        let again = run(["archive", "import", "--repo", fresh, "--json"] + volumes)
        #expect(again.status == 0 && Fixture.json(again.stdout)["alreadyPresent"] as? [String] == [id])

        // Into another encrypted repository or an unencrypted one: one line, refused.
        let other = dir.file("other")
        #expect(run(["init", "--repo", other, "--encryption"]).status == 0)
        let plain = dir.file("plain")
        #expect(run(["init", "--repo", plain]).status == 0)
        for target in [other, plain] {
            let refused = run(["archive", "import", "--repo", target] + volumes)
            #expect(refused.status == 64, "\(refused.stderr)")
            #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
        }
    }

    @Test func aWrongPassphraseIsOneLineExit14AndWritesNothing() throws {
        let (id, volumes) = archive(repo, to: dir.file("arc"))
        let out = dir.file("never.raw")
        let fresh = dir.file("never-repo")
        let attempts = [
            ["archive", "restore"] + volumes + [id, "--to", out], ["archive", "import", "--repo", fresh] + volumes,
            ["archive", "verify"] + volumes, ["archive", "list"] + volumes,
        ]
        for arguments in attempts {
            let outcome = run(arguments, password: "wrong")
            #expect(outcome.status == 14, "\(arguments[1]): \(outcome.stderr)")
            #expect(outcome.stderr.split(separator: "\n").count == 1, "\(arguments[1]): \(outcome.stderr)")
        }
        #expect(!FileSystem.exists(out) && !FileSystem.exists(fresh))
    }
}
