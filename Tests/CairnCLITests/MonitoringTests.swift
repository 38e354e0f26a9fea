import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// What an administrator's monitoring sees: `--metrics-file` after every run (success and
/// failure), `cairn status` and its exit codes, `--quiet` for cron, `-v` logging to stderr.
@Suite struct MonitoringTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var prom: String { dir.file("cairn.prom") }

    func setUp() throws -> String {
        let image = dir.file("vm1.img")
        var gen = TestImage(seed: 7)
        try gen.makeImage(at: image, size: 4 << 20, extent: 256 << 10, stride: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        return image
    }

    func series(_ command: String, _ group: String) throws -> MetricsFile.Values? {
        let file = MetricsFile(parsing: try String(contentsOfFile: prom, encoding: .utf8))
        let root = FileSystem.realPath(repo) ?? repo
        return file.series[.init(repository: root, command: command, group: group)]
    }

    @Test func everyCommandMergesItsRunIntoTheMetricsFile() throws {
        let image = try setUp()
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--metrics-file", prom, image])
        #expect(backup.status == 0, "\(backup.stderr)")
        let first = try #require(try series("backup", "vm1"))
        #expect(first["last_exit_code"] == 0)
        #expect(first["last_bytes_read"] == Double(1 << 20))
        #expect((first["last_bytes_stored"] ?? 0) > 0)
        let success = try #require(first["last_success_timestamp_seconds"])
        #expect(abs(success - Date().timeIntervalSince1970) < 120)

        // A failed night (the image is gone): exit code 4 recorded, the last success kept.
        sleep(1)
        let missing = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm1", "--metrics-file", prom, dir.file("gone.img"),
        ])
        #expect(missing.status != 0)
        let failed = try #require(try series("backup", "vm1"))
        #expect(failed["last_exit_code"] == Double(missing.status))
        #expect(failed["last_success_timestamp_seconds"] == success)
        #expect((failed["last_run_timestamp_seconds"] ?? 0) > success)

        // The environment variable names the file too; verify, prune and gc add their series.
        let env = ["CAIRN_METRICS_FILE": prom]
        #expect(CairnProcess.run(["verify", "--repo", repo], environment: env).status == 0)
        #expect(CairnProcess.run(["prune", "--repo", repo, "--keep-last", "1"], environment: env).status == 0)
        #expect(CairnProcess.run(["gc", "--repo", repo], environment: env).status == 0)
        #expect(try series("verify", "")?["last_bytes_read"] ?? 0 > 0)
        #expect(try series("prune", "")?["last_exit_code"] == 0)
        #expect(try series("gc", "")?["last_bytes_freed"] != nil)
        #expect(try series("backup", "vm1")?["last_exit_code"] == Double(missing.status))

        let text = try String(contentsOfFile: prom, encoding: .utf8)
        let check = Subprocess.run("promtool", ["check", "metrics"], stdin: Data(text.utf8))
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)\n\(text)")
    }

    /// An unwritable metrics file costs a warning, never the run's own exit status.
    @Test func anUnwritableMetricsFileIsAWarning() throws {
        let image = try setUp()
        let run = CairnProcess.run([
            "backup", "--repo", repo, "--group", "vm1", "--metrics-file", dir.file("no/such/dir/cairn.prom"), image,
        ])
        #expect(run.status == 0)
        #expect(run.stderr.contains("warning: the metrics file was not updated"), "\(run.stderr)")
    }

    @Test func statusReportsAgeVerifyAndSpace() throws {
        let image = try setUp()
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", image]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm2", image]).status == 0)
        #expect(CairnProcess.run(["verify", "--repo", repo, "vm1@latest"]).status == 0)

        let run = CairnProcess.run(["status", "--repo", repo, "--json", "--max-age", "26h"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = Fixture.json(run.stdout)
        let groups = report["groups"] as? [[String: Any]] ?? []
        #expect(groups.map { $0["group"] as? String } == ["vm1", "vm2"])
        let vm1 = groups.first ?? [:]
        let latest = vm1["latest"] as? [String: Any] ?? [:]
        #expect((latest["id"] as? String)?.hasPrefix("vm1@") == true)
        #expect((latest["ageSeconds"] as? Int ?? -1) >= 0 && (latest["ageSeconds"] as? Int ?? 99) < 120)
        #expect((vm1["verified"] as? [String: Any])?["result"] as? String == "intact")
        #expect(groups.last?["verified"] == nil)
        // The repository holds at least what the backups stored (plus index and manifests).
        let stored = vm1["bytesStored"] as? Int ?? 0
        #expect(stored > 0)
        #expect((report["bytesUsed"] as? Int ?? 0) > stored)
        #expect(vm1["stale"] as? Bool == false)

        // A group older than --max-age, or never verified against --max-verify-age: exit 13.
        sleep(2)
        let old = CairnProcess.run(["status", "--repo", repo, "--max-age", "1s"])
        #expect(old.status == 13, "\(old.stdout)\(old.stderr)")
        #expect(old.stderr.contains("group vm1: newest restore point"), "\(old.stderr)")
        #expect(old.stdout.contains("STALE"))
        let unverified = CairnProcess.run(["status", "--repo", repo, "--max-verify-age", "8d"])
        #expect(unverified.status == 13)
        #expect(unverified.stderr.contains("group vm2: never verified"), "\(unverified.stderr)")
        #expect(CairnProcess.run(["status", "--repo", repo, "--group", "vm1", "--max-verify-age", "8d"]).status == 0)
        #expect(CairnProcess.run(["status", "--repo", repo, "--group", "nosuch", "--max-age", "1h"]).status == 13)
        #expect(CairnProcess.run(["status", "--repo", repo, "--max-age", "soon"]).status == 64)
    }

    @Test func statusFailsWhenTheLastVerifyFoundDamage() throws {
        let image = try setUp()
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", image]).status == 0)
        for pack in Fixture.files(under: "\(repo)/packs", suffix: ".pack") {
            try Fixture.flip(pack, at: Fixture.fileSize(pack) / 2)
        }
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 7)
        let run = CairnProcess.run(["status", "--repo", repo])
        #expect(run.status == 7, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("damaged"))
    }

    @Test func quietPrintsNothingOnSuccess() throws {
        let image = try setUp()
        for arguments in [
            ["backup", "--repo", repo, "--group", "vm1", "--quiet", image],
            ["verify", "--repo", repo, "--quiet"],
            ["restore", "--repo", repo, "vm1@latest", "--to", dir.file("out.img"), "--quiet"],
            ["prune", "--repo", repo, "--keep-last", "1", "--quiet"],
            ["gc", "--repo", repo, "--quiet"],
        ] {
            let run = CairnProcess.run(arguments)
            #expect(run.status == 0, "\(arguments): \(run.stderr)")
            #expect(run.stdout.isEmpty && run.stderr.isEmpty, "\(arguments): \(run.stdout)\(run.stderr)")
        }
        #expect(try TestImage.sha256(of: dir.file("out.img")) == TestImage.sha256(of: image))
        // --json still prints what was asked for.
        let json = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--quiet", "--json", image])
        #expect(Fixture.json(json.stdout)["id"] != nil)
    }

    /// `-v` logs through swift-log to stderr: the repository, the locks, each disk, the packs.
    @Test func verboseLogsTheStepsToStderr() throws {
        let image = try setUp()
        let run = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "-v", "--quiet", image])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.isEmpty)
        for step in [
            "repository opened", "lock taken: group vm1", "disk vm1.img: started", "disk vm1.img: finished",
            "packs committed: 1",
        ] {
            #expect(run.stderr.contains(step), "\(step) not in \(run.stderr)")
        }
        let silent = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--quiet", image])
        #expect(silent.stderr.isEmpty, "\(silent.stderr)")
    }
}
