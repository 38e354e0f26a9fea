import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Crash safety: backup, gc and prune stopped at many points (CAIRN_FAULT_AFTER_WRITES=N stops
/// the process at its N-th write, fsync or rename, as kill -9 would), real kill -9 at random
/// times, and a write error (file size limit) mid-backup. After each: the repository verifies
/// clean, lists only complete restore points, and the next run succeeds.
@Suite struct CrashTests {
    /// Cap on crash points per command, so the suite stays fast.
    static let maxCrashPoints = 30

    /// 1, 2, … 16, then growing by half: dense where the interesting early writes are, sparse
    /// later. Packs are appended in 4 MiB pieces (`DirectAppender`), so a small night is a few
    /// dozen writes: every one of the first 16 is a point.
    static func nextPoint(_ n: Int) -> Int { n < 16 ? n + 1 : n * 3 / 2 }

    static func expectHealthy(_ repo: String, _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 0, "\(context): \(verify.stderr)", sourceLocation: sourceLocation)
        let list = CairnProcess.run(["list", "--repo", repo, "--json"])
        #expect(list.status == 0, "\(context): \(list.stderr)", sourceLocation: sourceLocation)
    }

    static func pointCount(_ repo: String) -> Int {
        Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).count
    }

    /// A repository with three nights of a 2 MiB disk (4K blocks); returns the last night's SHA-256.
    static func threeNights(repo: String, image: String) throws -> String {
        var gen = TestImage(seed: 61)
        try gen.makeImage(at: image, size: 2 << 20, extent: 256 << 10, stride: 256 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        for night in 0..<3 {
            if night > 0 {
                try gen.scatterWrites(at: image, count: 8)
                sleep(1)
            }
            #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        }
        return try TestImage.sha256(of: image)
    }

    @Test func backupStoppedAtManyPoints() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 62)
        // Big enough that the writes land in many 2 MiB frame windows and index pages: each is a
        // record written, i.e. a point to stop at.
        try gen.makeImage(at: image, size: 64 << 20, extent: 256 << 10, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        try gen.scatterWrites(at: image, count: 40)
        var n = 1
        var crashes = 0
        while crashes < Self.maxCrashPoints {
            let run = CairnProcess.run(
                ["backup", "--repo", repo, "--group", "vm", image], environment: ["CAIRN_FAULT_AFTER_WRITES": "\(n)"])
            if run.status == 0 { break }
            #expect(run.status == 137, "write \(n): \(run.stderr)")
            crashes += 1
            Self.expectHealthy(repo, "backup stopped at write \(n)")
            n = Self.nextPoint(n)
        }
        print("backup: stopped at \(crashes) points (last N = \(n)), repository clean after each")
        #expect(crashes >= 10)
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        // Leftovers of the stopped runs: gc removes them all.
        #expect(CairnProcess.run(["gc", "--repo", repo]).status == 0)
        #expect(Fixture.temporaryFiles(under: repo).isEmpty)
        Self.expectHealthy(repo, "after gc")
    }

    @Test func gcStoppedAtManyPoints() throws {
        let dir = TemporaryDirectory()
        let template = dir.file("template")
        let image = dir.file("disk.img")
        let last = try Self.threeNights(repo: template, image: image)
        let ids = Fixture.jsonArray(CairnProcess.run(["list", "--repo", template, "--json"]).stdout).map {
            $0["id"] as! String
        }
        for id in ids.dropLast() { #expect(CairnProcess.run(["forget", "--repo", template, id]).status == 0) }
        let repo = dir.file("repo")
        var n = 1
        var crashes = 0
        while crashes < Self.maxCrashPoints {
            Fixture.copyTree(template, to: repo)
            let run = CairnProcess.run(["gc", "--repo", repo], environment: ["CAIRN_FAULT_AFTER_WRITES": "\(n)"])
            if run.status == 0 { break }
            #expect(run.status == 137, "write \(n): \(run.stderr)")
            crashes += 1
            Self.expectHealthy(repo, "gc stopped at write \(n)")
            #expect(Self.pointCount(repo) == 1)
            let out = dir.file("out-\(n).img")
            #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
            #expect(try TestImage.sha256(of: out) == last, "gc stopped at write \(n)")
            // The next gc finishes the job.
            #expect(CairnProcess.run(["gc", "--repo", repo]).status == 0)
            #expect(Fixture.temporaryFiles(under: repo).isEmpty)
            Self.expectHealthy(repo, "gc after gc stopped at write \(n)")
            n = Self.nextPoint(n)
        }
        print("gc: stopped at \(crashes) points (last N = \(n)), repository clean after each")
        #expect(crashes >= 5)
    }

    @Test func pruneStoppedAtManyPoints() throws {
        let dir = TemporaryDirectory()
        let template = dir.file("template")
        _ = try Self.threeNights(repo: template, image: dir.file("disk.img"))
        let repo = dir.file("repo")
        var n = 1
        var crashes = 0
        while crashes < Self.maxCrashPoints {
            Fixture.copyTree(template, to: repo)
            let run = CairnProcess.run(
                ["prune", "--repo", repo, "--keep-last", "1"], environment: ["CAIRN_FAULT_AFTER_WRITES": "\(n)"])
            if run.status == 0 { break }
            #expect(run.status == 137)
            crashes += 1
            Self.expectHealthy(repo, "prune stopped at write \(n)")
            #expect((1...3).contains(Self.pointCount(repo)))
            n += 1
        }
        print("prune: stopped at \(crashes) points, repository clean after each")
        #expect(crashes >= 1)
        #expect(Self.pointCount(repo) == 1)
    }

    @Test func backupKilledAtRandomTimes() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 63)
        try gen.makeImage(at: image, size: 24 << 20, extent: 1 << 20, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        var killed = 0
        for round in 0..<4 {
            if round > 0 {
                try gen.scatterWrites(at: image, count: 40)
                sleep(1)
            }
            let backup = Process()
            backup.executableURL = URL(fileURLWithPath: CairnProcess.executable)
            backup.arguments = ["backup", "--repo", repo, "--group", "vm", image]
            backup.standardOutput = FileHandle.nullDevice
            backup.standardError = FileHandle.nullDevice
            try backup.run()
            usleep(UInt32(20_000 + gen.next() % 200_000))
            if backup.isRunning {
                kill(backup.processIdentifier, SIGKILL)
                killed += 1
            }
            backup.waitUntilExit()
            Self.expectHealthy(repo, "backup killed in round \(round)")
        }
        print("backup: killed with SIGKILL \(killed) of 4 times, repository clean after each")
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }

    /// A write error mid-backup: the file size limit (RLIMIT_FSIZE, EFBIG) stands in for a full
    /// disk, and works unprivileged. SIGXFSZ is ignored so the write fails instead of killing.
    @Test func writeErrorMidBackupLeavesTheRepositoryIntact() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 64)
        try gen.makeImage(at: image, size: 4 << 20, extent: 1 << 20, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        let limited = Subprocess.shell(
            "trap '' XFSZ; ulimit -f 512; exec '\(CairnProcess.executable)' backup --repo '\(repo)' --group vm '\(image)'"
        )
        #expect(limited.status == 9, "\(limited.stderr)")
        #expect(limited.stderr.hasPrefix("cairn: cannot write"), "\(limited.stderr)")
        #expect(limited.stderr.split(separator: "\n").count == 1)
        #expect(Self.pointCount(repo) == 0)
        Self.expectHealthy(repo, "after the failed backup")
        #expect(Fixture.temporaryFiles(under: repo).isEmpty, "the failed backup removed its temporary pack")
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        Self.expectHealthy(repo, "after the next backup")
    }
}
