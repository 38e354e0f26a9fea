import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// SIGINT (Ctrl-C) and SIGTERM stop a running command cleanly: one line saying what was kept,
/// exit 128 + the signal, no temporary file left, and the next run works (a stopped backup's
/// chunks are kept, so the retry stores less).
@Suite struct InterruptionTests {
    /// A sparse 256 MiB image holding 160 MiB of random data: long enough a backup (a few
    /// seconds in a debug build) to be stopped half way, incompressible so it fills many packs.
    static func bigImage(_ path: String) {
        let made = Subprocess.shell(
            "truncate -s 256M '\(path)' && dd if=/dev/urandom of='\(path)' bs=1M count=160 seek=48 conv=notrunc status=none"
        )
        #expect(made.status == 0, "\(made.stderr)")
    }

    /// Starts `cairn` with stdout and stderr going to files beside `stderr`.
    static func start(_ arguments: [String], stderr: String) throws -> Process {
        FileManager.default.createFile(atPath: stderr, contents: nil)
        FileManager.default.createFile(atPath: stderr + ".out", contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CairnProcess.executable)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: stderr + ".out")
        process.standardError = FileHandle(forWritingAtPath: stderr)
        try process.run()
        return process
    }

    /// Polls `condition` every 10 ms for up to `timeout` seconds.
    static func wait(timeout: Double = 60, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return false
    }

    static func files(in dir: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    }

    /// True once process `pid` has a handler for `signal` (the `SigCgt` mask of /proc/PID/status),
    /// so a signal sent at start-up, before cairn installs its handlers, does not make a test flaky.
    static func catches(_ signal: Int32, _ pid: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
            let mask = UInt64(line.dropFirst("SigCgt:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return mask & (1 << UInt64(signal - 1)) != 0
    }

    /// Sends `signal` to `process`, waits for it, and checks the clean stop: its exit status,
    /// one stderr line naming the signal.
    static func expectCleanStop(
        _ process: Process, signal: Int32, stderr: String, saying words: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(
            wait { catches(signal, process.processIdentifier) }, "no handler for signal \(signal)",
            sourceLocation: sourceLocation)
        #expect(process.isRunning, "the command finished before the signal", sourceLocation: sourceLocation)
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        // A command that waited for a lock said so once (issue 17); the stop is the line after it.
        let text = try String(contentsOfFile: stderr, encoding: .utf8).split(separator: "\n")
            .filter { !$0.hasPrefix("cairn: waiting for the lock held by ") }.joined(separator: "\n")
        let name = signal == SIGINT ? "SIGINT" : "SIGTERM"
        #expect(process.terminationReason == .exit, sourceLocation: sourceLocation)
        #expect(process.terminationStatus == 128 + signal, "\(text)", sourceLocation: sourceLocation)
        #expect(text.hasPrefix("cairn: interrupted by \(name), \(words)"), "\(text)", sourceLocation: sourceLocation)
        #expect(text.split(separator: "\n").count == 1, "\(text)", sourceLocation: sourceLocation)
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func backupStopsCleanlyAndItsRetryStoresLess(signal: Int32) throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        Self.bigImage(image)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let log = dir.file("backup.err")
        let backup = try Self.start(["backup", "--repo", repo, "--group", "vm", image], stderr: log)
        // Stop it once it has finished some packs and is writing the next.
        let packs = "\(repo)/packs"
        #expect(
            Self.wait {
                Self.files(in: packs).flatMap { Self.files(in: "\(packs)/\($0)") }.filter { $0.contains(".tmp-") }
                    .count >= 1 && TestImage.treeSize(packs) > 48 << 20
            })
        try Self.expectCleanStop(backup, signal: signal, stderr: log, saying: "nothing committed")
        #expect(Fixture.temporaryFiles(under: repo).isEmpty, "\(Fixture.temporaryFiles(under: repo))")
        #expect(CrashTests.pointCount(repo) == 0)
        CrashTests.expectHealthy(repo, "after the stop")

        // The retry finds what the stopped run kept and stores only the rest.
        let retry = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", image])
        #expect(retry.status == 0, "\(retry.stderr)")
        let stored = Fixture.json(retry.stdout)["bytesNew"] as? Int ?? -1
        #expect(stored >= 0 && stored < 120 << 20, "the retry stored \(stored) bytes of 160 MiB")
        let out = dir.file("out.img")
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        // The repository holds the data once (plus the retry's few frames that straddle the stop).
        #expect(TestImage.treeSize("\(repo)/packs") < 176 << 20)
        CrashTests.expectHealthy(repo, "after the retry")
    }

    @Test func restoreVerifyAndArchivesStopCleanly() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        Self.bigImage(image)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)

        // restore: the unfinished output is removed.
        let out = dir.file("out.img")
        var log = dir.file("restore.err")
        let restore = try Self.start(["restore", "--repo", repo, "vm@latest", "--to", out], stderr: log)
        #expect(Self.wait { TestImage.allocatedBytes(of: out) > 16 << 20 })
        try Self.expectCleanStop(restore, signal: SIGINT, stderr: log, saying: "restore incomplete")
        #expect(!FileManager.default.fileExists(atPath: out))

        // verify: nothing recorded.
        log = dir.file("verify.err")
        // Signalled as soon as its handler is in place: a fast machine verifies this repository in
        // well under a second, so waiting longer could let it finish first.
        let verify = try Self.start(["verify", "--repo", repo], stderr: log)
        try Self.expectCleanStop(verify, signal: SIGTERM, stderr: log, saying: "nothing recorded")
        #expect(Fixture.files(under: "\(repo)/points", suffix: ".verify").isEmpty)
        #expect(Fixture.temporaryFiles(under: repo).isEmpty)

        // archive write: no volume left, complete or not.
        let base = dir.file("arc")
        log = dir.file("write.err")
        let write = try Self.start(
            ["archive", "write", "--repo", repo, "vm@latest", "--to", base, "--volume-size", "32M"], stderr: log)
        #expect(Self.wait { Self.files(in: dir.path).contains { $0.hasPrefix(".arc.002.tmp-") } })
        try Self.expectCleanStop(write, signal: SIGINT, stderr: log, saying: "no archive written")
        #expect(Self.files(in: dir.path).filter { $0.contains("arc.") }.isEmpty, "\(Self.files(in: dir.path))")

        // archive restore, from a complete archive: the output is removed.
        #expect(CairnProcess.run(["archive", "write", "--repo", repo, "vm@latest", "--to", base]).status == 0)
        log = dir.file("archive-restore.err")
        let archiveRestore = try Self.start(
            ["archive", "restore", "\(base).001", "vm@latest", "--to", out], stderr: log)
        #expect(Self.wait { TestImage.allocatedBytes(of: out) > 16 << 20 })
        try Self.expectCleanStop(archiveRestore, signal: SIGTERM, stderr: log, saying: "restore incomplete")
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(!Self.files(in: dir.path).contains { $0.hasPrefix(".cairn-") })

        // Each command works afterwards.
        #expect(CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        CrashTests.expectHealthy(repo, "after the stopped commands")
    }

    @Test func gcAndALockWaitStopCleanly() throws {
        let dir = TemporaryDirectory()
        let repo = dir.file("repo")
        let image = dir.file("disk.img")
        var gen = TestImage(seed: 94)
        try gen.makeImage(at: image, size: 2 << 20, extent: 128 << 10, stride: 256 << 10)
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        // gc holds the repository (a test hook pauses it once it has the lock); a backup waits for it.
        let gcLog = dir.file("gc.err")
        let gc = try Process.start(
            ["gc", "--repo", repo], environment: ["CAIRN_TEST_GC_PAUSE": "20"], stderr: gcLog)
        #expect(
            Self.wait {
                ((try? String(contentsOfFile: "\(repo)/locks/repository.lock", encoding: .utf8)) ?? "").contains("gc")
            })
        let backupLog = dir.file("backup.err")
        let backup = try Self.start(
            ["backup", "--repo", repo, "--group", "vm", "--lock-wait", "1m", image], stderr: backupLog)
        usleep(300_000)
        try Self.expectCleanStop(backup, signal: SIGTERM, stderr: backupLog, saying: "nothing done (while waiting")
        try Self.expectCleanStop(gc, signal: SIGINT, stderr: gcLog, saying: "nothing freed")
        #expect(Fixture.temporaryFiles(under: repo).isEmpty)
        #expect(CairnProcess.run(["gc", "--repo", repo]).status == 0)
        CrashTests.expectHealthy(repo, "after the stopped gc")
    }
}

extension Process {
    /// Starts `cairn` with extra environment, stderr to a file.
    static func start(_ arguments: [String], environment: [String: String], stderr: String) throws -> Process {
        FileManager.default.createFile(atPath: stderr, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CairnProcess.executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: stderr)
        try process.run()
        return process
    }
}
