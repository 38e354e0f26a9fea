/// A model value stored as one JSON string: exactly as it is printed and as the manifests,
/// verification records and `--json` output have always spelled it.
protocol JSONStringValue: Codable {
    /// The value a stored string names, or nil if it names none.
    init?(jsonString: String)
    var jsonString: String { get }
    /// What the string should have been, for the decoding error.
    static var jsonStringKind: String { get }
}

extension JSONStringValue {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        guard let value = Self(jsonString: try container.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not \(Self.jsonStringKind)")
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(jsonString)
    }
}

/// 64 lowercase hex digits.
extension ChunkDigest: JSONStringValue {
    init?(jsonString: String) { self.init(hex: jsonString) }
    var jsonString: String { hex }
    static var jsonStringKind: String { "a SHA-256 digest" }
}

/// `2026-11-26T03:00:00Z` (UTC; any form `Timestamp(parsing:)` reads is accepted).
extension Timestamp: JSONStringValue {
    init?(jsonString: String) { self.init(parsing: jsonString) }
    var jsonString: String { description }
    static var jsonStringKind: String { "a UTC time" }
}

/// `GROUP@2026-11-26T03:00:00Z`.
extension RestorePointID: JSONStringValue {
    init?(jsonString: String) { self.init(parsing: jsonString) }
    var jsonString: String { description }
    static var jsonStringKind: String { "a restore point id" }
}
