import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import Testing

/// The real S3 store the tests use: the radosgw that `Tests/ceph/start-ceph.sh` starts (`.ci/run`
/// does, and exports its env file).
///
/// Outside CI a missing store skips the S3 cases with a printed reason; in CI (`CI=true`) it is a
/// failure, so a broken Ceph start can never pass as "no S3 tests".
enum S3TestStore {
    static let environment = ProcessInfo.processInfo.environment
    static let inCI = environment["CI"] == "true"
    static let bucket = environment["CAIRN_TEST_S3_BUCKET"] ?? "cairn-test"

    /// Whether the S3 cases run: a store is configured, or this is CI (where they then fail).
    static let runs: Bool = {
        if environment["CAIRN_TEST_S3_ENDPOINT"] != nil || inCI { return true }
        print(
            "S3 tests skipped: CAIRN_TEST_S3_ENDPOINT is not set (start a store with "
                + "`bash Tests/ceph/start-ceph.sh DIR` and `source DIR/env`)")
        return false
    }()

    struct Missing: Error, CustomStringConvertible {
        var description: String {
            "CI=true but CAIRN_TEST_S3_ENDPOINT, CAIRN_TEST_S3_ACCESS_KEY or CAIRN_TEST_S3_SECRET_KEY is not set: "
                + ".ci/run must start Ceph (Tests/ceph/start-ceph.sh) and export its env file"
        }
    }

    /// A client for the store, the test bucket created.
    static func client(_ adjust: (inout S3Client.Options) -> Void = { _ in }) throws -> S3Client {
        guard let url = environment["CAIRN_TEST_S3_ENDPOINT"], let id = environment["CAIRN_TEST_S3_ACCESS_KEY"],
            let secret = environment["CAIRN_TEST_S3_SECRET_KEY"]
        else { throw Missing() }
        var options = S3Client.Options()
        options.region = environment["CAIRN_TEST_S3_REGION"] ?? "us-east-1"
        adjust(&options)
        let client = S3Client(
            endpoint: try S3Endpoint(url: url), credentials: S3Credentials(accessKeyID: id, secretAccessKey: secret),
            options: options)
        try client.createBucket(bucket)
        return client
    }

    /// A fresh prefix, so tests running at once never see each other's keys.
    static func uniquePrefix(_ label: String) -> String {
        "\(label)-\(UInt64.random(in: 0...UInt64.max))/"
    }
}

/// Where a conformance test keeps its repository: a local directory or a prefix in the S3 bucket.
enum StorageKind: String, CustomTestStringConvertible, Sendable {
    case local
    case s3

    var testDescription: String { rawValue }

    /// The kinds that run here: always local; S3 when a store is configured or in CI.
    static let available: [StorageKind] = S3TestStore.runs ? [.local, .s3] : [.local]
}

/// One test's storage, removed (local) or emptied (S3) when it goes away.
final class StorageFixture {
    let storage: any RepositoryStorage
    private let directory: TemporaryDirectory?

    init(_ kind: StorageKind, _ label: String = "conformance") throws {
        switch kind {
        case .local:
            let dir = TemporaryDirectory()
            directory = dir
            storage = LocalDirectoryStorage(root: dir.path)
        case .s3:
            directory = nil
            storage = S3Storage(
                client: try S3TestStore.client(), bucket: S3TestStore.bucket, prefix: S3TestStore.uniquePrefix(label))
        }
    }

    deinit {
        if directory == nil, let keys = try? storage.list(prefix: "") { try? storage.delete(keys) }
    }
}
