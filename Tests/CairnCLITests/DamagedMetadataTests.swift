import CairnCore
import CairnTestSupport
import Foundation
import Synchronization
import Testing

/// Damage to one metadata file must stay one problem: named, with what to do, while every
/// command that does not need the damaged part goes on working (issue 18, defects 1-3).
@Suite struct DamagedMetadataTests {
    /// A repository with two restore points of one disk; the second backup's new chunks are
    /// named only by the second (newest) index segment.
    struct TwoNights {
        let dir = TemporaryDirectory()
        var repo: String { dir.file("repo") }
        var image: String { dir.file("disk.img") }
        var first = ""
        var second = ""
        var firstDigest = ""
        var secondDigest = ""

        init() throws {
            var gen = TestImage(seed: 77)
            try gen.makeImage(at: image, size: 4 << 20, extent: 256 << 10, stride: 512 << 10)
            #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "16K"]).status == 0)
            first = try Self.backup(repo: repo, image: image)
            firstDigest = try TestImage.sha256(of: image)
            try gen.scatterWrites(at: image, count: 8)
            sleep(1)
            second = try Self.backup(repo: repo, image: image)
            secondDigest = try TestImage.sha256(of: image)
        }

        static func backup(repo: String, image: String) throws -> String {
            let out = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
            #expect(out.status == 0, "\(out.stderr)")
            return Fixture.json(out.stdout)["id"] as? String ?? ""
        }

        var newestSegment: String { Fixture.files(under: "\(repo)/index", suffix: ".idx").last! }
    }

    @Test func flippedSegmentEntryCountIsReportedNotFatal() throws {
        let t = try TwoNights()
        let segment = t.newestSegment
        let segmentName = FileSystem.baseName(segment)
        // The top bit of entryCount (bytes 16-23, little-endian): the flip that used to trap.
        try Fixture.flip(segment, at: 23, mask: 0x80)

        let list = CairnProcess.run(["list", "--repo", t.repo])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains(t.first) && list.stdout.contains(t.second))
        #expect(list.stderr.contains(segmentName) && list.stderr.contains("cairn rebuild-index"))

        let verify = CairnProcess.run(["verify", "--repo", t.repo])
        #expect(verify.status == 7)
        #expect(verify.stderr.contains(segmentName) && verify.stderr.contains("rebuild-index"))
        // It went on: packs and restore points were still checked.
        #expect(verify.stdout.contains("2 restore points"), "\(verify.stdout)")

        // The first night's chunks are all in the intact segment.
        let out1 = t.dir.file("first.img")
        let restore1 = CairnProcess.run(["restore", "--repo", t.repo, t.first, "--to", out1])
        #expect(restore1.status == 0, "\(restore1.stderr)")
        #expect(try TestImage.sha256(of: out1) == t.firstDigest)

        // The second night needs chunks only the damaged segment names: refused, with the remedy.
        let restore2 = CairnProcess.run(["restore", "--repo", t.repo, t.second, "--to", t.dir.file("second.img")])
        #expect(restore2.status == 7)
        #expect(restore2.stderr.contains(segmentName) && restore2.stderr.contains("rebuild-index"))

        // gc must not take the packs only the damaged segment names for orphans.
        let gc = CairnProcess.run(["gc", "--repo", t.repo])
        #expect(gc.status == 7)
        #expect(gc.stderr.contains("rebuild-index"))

