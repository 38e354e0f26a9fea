import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn verify` end to end: clean runs, damage named with restore point, disk and offset,
/// restore around damage, healing by the next backup, and rotating samples.
@Suite struct VerifyTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.img") }

    init() throws {
        var gen = TestImage(seed: 21)
        try gen.makeImage(at: image, size: 4 << 20, extent: 512 << 10, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
    }

    func verify(_ extra: [String] = []) -> (CairnProcess.Outcome, [String: Any]) {
        let outcome = CairnProcess.run(["verify", "--repo", repo, "--json"] + extra)
        return (outcome, Fixture.json(outcome.stdout))
    }

    @Test func cleanRepositoryVerifiesAndRecordsTheResult() throws {
        let (outcome, report) = verify()
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(report["intact"] as? Bool == true)
        #expect((report["chunksChecked"] as? Int ?? 0) > 500)
        #expect((report["pagesChecked"] as? Int ?? 0) >= 1)
        let rows = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout)
        let verified = rows.first?["verified"] as? [String: Any]
        #expect(verified?["result"] as? String == "intact")
        #expect(verified?["scope"] as? String == "full")
        #expect(rows.first?["protected"] as? Bool == false)
        let show = CairnProcess.run(["show", "--repo", repo, "vm@latest"])
        #expect(show.stdout.contains("verified:    intact"))
        let text = CairnProcess.run(["verify", "--repo", repo, "vm@latest"])
        #expect(text.status == 0 && text.stdout.hasPrefix("intact:"), "\(text.stdout)")
    }

    @Test func damagedChunkIsNamedRestoredAroundAndHealed() throws {
        // A second restore point that shares almost every chunk with the first.
        let night0 = try TestImage.sha256(of: image)
        // Night 0's pack (pack names are random: pick it before night 1 adds another).
        let packPath = Fixture.files(under: "\(repo)/packs", suffix: ".pack")[0]
        var gen = TestImage(seed: 22)
        try gen.scatterWrites(at: image, count: 2)
        sleep(1)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let ids = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).map {
            $0["id"] as! String
        }
        #expect(ids.count == 2)

        // Damage the first data record of night 0's pack: a frame of blocks both restore points
        // hold. Every block of the frame is damaged, and only those.
        let packID = PackID(hex: String(FileSystem.baseName(packPath).dropLast(5)))!
        let table = try PackReader(path: packPath, id: packID).readTable()
        let record = table.sorted { $0.offset < $1.offset }.first { $0.kind == .data }!
        let members = Set(table.filter { $0.offset == record.offset }.map(\.digest.hex))
        #expect(members.count > 1, "the first data record is a frame")
        // The first byte after the member list: the zstd frame's magic number (nothing in the
        // frame decodes), or the first member's first byte if the frame did not compress.
        let zstdStart = record.offset + UInt64(48 + 4 + 40 * members.count)
        try Fixture.flip(packPath, at: zstdStart + 1, mask: 0x80)

        let (outcome, report) = verify()
        #expect(outcome.status == 7)
        #expect(report["intact"] as? Bool == false)
        let damaged = report["damagedChunks"] as? [[String: Any]] ?? []
        #expect(Set(damaged.map { $0["digest"] as! String }) == members)
        let entry = damaged.first { $0["digest"] as? String == record.digest.hex }
        let allOffsets = damaged.flatMap { chunk in
            (chunk["neededBy"] as? [[String: Any]] ?? []).filter { $0["restorePoint"] as? String == ids[1] }
                .flatMap { $0["offsets"] as? [Int] ?? [] }
        }
        let uses = entry?["neededBy"] as? [[String: Any]] ?? []
        #expect(Set(uses.map { $0["restorePoint"] as! String }) == Set(ids), "every restore point that needs it")
        #expect(uses.allSatisfy { $0["disk"] as? String == "disk.img" })
        let offsets = (uses.first?["offsets"] as? [Int]) ?? []
        #expect(!offsets.isEmpty)
        let text = CairnProcess.run(["verify", "--repo", repo])
        #expect(text.status == 7)
        #expect(text.stderr.contains("damaged chunk \(record.digest.hex)"))
        #expect(text.stderr.contains("needed by \(ids[0]) disk disk.img at byte offset \(offsets[0])"))
        let rows = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout)
        #expect(rows.allSatisfy { ($0["verified"] as? [String: Any])?["result"] as? String == "damaged" })

        // Restore fails naming the offset; --allow-damaged writes zeros there and lists it.
        let out = dir.file("out.img")
        let failed = CairnProcess.run(["restore", "--repo", repo, ids[0], "--to", out])
        #expect(failed.status == 7)
        #expect(failed.stderr.contains("offset \(allOffsets.min() ?? -1)"), "\(failed.stderr)")
        let allowed = CairnProcess.run(["restore", "--repo", repo, ids[1], "--to", out, "--allow-damaged", "--json"])
        #expect(allowed.status == 12, "a restore with zeros for damaged data exits 12: \(allowed.stderr)")
        #expect(allowed.stderr.contains("wrote zeros at disk offset \(allOffsets.min() ?? -1)"))
        let ranges = Fixture.json(allowed.stdout)["damaged"] as? [[String: Any]] ?? []
        // Verify distrusts every member of a frame that fails its CRC; restore writes zeros only
        // where a member's bytes do not prove (all of them if the frame does not decompress).
        let zeroed = ranges.map { $0["offset"] as! Int }
        #expect(zeroed.contains(allOffsets.min() ?? -1) && Set(zeroed).isSubset(of: Set(allOffsets)))
        let restored = try File.open(out, .readOnly)
        let original = try File.open(image, .readOnly)
        for offset in zeroed {
            #expect(try restored.readBytes(count: 4096, at: UInt64(offset)).allSatisfy { $0 == 0 })
        }
        #expect(
            try restored.readBytes(count: 4096, at: 0) == original.readBytes(count: 4096, at: 0)
                || allOffsets.contains(0))
        // Every other byte is the disk's, the blocks staged in one write around the zeros too.
        let size = Int(try original.size())
        #expect(try restored.size() == UInt64(size))
        var expected = try original.readBytes(count: size, at: 0)
        for range in ranges {
            let start = range["offset"] as! Int
            let end = start + (range["length"] as! Int)
            expected.replaceSubrange(start..<end, with: repeatElement(0, count: end - start))
        }
        #expect(try restored.readBytes(count: size, at: 0) == expected, "the restored disk around the damage")

        // The next backup of the same (unchanged) data stores the chunk again: verify passes.
        sleep(1)
        let heal = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
        #expect(heal.status == 0)
        #expect((Fixture.json(heal.stdout)["chunksNew"] as? Int ?? 0) >= 1, "the damaged chunk is stored again")
        let (after, healed) = verify()
        #expect(after.status == 0, "\(after.stderr)")
        #expect(healed["intact"] as? Bool == true)
        #expect(!(healed["warnings"] as? [String] ?? []).isEmpty, "the old copy is reported as dead space")
        let fixed = dir.file("fixed.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, ids[0], "--to", fixed]).status == 0)
        #expect(try TestImage.sha256(of: fixed) == night0, "the first restore point is whole again")
    }

    @Test func damagedIndexPageIsNamedAndHealed() throws {
        // The root page of the only tree: the whole disk depends on it.
        let packPath = Fixture.files(under: "\(repo)/packs", suffix: ".pack")[0]
        let packID = PackID(hex: String(FileSystem.baseName(packPath).dropLast(5)))!
        let page = try PackReader(path: packPath, id: packID).readTable().last { $0.kind == .indexPage }!
        try Fixture.flip(packPath, at: page.offset + 48 + 3)
        let (outcome, report) = verify()
        #expect(outcome.status == 7)
        let damaged = report["damagedChunks"] as? [[String: Any]] ?? []
        #expect(
            damaged.contains { $0["digest"] as? String == page.digest.hex && $0["kind"] as? String == "index page" })
        let points = report["restorePoints"] as? [[String: Any]] ?? []
        #expect(points.first?["result"] as? String == "damaged")
        // gc refuses to guess what a damaged tree needs.
        let gc = CairnProcess.run(["gc", "--repo", repo])
        #expect(gc.status == 7)
        #expect(gc.stderr.contains("cannot tell which chunks"))
        // A new backup does not depend on the damaged tree and heals the page.
        sleep(1)
        let heal = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image])
        #expect(heal.status == 0, "\(heal.stderr)")
        #expect(verify().0.status == 0)
    }

    @Test func sampleRotatesThroughTheDigestSpace() throws {
        let (_, full) = verify()
        let total = full["chunksChecked"] as! Int
        var seen = 0
        var ranges = Set<String>()
        for _ in 0..<4 {
            let (outcome, report) = verify(["--sample", "25"])
            #expect(outcome.status == 0)
            #expect(report["scope"] as? String == "sample")
            #expect(
                (report["pagesChecked"] as? Int ?? 0) == (full["pagesChecked"] as? Int ?? -1),
                "metadata is checked whole")
            seen += report["chunksChecked"] as? Int ?? 0
            ranges.insert(report["digestRange"] as? String ?? "")
        }
        #expect(ranges.count == 4)
        #expect(seen == total, "four quarter samples cover every chunk exactly once")
        let rows = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout)
        #expect((rows.first?["verified"] as? [String: Any])?["scope"] as? String == "sample")
        #expect(CairnProcess.run(["verify", "--repo", repo, "--sample", "0"]).status == 64)
    }
}
