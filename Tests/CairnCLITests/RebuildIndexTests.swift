import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The chunk index is derived data: a damaged or lost segment is rebuilt from the packs.
@Suite struct RebuildIndexTests {
    func setUp(_ dir: TemporaryDirectory) throws -> (repo: String, image: String) {
        let repo = dir.file("repo")
        let image = dir.file("d.img")
        var gen = TestImage(seed: 31)
        try gen.makeImage(at: image, size: 8 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "16K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "g", image]).status == 0)
        return (repo, image)
    }

    func segments(_ repo: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: "\(repo)/index").filter { $0.hasSuffix(".idx") }.map {
            "\(repo)/index/\($0)"
        }
    }

    @Test func damagedSegmentIsRebuilt() throws {
        let dir = TemporaryDirectory()
        let (repo, image) = try setUp(dir)
        let segment = try #require(try segments(repo).first)
        // Truncate it: commands still open the repository and say what to do; a restore that
        // needs its chunks refuses.
        let size = try File.open(segment, .readOnly).size()
        try File.open(segment, .readWrite).truncate(to: size / 2)
        let listed = CairnProcess.run(["list", "--repo", repo])
        #expect(listed.status == 0)
        #expect(listed.stderr.contains("cairn rebuild-index"))
        let refused = CairnProcess.run(["restore", "--repo", repo, "g@latest", "--to", dir.file("early.img")])
        #expect(refused.status == 7)
        #expect(refused.stderr.contains("cairn rebuild-index"))

        let rebuilt = CairnProcess.run(["rebuild-index", "--repo", repo, "--json"])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(rebuilt.stdout.utf8)) as! [String: Any]
        #expect((report["chunks"] as! Int) > 0)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "g@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }

    @Test func lostIndexAndDamagedPackTableAreRebuiltByScanning() throws {
        let dir = TemporaryDirectory()
        let (repo, image) = try setUp(dir)
        for segment in try segments(repo) { try FileManager.default.removeItem(atPath: segment) }
        // Damage every pack's table: rebuild falls back to walking the records.
        let packs = try FileManager.default.subpathsOfDirectory(atPath: "\(repo)/packs").filter {
            $0.hasSuffix(".pack")
        }
        #expect(!packs.isEmpty)
        for pack in packs {
            let file = try File.open("\(repo)/packs/\(pack)", .readWrite)
            let at = try file.size() - 41  // last byte of the table, just before the footer
            var byte = try file.readBytes(count: 1, at: at)
            byte[0] ^= 0xFF
            try file.write(byte, at: at)
        }
        let rebuilt = CairnProcess.run(["rebuild-index", "--repo", repo, "--json"])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(rebuilt.stdout.utf8)) as! [String: Any]
        #expect((report["packsScanned"] as! [String]).count == packs.count)
        let out = dir.file("out.img")
        let restore = CairnProcess.run(["restore", "--repo", repo, "g@latest", "--to", out])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }

    @Test func rebuildNeedsTheRepositoryAlone() throws {
        let dir = TemporaryDirectory()
        let (repo, _) = try setUp(dir)
        let holder = try File.open("\(repo)/locks/repository.lock", .readWrite)
        #expect(try holder.tryLock(.shared))
        let busy = CairnProcess.run(["rebuild-index", "--repo", repo])
        #expect(busy.status == 5)
        holder.unlock()
    }
}
