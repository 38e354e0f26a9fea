import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The `cairn` binary end to end: back up, change, back up, restore both, compare bytes.
@Suite struct BackupRestoreTests {
    @Test(arguments: ["4K", "64K", "1M"])
    func twoNightsRestoreBitForBit(blockSize: String) throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("vm-disk.img")
        var gen = TestImage(seed: 1)
        // Odd size: the last block is short.
        try gen.makeImage(at: image, size: 24 * 1024 * 1024 + 12345)
        let night0 = try TestImage.sha256(of: image)

        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", blockSize]).status == 0)
        let first = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--json", image])
        #expect(first.status == 0, "\(first.stderr)")
        let firstSummary = try JSONSerialization.jsonObject(with: Data(first.stdout.utf8)) as! [String: Any]
        let firstID = firstSummary["id"] as! String
        #expect(firstID.hasPrefix("vm1@"))

        try gen.scatterWrites(at: image, count: 20)
        let night1 = try TestImage.sha256(of: image)
        #expect(night0 != night1)
        sleep(1)
        let second = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--json", image])
        #expect(second.status == 0, "\(second.stderr)")

        let out0 = dir.file("restored0.img")
        let out1 = dir.file("restored1.img")
        let r0 = CairnProcess.run(["restore", "--repo", repo, firstID, "--to", out0])
        #expect(r0.status == 0, "\(r0.stderr)")
        let r1 = CairnProcess.run(["restore", "--repo", repo, "vm1@latest", "--to", out1])
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(try TestImage.sha256(of: out0) == night0)
        #expect(try TestImage.sha256(of: out1) == night1)
        #expect(Subprocess.shell("cmp '\(image)' '\(out1)'").status == 0)
    }

    @Test func listShowAndPointInTime() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let a = dir.file("a.img")
        let b = dir.file("b.img")
        var gen = TestImage(seed: 2)
        try gen.makeImage(at: a, size: 4 << 20)
        try gen.makeImage(at: b, size: 3 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let env = ["CAIRN_REPO": repo]
        #expect(CairnProcess.run(["backup", "--group", "web", a, b], environment: env).status == 0)
        let aOriginal = try TestImage.sha256(of: a)
        sleep(1)
        try gen.scatterWrites(at: a, count: 3)
        #expect(CairnProcess.run(["backup", "--group", "web", a, b], environment: env).status == 0)
        #expect(CairnProcess.run(["backup", "--group", "db", b], environment: env).status == 0)

        let list = CairnProcess.run(["list", "--json"], environment: env)
        #expect(list.status == 0)
        let rows = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as! [[String: Any]]
        #expect(rows.count == 3)
        for row in rows {
            #expect(row["id"] is String && row["group"] is String && row["time"] is String)
            let disks = row["disks"] as! [[String: Any]]
            #expect(disks.allSatisfy { $0["name"] is String && $0["size"] is NSNumber })
        }
        let times = rows.map { $0["time"] as! String }
        #expect(times == times.sorted(), "oldest first")
        let web = CairnProcess.run(["list", "--group", "web", "--json"], environment: env)
        let webRows = try JSONSerialization.jsonObject(with: Data(web.stdout.utf8)) as! [[String: Any]]
        #expect(webRows.count == 2)
        let firstWeb = webRows[0]
        #expect((firstWeb["disks"] as! [[String: Any]]).map { $0["name"] as! String } == ["a.img", "b.img"])
        #expect((firstWeb["disks"] as! [[String: Any]])[0]["size"] as! Int == 4 << 20)

        let show = CairnProcess.run(["show", "web@latest"], environment: env)
        #expect(show.status == 0)
        #expect(show.stdout.contains("disk a.img") && show.stdout.contains("disk b.img"))

        // Point in time: the first web restore point's own time picks it, not the later one.
        let firstTime = firstWeb["time"] as! String
        let out = dir.file("a-at.img")
        let r = CairnProcess.run(
            ["restore", "--group", "web", "--at", firstTime, "--disk", "a.img", "--to", out], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try TestImage.sha256(of: out) == aOriginal)

        // The same moment with an offset, with fractional seconds, and as local time per TZ
        // (POSIX zone strings: no tzdata needed); each picks the first restore point again.
        let first = try #require(Timestamp(parsing: firstTime))
        let inParis = Timestamp(seconds: first.seconds + 3600).description.dropLast()  // local, no zone
        let forms: [(String, [String: String])] = [
            (String(Timestamp(seconds: first.seconds + 3600).description.dropLast()) + "+01:00", env),
            (String(firstTime.dropLast()) + ".999Z", env),
            (String(inParis), env.merging(["TZ": "CET-1"]) { $1 }),
            (
                String(Timestamp(seconds: first.seconds - 5 * 3600).description.dropLast()),
                env.merging(["TZ": "EST5"]) { $1 }
            ),
        ]
        for (at, environment) in forms {
            let formOut = dir.file("a-form.img")
            let restored = CairnProcess.run(
                ["restore", "--group", "web", "--at", at, "--disk", "a.img", "--to", formOut, "--force", "--json"],
                environment: environment)
            #expect(restored.status == 0, "--at \(at): \(restored.stderr)")
            #expect(restored.stdout.contains(firstWeb["id"] as! String), "--at \(at): \(restored.stdout)")
        }
        // One second earlier in local time is before the first restore point.
        let early = CairnProcess.run(
            [
                "restore", "--group", "web", "--at",
                String(Timestamp(seconds: first.seconds + 3599).description.dropLast()),
                "--disk", "a.img", "--to", dir.file("early.img"),
            ], environment: env.merging(["TZ": "CET-1"]) { $1 })
        #expect(early.status == 4, "\(early.stderr)")

        // Several disks and no --disk: refused with the list of names.
        let ambiguous = CairnProcess.run(["restore", "web@latest", "--to", dir.file("x.img")], environment: env)
        #expect(ambiguous.status == 64)
        #expect(ambiguous.stderr.contains("a.img, b.img"))
        let before = CairnProcess.run(
            ["restore", "--group", "web", "--at", "2000-01-01T00:00:00Z", "--to", dir.file("y.img")], environment: env)
        #expect(before.status == 4)
    }

    @Test func restoreIsSparseAndRespectsForce() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("thin.img")
        // 64 MiB with only 1 MiB of data: the restore must stay thin.
        let file = try File.open(image, .createOrTruncate)
        try file.truncate(to: 64 << 20)
        var gen = TestImage(seed: 3)
        try file.write(gen.randomBytes(1 << 20), at: 10 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "thin", "--json", image])
        #expect(backup.status == 0)
        let summary = try JSONSerialization.jsonObject(with: Data(backup.stdout.utf8)) as! [String: Any]
        #expect(summary["bytesRead"] as! Int == 1 << 20, "holes are not read")

        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "thin@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        #expect(TestImage.allocatedBytes(of: out) <= 2 << 20)

        let again = CairnProcess.run(["restore", "--repo", repo, "thin@latest", "--to", out])
        #expect(again.status == 8)
        #expect(again.stderr.contains("--force"))
        try File.open(out, .readWrite).write(gen.randomBytes(4096), at: 0)
        #expect(CairnProcess.run(["restore", "--repo", repo, "thin@latest", "--to", out, "--force"]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }

    /// A night costs what changed: 40 scattered writes into 256 MiB store at most twice the bytes
    /// written plus 1 MiB; an unchanged night adds under 64 KiB.
    @Test func nightCostsWhatChanged() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("big.img")
        var gen = TestImage(seed: 4)
        try gen.makeImage(at: image, size: 256 << 20, extent: 512 << 10, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "n", image]).status == 0)
        let size0 = TestImage.treeSize(repo)
        let written = try gen.scatterWrites(at: image, count: 40)
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "n", image]).status == 0)
        let size1 = TestImage.treeSize(repo)
        #expect(size1 - size0 <= 2 * written + (1 << 20), "night 1 added \(size1 - size0) for \(written) written")
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "n", image]).status == 0)
        let size2 = TestImage.treeSize(repo)
        #expect(size2 - size1 < 64 << 10, "an unchanged night added \(size2 - size1) bytes")
    }

    @Test func demoRunsEndToEnd() {
        let dir = TemporaryDirectory()
        let demo = CairnProcess.run(["demo", "--dir", dir.file("demo"), "--size", "32M"])
        #expect(demo.status == 0, "\(demo.stderr)")
        #expect(demo.stdout.contains("identical to the night 0 disk"))
        #expect(demo.stdout.contains("identical to the night 1 disk"))
    }
}
