import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// A repository on a small tmpfs filled to exactly 0 bytes free: a backup fails with one line
/// and leaves no temporary file; verify still prints and exits with its verdict, and says that
/// recording it failed. (Mounting needs root, as on the CI machine; elsewhere the test says so
/// and checks nothing.)
@Suite struct FullDiskTests {
    @Test func atZeroBytesFreeBackupLeavesNothingAndVerifyKeepsItsVerdict() throws {
        let dir = TemporaryDirectory()
        let mount = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        let mounted = Subprocess.shell("mount -t tmpfs -o size=16m tmpfs '\(mount)'")
        guard mounted.status == 0 else {
            print("FullDiskTests: cannot mount a tmpfs (\(mounted.stderr)): needs root; skipped")
            return
        }
        defer { Subprocess.shell("umount '\(mount)'") }
        let repo = "\(mount)/repo"
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 93)
        try gen.makeImage(at: image, size: 4 << 20, extent: 256 << 10, stride: 512 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        try gen.scatterWrites(at: image, count: 16)

        // Fill the filesystem to its last byte: large writes, then page-sized ones.
        Subprocess.shell(
            "dd if=/dev/zero of='\(mount)/fill1' bs=1M status=none; dd if=/dev/zero of='\(mount)/fill2' bs=4k status=none"
        )
        let free = Subprocess.shell("stat -f -c %a '\(mount)'").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(free == "0", "free blocks: \(free)")

        sleep(1)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image])
        #expect(backup.status == 9, "\(backup.stderr)")
        #expect(backup.stderr.contains("the disk is full"), "\(backup.stderr)")
        #expect(backup.stderr.split(separator: "\n").count == 1, "\(backup.stderr)")
        #expect(Fixture.temporaryFiles(under: repo).isEmpty, "\(Fixture.temporaryFiles(under: repo))")
        #expect(CrashTests.pointCount(repo) == 1)

        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.hasPrefix("intact: 1 restore point,"), "\(verify.stdout)")
        #expect(verify.stderr.contains("the verdict could not be recorded"), "\(verify.stderr)")
        let json = CairnProcess.run(["verify", "--repo", repo, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let report = Fixture.json(json.stdout)
        #expect(report["intact"] as? Bool == true)
        #expect((report["recordingFailure"] as? String)?.contains("the disk is full") == true, "\(json.stdout)")
        #expect(Fixture.temporaryFiles(under: repo).isEmpty)

        // Space again: both work as before.
        Subprocess.shell("rm -f '\(mount)/fill1' '\(mount)/fill2'")
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let again = CairnProcess.run(["verify", "--repo", repo])
        #expect(again.status == 0 && again.stderr.isEmpty, "\(again.stderr)")
        #expect(Fixture.files(under: "\(repo)/points", suffix: ".verify").count == 2)
    }
}