        // A backup still works, stores the missing chunks again, and its restore point is whole.
        sleep(1)
        let third = try TwoNights.backup(repo: t.repo, image: t.image)
        let out3 = t.dir.file("third.img")
        #expect(CairnProcess.run(["restore", "--repo", t.repo, third, "--to", out3]).status == 0)
        #expect(try TestImage.sha256(of: out3) == t.secondDigest)
        #expect(CairnProcess.run(["prune", "--repo", t.repo, "--keep-last", "3"]).status == 0)
        #expect(
            CairnProcess.run(["archive", "write", "--repo", t.repo, t.first, "--to", t.dir.file("a.cairn")]).status
                == 0)

        // The remedy the messages name works.
        #expect(CairnProcess.run(["rebuild-index", "--repo", t.repo]).status == 0)
        let after = CairnProcess.run(["verify", "--repo", t.repo])
        #expect(after.status == 0, "\(after.stderr)")
        let out2 = t.dir.file("second-again.img")
        #expect(CairnProcess.run(["restore", "--repo", t.repo, t.second, "--to", out2]).status == 0)
        #expect(try TestImage.sha256(of: out2) == t.secondDigest)
    }

    /// Every header count is bounded before it is used: no flip of a header byte traps.
    @Test func everyHeaderByteFlipOfASegmentIsSurvived() throws {
        let t = try TwoNights()
        let segment = t.newestSegment
        for offset in UInt64(8)..<32 {
            for mask: UInt8 in [0x01, 0x80, 0xFF] {
                try Fixture.flip(segment, at: offset, mask: mask)
                let list = CairnProcess.run(["list", "--repo", t.repo])
                let verify = CairnProcess.run(["verify", "--repo", t.repo])
                try Fixture.flip(segment, at: offset, mask: mask)
                // 3: a flipped version field makes the file one this Cairn does not read.
                #expect([0, 3].contains(list.status), "byte \(offset) ^ \(mask): list \(list.status) \(list.stderr)")
                #expect([3, 7].contains(verify.status), "byte \(offset) ^ \(mask): verify \(verify.status)")
            }
        }
    }

    @Test func damagedManifestKeepsTheOthersListed() throws {
        let t = try TwoNights()
        let manifest = Fixture.files(under: "\(t.repo)/points", suffix: ".manifest").first!
        try Fixture.flip(manifest, at: 20, mask: 0x04)

        let list = CairnProcess.run(["list", "--repo", t.repo])
        #expect(list.status == 7)
        #expect(list.stdout.contains(t.first) && list.stdout.contains(t.second))
        #expect(list.stdout.contains("MANIFEST DAMAGED"))
        #expect(list.stderr.contains("manifest"))

        let json = CairnProcess.run(["list", "--repo", t.repo, "--json"])
        #expect(json.status == 7)
        let rows = Fixture.jsonArray(json.stdout)
        #expect(rows.count == 2)
        #expect(rows.filter { $0["damaged"] != nil }.map { $0["id"] as? String } == [t.first])
        #expect(rows.first { $0["id"] as? String == t.second }?["size"] as? Int == 4 << 20)

        // Text verify names the damaged restore point and its manifest, not just a count.
        let verify = CairnProcess.run(["verify", "--repo", t.repo])
        #expect(verify.status == 7)
        #expect(verify.stderr.contains("restore point \(t.first)") && verify.stderr.contains("manifest"))
        #expect(verify.stderr.contains("1 damaged restore point"))
    }

    /// gc waiting for a backup must see the index the backup committed meanwhile; with the index
    /// it opened, the backup's restore point looked damaged and its packs unreferenced.
    @Test func gcThatWaitedForABackupKeepsItsPacks() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 5)
        try gen.makeImage(at: image, size: 96 << 20, extent: 1 << 20, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let group = DispatchGroup()
        let backupOutcome = LockedBox<CairnProcess.Outcome>()
        DispatchQueue.global().async(group: group) {
            backupOutcome.value = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image])
        }
        // Start gc while the backup holds the repository: it opens the index, then waits.
        usleep(150_000)
        let gc = CairnProcess.run(["gc", "--repo", repo, "--lock-wait", "60s"])
        group.wait()
        #expect(backupOutcome.value?.status == 0)
        #expect(gc.status == 0, "\(gc.stderr)")
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 0, "\(verify.stderr)")
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }
}

/// A value one thread sets and another reads after a join.
final class LockedBox<T: Sendable>: Sendable {
    private let stored = Mutex<T?>(nil)
    var value: T? {
        get { stored.withLock { $0 } }
        set { stored.withLock { $0 = newValue } }
    }
}
