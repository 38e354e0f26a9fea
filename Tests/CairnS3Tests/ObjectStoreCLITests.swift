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
        ]
        environment.merge(extra) { $1 }
        return environment
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
