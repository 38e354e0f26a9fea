/// A share of the digest space, by the first eight bytes of a digest, possibly wrapping around.
///
/// `verify --sample` checks the chunks whose digest falls in one slice and stores where the next
/// run starts, so repeated runs sweep the whole space; a full verify that would mark more chunks
/// than fit its memory budget splits its slice into several passes the same way.
public struct DigestSlice: Sendable, Equatable {
    /// Where the slice starts (a digest prefix).
    public var start: UInt64
    /// Its length in prefixes: up to 2⁶⁴ (the whole space).
    public var length: UInt128

    public static let whole = DigestSlice(start: 0, length: UInt128(1) << 64)

    public init(start: UInt64, length: UInt128) {
        self.start = start
        self.length = min(length, UInt128(1) << 64)
    }

    /// A slice covering `percent` of the space from `start`.
    public init(start: UInt64, percent: Double) {
        let share = max(0, min(100, percent)) / 100
        let length = share >= 1 ? UInt128(1) << 64 : UInt128(share * 18_446_744_073_709_551_616.0)
        self.init(start: start, length: max(1, length))
    }

    public var isWhole: Bool { length == UInt128(1) << 64 }

    /// Where the following slice starts.
    public var end: UInt64 { UInt64(truncatingIfNeeded: UInt128(start) + length) }

    public func contains(_ digest: ChunkDigest) -> Bool {
        isWhole || UInt128(digest.prefix &- start) < length
    }

    /// The slice cut into `count` consecutive parts of (nearly) equal length.
    public func split(_ count: Int) -> [DigestSlice] {
        guard count > 1 else { return [self] }
        var parts: [DigestSlice] = []
        var offset: UInt128 = 0
        for i in 1...count {
            let next = length * UInt128(i) / UInt128(count)
            parts.append(DigestSlice(start: UInt64(truncatingIfNeeded: UInt128(start) + offset), length: next - offset))
            offset = next
        }
        return parts
    }

    public var description: String {
        func hex(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return isWhole ? "all digests" : "digests \(hex(start))…\(hex(end)) (wrapping)"
    }
}

/// Where the next `verify --sample` starts: `verify/sample-position`, one hex number.
enum SamplePosition {
    static let key = "verify/sample-position"

    static func load(from storage: any RepositoryStorage) -> UInt64 {
        guard let bytes = try? storage.readIfPresent(key, limit: 4096) else { return 0 }
        return UInt64(String(decoding: bytes, as: UTF8.self).trimmingSpaces, radix: 16) ?? 0
    }

    static func save(_ position: UInt64, to storage: any RepositoryStorage) throws(CairnError) {
        try storage.publish(Array((String(position, radix: 16) + "\n").utf8), as: key, .replace)
    }
}
