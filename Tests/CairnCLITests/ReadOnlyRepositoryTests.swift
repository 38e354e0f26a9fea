import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Restoring needs only read access: a read-only mounted or copied repository restores.
@Suite struct ReadOnlyRepositoryTests {
    @Test func restoreFromAReadOnlyRepository() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("d.img")
        var gen = TestImage(seed: 21)
        try gen.makeImage(at: image, size: 3 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "g", image]).status == 0)
        #expect(Subprocess.shell("chmod -R a+rX,a-w '\(repo)' && chmod a+rwx '\(dir.path)'").status == 0)
        defer { Subprocess.shell("chmod -R u+w '\(repo)'") }

        // As root, drop to nobody so that the permissions really apply. The binary is copied
        // here: the checkout it was built in may not be reachable for nobody.
        let asOther = getuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : ""
        let cairn = try dir.copy(CairnProcess.executable, as: "cairn")
        #expect(Subprocess.shell("chmod a+rx '\(cairn)'").status == 0)
        let out = dir.file("out.img")
        let restore = Subprocess.shell("\(asOther)'\(cairn)' restore --repo '\(repo)' g@latest --to '\(out)'")
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))

        if getuid() == 0 {
            #expect(Subprocess.shell("chmod 700 '\(repo)'").status == 0)
            let denied = Subprocess.shell("\(asOther)'\(cairn)' list --repo '\(repo)'")
            #expect(denied.status == 3)
            #expect(denied.stderr.contains("permission denied"))
        }
    }
}
