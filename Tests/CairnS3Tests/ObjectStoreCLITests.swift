import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import Testing

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
        var environment = [
            "AWS_ACCESS_KEY_ID": S3TestStore.environment["CAIRN_TEST_S3_ACCESS_KEY"] ?? "",
            "AWS_SECRET_ACCESS_KEY": S3TestStore.environment["CAIRN_TEST_S3_SECRET_KEY"] ?? "",
            "CAIRN_S3_ENDPOINT": endpoint, "CAIRN_PASSWORD_FILE": dir.file("pass"),
        ]
        environment.merge(extra) { $1 }
        return CairnProcess.run(arguments, environment: environment)
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

    /// Until the catalog reads storage keys, data commands refuse an object store in one line and
    /// write nothing on this host.
    @Test func dataCommandsRefuseUntilTheCatalogIsOnStorage() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        try QemuTools.check("qemu-img", ["create", "-f", "qcow2", dir.file("vm1.qcow2"), "4M"])
        let backup = cairn(["backup", "--repo", url, "--group", "vm1", dir.file("vm1.qcow2")])
        #expect(backup.status == 3 && backup.stderr.contains("is on an object store"), "\(backup.stderr)")
        #expect(try FileSystem.list(dir.path) == ["vm1.qcow2"])
        #expect(try storage.list(prefix: "points/").isEmpty)
    }
}
