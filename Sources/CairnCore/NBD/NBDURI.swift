/// An NBD server address and export, parsed from a URI as the NBD URI spec writes them
/// (`NetworkBlockDevice/nbd` `doc/uri.md`).
///
/// - `nbd+unix:///EXPORT?socket=PATH`: a unix socket (`socket=` is mandatory).
/// - `nbd://HOST[:PORT]/EXPORT`: TCP, port 10809 by default; `[::1]` for IPv6 literals.
///
/// The export name is the path without its leading slash, percent-decoded (`nbd://h` and
/// `nbd+unix:///?socket=S` name the default export ""). TLS schemes (`nbds`, `nbds+unix`) and
/// `nbd+vsock` are refused with a message, as are TLS query parameters on a plain scheme.
public struct NBDURI: Sendable, Hashable, CustomStringConvertible {
    public enum Transport: Sendable, Hashable {
        case unix(path: String)
        case tcp(host: String, port: UInt16)
    }

    public var transport: Transport
    public var exportName: String
    /// The URI as given, for messages and the manifest.
    public var text: String

    public var description: String { text }

    /// True if `text` starts with a scheme this parser is responsible for (`nbd…://`), so a
    /// command line can tell a URI from a file path.
    public static func looksLikeURI(_ text: String) -> Bool {
        guard let colon = text.firstIndex(of: ":") else { return false }
        let scheme = text[..<colon].lowercased()
        // RFC 3986 scheme characters only, so `nbdisk=nbd://…` is a name and a URI, not a scheme.
        let schemeCharacters = scheme.unicodeScalars.allSatisfy { c in
            (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "+" || c == "-" || c == "."
        }
        return scheme.hasPrefix("nbd") && schemeCharacters && text[colon...].hasPrefix("://")
    }

    public init(parsing text: String) throws(CairnError) {
        self.text = text
        func bad(_ why: String) -> CairnError { CairnError(.usage, "\(text) is not a usable NBD URI: \(why)") }
        guard let schemeEnd = text.range(of: "://") else { throw bad("it has no scheme://") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        var rest = Substring(text[schemeEnd.upperBound...])
        var query = ""
        if let q = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: q)...])
            rest = rest[..<q]
        }
        if let hash = query.firstIndex(of: "#") { query = String(query[..<hash]) }
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authority: Substring
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = ""
        }
        guard let name = Self.percentDecoded(path) else { throw bad("the export name has a malformed %-escape") }
        exportName = name

        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = Self.percentDecoded(parts[0]),
                let value = Self.percentDecoded(parts.count > 1 ? parts[1] : "")
            else { throw bad("the query has a malformed %-escape") }
            parameters[key] = value
        }
        if let tls = parameters.keys.sorted().first(where: { $0.hasPrefix("tls") }) {
            throw bad("\(tls)= asks for TLS, which Cairn does not support yet; use a unix socket or a trusted network")
        }

        switch scheme {
        case "nbd":
            guard parameters["socket"] == nil else { throw bad("socket= is only allowed with nbd+unix://") }
            let (host, port) = try Self.hostAndPort(authority, bad: bad)
            transport = .tcp(host: host, port: port)
        case "nbd+unix":
            guard authority.isEmpty else {
                throw bad("nbd+unix:// takes no host (write nbd+unix:///EXPORT?socket=PATH)")
            }
            guard let socket = parameters["socket"], !socket.isEmpty else {
                throw bad("nbd+unix:// needs ?socket=PATH")
            }
            guard !socket.hasPrefix("\0") else { throw bad("abstract unix sockets are not supported") }
            transport = .unix(path: socket)
        case "nbds", "nbds+unix":
            throw bad("\(scheme):// requires TLS, which Cairn does not support yet; use nbd:// or nbd+unix://")
        case "nbd+vsock", "nbds+vsock":
            throw bad("vsock transports are not supported; use nbd:// or nbd+unix://")
        default:
            throw bad("the scheme \(scheme):// is not nbd:// or nbd+unix://")
        }
    }

    private static func hostAndPort(
        _ authority: Substring, bad: (String) -> CairnError
    ) throws(CairnError) -> (String, UInt16) {
        guard !authority.contains("@") else { throw bad("user names are not supported") }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw bad("an IPv6 address lacks its closing ]") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw bad("unexpected text after the IPv6 address")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        if host.isEmpty { host = "localhost" }
        var port = NBDProtocol.defaultPort
        if let portText, !portText.isEmpty {
            guard let parsed = UInt16(portText), parsed > 0 else { throw bad("port \(portText) is not 1-65535") }
            port = parsed
        }
        guard let decoded = percentDecoded(host) else { throw bad("the host has a malformed %-escape") }
        return (decoded, port)
    }

    /// `%XX` decoding; nil on a malformed escape or bytes that are not UTF-8.
    static func percentDecoded(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                return nil
            }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
