import CairnCore
import CairnS3
import Testing

@testable import CairnS3

/// A broken or hostile server gives one clear line, never a crash, a hang or unbounded memory;
/// transient failures are retried. The server is `HostileHTTPServer` on loopback.
@Suite struct HostileReplyTests {
    func client(_ server: HostileHTTPServer, _ adjust: (inout S3Client.Options) -> Void = { _ in }) throws -> S3Client {
        var options = S3Client.Options()
        options.attempts = 3
        options.firstBackoff = 0.01
        options.maxBackoff = 0.05
        adjust(&options)
        return S3Client(
            endpoint: try S3Endpoint(url: server.endpoint),
            credentials: S3Credentials(accessKeyID: "AKID", secretAccessKey: "secret"), options: options)
    }

    static let listing = """
        <?xml version="1.0" encoding="UTF-8"?>
        <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>\
        <IsTruncated>false</IsTruncated><Contents><Key>p/a&amp;b</Key><Size>5</Size></Contents>\
        <Contents><Key>p/c</Key><Size>7</Size></Contents></ListBucketResult>
        """

    func listError(_ body: String, status: Int = 200) throws -> CairnError? {
        let server = try HostileHTTPServer { _, _ in HostileHTTPServer.reply(status, body) }
        let client = try client(server)
        return #expect(throws: CairnError.self) { _ = try client.list(bucket: "b", prefix: "p/") }
    }

    @Test func aGoodListingIsRead() throws {
        let server = try HostileHTTPServer { _, head in
            #expect(head.hasPrefix("GET /b?list-type=2&prefix=p%2F HTTP/1.1"))
            #expect(head.lowercased().contains("x-amz-content-sha256: \(SigV4Signer.emptyPayloadHash)"))
            return HostileHTTPServer.reply(200, Self.listing)
        }
        let keys = try client(server).list(bucket: "b", prefix: "p/")
        #expect(keys.map(\.key) == ["p/a&b", "p/c"] && keys.map(\.size) == [5, 7])
    }

    @Test(arguments: [
        ("<ListBucketResult><Contents><Key>p/a</Key>", "is not closed"),
        ("not xml at all", "no element"),
        ("<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ListBucketResult>&a;</ListBucketResult>", "DOCTYPE"),
        (
            "<ListBucketResult><Contents><Key>p/&bogus;</Key><Size>1</Size></Contents></ListBucketResult>",
            "unknown entity"
        ),
        ("<ListBucketResult><Contents><Key>p/a</Key></Contents></ListBucketResult>", "without a key or a size"),
        ("<ListBucketResult><Contents><Key>q/a</Key><Size>1</Size></Contents></ListBucketResult>", "not under p/"),
        ("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", "NextContinuationToken"),
        ("<Other/>", "not a <ListBucketResult>"),
        (String(repeating: "<a>", count: 100), "nested deeper"),
    ])
    func brokenListingsAreOneLineErrors(body: String, expected: String) throws {
        let error = try listError(body)
        #expect(error?.code == .io)
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "no error")")
        #expect(error?.description.contains("\n") == false)
    }

    /// A reply larger than the bound is refused as soon as its Content-Length says so, or once
    /// that many bytes came, and is not retried.
    @Test func oversizeRepliesAreRefused() throws {
        let big = String(repeating: "x", count: 70_000)
        let server = try HostileHTTPServer { _, _ in
            HostileHTTPServer.reply(200, "<ListBucketResult>\(big)</ListBucketResult>")
        }
        let client = try client(server) { $0.maxXMLReply = 65536 }
        let error = #expect(throws: CairnError.self) { _ = try client.list(bucket: "b", prefix: "p/") }
        #expect(error?.message.contains("larger than 65536 bytes") == true)
        #expect(server.requests == 1)
        // A ranged GET accepts no more than the range.
        let get = #expect(throws: CairnError.self) {
            _ = try client.get(bucket: "b", key: "k", range: 0..<10, limit: 10)
        }
        #expect(get?.message.contains("larger than 10 bytes") == true)
    }

    /// 500 and 503 SlowDown are retried; the request then succeeds.
    @Test func serverErrorsAreRetried() throws {
        let server = try HostileHTTPServer { index, _ in
            switch index {
            case 0: return HostileHTTPServer.reply(500, "")
            case 1:
                return HostileHTTPServer.reply(
                    503, "<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>")
            default: return HostileHTTPServer.reply(200, Self.listing)
            }
        }
        #expect(try client(server).list(bucket: "b", prefix: "p/").count == 2)
        #expect(server.requests == 3)
    }

    /// A store that keeps failing: the error names the attempts and the store's last reason.
    @Test func persistentSlowDownFailsClearly() throws {
        let server = try HostileHTTPServer { _, _ in
            HostileHTTPServer.reply(503, "<Error><Code>SlowDown</Code><Message>Reduce\nyour rate</Message></Error>")
        }
        let error = #expect(throws: CairnError.self) { _ = try client(server).list(bucket: "b", prefix: "p/") }
        #expect(error?.description.contains("failed 3 times") == true)
        #expect(
            error?.description.contains("HTTP 503 SlowDown: Reduce your rate") == true, "\(error?.description ?? "")")
        #expect(server.requests == 3)
    }

    /// A server that accepts and then says nothing: each try times out, and the error says so.
    @Test func aStallTimesOut() throws {
        let server = try HostileHTTPServer { _, _ in .stall(seconds: 10) }
        let client = try client(server) {
            $0.readTimeout = 1
            $0.attempts = 2
        }
        let error = #expect(throws: CairnError.self) { _ = try client.head(bucket: "b", key: "k") }
        #expect(error?.description.contains("no reply within 1 s") == true, "\(error?.description ?? "")")
        #expect(server.requests == 2)
    }

    /// Statuses a caller must tell apart: 404 (absent), 412 (exists), 403 with S3's reason, 507.
    @Test func statusesMapToErrorCodes() throws {
        let server = try HostileHTTPServer { index, _ in
            switch index {
            case 0: return HostileHTTPServer.reply(404, "")
            case 1: return HostileHTTPServer.reply(412, "<Error><Code>PreconditionFailed</Code></Error>")
            case 2: return HostileHTTPServer.reply(403, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>")
            default: return HostileHTTPServer.reply(507, "<Error><Code>InsufficientCapacity</Code></Error>")
            }
        }
        let client = try client(server)
        #expect(try client.head(bucket: "b", key: "k") == nil)
        let exists = #expect(throws: CairnError.self) {
            try client.put(bucket: "b", key: "k", body: [1], createOnly: true)
        }
        #expect(exists?.code == .exists)
        let denied = #expect(throws: CairnError.self) { _ = try client.get(bucket: "b", key: "k", limit: 10) }
        #expect(denied?.description.contains("HTTP 403 AccessDenied: no") == true, "\(denied?.description ?? "")")
        let full = #expect(throws: CairnError.self) { try client.put(bucket: "b", key: "k", body: [1]) }
        #expect(full?.description.contains("HTTP 507 (the store is full) InsufficientCapacity") == true)
    }

    @Test func endpointsAreParsedStrictly() throws {
        let local = try S3Endpoint(url: "http://127.0.0.1:7480/")
        #expect(local.host == "127.0.0.1" && local.port == 7480 && local.hostHeader == "127.0.0.1:7480")
        #expect(try S3Endpoint(url: "https://s3.example.net").hostHeader == "s3.example.net")
        for bad in ["ftp://x", "http://", "http://h:0", "http://h:port", "http://h/path", "http://u@h"] {
            #expect(throws: CairnError.self, "\(bad)") { _ = try S3Endpoint(url: bad) }
        }
    }
}
