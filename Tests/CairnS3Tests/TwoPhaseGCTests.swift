import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// gc beside backups on the bucket: it condemns, and a later run deletes what is still unneeded
/// (docs/INTEGRITY.md, "Garbage collection beside backups").
extension ObjectStoreCLITests {
    func gcReport(_ extra: [String] = []) -> [String: Any] {
        let run = cairn(["gc", "--repo", url, "--json", "--grace", "0s"] + extra)
        #expect(run.status == 0, "\(run.stderr)")
        return Fixture.json(run.stdout)
    }

    func restoresBitForBit(_ point: String, _ image: String) throws {
        let out = dir.file("check-\(UInt64.random(in: 0...UInt64.max)).raw")
        let restored = cairn(["restore", "--repo", url, point, "--to", out])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image), "\(point)")
        try? FileManager.default.removeItem(atPath: out)
    }

    /// Condemned lists any host with write access could leave: ones that do not parse are
    /// warned about and removed by gc, never acted on; ones that parse and name a pack a
    /// restore point needs (with times long past) cost it nothing. Every command still works.
    @Test func hostileCondemnedListsCostNothing() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 34)
        try gen.makeImage(at: image, size: 8 << 20, extent: 1 << 20, stride: 2 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        let packs = try storage.list(prefix: "packs/")
        let live = try #require(packs.first).split(separator: "/").last!.dropLast(".pack".count)
        let past = "2001-09-09T01:46:40Z"
        let hostile: [String: String] = [
            "condemned-1000000000-00000001.json":
                "{\"created\":\"\(past)\",\"notBefore\":\"\(past)\",\"packs\":[\"\(live)\",\"\(live)\"]}",
            "condemned-1000000000-00000002.json": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "condemned-1000000000-00000003.json": "{\"created\":1,\"notBefore\":null,\"packs\":\"\(live)\"}",
            "condemned-1000000000-00000004.json":
                "{\"created\":\"never\",\"notBefore\":\"soon\",\"packs\":[\"\(live)\"]}",
            "condemned-1000000000-00000005.json":
                "{\"created\":\"\(past)\",\"notBefore\":\"\(past)\",\"packs\":[\"not hex\",\"\"]}",
            "condemned-1000000000-00000006.json": "\u{FF}\u{FE}",
        ]
        for (name, body) in hostile { try storage.publish(Array(body.utf8), as: "gc/" + name, .createOnly) }

        let listed = cairn(["list", "--repo", url, "--json"])
        #expect(listed.status == 0, "\(listed.stderr)")
        try restoresBitForBit("vm@latest", image)
        let gc = cairn(["gc", "--repo", url, "--json", "--grace", "0s"])
        #expect(gc.status == 0, "\(gc.stderr)")
        for line in gc.stderr.split(separator: "\n") { #expect(line.count < 400, "\(line)") }
        #expect(gc.stderr.contains("condemned-1000000000-00000002.json"), "\(gc.stderr)")
        let report = Fixture.json(gc.stdout)
        #expect(report["condemnedDeleted"] as? Int == 0, "\(report)")
        #expect(try storage.list(prefix: "packs/") == packs)
        #expect(try storage.list(prefix: "gc/").allSatisfy { !hostile.keys.contains(String($0.dropFirst(3))) })
        try restoresBitForBit("vm@latest", image)
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        _ = try gen.scatterWrites(at: image, count: 4)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        try restoresBitForBit("vm@latest", image)
    }

    /// Forgotten data is condemned by one gc and deleted by the next; what is kept restores.
    @Test func aForgottenRestorePointIsCondemnedThenDeleted() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let keep = dir.file("keep.raw")
        let drop = dir.file("drop.raw")
        var a = TestImage(seed: 31)
        try a.makeImage(at: keep, size: 16 << 20, extent: 1 << 20, stride: 2 << 20)
        var b = TestImage(seed: 32)
        try b.makeImage(at: drop, size: 16 << 20, extent: 1 << 20, stride: 2 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "keep", keep]).status == 0)
        #expect(cairn(["backup", "--repo", url, "--group", "drop", drop]).status == 0)
        let packs = try storage.list(prefix: "packs/").count
        #expect(cairn(["forget", "--repo", url, "drop@latest"]).status == 0)

        let first = gcReport()
        #expect(first["twoPhase"] as? Bool == true)
        #expect((first["packsCondemned"] as? Int ?? 0) >= 1, "\(first)")
        #expect(first["condemnedDeleted"] as? Int == 0)
        #expect(try storage.list(prefix: "packs/").count == packs, "phase 1 deletes nothing")
        #expect(try storage.list(prefix: "gc/").count == 1)

        let second = gcReport()
        #expect(second["condemnedDeleted"] as? Int == first["packsCondemned"] as? Int, "\(second)")
        #expect(second["condemnedListsDone"] as? Int == 1)
        #expect((second["bytesFreed"] as? Int ?? 0) > 0)
        #expect(try storage.list(prefix: "packs/").count < packs)
        #expect(try storage.list(prefix: "gc/").isEmpty)
        try restoresBitForBit("keep@latest", keep)
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")

        // A list not yet due stays, and says so.
        #expect(cairn(["backup", "--repo", url, "--group", "drop", drop]).status == 0)
        #expect(cairn(["forget", "--repo", url, "drop@latest"]).status == 0)
        let condemned = cairn(["gc", "--repo", url, "--json", "--grace", "1h"])
        #expect(condemned.status == 0)
        let early = gcReport()
        #expect(early["condemnedListsPending"] as? Int == 1 && early["condemnedDeleted"] as? Int == 0, "\(early)")
    }

    /// The case two-phase gc exists for: a backup that deduplicated against chunks no restore
    /// point needed when gc looked, and commits only after gc condemned them. Its second phase
    /// waits for that backup (its lease began before the list), and then revives the packs.
    @Test func aBackupThatBeganBeforeGCCondemnedLosesNothing() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 33)
        try gen.makeImage(at: image, size: 16 << 20, extent: 1 << 20, stride: 2 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "old", image]).status == 0)
        #expect(cairn(["forget", "--repo", url, "old@latest"]).status == 0)

        // Same disk, another group: every block is found in the index and stored by reference.
        let held = try heldRun(["backup", "--repo", url, "--group", "new", "--json", image])
        #expect(held.reachedHold)

        let condemning = gcReport()
        #expect((condemning["packsCondemned"] as? Int ?? 0) >= 1, "\(condemning)")
        let packs = try storage.list(prefix: "packs/").count
        let waiting = gcReport()
        #expect(waiting["condemnedListsPending"] as? Int == 1, "\(waiting)")
        #expect(waiting["condemnedDeleted"] as? Int == 0)
        #expect(try storage.list(prefix: "packs/").count == packs)

        let outcome = held.finish()
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let backup = Fixture.json(outcome.stdout)
        // It relied on the forgotten point's chunks rather than storing them again.
        #expect((backup["bytesStored"] as? Int ?? Int.max) < 1 << 20, "\(backup)")

        let after = gcReport()
        #expect(after["condemnedListsDone"] as? Int == 1, "\(after)")
        #expect((after["condemnedRevived"] as? Int ?? 0) >= 1, "\(after)")
        try restoresBitForBit("new@latest", image)
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        // And again, with nothing condemned any more that it needs.
        _ = gcReport()
        _ = gcReport()
        try restoresBitForBit("new@latest", image)
    }

    /// Two hosts (two caches) back up their own groups round after round while a third runs
    /// gc beside them; each round forgets an older restore point. Afterwards every restore point
    /// restores bit-for-bit and verify is clean.
    @Test func twoHostsAndGCTwentyRounds() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        var gens = [TestImage(seed: 41), TestImage(seed: 42)]
        let images = [dir.file("h1.raw"), dir.file("h2.raw")]
        for i in 0..<2 { try gens[i].makeImage(at: images[i], size: 8 << 20, extent: 1 << 20, stride: 1 << 20) }
        var expected: [String: String] = [:]  // restore point -> sha256 of its image
        var deleted = 0
        for round in 0..<20 {
            for i in 0..<2 { _ = try gens[i].scatterWrites(at: images[i], count: 4) }
            let hashes = try images.map { try TestImage.sha256(of: $0) }
            let outcomes = LockedOutcomes()
            let runs: [[String]] = [
                ["backup", "--repo", url, "--group", "h1", "--json", images[0]],
                ["backup", "--repo", url, "--group", "h2", "--json", images[1]],
                ["gc", "--repo", url, "--grace", "0s", "--json"],
            ]
            let envs = [
                environment(["CAIRN_CACHE_DIR": dir.file("cache1")]),
                environment(["CAIRN_CACHE_DIR": dir.file("cache2")]),
                environment(["CAIRN_CACHE_DIR": dir.file("cache3")]),
            ]
            DispatchQueue.concurrentPerform(iterations: 3) { i in
                outcomes.set(i, CairnProcess.run(runs[i], environment: envs[i]))
            }
            let all = outcomes.all
            for (i, outcome) in all.enumerated() {
                #expect(outcome.status == 0, "round \(round) run \(i): \(outcome.stderr)")
            }
            for i in 0..<2 {
                if let id = Fixture.json(all[i].stdout)["id"] as? String { expected[id] = hashes[i] }
            }
            deleted += Fixture.json(all[2].stdout)["condemnedDeleted"] as? Int ?? 0
            // Keep the last three of each group: the rest becomes garbage for later rounds.
            for group in ["h1", "h2"] {
                let pruned = cairn(["prune", "--repo", url, "--group", group, "--keep-last", "3"])
                #expect(pruned.status == 0, "\(pruned.stderr)")
            }
        }
        let listed = Set(
            Fixture.jsonArray(cairn(["list", "--repo", url, "--json"]).stdout).compactMap { $0["id"] as? String })
        #expect(listed.count == 6)
        for (n, id) in listed.enumerated() {
            let out = dir.file("restored-\(n).raw")
            let restored = cairn(["restore", "--repo", url, id, "--to", out])
            #expect(restored.status == 0, "\(restored.stderr)")
            #expect(try TestImage.sha256(of: out) == expected[id], "\(id)")
            try FileManager.default.removeItem(atPath: out)
        }
        #expect(deleted > 0, "no gc round deleted anything")
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        // With no backup running, every list is due.
        let final = gcReport()
        #expect(final["condemnedListsPending"] as? Int == 0, "\(final)")
        #expect(cairn(["verify", "--repo", url]).status == 0)
    }
}
