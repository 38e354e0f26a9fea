import CairnCore

/// AWS Signature Version 4 for header-based authentication (docs.aws.amazon.com,
/// "Authenticating Requests: Using the Authorization Header").
///
/// Payloads are always signed with their SHA-256 (the caller passes the hex digest it also sends
/// as `x-amz-content-sha256`), so the store checks what it received; never `UNSIGNED-PAYLOAD`,
/// never aws-chunked (RGW 16.2 breaks on its trailers: object-store.md §2). The path is encoded
/// once, segment by segment, as S3 expects (other services encode twice; Cairn talks only to S3).
public struct SigV4Signer: Sendable {
    public let credentials: S3Credentials
    public let region: String
    public let service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of an empty payload (GET, HEAD, DELETE).
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// The value of the `Authorization` header for a request.
    ///
    /// - Parameters:
    ///   - path: the request's path, not yet encoded (`/bucket/packs/ab/ab12.pack`).
    ///   - query: the query's parameters, not yet encoded (`("list-type", "2")`; a flag is `("uploads", "")`).
    ///   - headers: every header that is signed, as sent: `host`, `x-amz-date`,
    ///     `x-amz-content-sha256` and any other (`range`, `if-none-match`, `content-md5`).
    ///   - payloadHash: hex SHA-256 of the body.
    ///   - amzDate: the `x-amz-date` value, `YYYYMMDD'T'HHMMSS'Z'`.
    public func authorization(
        method: String, path: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String, amzDate: String
    ) -> String {
        let canonical = canonicalRequest(
            method: method, path: path, query: query, headers: headers, payloadHash: payloadHash)
        let scope = credentialScope(amzDate: amzDate)
        let toSign = stringToSign(canonicalRequest: canonical.text, amzDate: amzDate)
        let signature = Hex.encode(hmac(signingKey(date: String(amzDate.prefix(8))), toSign))
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), "
            + "SignedHeaders=\(canonical.signedHeaders), Signature=\(signature)"
    }

    /// The canonical request (its text and the `;`-joined signed header names).
    func canonicalRequest(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String
    ) -> (text: String, signedHeaders: String) {
        var pairs: [(name: String, value: String)] = []
        for (name, value) in query {
            pairs.append((Self.uriEncode(name, keepSlash: false), Self.uriEncode(value, keepSlash: false)))
        }
        pairs.sort { $0.name == $1.name ? $0.value < $1.value : $0.name < $1.name }
        let encodedQuery = pairs.map { $0.name + "=" + $0.value }.joined(separator: "&")
        var normalized: [(name: String, value: String)] = []
        for (name, value) in headers { normalized.append((name.lowercased(), Self.trimmed(value))) }
        normalized.sort { $0.name < $1.name }
        let signed = normalized.map(\.name).joined(separator: ";")
        let canonicalHeaders = normalized.map { "\($0.name):\($0.value)\n" }.joined()
        let encodedPath = Self.uriEncode(path.isEmpty ? "/" : path, keepSlash: true)
        let lines: [String] = [method, encodedPath, encodedQuery, canonicalHeaders, signed, payloadHash]
        let text = lines.joined(separator: "\n")
        return (text, signed)
    }

    func credentialScope(amzDate: String) -> String {
        "\(amzDate.prefix(8))/\(region)/\(service)/aws4_request"
    }

    func stringToSign(canonicalRequest: String, amzDate: String) -> String {
        let hash = SHA256Hasher().digest(Array(canonicalRequest.utf8)).hex
        return "AWS4-HMAC-SHA256\n\(amzDate)\n\(credentialScope(amzDate: amzDate))\n\(hash)"
    }

    /// The key derived for one day: HMAC chain over the date, region, service and `aws4_request`.
    func signingKey(date: String) -> [UInt8] {
        var key = Array("AWS4\(credentials.secretAccessKey)".utf8)
        for part in [date, region, service, "aws4_request"] { key = hmac(key, part) }
        return key
    }

    private func hmac(_ key: [UInt8], _ message: String) -> [UInt8] {
        HMACSHA256(keyBytes: key).authenticate(Array(message.utf8)).bytes
    }

    /// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay, every other byte
    /// becomes `%XX` in upper case; `/` stays in paths.
    static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out += [UInt8(ascii: "%"), digits[Int(byte >> 4)], digits[Int(byte & 15)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A header value with its ends trimmed and inner runs of spaces made one.
    private static func trimmed(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }
}
