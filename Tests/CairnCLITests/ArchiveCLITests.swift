import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn archive` end to end: the real binary, volume files, pipes, a second repository.
final class ArchiveCLIFixture {
    let dir = TemporaryDirectory("cairn-archive-cli")
    var repo: String { dir.file("repo") }
    var a: String { dir.file("a.img") }
    var b: String { dir.file("b.img") }
    var first = ""
    var second = ""

    init() throws {
        var gen = TestImage(seed: 31)
        try gen.makeImage(at: a, size: 8 << 20, extent: 256 << 10, stride: 512 << 10)
        try gen.makeImage(at: b, size: (5 << 20) + 777, extent: 128 << 10, stride: 384 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        first = try backup(group: "vm1", a)
        second = try backup(group: "vm2", b)
    }

    func backup(group: String, _ image: String) throws -> String {
        let outcome = CairnProcess.run(["backup", "--repo", repo, "--group", group, "--json", image])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as! [String: Any]
        return object["id"] as! String
    }

    /// Writes both restore points to `name`.001, … and returns the volume paths.
    func write(_ name: String, extra: [String] = []) -> [String] {
        let outcome = CairnProcess.run(
            ["archive", "write", "--repo", repo, first, second, "--to", dir.file(name)] + extra)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [])
            .filter { $0.hasPrefix(name + ".") }.sorted().map { dir.file($0) }
    }
}

@Suite struct ArchiveCLITests {
    @Test func writeListVerifyRestoreFromFilesAndFromAPipe() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc", extra: ["--volume-size", "1M", "--block-size", "64K"])
        #expect(volumes.count >= 3, "spanning needs several volumes: \(volumes)")
        for volume in volumes {
            let size = try FileManager.default.attributesOfItem(atPath: volume)[.size] as! UInt64
            #expect(size <= 1 << 20 && size % (64 << 10) == 0)
        }

        let list = CairnProcess.run(["archive", "list", "--json"] + volumes)
        #expect(list.status == 0, "\(list.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as! [[String: Any]]
        #expect(rows.map { $0["id"] as! String } == [f.first, f.second])
        #expect(rows[1]["size"] as? Int == (5 << 20) + 777)

        let verify = CairnProcess.run(["archive", "verify"] + volumes)
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.contains("\(volumes.count) volumes, 2 restore points"))

        let out = f.dir.file("a-restored.img")
        let restore = CairnProcess.run(["archive", "restore"] + volumes + [f.first, "--to", out])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: f.a))
        #expect(TestImage.allocatedBytes(of: out) < 6 << 20, "zero blocks stay holes")

        // The whole archive through a pipe, as from a tape drive or ssh.
        let piped = f.dir.file("b-piped.img")
        let shell = Subprocess.shell(
            "set -o pipefail; cat \(f.dir.file("arc")).* | '\(CairnProcess.executable)' archive restore - '\(f.second)' --to '\(piped)'"
        )
        #expect(shell.status == 0, "\(shell.stderr)")
        #expect(Subprocess.shell("cmp '\(f.b)' '\(piped)'").status == 0)

        // A refused output, then --force.
        let again = CairnProcess.run(["archive", "restore"] + volumes + [f.first, "--to", out])
        #expect(again.status == 8)
        #expect(CairnProcess.run(["archive", "restore"] + volumes + [f.first, "--to", out, "--force"]).status == 0)
    }

    @Test func writeToStdoutAndVerifyFromStdin() throws {
        let f = try ArchiveCLIFixture()
        let stream = f.dir.file("stream.bin")
        let write = Subprocess.shell(
            "'\(CairnProcess.executable)' archive write --repo '\(f.repo)' '\(f.first)' '\(f.second)' --to - --volume-size 2M > '\(stream)'"
        )
        #expect(write.status == 0, "\(write.stderr)")
        #expect(write.stderr.contains("wrote archive"), "the summary goes to stderr with --to -")
        let verify = Subprocess.shell("'\(CairnProcess.executable)' archive verify - < '\(stream)'")
        #expect(verify.status == 0, "\(verify.stderr)")
        let out = f.dir.file("b.img.out")
        let restore = Subprocess.shell(
            "cat '\(stream)' | '\(CairnProcess.executable)' archive restore - '\(f.second)' --to '\(out)'")
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(Subprocess.shell("cmp '\(f.b)' '\(out)'").status == 0)
    }

    /// Several MiB of compressible data make frame records (new blocks compressed together);
    /// they go through pipes into verify, restore and import and come back bit for bit.
    @Test func framesThroughPipes() throws {
        let f = try ArchiveCLIFixture()
        var gen = TestImage(seed: 8)
        let text = f.dir.file("text.img")
        let file = try File.open(text, .createOrTruncate)
        try file.truncate(to: 7 << 20)
        try file.write(gen.textBytes(6 << 20), at: 512 << 10)
        let id = try f.backup(group: "text", text)
        let cairn = "'\(CairnProcess.executable)'"
        let write = "\(cairn) archive write --repo '\(f.repo)' '\(id)' --to - --block-size 64K --volume-size 1M"

        let verify = Subprocess.shell("set -o pipefail; \(write) | \(cairn) archive verify -")
        #expect(verify.status == 0, "\(verify.stderr)")
        let out = f.dir.file("text.out")
        let restore = Subprocess.shell("set -o pipefail; \(write) | \(cairn) archive restore - '\(id)' --to '\(out)'")
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(Subprocess.shell("cmp '\(text)' '\(out)'").status == 0)

        let fresh = f.dir.file("fresh")
        #expect(CairnProcess.run(["init", "--repo", fresh]).status == 0)
        let imported = Subprocess.shell("set -o pipefail; \(write) | \(cairn) archive import --repo '\(fresh)' -")
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("imported \(id)"), "\(imported.stdout)")
        let again = f.dir.file("text.again")
        #expect(CairnProcess.run(["restore", "--repo", fresh, id, "--to", again]).status == 0)
        #expect(Subprocess.shell("cmp '\(text)' '\(again)'").status == 0)
        #expect(CairnProcess.run(["verify", "--repo", fresh]).status == 0, "the imported frames check out")
    }

    @Test func importIntoANewRepositoryThenRestore() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc", extra: ["--volume-size", "2M"])
        let fresh = f.dir.file("fresh")
        #expect(CairnProcess.run(["init", "--repo", fresh]).status == 0)
        let imported = CairnProcess.run(["archive", "import", "--repo", fresh] + volumes)
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("imported \(f.first)"))
        let out = f.dir.file("a-from-import.img")
        let restore = CairnProcess.run(["restore", "--repo", fresh, f.first, "--to", out])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: f.a))
        // Importing again changes nothing.
        let again = CairnProcess.run(["archive", "import", "--repo", fresh] + volumes)
        #expect(again.status == 0)
        #expect(again.stdout.contains("present  \(f.first)"))

        let other = f.dir.file("other")
        #expect(CairnProcess.run(["init", "--repo", other, "--block-size", "4K"]).status == 0)
        let refused = CairnProcess.run(["archive", "import", "--repo", other] + volumes)
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("block size 65536"), "\(refused.stderr)")
    }

    @Test func repositoryCatalogRecordsArchivesAndVolumes() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc", extra: ["--volume-size", "1M", "--block-size", "64K"])
        let catalog = CairnProcess.run(["archive", "catalog", "--repo", f.repo, "--json"])
        #expect(catalog.status == 0, "\(catalog.stderr)")
        let entries = try JSONSerialization.jsonObject(with: Data(catalog.stdout.utf8)) as! [[String: Any]]
        #expect(entries.count == 1)
        #expect(entries[0]["volumes"] as? [String] == volumes)
        let points = entries[0]["points"] as! [[String: Any]]
        #expect(points.map { $0["id"] as! String } == [f.first, f.second])
        #expect(points[0]["volume"] as? Int == 1)
        let text = CairnProcess.run(["archive", "catalog", "--repo", f.repo])
        #expect(text.stdout.contains(f.second))
    }

    @Test func restoreToQcow2IsCleanAndIdentical() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc", extra: ["--volume-size", "2M", "--block-size", "64K"])
        for (id, image) in [(f.first, f.a), (f.second, f.b)] {
            let out = f.dir.file("out.qcow2")
            try? FileManager.default.removeItem(atPath: out)
            let restore = CairnProcess.run(["archive", "restore"] + volumes + [id, "--to", out, "--format", "qcow2"])
            #expect(restore.status == 0, "\(restore.stderr)")
            let check = Subprocess.shell("qemu-img check '\(out)'")
            #expect(check.status == 0 && check.stdout.contains("No errors"), "\(check.stdout)\(check.stderr)")
            let compare = Subprocess.shell("qemu-img compare -f raw -F qcow2 '\(image)' '\(out)'")
            #expect(compare.status == 0, "\(compare.stdout)\(compare.stderr)")
        }
        // From a pipe too, with another cluster size.
        let piped = f.dir.file("piped.qcow2")
        let cat = volumes.map { "'\($0)'" }.joined(separator: " ")
        let restore = Subprocess.shell(
            "cat \(cat) | '\(CairnProcess.executable)' archive restore - \(f.first) --to '\(piped)' --format qcow2 --cluster-size 4K"
        )
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(Subprocess.shell("qemu-img compare -f raw -F qcow2 '\(f.a)' '\(piped)'").status == 0)
    }

    @Test func latestPicksTheNewestOfTheGroup() throws {
        let f = try ArchiveCLIFixture()
        let night0 = try TestImage.sha256(of: f.a)
        var gen = TestImage(seed: 77)
        try gen.scatterWrites(at: f.a, count: 5)
        sleep(1)
        let newer = try f.backup(group: "vm1", f.a)
        // The newer restore point is written first: order in the archive does not decide.
        let outcome = CairnProcess.run([
            "archive", "write", "--repo", f.repo, newer, f.first, "--to", f.dir.file("two"),
        ])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let out = f.dir.file("latest.img")
        let restore = CairnProcess.run(["archive", "restore", f.dir.file("two.001"), "vm1@latest", "--to", out])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(restore.stdout.contains(newer))
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: f.a))
        #expect(try TestImage.sha256(of: out) != night0)
        let missing = CairnProcess.run([
            "archive", "restore", f.dir.file("two.001"), "nosuch@latest", "--to", f.dir.file("n.img"),
        ])
        #expect(missing.status == 4)
    }
}

/// Each damaged or wrong archive: volume and block named, a documented non-zero exit, and what is
/// intact still usable.
@Suite struct ArchiveBadInputTests {
    func flip(_ path: String, at offset: UInt64) throws {
        let file = try File.open(path, .readWrite)
        var byte = try file.readBytes(count: 1, at: offset)
        byte[0] ^= 0xFF
        try file.write(byte, at: offset)
    }

    @Test func flippedByteNamesTheBlockAndTheOtherPointStillRestores() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc", extra: ["--block-size", "64K"])
        // Chunks follow the indexes in order of first need: vm1's a.img's come first. Block 5 is among them.
        try flip(volumes[0], at: 5 * 65536 + 3000)
        let verify = CairnProcess.run(["archive", "verify"] + volumes)
        #expect(verify.status == 7, "\(verify.stderr)")
        #expect(verify.stderr.contains("volume 1 block 5"), "\(verify.stderr)")
        #expect(verify.stdout.contains("DAMAGED  \(f.first)"))
        #expect(verify.stdout.contains("ok       \(f.second)"))

        let good = f.dir.file("b.img.out")
        let restoreGood = CairnProcess.run(["archive", "restore"] + volumes + [f.second, "--to", good])
        #expect(restoreGood.status == 0, "\(restoreGood.stderr)")
        #expect(Subprocess.shell("cmp '\(f.b)' '\(good)'").status == 0)

        let bad = f.dir.file("a.img.out")
        let restoreBad = CairnProcess.run(["archive", "restore"] + volumes + [f.first, "--to", bad])
        #expect(restoreBad.status == 7)
        #expect(restoreBad.stderr.contains("volume 1 block 5"), "\(restoreBad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: bad), "a failed restore leaves no output")

        // Import takes what is intact and says what it skipped.
        let fresh = f.dir.file("fresh")
        #expect(CairnProcess.run(["init", "--repo", fresh]).status == 0)
        let imported = CairnProcess.run(["archive", "import", "--repo", fresh] + volumes)
        #expect(imported.status == 7)
        #expect(imported.stdout.contains("imported \(f.second)"))
        #expect(imported.stdout.contains("SKIPPED  \(f.first)"))
        #expect(CairnProcess.run(["restore", "--repo", fresh, f.second, "--to", f.dir.file("b2.img")]).status == 0)
    }

    @Test func truncatedVolume() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc", extra: ["--volume-size", "1M", "--block-size", "64K"])
        let last = volumes.last!
        let size = try File.open(last, .readOnly).size()
        #expect(Subprocess.shell("truncate -s \(size - 65536 - 1000) '\(last)'").status == 0)
        let verify = CairnProcess.run(["archive", "verify"] + volumes)
        #expect(verify.status == 10)
        #expect(verify.stderr.contains("volume \(volumes.count) block"), "\(verify.stderr)")
        #expect(verify.stderr.contains("truncated"), "\(verify.stderr)")
    }

    @Test func missingRepeatedAndOutOfOrderVolumes() throws {
        let f = try ArchiveCLIFixture()
        let v = f.write("arc", extra: ["--volume-size", "1M", "--block-size", "64K"])
        #expect(v.count >= 3)
        let cases: [([String], String)] = [
            ([v[0]] + v[2...], "volume 2 is missing"),
            (Array(v.dropLast()), "which was not given"),
            ([v[0], v[0]] + v[1...], "volume 1 again"),
            ([v[1], v[0]] + v[2...], "volume 1 is missing or out of order"),
        ]
        for (volumes, message) in cases {
            let outcome = CairnProcess.run(["archive", "verify"] + volumes)
            #expect(outcome.status == 10, "\(volumes): \(outcome.stderr)")
            #expect(outcome.stderr.contains(message), "\(outcome.stderr)")
            #expect(outcome.stderr.contains(" block "), "\(outcome.stderr)")
        }
    }

    @Test func notAnArchiveAndUnknownFormatVersion() throws {
        let f = try ArchiveCLIFixture()
        let notArchive = CairnProcess.run(["archive", "list", f.a])
        #expect(notArchive.status == 10)
        #expect(notArchive.stderr.contains("is not a Cairn archive"))
        let piped = Subprocess.shell("head -c 100000 /dev/urandom | '\(CairnProcess.executable)' archive verify -")
        #expect(piped.status == 10)
        #expect(piped.stderr.contains("stdin is not a Cairn archive"))

        let volumes = f.write("arc")
        let file = try File.open(volumes[0], .readWrite)
        try file.write([7, 0], at: 8)
        let future = CairnProcess.run(["archive", "verify"] + volumes)
        #expect(future.status == 10)
        #expect(future.stderr.contains("volume 1 block 0"))
        #expect(future.stderr.contains("format version 7"))
    }
}
