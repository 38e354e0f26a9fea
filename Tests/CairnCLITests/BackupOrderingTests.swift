import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Backups that follow each other closely: a backup that waited for the group's lock sees what
/// the one before it committed, and restore point ids are never later than their commit.
@Suite struct BackupOrderingTests {
    @Test func aBackupThatWaitedForTheLockStoresNothingTwice() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        let made = Subprocess.shell("head -c 48M /dev/urandom > '\(image)'")
        #expect(made.status == 0)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)

        // The first backup runs on one thread, so it holds the group's lock for a while.
        let first = Process()
        first.executableURL = URL(fileURLWithPath: CairnProcess.executable)
        first.arguments = ["backup", "--repo", repo, "--group", "vm", image]
        first.environment = ["CAIRN_THREADS": "1"]
        first.standardOutput = FileHandle.nullDevice
        first.standardError = FileHandle.nullDevice
        try first.run()
        let lockFile = "\(repo)/locks/group.vm.lock"
        #expect(
            InterruptionTests.wait {
                ((try? String(contentsOfFile: lockFile, encoding: .utf8)) ?? "").contains("pid")
            })
        #expect(first.isRunning, "the first backup finished before the second started")
        // The second opens the repository (and its index) now, then waits for the lock.
        let second = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--lock-wait", "2m", "--json", image])
        first.waitUntilExit()
        #expect(first.terminationStatus == 0)
        #expect(second.status == 0, "\(second.stderr)")
        let summary = Fixture.json(second.stdout)
        #expect(summary["bytesNew"] as? Int == 0, "\(second.stdout)")
        #expect((summary["bytesStored"] as? Int ?? Int.max) < 64 << 10, "\(second.stdout)")
        // The packs hold the 48 MiB once.
        let packs = TestImage.treeSize("\(repo)/packs")
        #expect(packs > 48 << 20 && packs < 50 << 20, "packs hold \(packs) bytes")
        #expect(CrashTests.pointCount(repo) == 2)
    }

    @Test func backToBackBackupsGetIdsThatAreNotInTheFuture() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 91)
        try gen.makeImage(at: image, size: 1 << 20, extent: 64 << 10, stride: 256 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        var ids: [RestorePointID] = []
        for _ in 0..<4 {
            let run = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
            let committed = Timestamp.now()
            #expect(run.status == 0, "\(run.stderr)")
            let id = try #require(RestorePointID(parsing: Fixture.json(run.stdout)["id"] as? String ?? ""))
            #expect(id.time <= committed, "\(id) is later than its commit at \(committed)")
            if let last = ids.last { #expect(last < id) }
            ids.append(id)
        }
        // Restoring "now" picks the newest.
        let now = Timestamp.now()
        let out = dir.file("out.img")
        let restore = CairnProcess.run(
            ["restore", "--repo", repo, "--group", "vm", "--at", now.description, "--to", out, "--json"])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(Fixture.json(restore.stdout)["id"] as? String == ids.last?.description)
    }
}
