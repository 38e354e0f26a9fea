/// The small, strict XML reader for S3's replies (`ListBucketResult`, `Error`, `DeleteResult`).
///
/// A reply comes from the network and may be hostile or broken, so the reader is bounded: the
/// body was already capped by the client (`S3Client.Limits`), elements nest at most 32 deep,
/// and there are no entities beyond XML's five and character references (a `<!DOCTYPE` is refused,
/// so nothing expands). Attributes are skipped (S3 replies carry only `xmlns`). Anything else it
/// cannot read is a one-line `CairnError` naming the reply and the byte offset.
///
/// It lives in the core, apart from the HTTP client (`CairnS3`), so that the fuzz targets reach
/// it without building a TLS library.
public struct S3XML {
    /// An element: its name (without a namespace prefix), its text and its child elements.
    public struct Element: Sendable {
        public var name: String
        public var text = ""
        public var children: [Element] = []

        /// The first child called `name`.
        public func child(_ name: String) -> Element? { children.first { $0.name == name } }
        /// Every child called `name`.
        public func children(_ name: String) -> [Element] { children.filter { $0.name == name } }
        /// The text of the first child called `name`.
        public func text(of name: String) -> String? { child(name)?.text }
    }

    public static let maxDepth = 32

    private let bytes: [UInt8]
    private let what: String
    private var at = 0

    /// Parses a whole document; `what` names the reply in errors ("the listing of bucket b").
    public static func parse(_ bytes: [UInt8], what: String) throws(CairnError) -> Element {
        var reader = S3XML(bytes: bytes, what: what)
        return try reader.document()
    }

    private init(bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    private func failure(_ reason: String) -> CairnError {
        CairnError(.io, "\(what) is not the XML an S3 store sends: \(reason) at byte \(at)")
    }

    private mutating func document() throws(CairnError) -> Element {
        try skipMisc()
        guard at < bytes.count else { throw failure("no element") }
        let root = try element(depth: 0)
        try skipMisc()
        guard at == bytes.count else { throw failure("more after the root element") }
        return root
    }

    /// Skips white space, the XML declaration, processing instructions and comments.
    private mutating func skipMisc() throws(CairnError) {
        while true {
            while at < bytes.count, Self.isSpace(bytes[at]) { at += 1 }
            if starts(with: "<?") {
                try skip(past: "?>")
            } else if starts(with: "<!--") {
                try skip(past: "-->")
            } else if starts(with: "<!") {
                throw failure("a DOCTYPE or other declaration")
            } else {
                return
            }
        }
    }

    private mutating func element(depth: Int) throws(CairnError) -> Element {
        guard depth < Self.maxDepth else { throw failure("elements nested deeper than \(Self.maxDepth)") }
        guard at < bytes.count, bytes[at] == UInt8(ascii: "<") else { throw failure("no element") }
        at += 1
        let name = try self.name()
        // Attributes: skipped, but quoted values are honoured so a `>` inside one does not end the tag.
        var selfClosing = false
        while true {
            guard at < bytes.count else { throw failure("the tag <\(name)> does not end") }
            let c = bytes[at]
            if c == UInt8(ascii: ">") {
                at += 1
                break
            } else if c == UInt8(ascii: "/"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: ">") {
                at += 2
                selfClosing = true
                break
            } else if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
                at += 1
                while at < bytes.count, bytes[at] != c { at += 1 }
                guard at < bytes.count else { throw failure("an attribute of <\(name)> does not end") }
                at += 1
            } else {
                at += 1
            }
        }
        var element = Element(name: Self.local(name))
        if selfClosing { return element }
        var text: [UInt8] = []
        while true {
            guard at < bytes.count else { throw failure("<\(name)> is not closed") }
            if starts(with: "</") {
                at += 2
                let closing = try self.name()
                while at < bytes.count, Self.isSpace(bytes[at]) { at += 1 }
                guard closing == name, at < bytes.count, bytes[at] == UInt8(ascii: ">") else {
                    throw failure("<\(name)> is closed by </\(closing)>")
                }
                at += 1
                element.text = String(decoding: text, as: UTF8.self)
                return element
            } else if starts(with: "<![CDATA[") {
                at += 9
                let start = at
                try skip(past: "]]>")
                text += bytes[start..<(at - 3)]
            } else if starts(with: "<!--") {
                try skip(past: "-->")
            } else if starts(with: "<?") {
                try skip(past: "?>")
            } else if bytes[at] == UInt8(ascii: "<") {
                element.children.append(try self.element(depth: depth + 1))
            } else if bytes[at] == UInt8(ascii: "&") {
                text += try reference()
            } else {
                text.append(bytes[at])
                at += 1
            }
        }
    }

    private mutating func name() throws(CairnError) -> String {
        let start = at
        while at < bytes.count, at - start <= 256 {
            let c = bytes[at]
            if Self.isSpace(c) || c == UInt8(ascii: ">") || c == UInt8(ascii: "/") || c == UInt8(ascii: "<") { break }
            at += 1
        }
        guard at > start, at - start <= 256 else { throw failure("an element name is empty or too long") }
        return String(decoding: bytes[start..<at], as: UTF8.self)
    }

    /// `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` `&#N;` `&#xN;`, as UTF-8.
    private mutating func reference() throws(CairnError) -> [UInt8] {
        let start = at
        at += 1
        while at < bytes.count, bytes[at] != UInt8(ascii: ";"), at - start < 12 { at += 1 }
        guard at < bytes.count, bytes[at] == UInt8(ascii: ";") else { throw failure("an entity does not end") }
        let body = String(decoding: bytes[(start + 1)..<at], as: UTF8.self)
        at += 1
        switch body {
        case "lt": return [UInt8(ascii: "<")]
        case "gt": return [UInt8(ascii: ">")]
        case "amp": return [UInt8(ascii: "&")]
        case "quot": return [UInt8(ascii: "\"")]
        case "apos": return [UInt8(ascii: "'")]
        default:
            var scalar: UInt32?
            if body.hasPrefix("#x") {
                scalar = UInt32(body.dropFirst(2), radix: 16)
            } else if body.hasPrefix("#") {
                scalar = UInt32(body.dropFirst(), radix: 10)
            }
            guard let scalar, let unicode = Unicode.Scalar(scalar) else {
                at = start
                throw failure("the unknown entity &\(body);")
            }
            return Array(String(Character(unicode)).utf8)
        }
    }

    private func starts(with literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard at + n <= bytes.count else { return false }
        return literal.withUTF8Buffer { lit in
            for i in 0..<n where bytes[at + i] != lit[i] { return false }
            return true
        }
    }

    private mutating func skip(past literal: StaticString) throws(CairnError) {
        let n = literal.utf8CodeUnitCount
        while at + n <= bytes.count {
            if starts(with: literal) {
                at += n
                return
            }
            at += 1
        }
        throw failure("\(literal) is missing")
    }

    private static func isSpace(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D
    }

    /// A name without its namespace prefix (`s3:Key` → `Key`).
    private static func local(_ name: String) -> String {
        guard let colon = name.lastIndex(of: ":") else { return name }
        return String(name[name.index(after: colon)...])
    }
}
