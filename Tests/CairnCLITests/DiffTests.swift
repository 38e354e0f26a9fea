import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn diff` names exactly the blocks whose bytes changed, judged against `cmp -l`.
@Suite struct DiffTests {
    /// The blocks in which two files differ, from `cmp -l` (1-based byte positions).
    static func differingBlocks(_ a: String, _ b: String, blockSize: UInt64) -> Set<UInt64> {
        let out = Subprocess.shell("cmp -l '\(a)' '\(b)' 2>/dev/null | awk '{print $1}'").stdout
        var blocks = Set<UInt64>()
        for line in out.split(separator: "\n") {
            if let position = UInt64(line) { blocks.insert((position - 1) / blockSize) }
        }
        return blocks
    }

    static func blocks(of ranges: [[String: Any]], blockSize: UInt64) -> Set<UInt64> {
        var blocks = Set<UInt64>()
        for range in ranges {
            let offset = UInt64(range["offset"] as! Int)
            let length = UInt64(range["length"] as! Int)
            var block = offset / blockSize
            while block * blockSize < offset + length {
                blocks.insert(block)
                block += 1
            }
        }
        return blocks
    }

    /// 4 MiB in 4 KiB blocks is exactly one leaf page; 5 MiB needs a second level (so 4 to 5
    /// changes the tree's height, and 5 to 5 skips equal leaf pages).
    @Test(arguments: [(4 << 20, 4 << 20), (4 << 20, 5 << 20), (5 << 20, 5 << 20)])
    func diffNamesTheChangedBlocks(size: Int, grownTo: Int) throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        let before = dir.file("before.img")
        var gen = TestImage(seed: 21)
        try gen.makeImage(at: image, size: UInt64(size), extent: 64 << 10, stride: 256 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        Subprocess.shell("cp '\(image)' '\(before)'")
        _ = try gen.scatterWrites(at: image, count: 6)
        if grownTo > size { Subprocess.shell("truncate -s \(grownTo) '\(image)'") }
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let ids = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).map {
            $0["id"] as! String
        }
        #expect(ids.count == 2)

        let out = CairnProcess.run(["diff", "--repo", repo, ids[0], ids[1], "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let disks = Fixture.json(out.stdout)["disks"] as? [[String: Any]] ?? []
        #expect(disks.count == 1)
        let disk = try #require(disks.first)
        let ranges = disk["ranges"] as? [[String: Any]] ?? []
        // The oracle: cmp over the common length; growth counts whole.
        var expected = Self.differingBlocks(before, image, blockSize: 4096)
        for block in UInt64(size / 4096)..<UInt64(grownTo / 4096) { expected.insert(block) }
        #expect(!expected.isEmpty)
        #expect(Self.blocks(of: ranges, blockSize: 4096) == expected)
        #expect(disk["moreRanges"] as? Int == 0)
        #expect(disk["sizeTo"] as? Int == grownTo)

        let text = CairnProcess.run(["diff", "--repo", repo, ids[0], ids[1]])
        #expect(text.status == 0)
        #expect(text.stdout.contains("disk disk.img:") && text.stdout.contains("differ in"))
        let same = CairnProcess.run(["diff", "--repo", repo, ids[1], "vm@latest"])
        #expect(same.stdout.contains("identical"))
    }

    @Test func diskOnlyInOneRestorePoint() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        var gen = TestImage(seed: 4)
        try gen.makeImage(at: dir.file("a.img"), size: 1 << 20)
        try gen.makeImage(at: dir.file("b.img"), size: 2 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", dir.file("a.img")]).status == 0)
        sleep(1)
        #expect(
            CairnProcess.run(["backup", "--repo", repo, "--group", "vm", dir.file("a.img"), dir.file("b.img")]).status
                == 0)
        let ids = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).map {
            $0["id"] as! String
        }
        let out = CairnProcess.run(["diff", "--repo", repo, ids[0], ids[1], "--json"])
        let disks = Fixture.json(out.stdout)["disks"] as? [[String: Any]] ?? []
        #expect(disks.map { $0["name"] as? String } == ["a.img", "b.img"])
        #expect(disks[0]["bytesDiffering"] as? Int == 0)
        #expect(disks[1]["bytesDiffering"] as? Int == 2 << 20)
        #expect(disks[1]["sizeFrom"] == nil)
        #expect(CairnProcess.run(["diff", "--repo", repo, ids[0], ids[1]]).stdout.contains("only in \(ids[1])"))
    }
}
