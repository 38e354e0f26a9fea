import CairnCore
import CairnS3
import Testing

/// S3 behaviour the repository relies on, checked on the real radosgw (Tests/ceph/start-ceph.sh).
@Suite(.enabled(if: S3TestStore.runs, "no S3 store configured (CAIRN_TEST_S3_ENDPOINT)"))
struct RadosGatewayTests {
    /// Several conditional creates of one key at once: exactly one wins, the rest are `.exists`,
    /// and the winner's bytes are what is stored.
    @Test func parallelCreateOnlyHasOneWinner() throws {
        let client = try S3TestStore.client()
        let key = S3TestStore.uniquePrefix("race") + "lease"
        defer { try? client.delete(bucket: S3TestStore.bucket, key: key) }
        let pending = try (0..<8).map { i in
            try client.start(
                client.putRequest(bucket: S3TestStore.bucket, key: key, body: [UInt8(i)], createOnly: true))
        }
        var winners: [Int] = []
        var refused = 0
        for (i, request) in pending.enumerated() {
            do throws(CairnError) {
                try client.checkPut(try client.finish(request), bucket: S3TestStore.bucket, key: key)
                winners.append(i)
            } catch {
                guard error.code == .exists else { throw error }
                refused += 1
            }
        }
        #expect(winners.count == 1 && refused == 7)
        #expect(try client.get(bucket: S3TestStore.bucket, key: key, limit: 10) == winners.map { UInt8($0) })
    }

    /// A listing longer than one page (at most 1,000 keys) comes whole, in order, through continuation
    /// tokens; a neighbouring prefix is not listed.
    @Test func listingFollowsContinuationTokens() throws {
        let client = try S3TestStore.client()
        let prefix = S3TestStore.uniquePrefix("page")
        let storage = S3Storage(client: client, bucket: S3TestStore.bucket, prefix: prefix)
        let keys = (0..<1005).map { "points/g/\(String(1_000_000 + $0).dropFirst()).manifest" }
        defer { try? storage.delete(keys + ["pointsX"]) }
        var next = 0
        while next < keys.count {
            let batch = keys[next..<min(keys.count, next + 16)]
            next = batch.endIndex
            let pending = try batch.map {
                try client.start(
                    client.putRequest(bucket: S3TestStore.bucket, key: prefix + $0, body: [1], createOnly: false))
            }
            for (key, request) in zip(batch, pending) {
                try client.checkPut(try client.finish(request), bucket: S3TestStore.bucket, key: key)
            }
        }
        try storage.publish([2], as: "pointsX", .replace)
        let page = try client.listPage(bucket: S3TestStore.bucket, prefix: prefix + "points/", continuation: nil)
        // At most 1,000 keys a page; RGW may send fewer (922 was seen), so only the whole counts.
        #expect(page.keys.count <= 1000 && page.continuation != nil, "first page: \(page.keys.count) keys")
        #expect(try storage.list(prefix: "points/") == keys)
        #expect(try storage.list(prefix: "points").count == keys.count + 1)
    }

    /// A payload whose signed SHA-256 does not match the body is refused by the store, so a body
    /// damaged on the way is never stored.
    @Test func theStoreChecksTheSignedPayloadHash() throws {
        let client = try S3TestStore.client { $0.attempts = 1 }
        let key = S3TestStore.uniquePrefix("hash") + "object"
        let wrong = SHA256Hasher().digest([9, 9, 9]).hex
        let error = #expect(throws: CairnError.self) {
            try client.put(bucket: S3TestStore.bucket, key: key, body: [1, 2, 3], payloadHash: wrong)
        }
        #expect(error?.code == .io)
        #expect(
            error?.message.contains("XAmzContentSHA256Mismatch") == true || error?.message.contains("HTTP 400") == true)
        #expect(try client.head(bucket: S3TestStore.bucket, key: key) == nil)
    }

    /// Wrong credentials give one line naming the store's reason.
    @Test func wrongSecretIsRefusedClearly() throws {
        let good = try S3TestStore.client()
        let client = S3Client(
            endpoint: good.endpoint,
            credentials: S3Credentials(accessKeyID: good.signerAccessKey, secretAccessKey: "not-the-secret"),
            options: good.options)
        let error = #expect(throws: CairnError.self) {
            _ = try client.head(bucket: S3TestStore.bucket, key: "nothing")
        }
        let message = error?.description ?? ""
        #expect(message.contains("HTTP 403"))
        #expect(!message.contains("\n"))
        let listing = #expect(throws: CairnError.self) {
            _ = try client.listPage(bucket: S3TestStore.bucket, prefix: "", continuation: nil)
        }
        #expect(listing?.message.contains("SignatureDoesNotMatch") == true)
    }
}
