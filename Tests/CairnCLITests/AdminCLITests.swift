import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The rough edges a new administrator met (issue 17): `--json` on every command that changes
/// something, recorded paths that say where things were, exit codes a script can tell apart.
@Suite struct AdminCLITests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.img") }

    init() throws {
        var gen = TestImage(seed: 17)
        try gen.makeImage(at: image, size: 2 << 20)
    }

    @Test func jsonOnInitProtectUnprotectForget() throws {
        let initRun = CairnProcess.run(["init", "--repo", repo, "--block-size", "128K", "--json"])
        #expect(initRun.status == 0, "\(initRun.stderr)")
        let created = Fixture.json(initRun.stdout)
        #expect(created["repository"] as? String == repo)
        #expect(created["blockSize"] as? Int == 128 << 10)
        #expect(created["compressionLevel"] as? Int == RepositoryConfig.defaultCompressionLevel)

        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
        let id = Fixture.json(backup.stdout)["id"] as! String

        let protect = Fixture.json(CairnProcess.run(["protect", "--repo", repo, "vm@latest", "--json"]).stdout)
        #expect(protect["id"] as? String == id && protect["protected"] as? Bool == true)
        let unprotect = Fixture.json(CairnProcess.run(["unprotect", "--repo", repo, id, "--json"]).stdout)
        #expect(unprotect["id"] as? String == id && unprotect["protected"] as? Bool == false)
        let forget = CairnProcess.run(["forget", "--repo", repo, id, "--json"])
        #expect(forget.status == 0, "\(forget.stderr)")
        let forgotten = Fixture.json(forget.stdout)
        #expect(forgotten["id"] as? String == id && forgotten["removed"] as? Bool == true)
        #expect(Fixture.jsonArray(CairnProcess.run(["list", "--repo", repo, "--json"]).stdout).isEmpty)
    }

    @Test func jsonOnArchiveImportAndRestore() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
        let id = Fixture.json(backup.stdout)["id"] as! String
        let base = dir.file("offsite/a")
        try FileManager.default.createDirectory(atPath: dir.file("offsite"), withIntermediateDirectories: true)
        #expect(CairnProcess.run(["archive", "write", "--repo", repo, id, "--to", base]).status == 0)
        let volume = "\(base).001"

        let out = dir.file("restored.img")
        let restore = CairnProcess.run(["archive", "restore", volume, id, "--to", out, "--json"])
        #expect(restore.status == 0, "\(restore.stderr)")
        let restored = Fixture.json(restore.stdout)
        #expect(restored["id"] as? String == id && restored["disk"] as? String == "disk.img")
        #expect(restored["to"] as? String == out && restored["format"] as? String == "raw")
        #expect(restored["size"] as? Int == 2 << 20 && (restored["bytesRead"] as? Int ?? 0) > 0)
        #expect((restored["problems"] as? [Any])?.isEmpty == true)
        #expect(FileManager.default.contentsEqual(atPath: out, andPath: image))

        let other = dir.file("other")
        #expect(CairnProcess.run(["init", "--repo", other]).status == 0)
        let imported = CairnProcess.run(["archive", "import", "--repo", other, volume, "--json"])
        #expect(imported.status == 0, "\(imported.stderr)")
        let summary = Fixture.json(imported.stdout)
        #expect(summary["imported"] as? [String] == [id])
        #expect(summary["alreadyPresent"] as? [String] == [])
        #expect((summary["chunksStored"] as? Int ?? 0) > 0)
        let again = Fixture.json(CairnProcess.run(["archive", "import", "--repo", other, volume, "--json"]).stdout)
        #expect(again["imported"] as? [String] == [] && again["alreadyPresent"] as? [String] == [id])
    }

    /// `--to -` onto a terminal would dump binary into it: refused before anything is written.
    @Test func archiveToATerminalIsRefused() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        // script(1) runs the command with a pseudo-terminal as its stdout.
        let command = "\(CairnProcess.executable) archive write --repo \(repo) vm@latest --to -; echo exit=$?"
        let run = Subprocess.run("script", ["-qec", command, "/dev/null"])
        #expect(run.stdout.contains("exit=64"), "\(run.stdout)")
        #expect(run.stdout.contains("stdout, which is a terminal"), "\(run.stdout)")
        #expect(run.stdout.utf8.count < 1024, "no archive bytes reached the terminal")
    }

    /// Relative paths are recorded absolute: `show` says where the disk really was.
    @Test func relativePathsAreRecordedAbsolute() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let run = Subprocess.shell(
            "cd \(dir.path) && \(CairnProcess.executable) backup --repo repo --group vm --json ./disk.img")
        #expect(run.status == 0, "\(run.stderr)")
        let show = CairnProcess.run(["show", "--repo", repo, "vm@latest", "--json"])
        #expect(show.stdout.contains("\"\(image)\""), "\(show.stdout)")
        #expect(!show.stdout.contains("./disk.img"))

        let archived = Subprocess.shell(
            "cd \(dir.path) && \(CairnProcess.executable) archive write --repo repo vm@latest --to tape1")
        #expect(archived.status == 0, "\(archived.stderr)")
        let catalog = Fixture.jsonArray(CairnProcess.run(["archive", "catalog", "--repo", repo, "--json"]).stdout)
        #expect(catalog.first?["volumes"] as? [String] == [dir.file("tape1.001")], "\(catalog)")
    }

    /// A group that was named and has nothing is "not found" for list as for restore and prune.
    @Test func listOfAnUnknownGroupExitsNotFound() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let empty = CairnProcess.run(["list", "--repo", repo])
        #expect(empty.status == 0 && empty.stdout.contains("no restore points"))
        let list = CairnProcess.run(["list", "--repo", repo, "--group", "nosuch"])
        #expect(list.status == 4, "\(list.stderr)")
        #expect(list.stderr.contains("group nosuch has no restore points"))
        #expect(CairnProcess.run(["prune", "--repo", repo, "--group", "nosuch", "--keep-last", "1"]).status == 4)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        let table = CairnProcess.run(["list", "--repo", repo])
        #expect(table.stdout.split(separator: "\n").first?.hasSuffix("NOTES") == true, "\(table.stdout)")
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.stdout.contains("1 restore point,"), "\(verify.stdout)")
    }

    /// A qcow2 comes back as a qcow2 (with its cluster size) unless `--format` says otherwise;
    /// `--to DIR` restores every disk under its name.
    @Test func restoreDefaultsToTheSourceFormatAndDirectoriesTakeEveryDisk() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let qcow2 = dir.file("root.qcow2")
        _ = try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=128K", qcow2, "8M"])
        _ = try QemuTools.check("qemu-io", ["-c", "write -P 0x5a 1M 3M", qcow2])
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", qcow2, "data=\(image)"])
        #expect(backup.status == 0, "\(backup.stderr)")

        let one = dir.file("restored-root")  // no extension: the recorded format decides
        let single = CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--disk", "root.qcow2", "--to", one])
        #expect(single.status == 0, "\(single.stderr)")
        let info = try QemuTools.check("qemu-img", ["info", "--output=json", one])
        #expect(info.contains("\"format\": \"qcow2\"") && info.contains("\"cluster-size\": 131072"), "\(info)")
        #expect(try QemuTools.check("qemu-img", ["compare", qcow2, one]).contains("identical"))
        let raw = dir.file("one.raw")  // the extension names the format
        let named = CairnProcess.run([
            "restore", "--repo", repo, "vm@latest", "--disk", "root.qcow2", "--to", raw, "--json",
        ])
        #expect(Fixture.json(named.stdout)["format"] as? String == "raw")
        let forced = CairnProcess.run([
            "restore", "--repo", repo, "vm@latest", "--disk", "root.qcow2", "--to", one, "--format", "raw", "--force",
            "--json",
        ])
        #expect(Fixture.json(forced.stdout)["format"] as? String == "raw", "\(forced.stderr)")
        #expect(try TestImage.sha256(of: one) == (try TestImage.sha256(of: raw)))
        #expect(
            try QemuTools.check("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, qcow2]).contains("identical"))

        let out = dir.file("out")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let all = CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out, "--json"])
        #expect(all.status == 0, "\(all.stderr)")
        let disks = Fixture.json(all.stdout)["disks"] as? [[String: Any]] ?? []
        #expect(disks.map { $0["disk"] as? String } == ["root.qcow2", "data"])
        #expect(disks.map { $0["format"] as? String } == ["qcow2", "raw"])
        #expect(try QemuTools.check("qemu-img", ["compare", qcow2, "\(out)/root.qcow2"]).contains("identical"))
        #expect(FileManager.default.contentsEqual(atPath: image, andPath: "\(out)/data.raw"))
        // Again without --force: the outputs exist.
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 8)
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out, "--force"]).status == 0)
    }

    /// `archive restore` chooses the output as `restore` does, from the disk read out of the archive.
    @Test func archiveRestoreDefaultsToTheSourceFormat() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let qcow2 = dir.file("root.qcow2")
        _ = try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=128K", qcow2, "8M"])
        _ = try QemuTools.check("qemu-io", ["-c", "write -P 0x5a 1M 3M", qcow2])
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", qcow2]).status == 0)
        let base = dir.file("tape")
        #expect(CairnProcess.run(["archive", "write", "--repo", repo, "vm@latest", "--to", base]).status == 0)

        let plain = dir.file("from-tape")  // no extension: the recorded qcow2, with its cluster size
        let restore = CairnProcess.run(["archive", "restore", "\(base).001", "vm@latest", "--to", plain, "--json"])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(Fixture.json(restore.stdout)["format"] as? String == "qcow2", "\(restore.stdout)")
        let info = try QemuTools.check("qemu-img", ["info", "--output=json", plain])
        #expect(info.contains("\"format\": \"qcow2\"") && info.contains("\"cluster-size\": 131072"), "\(info)")
        #expect(try QemuTools.check("qemu-img", ["compare", qcow2, plain]).contains("identical"))
        let raw = dir.file("from-tape.img")  // the extension names raw
        let named = CairnProcess.run(["archive", "restore", "\(base).001", "vm@latest", "--to", raw])
        #expect(named.status == 0 && named.stdout.contains("(raw)"), "\(named.stdout)\(named.stderr)")
        #expect(
            try QemuTools.check("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, qcow2]).contains("identical"))
    }

    /// Bash itself completes, through the script cairn generates (as the package installs it):
    /// restore point ids from the repository the command line names, and --format's values.
    @Test func bashCompletesRestorePointIdsAndFormats() throws {
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let first = Fixture.json(
            CairnProcess.run(["backup", "--repo", repo, "--group", "web", "--json", image]).stdout)
        let second = Fixture.json(
            CairnProcess.run(["backup", "--repo", repo, "--group", "db", "--json", image]).stdout)
        let script = dir.file("cairn.bash")
        let generated = CairnProcess.run(["--generate-completion-script", "bash"])
        #expect(generated.status == 0, "\(generated.stderr)")
        try generated.stdout.write(toFile: script, atomically: true, encoding: .utf8)

        /// What bash offers for the last word of `words` (which may be empty).
        func complete(_ words: [String]) -> [String] {
            let quoted = words.map { "'\($0)'" }.joined(separator: " ")
            let run = Subprocess.shell(
                "PATH=\(URL(fileURLWithPath: CairnProcess.executable).deletingLastPathComponent().path):$PATH; "
                    + "source \(script); COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1); "
                    + "COMP_LINE=\"${COMP_WORDS[*]}\"; COMP_POINT=${#COMP_LINE}; "
                    + "_cairn cairn \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"; printf '%s\\n' \"${COMPREPLY[@]}\""
            )
            return run.stdout.split(separator: "\n").map(String.init)
        }
        let ids = complete(["cairn", "restore", "--repo", repo, ""])
        for expected in [first["id"] as! String, second["id"] as! String, "web@latest", "db@latest"] {
            #expect(ids.contains(expected), "\(expected) not offered: \(ids)")
        }
        let web = complete(["cairn", "verify", "--repo", repo, "we"])
        #expect(web.sorted() == [first["id"] as! String, "web@latest"].sorted(), "\(web)")
        #expect(complete(["cairn", "restore", "--repo", repo, "vm@latest", "--format", "q"]) == ["qcow2"])
        // No repository there: nothing offered, and no error text in the shell.
        #expect(complete(["cairn", "restore", "--repo", dir.file("nosuch"), ""]).filter { $0.contains("@") }.isEmpty)
    }
}
