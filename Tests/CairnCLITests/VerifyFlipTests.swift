import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// One flipped byte anywhere in a pack, an index segment or a manifest: verify must notice it.
@Suite struct VerifyFlipTests {
    /// Positions tried per file kind: the first and last bytes, then random ones (seeded).
    static let randomPositions = 80

    @Test(arguments: ["pack", "idx", "manifest"])
    func everyFlippedByteIsCaught(kind: String) throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 31)
        try gen.makeImage(at: image, size: 1 << 20, extent: 128 << 10, stride: 256 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        try gen.scatterWrites(at: image, count: 3)
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)

        let files = Fixture.files(under: repo, suffix: ".\(kind)")
        #expect(files.count == 2)
        var tried = 0
        var caught = 0
        for (n, file) in files.enumerated() {
            let size = Fixture.fileSize(file)
            var positions: [UInt64] = [0, size - 1]
            for _ in 0..<(Self.randomPositions / files.count) { positions.append(gen.next() % size) }
            for position in positions {
                let mask = UInt8(1 + gen.next() % 255)
                try Fixture.flip(file, at: position, mask: mask)
                let outcome = CairnProcess.run(["verify", "--repo", repo])
                try Fixture.flip(file, at: position, mask: mask)
                tried += 1
                // 7: damage found; 3: a flipped format-version field makes the file unreadable as a Cairn file.
                if outcome.status == 7 || outcome.status == 3 {
                    caught += 1
                } else {
                    Issue.record("\(kind) \(n) byte \(position) ^ \(mask): exit \(outcome.status), \(outcome.stderr)")
                }
            }
        }
        print("flipped bytes in \(kind) files: \(tried) tried, \(caught) caught")
        #expect(caught == tried)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0, "every flip was undone")
    }
}
