import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Changed-block tracking through the `cairn` binary, on qcow2 images whose persistent bitmaps
/// QEMU itself keeps (`qemu-img bitmap`, `qemu-io` writes). Every night read with a bitmap must
/// give exactly the restore point a full read gives (same index tree root, same restored bytes);
/// every untrustworthy bitmap must lead to a full read, with the reason in the summary.
@Suite("changed-block tracking", .timeLimit(.minutes(3)))
struct ChangeTrackingTests {
    static let block: UInt64 = 64 << 10

    /// A 64 MiB qcow2 with 12 MiB of data.
    static func makeImage(in dir: TemporaryDirectory, name: String = "vm.qcow2") throws -> String {
        let image = dir.file(name)
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "64M"])
        try QemuTools.check("qemu-io", ["-c", "write -P 0x11 0 8M", "-c", "write -P 0x12 32M 4M", image])
        return image
    }

    static func backup(_ repo: String, _ group: String, _ arguments: [String], _ image: String) throws -> [String: Any]
    {
        let outcome = CairnProcess.run(["backup", "--repo", repo, "--group", group, "--json"] + arguments + [image])
        try #require(outcome.status == 0, "backup failed: \(outcome.stderr)")
        return Fixture.json(outcome.stdout)
    }

    static func disk(_ summary: [String: Any]) -> [String: Any] {
        (summary["disks"] as? [[String: Any]])?.first ?? [:]
    }

    static func cbt(_ summary: [String: Any]) -> [String: Any] { disk(summary)["cbt"] as? [String: Any] ?? [:] }

    static func number(_ value: Any?) -> UInt64 { (value as? NSNumber)?.uint64Value ?? UInt64.max }

    static func root(_ repo: String, _ id: String) -> String {
        let show = Fixture.json(CairnProcess.run(["show", "--repo", repo, id, "--json"]).stdout)
        return ((show["disks"] as? [[String: Any]])?.first?["root"] as? String) ?? "none"
    }

    static func restoredDigest(_ repo: String, _ id: String, in dir: TemporaryDirectory) throws -> String {
        let out = dir.file("restored.raw")
        try? FileManager.default.removeItem(atPath: out)
        let restore = CairnProcess.run(["restore", "--repo", repo, id, "--to", out])
        try #require(restore.status == 0, "\(restore.stderr)")
        return try TestImage.sha256(of: out)
    }

    static func bitmapNames(_ image: String) throws -> [String] {
        let info = Fixture.json(try QemuTools.check("qemu-img", ["info", "--output=json", "-U", image]))
        let specific = (info["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        return ((specific?["bitmaps"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }.sorted()
    }

    /// The host offset of the data cluster that holds guest offset 0.
    static func hostOffsetOfGuestZero(_ image: String) throws -> UInt64 {
        let text = try QemuTools.check("qemu-img", ["map", "--output=json", image])
        let rows = Fixture.jsonArray(text)
        let first = try #require(rows.first { ($0["start"] as? Int) == 0 && ($0["data"] as? Bool) == true })
        return number(first["offset"])
    }

    /// Checks that `id` is exactly what a full read of `image` gives: the same index tree root as a
    /// backup without any bitmap, and the bytes `qemu-img convert` sees.
    static func expectSameAsFullRead(
        _ repo: String, _ id: String, image: String, expected: String? = nil, in dir: TemporaryDirectory
    ) throws {
        let full = try backup(repo, "full", [], image)
        #expect(root(repo, id) == root(repo, full["id"] as! String), "index tree root of \(id) equals a full read's")
        let digest = try expected ?? QemuTools.rawDigest(of: image)
        #expect(try restoredDigest(repo, id, in: dir) == digest, "\(id) restores to the image's bytes")
    }

    @Test func managedNightsReadOnlyWhatChangedAndMatchFullReads() throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)

        let night0 = try Self.backup(repo, "vm", ["--cbt"], image)
        #expect(Self.cbt(night0)["used"] as? Bool == false)
        #expect((Self.cbt(night0)["reason"] as? String)?.contains("no previous restore point") == true)
        var started = try #require(Self.cbt(night0)["started"] as? String)
        #expect(started.hasPrefix("cairn.vm."))
        #expect(try Self.bitmapNames(image) == [started])
        #expect(Self.disk(night0)["sourceKind"] as? String == "file")
        try Self.expectSameAsFullRead(repo, night0["id"] as! String, image: image, in: dir)

        // Each night's writes, and the bytes they dirty in whole 64 KiB blocks (zeroed ranges are holes, not read).
        let nights: [([String], UInt64)] = [
            (["write -P 0x21 1M 64k", "write -P 0x22 40M 100k"], 64 << 10 + 128 << 10),
            (["write -P 0x23 2M 1M", "write -z 33M 1M", "write -P 0x24 5000k 4k"], 1 << 20 + 64 << 10),
            ([], 0),
        ]
        for (writes, dirty) in nights {
            if !writes.isEmpty {
                try QemuTools.check("qemu-io", writes.flatMap { ["-c", $0] } + [image])
            }
            let night = try Self.backup(repo, "vm", ["--cbt", "--cbt-sample", "0"], image)
            let cbt = Self.cbt(night)
            #expect(cbt["used"] as? Bool == true, "reason: \(cbt["reason"] ?? "none")")
            #expect(cbt["bitmap"] as? String == started)
            let read = Self.number(Self.disk(night)["bytesRead"])
            #expect(read == dirty, "read \(read) bytes for \(dirty) dirty")
            #expect(Self.number(Self.disk(night)["bytesSkipped"]) >= 12 << 20 - 2 << 20)
            let next = try #require(cbt["started"] as? String)
            #expect(next != started)
            started = next
            #expect(try Self.bitmapNames(image) == [started], "the old bitmap goes once the restore point is committed")
            try Self.expectSameAsFullRead(repo, night["id"] as! String, image: image, in: dir)
        }

        let show = CairnProcess.run(["show", "--repo", repo, "vm@latest"])
        #expect(show.stdout.contains("read with bitmap"), "\(show.stdout)")
        let text = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--cbt", image])
        #expect(text.status == 0)
        #expect(text.stdout.contains("vm.qcow2: read with bitmap cairn.vm."), "\(text.stdout)")
    }

    @Test func sampledCleanBlocksAreReadAndCounted() throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)
        _ = try Self.backup(repo, "vm", ["--cbt"], image)
        try QemuTools.check("qemu-io", ["-c", "write -P 0x21 1M 64k", image])
        let night = try Self.backup(repo, "vm", ["--cbt", "--cbt-sample", "64"], image)
        let cbt = Self.cbt(night)
        #expect(cbt["used"] as? Bool == true)
        let sampled = Self.number(cbt["sampledBlocks"])
        #expect(sampled > 0 && sampled <= 192, "sampled \(sampled) of 192 data blocks")
        #expect(Self.number(Self.disk(night)["bytesRead"]) == Self.block + sampled * Self.block)
        try Self.expectSameAsFullRead(repo, night["id"] as! String, image: image, in: dir)
    }

    @Test func administratorCheckpointsWithDirtyBitmap() throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)
        try QemuTools.check("qemu-img", ["bitmap", "--add", image, "b1"])
        let night0 = try Self.backup(repo, "vm", ["--checkpoint", "b1"], image)
        #expect(Self.cbt(night0)["started"] as? String == "b1")

        try QemuTools.check("qemu-io", ["-c", "write -P 0x21 3M 64k", image])
        try QemuTools.check("qemu-img", ["bitmap", "--add", image, "b2"])
        let night1 = try Self.backup(
            repo, "vm", ["--dirty-bitmap", "b1", "--checkpoint", "b2", "--cbt-sample", "0"], image)
        #expect(Self.cbt(night1)["used"] as? Bool == true)
        #expect(Self.number(Self.disk(night1)["bytesRead"]) == Self.block)
        try Self.expectSameAsFullRead(repo, night1["id"] as! String, image: image, in: dir)

        // b1 was not started at night 1's moment: trusting it against night 1 would be wrong.
        try QemuTools.check("qemu-io", ["-c", "write -P 0x22 4M 64k", image])
        let wrong = try Self.backup(repo, "vm", ["--dirty-bitmap", "b1"], image)
        #expect(Self.cbt(wrong)["used"] as? Bool == false)
        #expect((Self.cbt(wrong)["reason"] as? String)?.contains("did not record bitmap b1") == true)

        // A checkpoint that does not exist is not recorded (with a warning), so nothing trusts it later.
        let missing = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm", "--checkpoint", "nope", "--json", image,
        ])
        #expect(missing.status == 0)
        #expect(missing.stderr.contains("--checkpoint nope"))
        #expect(Self.cbt(Fixture.json(missing.stdout))["started"] == nil)

        let usage = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm", "--cbt", "--dirty-bitmap", "b1", image,
        ])
        #expect(usage.status == 64)
    }

    struct Spoiler: Sendable, CustomStringConvertible {
        var description: String
        var reason: String
        /// The guest bytes do not change, but QEMU can no longer read the image: digest it first.
        var digestBefore = false
        var spoil: @Sendable (_ image: String, _ repo: String, _ previous: String) throws -> Void
    }

    static let spoilers: [Spoiler] = [
        Spoiler(description: "bitmap in use after a crash", reason: "in use") { image, _, _ in
            _ = try QemuTools.run("qemu-io", ["-c", "write -P 0x31 3M 64k", "-c", "abort", image])
        },
        Spoiler(description: "autoclear bit cleared", reason: "autoclear bit 0 is clear") { image, _, _ in
            try Fixture.flip(image, at: 95, mask: 0x01)
        },
        Spoiler(description: "damaged bitmap directory", reason: "reserved flag bits", digestBefore: true) {
            image, _, _ in
            let header = try File.open(image, .readOnly).readBytes(count: 4096, at: 0)
            // Find the bitmaps extension (type 0x23852875) after the 112-byte header.
            var position = 112
            var directory: UInt64 = 0
            while position + 8 <= header.count {
                var r = ByteReader(header, context: image, position: position)
                let type: UInt32 = try r.be()
                let length: UInt32 = try r.be()
                if type == 0x2385_2875 {
                    var d = ByteReader(header, context: image, position: position + 24)
                    directory = try d.be()
                    break
                }
                if type == 0 { break }
                position += 8 + (Int(length) + 7) / 8 * 8
            }
            try #require(directory != 0)
            try Fixture.flip(image, at: directory + 15, mask: 0x08)
        },
        Spoiler(description: "virtual size changed", reason: "virtual size changed") { image, _, _ in
            try QemuTools.check("qemu-img", ["resize", "-q", image, "80M"])
        },
        Spoiler(description: "bitmap that lies", reason: "differs from the previous restore point") { image, _, _ in
            // Written behind QEMU's back, straight into the data cluster of guest offset 0.
            let host = try hostOffsetOfGuestZero(image)
            try File.open(image, .readWrite).write([UInt8](repeating: 0xEE, count: 512), at: host + 4096)
        },
        Spoiler(description: "previous restore point damaged", reason: "found damaged by cairn verify") {
            _, repo, previous in
            let id = try #require(RestorePointID(parsing: previous))
            let record = VerificationRecord(
                time: id.time, result: .damaged, scope: .full, samplePercent: nil, chunksChecked: 1,
                damagedChunks: 1, problems: ["test"])
            let text = try JSONCoding.encode(record)
            try text.write(toFile: "\(repo)/points/\(id.group)/\(id.time).verify", atomically: true, encoding: .utf8)
        },
    ]

    @Test(arguments: spoilers)
    func untrustworthyBitmapMeansAFullRead(_ spoiler: Spoiler) throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)
        let night0 = try Self.backup(repo, "vm", ["--cbt"], image)
        try QemuTools.check("qemu-io", ["-c", "write -P 0x21 1M 64k", image])
        let before = try QemuTools.rawDigest(of: image)
        try spoiler.spoil(image, repo, night0["id"] as! String)
        let expected = spoiler.digestBefore ? before : try QemuTools.rawDigest(of: image)

        // Sample every clean block, so a lie cannot hide.
        let night1 = try Self.backup(repo, "vm", ["--cbt", "--cbt-sample", "100000"], image)
        let cbt = Self.cbt(night1)
        #expect(cbt["used"] as? Bool == false)
        let reason = cbt["reason"] as? String ?? "none"
        #expect(reason.contains(spoiler.reason), "reason: \(reason)")
        #expect(Self.number(Self.disk(night1)["bytesRead"]) >= 12 << 20, "the whole allocated disk is read")
        #expect(Self.number(Self.disk(night1)["bytesSkipped"]) == 0)
        try Self.expectSameAsFullRead(repo, night1["id"] as! String, image: image, expected: expected, in: dir)
    }

    @Test func fullEveryCatchesALieTheSampleMissed() throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)
        let flags = ["--cbt", "--full-every", "2", "--cbt-sample", "0"]
        _ = try Self.backup(repo, "vm", flags, image)
        try QemuTools.check("qemu-io", ["-c", "write -P 0x21 1M 64k", image])
        let night1 = try Self.backup(repo, "vm", flags, image)
        #expect(Self.cbt(night1)["used"] as? Bool == true)
        #expect(Self.number(Self.cbt(night1)["nightsSinceFullRead"]) == 1)

        let host = try Self.hostOffsetOfGuestZero(image)
        try File.open(image, .readWrite).write([UInt8](repeating: 0xEE, count: 512), at: host + 4096)
        let night2 = try Self.backup(repo, "vm", flags, image)
        #expect(Self.cbt(night2)["used"] as? Bool == false)
        #expect((Self.cbt(night2)["reason"] as? String)?.contains("--full-every 2") == true)
        #expect(Self.number(Self.cbt(night2)["nightsSinceFullRead"]) == 0)
        try Self.expectSameAsFullRead(repo, night2["id"] as! String, image: image, in: dir)

        let night3 = try Self.backup(repo, "vm", flags, image)
        #expect(Self.cbt(night3)["used"] as? Bool == true, "the bitmap started at the full read is trusted again")
    }

    @Test func imageHeldByAWriterIsReadInFull() throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)
        _ = try Self.backup(repo, "vm", ["--cbt"], image)
        try QemuTools.check("qemu-io", ["-c", "write -P 0x21 1M 64k", image])

        // qemu-nbd without -r opens the image for writing, as a running VM would. bash closes
        // every descriptor above 2 first, so the forked server holds no pipe a reader here waits on.
        let pidFile = dir.file("nbd.pid")
        let launch = Subprocess.shell(
            "for fd in /proc/$$/fd/*; do n=${fd##*/}; [ \"$n\" -gt 2 ] && eval \"exec $n>&-\" 2>/dev/null; done; "
                + "qemu-nbd -f qcow2 -k '\(dir.file("nbd.sock"))' --fork --pid-file '\(pidFile)' '\(image)' "
                + "</dev/null >/dev/null 2>&1")
        try #require(launch.status == 0, "qemu-nbd did not start")
        let pid = try #require(
            Int32(
                (try String(contentsOfFile: pidFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer {
            kill(pid, SIGTERM)
            for _ in 0..<200 where kill(pid, 0) == 0 { usleep(10_000) }
            if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        }
        // A live image is refused as such; with --allow-live it is read, in full: the bitmap of an
        // image a writer holds is never trusted.
        let refused = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--cbt", image])
        #expect(refused.status == 6)
        #expect(refused.stderr.contains("--allow-live"))
        let held = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm", "--cbt", "--allow-live", "--json", image,
        ])
        #expect(held.status == 0, "a bitmap problem never fails the backup: \(held.stderr)")
        let cbt = Self.cbt(Fixture.json(held.stdout))
        #expect(cbt["used"] as? Bool == false)
        #expect((cbt["reason"] as? String)?.contains("open for writing") == true, "reason: \(cbt["reason"] ?? "none")")
        #expect(cbt["started"] == nil)
        #expect(held.stderr.contains("no bitmap was started"))
    }

    /// A manifest written before changed-block tracking (no `sourceKind`, `bytesRead`,
    /// `bytesSkipped`, `cbt`) still reads, and a `--cbt` backup after it reads in full.
    @Test func manifestWithoutTheNewFieldsStillReads() throws {
        let dir = TemporaryDirectory("cairn-cbt")
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let image = try Self.makeImage(in: dir)
        let first = try Self.backup(repo, "vm", [], image)
        let id = try #require(RestorePointID(parsing: first["id"] as! String))
        let path = "\(repo)/points/vm/\(id.time).manifest"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first)
        var object = Fixture.json(String(line))
        var disks = try #require(object["disks"] as? [[String: Any]])
        for key in ["sourceKind", "bytesRead", "bytesSkipped", "cbt"] { disks[0].removeValue(forKey: key) }
        object["disks"] = disks
        let old = String(
            decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        #expect(!old.contains("sourceKind"))
        let digest = SHA256Hasher().digest(Array(old.utf8)).hex
        try "\(old)\nsha256 \(digest)\n".write(toFile: path, atomically: true, encoding: .utf8)

        let show = CairnProcess.run(["show", "--repo", repo, "vm@latest"])
        #expect(show.status == 0, "\(show.stderr)")
        #expect(!show.stdout.contains("cbt:"))
        let night = try Self.backup(repo, "vm", ["--cbt"], image)
        #expect((Self.cbt(night)["reason"] as? String)?.contains("started no bitmap") == true)
        #expect(Self.root(repo, night["id"] as! String) == Self.root(repo, "vm@\(id.time)"))
    }
}
