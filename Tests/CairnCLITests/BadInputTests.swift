import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Each bad input: one clear line on stderr, a documented non-zero exit, nothing stored changed.
@Suite struct BadInputTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.img") }

    init() throws {
        var gen = TestImage(seed: 9)
        try gen.makeImage(at: image, size: 4 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
    }

    /// Runs cairn, expecting `status`, one stderr line containing `message`, and no repository change.
    func expectRefused(
        _ args: [String], status: Int32, message: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let before = TestImage.snapshotTree(repo)
        let outcome = CairnProcess.run(args)
        #expect(outcome.status == status, "stderr: \(outcome.stderr)", sourceLocation: sourceLocation)
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1, "one line, got: \(outcome.stderr)", sourceLocation: sourceLocation)
        #expect(outcome.stderr.contains(message), "stderr: \(outcome.stderr)", sourceLocation: sourceLocation)
        #expect(TestImage.snapshotTree(repo) == before, "the repository changed", sourceLocation: sourceLocation)
    }

    /// Flags that cannot go together are named as typed; the library's own checks use words of
    /// its own, so these messages come from the command line layer.
    @Test func conflictingFlagsAreNamed() {
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", "--cbt", "--dirty-bitmap", "b1", image], status: 64,
            message: "--cbt manages its own bitmaps")
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", "--full-every", "3", image], status: 64,
            message: "--full-every needs --cbt or --dirty-bitmap")
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", "--cbt", "--cbt-sample=-1", image], status: 64,
            message: "--cbt-sample must be 0 or more")
        expectRefused(
            ["verify", "--repo", repo, "--sample", "150"], status: 64, message: "--sample 150.0 is not a percentage")
        expectRefused(
            ["restore", "--repo", repo, "--domain", "vm", "--to-dir", dir.file("d"), "--define", "a/b"], status: 64,
            message: "--define a/b is not a plain name")
    }

    @Test func missingRepository() {
        expectRefused(
            ["backup", "--repo", dir.file("nope"), "--group", "vm", image], status: 3, message: "does not exist")
        expectRefused(["list", "--repo", dir.file("nope")], status: 3, message: "cairn init")
    }

    @Test func directoryThatIsNotARepository() throws {
        let other = dir.file("other")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        expectRefused(["list", "--repo", other], status: 3, message: "is not a Cairn repository")
        try Data("{\"hello\": 1}".utf8).write(to: URL(fileURLWithPath: "\(other)/config"))
        expectRefused(["list", "--repo", other], status: 3, message: "is not a Cairn repository")
    }

    @Test func unknownFormatVersion() throws {
        // As a newer Cairn would write it: another version, and a checksum that matches.
        let config = "\(repo)/config"
        let original = try String(contentsOfFile: config, encoding: .utf8)
        try Fixture.sealedConfig(original.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 7"))
            .write(toFile: config, atomically: true, encoding: .utf8)
        defer { try? original.write(toFile: config, atomically: true, encoding: .utf8) }
        expectRefused(["backup", "--repo", repo, "--group", "vm", image], status: 3, message: "format version 7")
    }

    @Test func unknownRestorePoint() {
        expectRefused(
            ["restore", "--repo", repo, "vm@2001-01-01T00:00:00Z", "--to", dir.file("o")], status: 4,
            message: "does not exist")
        expectRefused(
            ["restore", "--repo", repo, "nogroup@latest", "--to", dir.file("o")], status: 4,
            message: "no restore points")
        expectRefused(["show", "--repo", repo, "not-an-id"], status: 64, message: "not a restore point id")
        #expect(!FileManager.default.fileExists(atPath: dir.file("o")))
    }

    @Test func missingOrUnreadableImage() throws {
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", dir.file("missing.img")], status: 4, message: "does not exist")
        // A directory is there but is no disk image.
        let folder = dir.file("folder.img")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", folder], status: 6, message: "folder.img is a directory")
        // A good image beside a missing one: nothing is committed.
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", image, dir.file("missing.img")], status: 4,
            message: "missing.img")
    }

    @Test func outputInMissingDirectory() {
        expectRefused(
            ["restore", "--repo", repo, "vm@latest", "--to", dir.file("no/such/dir/out.img")], status: 4,
            message: "does not exist")
    }

    @Test func badGroupAndBlockSize() {
        expectRefused(["backup", "--repo", repo, "--group", "../evil", image], status: 64, message: "group name")
        let outcome = CairnProcess.run(["init", "--repo", dir.file("r2"), "--block-size", "3000"])
        #expect(outcome.status == 64)
        #expect(outcome.stderr.contains("power of two"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("r2")))
    }

    @Test func secondBackupOfTheSameGroupWhileOneRuns() throws {
        // Hold the group's lock as a running backup would.
        let lockPath = "\(repo)/locks/group.vm.lock"
        let holder = try File.open(lockPath, .readWrite)
        #expect(try holder.tryLock(.exclusive))
        try holder.truncate(to: 0)
        try holder.write(Array("cairn backup of group vm (pid 4242, started 2026-11-26T03:00:00Z)\n".utf8), at: 0)
        expectRefused(
            ["backup", "--repo", repo, "--group", "vm", image], status: 5,
            message: "PID 4242 (cairn backup of group vm, since 2026-11-26T03:00:00Z)")

        // --lock-wait waits, then fails with the same code.
        let start = Date()
        let waited = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--lock-wait", "1s", image])
        #expect(waited.status == 5)
        // It said once that it waits, and for whom.
        #expect(
            waited.stderr.components(separatedBy: "waiting for the lock held by PID 4242 (cairn backup").count == 2,
            "\(waited.stderr)")
        #expect(Date().timeIntervalSince(start) >= 1)

        // Another group is not blocked.
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "other", image]).status == 0)

        // The lock dies with its holder: released, the next backup runs.
        holder.unlock()
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
    }

    @Test func waitingForALockThatIsReleased() throws {
        let lockPath = "\(repo)/locks/group.vm.lock"
        // A real process holds the lock for one second, then dies.
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        sleeper.arguments = [lockPath, "sleep", "1"]
        try sleeper.run()
        usleep(200_000)
        let outcome = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--lock-wait", "20s", image])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        sleeper.waitUntilExit()
    }
}
