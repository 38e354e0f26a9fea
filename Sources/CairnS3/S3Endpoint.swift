public import CairnCore

/// Where an S3 store answers: `http://127.0.0.1:7480` or `https://s3.example.net`. Requests are
/// path-style (`/BUCKET/KEY`), which RGW serves without `rgw_dns_name` (object-store.md §2).
public struct S3Endpoint: Sendable, CustomStringConvertible {
    public let scheme: String
    public let host: String
    public let port: Int

    /// Parses `SCHEME://HOST[:PORT][/]`; a path, a query or user information is refused, as a
    /// store named with one is surely not what was meant.
    public init(url: String) throws(CairnError) {
        func bad(_ why: String) -> CairnError {
            CairnError(.usage, "the S3 endpoint '\(url)' \(why) (expected http://HOST:PORT or https://HOST)")
        }
        let scheme: String
        let rest: Substring
        if url.hasPrefix("http://") {
            (scheme, rest) = ("http", url.dropFirst(7))
        } else if url.hasPrefix("https://") {
            (scheme, rest) = ("https", url.dropFirst(8))
        } else {
            throw bad("is not an http or https URL")
        }
        var authority = rest
        if authority.hasSuffix("/") { authority = authority.dropLast() }
        guard !authority.isEmpty else { throw bad("names no host") }
        guard !authority.contains("/"), !authority.contains("?"), !authority.contains("@") else {
            throw bad("has a path, a query or a user")
        }
        var host = String(authority)
        var port = scheme == "https" ? 443 : 80
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else {
                throw bad("has a port that is not a number from 1 to 65535")
            }
            host = String(authority[..<colon])
            port = number
        }
        guard !host.isEmpty else { throw bad("names no host") }
        self.scheme = scheme
        self.host = host
        self.port = port
    }

    /// The `Host` header (the port only when it is not the scheme's), as the signature covers it.
    var hostHeader: String {
        port == (scheme == "https" ? 443 : 80) ? host : "\(host):\(port)"
    }

    public var description: String { "\(scheme)://\(hostHeader)" }
}
