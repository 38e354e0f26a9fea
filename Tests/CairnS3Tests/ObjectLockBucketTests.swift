import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import NIOHTTP1
import Testing

/// The WORM set-up of README ("Backup hosts that cannot delete"), on the real radosgw: a bucket
/// with Object Lock (default retention), and a bucket policy that lets a backup host's user
/// read, write and list but delete nothing outside `locks/`. That user backs up (twice, so its
/// lease is released and taken again), restores bit-for-bit and verifies; it cannot forget a
/// restore point (one line, AccessDenied, the point stays); the owner forgets and collects as usual.
@Suite(.enabled(if: S3TestStore.runs, "no S3 store configured (CAIRN_TEST_S3_ENDPOINT)"))
final class ObjectLockBucketTests {
    let dir = TemporaryDirectory()
    static let bucket = "cairn-worm-test"
    static let backupUser = (
        uid: "cairn-backup-test", key: "CAIRNBACKUPHOST00001", secret: "cairn-backup-host-secret-for-tests-0001"
    )
    /// The user start-ceph.sh makes, who owns the bucket and runs gc here.
    static let ownerUID = "cairn-test"
    let prefix = S3TestStore.uniquePrefix("worm")
    var url: String { "s3://\(Self.bucket)/\(prefix)" }

    /// The owner's client (the test user, who owns the bucket).
    func owner() throws -> S3Client { try S3TestStore.client() }

    /// `cairn ARGS` as the bucket's owner, or as the backup host's user.
    func cairn(_ arguments: [String], asBackupHost: Bool) -> CairnProcess.Outcome {
        let keys =
            asBackupHost
            ? (Self.backupUser.key, Self.backupUser.secret)
            : (
                S3TestStore.environment["CAIRN_TEST_S3_ACCESS_KEY"] ?? "",
                S3TestStore.environment["CAIRN_TEST_S3_SECRET_KEY"] ?? ""
            )
        return CairnProcess.run(
            arguments,
            environment: [
                "AWS_ACCESS_KEY_ID": keys.0, "AWS_SECRET_ACCESS_KEY": keys.1,
                "CAIRN_S3_ENDPOINT": S3TestStore.environment["CAIRN_TEST_S3_ENDPOINT"] ?? "",
                "CAIRN_CACHE_DIR": dir.file(asBackupHost ? "cache-host" : "cache-owner"),
            ])
    }

    /// One signed request of the owner's, which must succeed.
    func ownerRequest(_ method: HTTPMethod, query: String, body: String, headers: [(String, String)] = []) throws {
        let client = try owner()
        let bytes = Array(body.utf8)
        // RGW wants a Content-MD5 on bucket configuration, as AWS does (openssl computes it).
        let md5 = try QemuTools.check("sh", ["-c", "printf '%s' \"$0\" | openssl md5 -binary | base64", body])
        let request = S3Client.Request(
            method, "/\(Self.bucket)", query: query.isEmpty ? [] : [(query, "")],
            headers: headers
                + (body.isEmpty ? [] : [("Content-MD5", md5.trimmingCharacters(in: .whitespacesAndNewlines))]),
            body: bytes, replyLimit: 1 << 20, what: "\(method) \(Self.bucket)?\(query)")
        let reply = try client.send(request)
        guard (200...299).contains(reply.status) || (reply.status == 409 && query.isEmpty) else {
            throw client.unexpected(reply, request.what)
        }
    }

    /// The bucket with Object Lock (GOVERNANCE, one day), the backup host's user, and the policy.
    func setUp() throws {
        guard let ceph = S3TestStore.environment["CAIRN_TEST_CEPH_DIR"] else {
            if S3TestStore.inCI { throw S3TestStore.Missing() }
            return
        }
        try ownerRequest(.PUT, query: "", body: "", headers: [("x-amz-bucket-object-lock-enabled", "true")])
        try ownerRequest(
            .PUT, query: "object-lock",
            body: """
                <ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
                <Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>
                """)
        let user = Self.backupUser
        let made = try QemuTools.run(
            "radosgw-admin",
            [
                "-c", "\(ceph)/ceph.conf", "user", "create", "--uid", user.uid, "--display-name", "Cairn backup host",
                "--access-key", user.key, "--secret-key", user.secret,
            ])
        #expect(made.status == 0 || made.standardError.contains("exists"), "\(made.standardError)")
        let policy = try String(contentsOfFile: Self.policyFile, encoding: .utf8)
            .replacingOccurrences(of: "BUCKET", with: Self.bucket).replacingOccurrences(
                of: "BACKUP_USER", with: user.uid
            )
            .replacingOccurrences(of: "GC_USER", with: Self.ownerUID)
        try ownerRequest(.PUT, query: "policy", body: policy)
    }

    /// The policy README shows, with BUCKET, BACKUP_USER and GC_USER to fill in.
    static let policyFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../docs/examples/backup-host-policy.json").standardized.path

    @Test func aBackupHostThatCannotDeleteBacksUpRestoresAndIsRefusedAForget() throws {
        guard S3TestStore.environment["CAIRN_TEST_CEPH_DIR"] != nil || S3TestStore.inCI else { return }
        try setUp()
        #expect(cairn(["init", "--repo", url], asBackupHost: false).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 81)
        try gen.makeImage(at: image, size: 8 << 20, extent: 1 << 20, stride: 2 << 20)
        for _ in 0..<2 {
            let backup = cairn(["backup", "--repo", url, "--group", "vm", image], asBackupHost: true)
            #expect(backup.status == 0, "\(backup.stderr)")
            _ = try gen.scatterWrites(at: image, count: 2)
        }
        let last = dir.file("last.raw")
        try FileManager.default.copyItem(atPath: image, toPath: last)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image], asBackupHost: true).status == 0)
        let out = dir.file("out.raw")
        #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out], asBackupHost: true).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: last))
        #expect(cairn(["verify", "--repo", url], asBackupHost: true).status == 0)

        let listed = Fixture.jsonArray(cairn(["list", "--repo", url, "--json"], asBackupHost: true).stdout)
        #expect(listed.count == 3)
        let forget = cairn(["forget", "--repo", url, "vm@latest"], asBackupHost: true)
        #expect(forget.status != 0 && forget.stderr.contains("AccessDenied"), "\(forget.stderr)")
        #expect(forget.stderr.split(separator: "\n").count == 1, "\(forget.stderr)")
        #expect(Fixture.jsonArray(cairn(["list", "--repo", url, "--json"], asBackupHost: false).stdout).count == 3)

        // The owner forgets and collects as usual (on an Object Lock bucket a delete leaves a
        // delete marker; the store frees the old version when its retention ends).
        for point in listed.dropLast().compactMap({ $0["id"] as? String }) {
            #expect(cairn(["forget", "--repo", url, point], asBackupHost: false).status == 0)
        }
        for _ in 0..<2 {
            let gc = cairn(["gc", "--repo", url, "--grace", "0s"], asBackupHost: false)
            #expect(gc.status == 0, "\(gc.stderr)")
        }
        let again = cairn(["restore", "--repo", url, "vm@latest", "--to", dir.file("again.raw")], asBackupHost: true)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try TestImage.sha256(of: dir.file("again.raw")) == TestImage.sha256(of: last))
        let verified = cairn(["verify", "--repo", url], asBackupHost: false)
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }
}
