import CairnTestSupport
import Foundation
import Testing

/// The systemd units and the example group file the package ships, judged by systemd's own
/// `systemd-analyze verify`, and (when CI built one, `CAIRN_DEB`) the `.deb` by dpkg-deb.
@Suite struct PackagingTests {
    static let packaging = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Packaging").path
    static let units = ["cairn-backup@.service", "cairn-backup@.timer", "cairn-verify.service", "cairn-verify.timer"]

    /// A root holding the system's units, the cairn binary at /usr/bin/cairn and the given unit files,
    /// so `systemd-analyze verify --root` checks them as if the package were installed.
    func analyze(_ files: [String: String], instances: [String]) -> CairnProcess.Outcome {
        let root = TemporaryDirectory()
        let fm = FileManager.default
        try? fm.createDirectory(atPath: "\(root.path)/usr/lib/systemd", withIntermediateDirectories: true)
        try? fm.createDirectory(atPath: "\(root.path)/usr/bin", withIntermediateDirectories: true)
        try? fm.createDirectory(atPath: "\(root.path)/etc/systemd/system", withIntermediateDirectories: true)
        _ = Subprocess.run("/bin/cp", ["-r", "/lib/systemd/system", "\(root.path)/usr/lib/systemd/"])
        try? fm.copyItem(atPath: CairnProcess.executable, toPath: "\(root.path)/usr/bin/cairn")
        for (name, text) in files {
            try? text.write(toFile: "\(root.path)/etc/systemd/system/\(name)", atomically: true, encoding: .utf8)
        }
        return Subprocess.run("systemd-analyze", ["verify", "--root=\(root.path)", "--man=no"] + instances)
    }

    func shipped() throws -> [String: String] {
        var files: [String: String] = [:]
        for unit in Self.units {
            files[unit] = try String(contentsOfFile: "\(Self.packaging)/systemd/\(unit)", encoding: .utf8)
        }
        return files
    }

    @Test func systemdAnalyzeVerifyPassesOnTheUnits() throws {
        let run = analyze(
            try shipped(),
            instances: [
                "cairn-backup@vm1.service", "cairn-backup@vm1.timer", "cairn-verify.service",
                "cairn-verify.timer",
            ])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stderr.isEmpty, "systemd-analyze: \(run.stderr)")
    }

    /// The check can fail: a misspelt directive and a missing binary are both reported.
    @Test func systemdAnalyzeCatchesABrokenUnit() throws {
        var files = try shipped()
        files["cairn-verify.service"] = files["cairn-verify.service"]!.replacingOccurrences(
            of: "IOSchedulingClass=idle", with: "IOSchedulingKlass=idle")
        let typo = analyze(files, instances: ["cairn-verify.service"])
        #expect(typo.stderr.contains("IOSchedulingKlass"), "\(typo.stderr)")
        files = try shipped()
        files["cairn-verify.service"] = files["cairn-verify.service"]!.replacingOccurrences(
            of: "/usr/bin/cairn", with: "/usr/bin/cairn-nosuch")
        let missing = analyze(files, instances: ["cairn-verify.service"])
        #expect(missing.status != 0 || missing.stderr.contains("not executable"), "\(missing.stderr)")
    }

    /// The units start cairn with flags it has, and the example file's keys are the units' keys.
    @Test func theUnitsCommandLinesParse() throws {
        let files = try shipped()
        let backup = files["cairn-backup@.service"]!
        #expect(backup.contains("EnvironmentFile=/etc/cairn/%i.conf"))
        let example = try String(contentsOfFile: "\(Self.packaging)/GROUP.conf.example", encoding: .utf8)
        for key in ["CAIRN_REPO", "CAIRN_SOURCES", "CAIRN_BACKUP_FLAGS", "CAIRN_METRICS_FILE"] {
            #expect(example.contains("\n\(key)="), "\(key)")
        }
        for key in ["$CAIRN_BACKUP_FLAGS", "$CAIRN_SOURCES"] { #expect(backup.contains(key)) }
        // Each flag the units pass is one cairn accepts (a missing repository is exit 3, not 64).
        let dir = TemporaryDirectory()
        let env = ["CAIRN_REPO": dir.file("repo")]
        let b = CairnProcess.run(
            ["backup", "--quiet", "--group=vm1", "--lock-wait=30m", dir.file("x.img")], environment: env)
        #expect(b.status == 3, "\(b.stderr)")
        let v = CairnProcess.run(["verify", "--quiet", "--lock-wait=2h"], environment: env)
        #expect(v.status == 3, "\(v.stderr)")
    }

    /// The built package (CI sets CAIRN_DEB after Packaging/build-deb.sh): what it holds and
    /// depends on, read back by dpkg-deb.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CAIRN_DEB"] != nil))
    func thePackageHoldsWhatAnAdminNeeds() throws {
        let deb = ProcessInfo.processInfo.environment["CAIRN_DEB"]!
        let contents = Subprocess.run("dpkg-deb", ["--contents", deb])
        #expect(contents.status == 0, "\(contents.stderr)")
        for path in [
            "./usr/bin/cairn", "./usr/share/man/man1/cairn.1.gz", "./usr/share/bash-completion/completions/cairn",
            "./usr/share/zsh/vendor-completions/_cairn", "./usr/share/fish/vendor_completions.d/cairn.fish",
            "./lib/systemd/system/cairn-backup@.service", "./lib/systemd/system/cairn-backup@.timer",
            "./lib/systemd/system/cairn-verify.service", "./lib/systemd/system/cairn-verify.timer",
            "./usr/share/doc/cairn/README.md", "./usr/share/doc/cairn/examples/GROUP.conf",
        ] {
            #expect(contents.stdout.contains(" \(path)\n"), "\(path) not in the package")
        }
        #expect(contents.stdout.contains("root/root"))
        let depends = Subprocess.run("dpkg-deb", ["--field", deb, "Depends"]).stdout
        for library in ["libc6", "libzstd1", "libssl3", "zlib1g", "libstdc++6", "libgcc-s1"] {
            #expect(depends.contains(library), "\(library) not in Depends: \(depends)")
        }
        #expect(!depends.contains("swift"), "\(depends)")
    }
}
