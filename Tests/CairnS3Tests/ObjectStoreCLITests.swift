import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// `cairn --repo s3://BUCKET/PREFIX --endpoint URL` on the real radosgw: the command line end to end.
@Suite(.enabled(if: S3TestStore.runs, "no S3 store configured (CAIRN_TEST_S3_ENDPOINT)"))
final class ObjectStoreCLITests {
    let dir = TemporaryDirectory()
    let prefix = S3TestStore.uniquePrefix("cli")
    let storage: S3Storage
    var url: String { "s3://\(S3TestStore.bucket)/\(prefix)" }
    var endpoint: String { S3TestStore.environment["CAIRN_TEST_S3_ENDPOINT"] ?? "" }

    init() throws {
        storage = S3Storage(client: try S3TestStore.client(), bucket: S3TestStore.bucket, prefix: prefix)
    }

    deinit {
        if let keys = try? storage.list(prefix: "") { try? storage.delete(keys) }
    }

    /// `cairn ARGS` with the store's keys in the environment, run in the test's directory.
    @discardableResult
    func cairn(_ arguments: [String], environment extra: [String: String] = [:]) -> CairnProcess.Outcome {
        CairnProcess.run(arguments, environment: environment(extra))
    }

    func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var environment = [
            "AWS_ACCESS_KEY_ID": S3TestStore.environment["CAIRN_TEST_S3_ACCESS_KEY"] ?? "",
            "AWS_SECRET_ACCESS_KEY": S3TestStore.environment["CAIRN_TEST_S3_SECRET_KEY"] ?? "",
            "CAIRN_S3_ENDPOINT": endpoint, "CAIRN_PASSWORD_FILE": dir.file("pass"),
            "CAIRN_CACHE_DIR": dir.file("cache"),
        ]
        environment.merge(extra) { $1 }
        return environment
    }

    /// A `cairn` run started in the background and held just before it commits
    /// (`CAIRN_TEST_HOLD_BEFORE_COMMIT`): the test acts while it waits, then lets it go.
    final class HeldRun {
        let process = Process()
        let hold: String
        private let output = Pipe()
        private let errors = Pipe()

        /// Starts `cairn ARGS` and waits (up to a minute) until it has reached the hold.
        init(_ arguments: [String], hold: String, environment: [String: String]) throws {
            self.hold = hold
            process.executableURL = URL(fileURLWithPath: CairnProcess.executable)
            process.arguments = arguments
            var env = ProcessInfo.processInfo.environment
            env.merge(environment) { $1 }
            env["CAIRN_TEST_HOLD_BEFORE_COMMIT"] = hold
            process.environment = env
            process.standardOutput = output
            process.standardError = errors
            try process.run()
            let deadline = Date().addingTimeInterval(60)
            while !reachedHold && process.isRunning && Date() < deadline { usleep(20_000) }
        }

        var reachedHold: Bool { FileManager.default.fileExists(atPath: hold + ".begun") }

        /// Lets the run go on to its commit.
        func release() {
            FileManager.default.createFile(atPath: hold, contents: Data())
        }

        /// Lets the run go on, and waits for it to end.
        func finish() -> CairnProcess.Outcome {
            release()
            // Read before waiting: a full pipe would keep the process from exiting.
            let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return CairnProcess.Outcome(status: process.terminationStatus, stdout: stdout, stderr: stderr)
        }
    }

    /// `cairn ARGS` started and held before its commit, with the store's keys.
    func heldRun(_ arguments: [String]) throws -> HeldRun {
        try HeldRun(arguments, hold: dir.file("hold-\(UUID().uuidString)"), environment: environment())
    }

    @Test func initDeclaresTheObjectStoreFeatureAndRefusesASecondInit() throws {
        let created = cairn(["init", "--repo", url, "--endpoint", endpoint, "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(Fixture.json(created.stdout)["repository"] as? String == url)
        let config = try #require(try storage.readIfPresent("config", limit: 1 << 20))
        let object = Fixture.json(String(decoding: config, as: UTF8.self))
        #expect((object["features"] as? [String])?.contains("object-store") == true, "\(object)")
        #expect(try storage.readIfPresent("config.copy", limit: 1 << 20) == config)
        // Nothing local: no directory named after the URL.
        #expect(try FileSystem.list(dir.path).isEmpty)

        let again = cairn(["init", "--repo", url])  // the endpoint from CAIRN_S3_ENDPOINT
        #expect(again.status == 8 && again.stderr.contains("is already a Cairn repository"), "\(again.stderr)")
        #expect(try storage.readIfPresent("config", limit: 1 << 20) == config)
    }

    /// kill -9 of a backup at 20 moments: each leaves only objects no restore point names (and
    /// a lease of a dead process, taken over by the next run at once); afterwards verify is
    /// clean, the next backup succeeds and every committed restore point restores bit-for-bit.
    /// The moments are spread over how long an uninterrupted backup takes here, so that they
    /// fall inside the run on a fast machine as on a slow one.
    @Test func aBackupKilledAtTwentyMomentsLeavesARepositoryThatVerifiesAndBacksUp() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 20)
        try gen.makeImage(at: image, size: 48 << 20, extent: 2 << 20, stride: 2 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        _ = try gen.scatterWrites(at: image, count: 8)
        let clock = ContinuousClock()
        let start = clock.now
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        let elapsed = clock.now - start
        let micros = max(
            50_000,
            Int(elapsed.components.seconds) * 1_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000_000))
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        for round in 0..<20 {
            _ = try gen.scatterWrites(at: image, count: 8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CairnProcess.executable)
            process.arguments = ["backup", "--repo", url, "--group", "vm", "--quiet", image]
            var env = ProcessInfo.processInfo.environment
            env.merge(environment()) { $1 }
            process.environment = env
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(UInt32(Int.random(in: 10_000...(micros * 9 / 10), using: &generator)))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(
                process.terminationReason == .uncaughtSignal || process.terminationStatus == 0,
                "round \(round): exit \(process.terminationStatus)")
            if process.terminationReason == .uncaughtSignal { killed += 1 }
        }
        #expect(killed >= 10, "only \(killed) of 20 backups were still running when killed (a backup takes \(elapsed))")
        let verified = cairn(["verify", "--repo", url])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let backed = cairn(["backup", "--repo", url, "--group", "vm", image])
        #expect(backed.status == 0, "\(backed.stderr)")
        let listed = Fixture.jsonArray(cairn(["list", "--repo", url, "--json"]).stdout)
        #expect(!listed.isEmpty)
        let out = dir.file("latest.raw")
        #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        #expect(cairn(["gc", "--repo", url]).status == 0)
        #expect(cairn(["verify", "--repo", url]).status == 0)
    }

    @Test func anEncryptedRepositoryKeepsItsKeysInTheBucket() throws {
        try "pass1\n".write(toFile: dir.file("pass"), atomically: true, encoding: .utf8)
        try "pass2\n".write(toFile: dir.file("pass2"), atomically: true, encoding: .utf8)
        #expect(cairn(["init", "--repo", url, "--encryption"]).status == 0)
        let added = cairn(["key", "add", "--repo", url, "--new-password-file", dir.file("pass2"), "--hint", "two"])
        #expect(added.status == 0, "\(added.stderr)")
        let listed = cairn(["key", "list", "--repo", url, "--json"])
        #expect(listed.status == 0, "\(listed.stderr)")
        let ids = Fixture.jsonArray(listed.stdout).compactMap { $0["id"] as? String }
        #expect(ids.count == 2)
        #expect(try storage.list(prefix: "keys/").sorted() == ids.map { "keys/\($0)" }.sorted())
        let removed = cairn(
            ["key", "remove", "--repo", url, ids[0]], environment: ["CAIRN_PASSWORD_FILE": dir.file("pass2")])
        // The passphrase may open the key being removed: then the other one must be named.
        if removed.status != 0 {
            #expect(removed.stderr.contains("opens key"), "\(removed.stderr)")
            #expect(
                cairn(
                    ["key", "remove", "--repo", url, ids[1]], environment: ["CAIRN_PASSWORD_FILE": dir.file("pass2")]
                ).status == 0)
        }
        #expect(try storage.list(prefix: "keys/").count == 1)
    }

    @Test func badLocationsAndAMissingEndpointAreUsageErrors() throws {
        for bad in ["s3://", "s3://AB", "s3://bucket/../x", "s3://bucket//x", "s3://-bucket"] {
            let outcome = cairn(["list", "--repo", bad])
            #expect(
                outcome.status == 64 && outcome.stderr.contains("expected s3://BUCKET"), "\(bad): \(outcome.stderr)")
        }
        let noEndpoint = cairn(["list", "--repo", url], environment: ["CAIRN_S3_ENDPOINT": ""])
        #expect(noEndpoint.status == 64 && noEndpoint.stderr.contains("--endpoint"), "\(noEndpoint.stderr)")
        let noKeys = cairn(
            ["list", "--repo", url],
            environment: ["AWS_ACCESS_KEY_ID": "", "AWS_SHARED_CREDENTIALS_FILE": dir.file("none")])
        #expect(noKeys.status == 64 && noKeys.stderr.contains("no S3 credentials"), "\(noKeys.stderr)")
    }

    /// `--cache-dir` (else `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`) holds a copy of each
    /// live segment under `IDENTITY/index/`, byte for byte the object.
    @Test func backupsKeepTheIndexSegmentsInTheCacheDirectory() throws {
        #expect(cairn(["init", "--repo", url, "--block-size", "64K"]).status == 0)
        let vm1 = try image("vm1.qcow2", pattern: "0x5a")
        let flagged = dir.file("flag-cache")
        #expect(backup("vm1", vm1, ["--cache-dir", flagged]).status == 0)
        let xdg = dir.file("xdg")
        let viaXDG = cairn(
            ["backup", "--repo", url, "--group", "vm2", try image("vm2.qcow2", pattern: "0x6b")],
            environment: ["CAIRN_CACHE_DIR": "", "XDG_CACHE_HOME": xdg])
        #expect(viaXDG.status == 0, "\(viaXDG.stderr)")
        let keys = try storage.list(prefix: "index/")
        #expect(keys.count == 2)
        let identity = IndexSegmentCache.identity(
            endpoint: try S3Endpoint(url: endpoint), bucket: S3TestStore.bucket, prefix: prefix)
        #expect(identity.hasPrefix("127.0.0.1-"), "\(identity)")
        let flaggedIndex = "\(flagged)/\(identity)/index"
        #expect(try FileSystem.list(flaggedIndex) == [FileSystem.baseName(keys[0])])
        let xdgIndex = "\(xdg)/cairn/\(identity)/index"
        #expect(try FileSystem.list(xdgIndex) == keys.map { FileSystem.baseName($0) })
        for key in keys {
            #expect(
                try FileSystem.readAll("\(xdgIndex)/\(FileSystem.baseName(key))")
                    == (try storage.readIfPresent(key, limit: 1 << 30)))
        }
        #expect(!FileSystem.exists(dir.file("cache")))
    }

    /// A qcow2 image made by qemu-img and written by qemu-io; returns its path.
    func image(_ name: String, pattern: String) throws -> String {
        let path = dir.file(name)
        _ = try QemuTools.check("qemu-img", ["create", "-f", "qcow2", path, "8M"])
        _ = try QemuTools.check("qemu-io", ["-c", "write -P \(pattern) 1M 3M", "-c", "write -P 0x11 6M 64K", path])
        return path
    }

    func backup(_ group: String, _ image: String, _ extra: [String] = []) -> CairnProcess.Outcome {
        cairn(["backup", "--repo", url, "--group", group, "--json"] + extra + [image])
    }

    /// The whole command line on the bucket: init, backup, list, restore compared by qemu-img,
    /// verify, forget and prune, gc; backups of two groups at once; a held lease refuses a second
    /// backup of its group naming its holder, an expired one is taken over.
    @Test func backupRestoreVerifyPruneGCOnTheBucket() throws {
        #expect(cairn(["init", "--repo", url, "--block-size", "64K"]).status == 0)
        let vm1 = try image("vm1.qcow2", pattern: "0x5a")
        let vm2 = try image("vm2.qcow2", pattern: "0x6b")
        let first = backup("vm1", vm1)
        #expect(first.status == 0, "\(first.stderr)")
        let id = try #require(Fixture.json(first.stdout)["id"] as? String)
        #expect(!(try storage.list(prefix: "locks/").contains("locks/group.vm1.lease")))

        // Two groups at once: no repository-wide lease.
        let outcomes = LockedOutcomes()
        let runs = [("vm1", vm1), ("vm2", vm2)].map { ["backup", "--repo", url, "--group", $0.0, $0.1] }
        let environment = environment()
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            outcomes.set(i, CairnProcess.run(runs[i], environment: environment))
        }
        for outcome in outcomes.all { #expect(outcome.status == 0, "\(outcome.stderr)") }

        let listed = Fixture.jsonArray(cairn(["list", "--repo", url, "--json"]).stdout)
        #expect(listed.count == 3)
        let out = dir.file("vm1.raw")
        let restored = cairn(["restore", "--repo", url, id, "--to", out])
        #expect(restored.status == 0, "\(restored.stderr)")
        _ = try QemuTools.check("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", vm1, out])
        let verified = cairn(["verify", "--repo", url, "--json"])
        #expect(verified.status == 0, "\(verified.stderr)")

        // A live lease of another host: refused at once, naming it.
        let now = Timestamp.now()
        let held = Lease(
            host: "hv7", pid: 4242, purpose: "cairn backup", created: now.description,
            expires: Timestamp(seconds: now.seconds + 300).description, token: "live")
        try storage.publish(try held.bytes(), as: "locks/group.vm1.lease", .createOnly)
        let refused = backup("vm1", vm1)
        #expect(
            refused.status == 5
                && refused.stderr.contains("group vm1 is locked by cairn backup on host hv7 (pid 4242, since \(now))"),
            "\(refused.stderr)")
        // Expired: taken over.
        var dead = held
        dead.expires = Timestamp(seconds: now.seconds - 1).description
        dead.token = "dead"
        try storage.publish(try dead.bytes(), as: "locks/group.vm1.lease", .replace)
        let takenOver = backup("vm1", vm1)
        #expect(takenOver.status == 0, "\(takenOver.stderr)")
        #expect(!storage.exists("locks/group.vm1.lease"))

        #expect(cairn(["forget", "--repo", url, id]).status == 0)
        let pruned = cairn(["prune", "--repo", url, "--keep-last", "1", "--json"])
        #expect(pruned.status == 0, "\(pruned.stderr)")
        let gc = cairn(["gc", "--repo", url, "--json"])
        #expect(gc.status == 0, "\(gc.stderr)")
        let left = Fixture.jsonArray(cairn(["list", "--repo", url, "--json"]).stdout).compactMap { $0["id"] as? String }
        #expect(left.count == 2)
        for (n, point) in left.enumerated() {
            let target = dir.file("after-\(n).raw")
            #expect(cairn(["restore", "--repo", url, point, "--to", target]).status == 0)
            let source = point.hasPrefix("vm1@") ? vm1 : vm2
            _ = try QemuTools.check("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", source, target])
        }
        #expect(cairn(["verify", "--repo", url]).status == 0)
    }
}

/// Outcomes of processes run at once, by index.
final class LockedOutcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Int: CairnProcess.Outcome] = [:]
    func set(_ index: Int, _ outcome: CairnProcess.Outcome) { lock.withLock { stored[index] = outcome } }
    var all: [CairnProcess.Outcome] { lock.withLock { stored.keys.sorted().compactMap { stored[$0] } } }
}
