import CairnCore
import CairnTestSupport
import Foundation
import Testing

@testable import CairnS3

/// A host whose clock is far from the store's is refused (leases trust clocks); the store's
/// clock is its replies' `Date`. The far-off store is `HostileHTTPServer`, so no clock changes.
@Suite struct ClockCheckTests {
    static let listing = """
        <?xml version="1.0" encoding="UTF-8"?>
        <ListBucketResult><Name>b</Name><Prefix>p/</Prefix><IsTruncated>false</IsTruncated></ListBucketResult>
        """

    /// `Wed, 02 Dec 2026 15:48:26 GMT` for now + `offset` seconds.
    static func httpDate(_ offset: Int) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: Date(timeIntervalSinceNow: Double(offset)))
    }

    /// A store whose clock is `offset` seconds from this host's.
    static func server(offset: Int) throws -> HostileHTTPServer {
        try HostileHTTPServer { _, _ in
            HostileHTTPServer.reply(200, listing, headers: ["Date: \(httpDate(offset))"])
        }
    }

    static func client(_ server: HostileHTTPServer) throws -> S3Client {
        var options = S3Client.Options()
        options.attempts = 1
        return S3Client(
            endpoint: try S3Endpoint(url: server.endpoint),
            credentials: S3Credentials(accessKeyID: "AKID", secretAccessKey: "secret"), options: options)
    }

    @Test func httpDatesAreRead() {
        #expect(S3Client.parseHTTPDate("Wed, 02 Dec 2026 15:48:26 GMT") == 1_796_226_506)
        #expect(S3Client.parseHTTPDate("Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        for bad in [
            "", "Wed, 02 Dec 2026 15:48:26 UTC", "Wed, 32 Dec 2026 15:48:26 GMT", "Wed, 02 Foo 2026 15:48:26 GMT",
            "Wednesday, 02-Dec-26 15:48:26 GMT", "Wed, 02 Dec 2026 25:48:26 GMT",
        ] {
            #expect(S3Client.parseHTTPDate(bad) == nil, "\(bad)")
        }
    }

    @Test(arguments: [3600, -3600, 301])
    func aStoreFarOffIsRefusedNamingBothTimes(offset: Int) throws {
        let server = try Self.server(offset: offset)
        let client = try Self.client(server)
        let error = #expect(throws: CairnError.self) { _ = try client.list(bucket: "b", prefix: "p/") }
        let message = error?.message ?? ""
        #expect(error?.code == .repository)
        #expect(
            message.contains("this host's clock is") && message.contains(offset > 0 ? "behind" : "ahead of"),
            "\(message)")
        #expect(message.contains("more than the 300 s leases allow"), "\(message)")
        // Both times, and the skew to within the second the request took.
        let skew = Int(message.split(separator: " ")[4]) ?? 0
        #expect(abs(skew - abs(offset)) <= 2, "\(message)")
        #expect(message.contains(Timestamp.now().description.prefix(13)))
        #expect(!message.contains("\n"))
        // Every later request is refused too.
        #expect(throws: CairnError.self) { _ = try client.list(bucket: "b", prefix: "p/") }
        #expect(server.requests == 2)
    }

    @Test(arguments: [0, 120, -240])
    func aStoreWithinFiveMinutesIsUsed(offset: Int) throws {
        let server = try Self.server(offset: offset)
        #expect(try Self.client(server).list(bucket: "b", prefix: "p/").isEmpty)
    }

    /// The real radosgw's clock is this host's: every S3 test passes the check; this one says so.
    @Test(.enabled(if: S3TestStore.runs, "no S3 store configured")) func theRealGatewayPasses() throws {
        let client = try S3TestStore.client()
        _ = try client.list(bucket: S3TestStore.bucket, prefix: "clock-check/")
    }

    /// The command line: one line, exit 3, naming the clock.
    @Test func theCommandLineRefusesAStoreFarOff() throws {
        let server = try Self.server(offset: 3600)
        let outcome = CairnProcess.run(
            ["list", "--repo", "s3://bucket/p", "--endpoint", server.endpoint],
            environment: ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"])
        #expect(outcome.status == 3, "\(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n")
        #expect(
            lines.count == 1 && lines[0].contains("clock is 3") && lines[0].contains("behind the S3 store's"),
            "\(outcome.stderr)")
    }
}
