import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn gc`: frees what no restore point needs, keeps what they do, cleans up leftovers, and
/// excludes backups while it runs (both directions).
@Suite struct GCTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.img") }

    /// Three nights of a 4 MiB disk with much random churn; returns the last night's SHA-256.
    func threeNights() throws -> String {
        var gen = TestImage(seed: 41)
        try gen.makeImage(at: image, size: 4 << 20, extent: 512 << 10, stride: 512 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        for night in 0..<3 {
            if night > 0 {
                try gen.scatterWrites(at: image, count: 12)
                sleep(1)
            }
            #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        }
        return try TestImage.sha256(of: image)
    }

    func ids() -> [String] {
        Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).map { $0["id"] as! String }
    }

    /// Blocks compressed together in frames: when most blocks of each frame die, gc compresses
    /// the survivors again instead of keeping whole frames alive for them.
    @Test func deadBlocksInsideFramesAreReclaimed() throws {
        var gen = TestImage(seed: 43)
        try FileSystem.writeAtomically(gen.textBytes(16 << 20), to: image)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        // Overwrite 3/4 of every 2 MiB frame window with new, incompressible data.
        let file = try File.open(image, .readWrite)
        for window in stride(from: 0, to: 16 << 20, by: 2 << 20) {
            try file.write(gen.randomBytes(3 << 19), at: UInt64(window))
        }
        try file.sync()
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let last = try TestImage.sha256(of: image)
        #expect(CairnProcess.run(["forget", "--repo", repo, ids()[0]]).status == 0)

        let run = CairnProcess.run(["gc", "--repo", repo, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = Fixture.json(run.stdout)
        let before = report["bytesBefore"] as? Int ?? 0
        let after = report["bytesAfter"] as? Int ?? 0
        // What lives: 12 MiB that did not compress, and a quarter of the text, compressed again.
        #expect(after < 13 << 20 && before - after > 2 << 20, "\(report)")
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == last)
    }

    @Test func freesWhatNoRestorePointNeeds() throws {
        let last = try threeNights()
        let before = TestImage.treeSize(repo)
        let points = ids()
        // Nothing to free yet: gc only merges the index.
        let idle = Fixture.json(CairnProcess.run(["gc", "--repo", repo, "--json"]).stdout)
        #expect(idle["packsDeleted"] as? Int == 0 && idle["packsRewritten"] as? Int == 0)
        #expect(idle["segmentsAfter"] as? Int == 1)

        #expect(CairnProcess.run(["forget", "--repo", repo, points[0]]).status == 0)
        #expect(CairnProcess.run(["forget", "--repo", repo, points[1]]).status == 0)
        let snapshot = TestImage.snapshotTree(repo)
        let dry = CairnProcess.run(["gc", "--repo", repo, "--dry-run", "--json"])
        #expect(dry.status == 0)
        #expect(TestImage.snapshotTree(repo) == snapshot, "--dry-run changes nothing")
        let predicted = Fixture.json(dry.stdout)["bytesFreed"] as? Int ?? 0

        let run = CairnProcess.run(["gc", "--repo", repo, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = Fixture.json(run.stdout)
        let freed = report["bytesFreed"] as? Int ?? 0
        #expect(freed > 0)
        #expect((report["packsRewritten"] as? Int ?? 0) + (report["packsDeleted"] as? Int ?? 0) > 0)
        #expect(abs(predicted - freed) <= 64 << 10, "dry run predicted \(predicted), freed \(freed)")
        #expect(TestImage.treeSize(repo) < before)

        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == last)
        let again = Fixture.json(CairnProcess.run(["gc", "--repo", repo, "--json"]).stdout)
        #expect(again["bytesFreed"] as? Int == 0, "a second gc finds nothing")
        // A backup after gc reuses what is left.
        sleep(1)
        let next = Fixture.json(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image]).stdout)
        #expect(next["chunksNew"] as? Int == 0)
    }

    @Test func removesLeftoversOfInterruptedRuns() throws {
        _ = try threeNights()
        // A temporary pack of a dead process, an orphan pack no segment names, a stale marker.
        let tmp = "\(repo)/packs/00/.00112233445566778899aabbccddeeff.pack.tmp-999999"
        let orphan = "\(repo)/packs/ff/ff112233445566778899aabbccddeeff.pack"
        try FileManager.default.createDirectory(atPath: "\(repo)/packs/00", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(repo)/packs/ff", withIntermediateDirectories: true)
        try Data(repeating: 7, count: 5000).write(to: URL(fileURLWithPath: tmp))
        try Data(repeating: 8, count: 5000).write(to: URL(fileURLWithPath: orphan))
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(repo)/points/vm/2000-01-01T00:00:00Z.verify"))
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 7, "the junk orphan pack is reported")
        let run = CairnProcess.run(["gc", "--repo", repo, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = Fixture.json(run.stdout)
        #expect(report["orphanPacksDeleted"] as? Int == 1)
        #expect(report["leftoversRemoved"] as? Int == 2)
        #expect(!FileSystem.exists(tmp) && !FileSystem.exists(orphan))
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
    }

    @Test func backupWaitsForOrFailsFastOnGC() throws {
        _ = try threeNights()
        let gc = Process()
        gc.executableURL = URL(fileURLWithPath: CairnProcess.executable)
        gc.arguments = ["gc", "--repo", repo]
        var env = ProcessInfo.processInfo.environment
        env["CAIRN_TEST_GC_PAUSE"] = "3"
        gc.environment = env
        gc.standardOutput = FileHandle.nullDevice
        try gc.run()
        // Wait until gc holds the lock (its note names it).
        for _ in 0..<100
        where !((try? String(contentsOfFile: "\(repo)/locks/repository.lock", encoding: .utf8)) ?? "").contains(
            "cairn gc")
        {
            usleep(20_000)
        }
        let fast = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image])
        #expect(fast.status == 5)
        #expect(fast.stderr.contains("cairn gc"), "\(fast.stderr)")
        let waited = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--lock-wait", "30s", image])
        #expect(waited.status == 0, "\(waited.stderr)")
        gc.waitUntilExit()
        #expect(gc.terminationStatus == 0)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
    }

    @Test func gcFailsFastOrWaitsWhileTheRepositoryIsInUse() throws {
        _ = try threeNights()
        // A backup holds locks/repository.lock shared for its whole run; flock(1) does the same.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = ["-s", "\(repo)/locks/repository.lock", "-c", "touch '\(dir.file("held"))'; sleep 2"]
        try holder.run()
        for _ in 0..<100 where !FileSystem.exists(dir.file("held")) { usleep(20_000) }
        let fast = CairnProcess.run(["gc", "--repo", repo])
        #expect(fast.status == 5)
        #expect(fast.stderr.contains("gc needs it alone"), "\(fast.stderr)")
        // The holder is named, though a shared holder writes nothing into the lock file.
        #expect(fast.stderr.contains("PID \(holder.processIdentifier) (flock -s"), "\(fast.stderr)")
        let waited = CairnProcess.run(["gc", "--repo", repo, "--lock-wait", "30s"])
        #expect(waited.status == 0, "\(waited.stderr)")
        #expect(
            waited.stderr.components(separatedBy: "waiting for the lock held by PID \(holder.processIdentifier)").count
                == 2, "\(waited.stderr)")
        holder.waitUntilExit()
    }
}
