import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Images that are not raw or qcow2, damaged qcow2 magics, file names that claim another format and
/// formats that change between two backups (issue 18, defect 9): each refused by `cairn backup`
/// with exit 6 and one line naming it, nothing committed, and `--format raw` reading the bytes.
@Suite("backup refuses what it would misread as raw", .serialized, .timeLimit(.minutes(2)))
struct ForeignFormatTests {
    static let fixtures: String = {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()
        url.deleteLastPathComponent()
        return url.deletingLastPathComponent().appendingPathComponent("TestImages").path
    }()

    struct Foreign: Sendable, CustomStringConvertible {
        var format: String
        var options: [String] = []
        /// How the refusal names it.
        var name: String
        var description: String { ([format] + options).joined(separator: " ") }
    }

    static let foreign: [Foreign] = [
        Foreign(format: "vhdx", name: "VHDX"),
        Foreign(format: "vdi", name: "VDI"),
        Foreign(format: "qed", name: "QED"),
        Foreign(format: "vpc", name: "VHD (vpc)"),
        // A fixed VHD is raw data and a footer at the end: QEMU's own probe calls it raw.
        Foreign(format: "vpc", options: ["-o", "subformat=fixed"], name: "VHD (vpc)"),
        Foreign(format: "parallels", name: "Parallels"),
        Foreign(format: "qcow", name: "qcow (version 1)"),
        Foreign(
            format: "luks", options: ["--object", "secret,id=s0,data=cairn-test", "-o", "key-secret=s0,iter-time=10"],
            name: "LUKS"),
    ]

    static func backup(_ repo: String, _ image: String, group: String = "g", _ extra: [String] = [])
        -> CairnProcess.Outcome
    {
        CairnProcess.run(["backup", "--repo", repo, "--group", group] + extra + [image])
    }

    static func pointCount(_ repo: String) -> Int {
        Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).count
    }

    /// A real image made by `qemu-img create` now, under a name that claims nothing (`disk.img`):
    /// refused by its magic alone; `--format raw` backs up its bytes exactly.
    @Test(arguments: foreign)
    func foreignImageIsRefusedByName(_ kind: Foreign) throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var made = false
        for _ in 0..<3 where !made {  // LUKS key derivation can fail at random on a loaded machine
            made =
                (try? QemuTools.run("qemu-img", ["create", "-q", "-f", kind.format] + kind.options + [image, "1M"]))?
                .status == 0
        }
        try #require(made, "qemu-img could not create a \(kind) image")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)

        let refused = Self.backup(repo, image)
        #expect(refused.status == 6, "stdout: \(refused.stdout) stderr: \(refused.stderr)")
        #expect(refused.stderr.contains("is a \(kind.name) image"), "stderr: \(refused.stderr)")
        #expect(refused.stderr.contains("--format raw"))
        #expect(refused.stderr.split(separator: "\n").count == 1, "stderr: \(refused.stderr)")
        #expect(Self.pointCount(repo) == 0)

        #expect(Self.backup(repo, image, ["--format", "raw"]).status == 0)
        let copy = dir.file("copy.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "g@latest", "--to", copy]).status == 0)
        #expect(Subprocess.shell("cmp '\(image)' '\(copy)'").status == 0)
    }

    /// A qcow2 whose magic was damaged: named `.qcow2`, so refused instead of read as raw.
    @Test func damagedQcow2MagicIsRefused() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = try dir.copy("\(Self.fixtures)/v3.qcow2", as: "vm.qcow2")
        try Fixture.flip(image, at: 0, mask: 0x20)
        #expect(try QemuTools.run("qemu-img", ["info", "-f", "qcow2", image]).status != 0)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)

        let refused = Self.backup(repo, image)
        #expect(refused.status == 6)
        #expect(refused.stderr.contains("is named as a qcow2 image but has no known image signature"))
        #expect(refused.stderr.contains("--format raw"))
        #expect(Self.pointCount(repo) == 0)
        #expect(Self.backup(repo, image, ["--format", "qcow2"]).status == 6)
        #expect(Self.backup(repo, image, ["--format", "raw"]).status == 0)
    }

    /// `.vmdk`, `.vhdx`, `.vdi`, `.qed` and `.vhd` names must hold that format; a qcow2 named so is
    /// refused too, with the way to read it as qcow2.
    @Test(arguments: ["vmdk", "vhdx", "vdi", "qed", "vhd"])
    func nameClaimingAnotherFormatIsRefused(_ extension: String) throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let raw = dir.file("raw.\(`extension`)")
        #expect(Subprocess.shell("head -c 1M /dev/urandom > '\(raw)'").status == 0)
        let refusedRaw = Self.backup(repo, raw)
        #expect(refusedRaw.status == 6)
        #expect(refusedRaw.stderr.contains("is named as a"), "stderr: \(refusedRaw.stderr)")

        let qcow2 = try dir.copy("\(Self.fixtures)/c64k.qcow2", as: "qcow2.\(`extension`)")
        let refusedQcow2 = Self.backup(repo, qcow2)
        #expect(refusedQcow2.status == 6)
        #expect(refusedQcow2.stderr.contains("holds qcow2"), "stderr: \(refusedQcow2.stderr)")
        #expect(refusedQcow2.stderr.contains("--format qcow2"))
        #expect(Self.pointCount(repo) == 0)
        #expect(Self.backup(repo, raw, ["--format", "raw"]).status == 0)
        #expect(Self.backup(repo, qcow2, group: "h", ["--format", "qcow2"]).status == 0)
    }

    /// A disk backed up as qcow2 whose magic is then damaged (a name that claims nothing, as a
    /// block device has) is refused against the previous restore point; so is a raw disk that
    /// starts to look like qcow2. `--format` accepts either change.
    @Test func formatChangeSinceThePreviousRestorePointIsRefused() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try dir.copy("\(Self.fixtures)/v3.qcow2", as: "disk.img")
        #expect(Self.backup(repo, image).status == 0)

        try Fixture.flip(image, at: 0, mask: 0x20)
        let damaged = Self.backup(repo, image)
        #expect(damaged.status == 6)
        #expect(
            damaged.stderr.contains("reads as raw, but disk disk.img was qcow2 in the previous restore point g@"),
            "stderr: \(damaged.stderr)")
        #expect(Self.pointCount(repo) == 1)
        #expect(Self.backup(repo, image, ["--format", "raw"]).status == 0)

        // Now raw in the latest point: a qcow2 header appearing in it is refused the same way.
        try Fixture.flip(image, at: 0, mask: 0x20)
        let forged = Self.backup(repo, image)
        #expect(forged.status == 6)
        #expect(forged.stderr.contains("reads as qcow2, but disk disk.img was raw"), "stderr: \(forged.stderr)")
        #expect(Self.backup(repo, image, ["--format", "qcow2"]).status == 0)
        #expect(Self.pointCount(repo) == 3)
    }
}
