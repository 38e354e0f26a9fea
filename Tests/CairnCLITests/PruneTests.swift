import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn prune`, `protect`, `unprotect` and `forget` on the real binary.
@Suite struct PruneTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }

    /// One real backup, then its manifest rewritten for five earlier days (id, time, checksum):
    /// six restore points of group vm, one per day, all complete (they share one index tree).
    init() throws {
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 51)
        try gen.makeImage(at: image, size: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let manifest = Fixture.files(under: "\(repo)/points/vm", suffix: ".manifest")[0]
        let original = try String(contentsOfFile: manifest, encoding: .utf8)
        let line = String(original.split(separator: "\n")[0])
        let time = String(FileSystem.baseName(manifest).dropLast(".manifest".count))
        for day in 20...24 {
            let newTime = "2026-10-\(day)T03:00:00Z"
            let newLine = line.replacingOccurrences(of: time, with: newTime)
            let text = "\(newLine)\nsha256 \(SHA256Hasher().digest(Array(newLine.utf8)).hex)\n"
            try text.write(toFile: "\(repo)/points/vm/\(newTime).manifest", atomically: true, encoding: .utf8)
        }
    }

    func ids() -> [String] {
        Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).map { $0["id"] as! String }
    }

    @Test func dryRunExplainsAndPruneRemoves() throws {
        #expect(ids().count == 6)
        let dry = CairnProcess.run([
            "prune", "--repo", repo, "--keep-last", "1", "--keep-daily", "2", "--dry-run", "--json",
        ])
        #expect(dry.status == 0, "\(dry.stderr)")
        let groups = Fixture.json(dry.stdout)["groups"] as? [[String: Any]] ?? []
        let decisions = groups.first?["decisions"] as? [[String: Any]] ?? []
        #expect(decisions.count == 6)
        #expect(decisions.filter { $0["keep"] as? Bool == true }.count == 3)
        #expect(decisions[0]["reason"] as? String == "keep-last 1")
        #expect(decisions[1]["reason"] as? String == "keep-daily 2026-10-24")
        #expect(decisions[3]["reason"] as? String == "no rule keeps it")
        #expect(ids().count == 6, "a dry run removes nothing")
        let text = CairnProcess.run(["prune", "--repo", repo, "--keep-last", "1", "--keep-daily", "2", "--dry-run"])
        #expect(text.stdout.contains("remove vm@2026-10-20T03:00:00Z  (no rule keeps it)"))

        let real = CairnProcess.run(["prune", "--repo", repo, "--keep-last", "1", "--keep-daily", "2"])
        #expect(real.status == 0)
        #expect(ids().count == 3)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["prune", "--repo", repo]).status == 64, "no rule: refused")
    }

    @Test func protectedRestorePointsSurvive() throws {
        let old = "vm@2026-10-20T03:00:00Z"
        #expect(CairnProcess.run(["protect", "--repo", repo, old]).status == 0)
        let rows = Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout)
        #expect(rows.first { $0["id"] as? String == old }?["protected"] as? Bool == true)
        #expect(CairnProcess.run(["show", "--repo", repo, old]).stdout.contains("protected:   yes"))
        #expect(CairnProcess.run(["prune", "--repo", repo, "--keep-last", "1"]).status == 0)
        #expect(Set(ids()).contains(old))
        #expect(ids().count == 2)

        let refused = CairnProcess.run(["forget", "--repo", repo, old])
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("is protected") && refused.stderr.contains("cairn unprotect"))
        #expect(CairnProcess.run(["unprotect", "--repo", repo, old]).status == 0)
        #expect(CairnProcess.run(["forget", "--repo", repo, old]).status == 0)
        #expect(ids().count == 1)
        #expect(CairnProcess.run(["forget", "--repo", repo, old]).status == 4)
    }
}
