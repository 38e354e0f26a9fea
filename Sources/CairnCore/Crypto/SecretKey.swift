import CCrypto

/// 32 bytes of key material: a master key, a key derived from it, or a passphrase's key.
///
/// A value with no way to print or reflect its bytes: `description` and `Mirror` say only what
/// it is, so a key that reaches a log line, an error message or a debugger's dump shows nothing.
/// Its bytes are reached only inside the Crypto wrappers.
public struct SecretKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public static let byteCount = 32

    private var words: (UInt64, UInt64, UInt64, UInt64)

    /// A key of exactly 32 bytes.
    init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount, "a key is 32 bytes")
        words = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &words) { $0.copyBytes(from: bytes) }
    }

    /// The 32 bytes of an HMAC-SHA256 output, as a key: a per-record key derived without
    /// allocating (`SealedRecordCodec`).
    init(macOutput: ChunkDigest) {
        words = (macOutput.w0, macOutput.w1, macOutput.w2, macOutput.w3)
    }

    /// 32 bytes from OpenSSL's random generator.
    public static func random() -> SecretKey { SecretKey(bytes: SecureRandom.bytes(byteCount)) }

    /// Runs `body` with the key's bytes; the pointer must not escape it.
    func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let copy = words
        return try withUnsafeBytes(of: copy) { (raw) throws(E) -> R in try body(raw) }
    }

    /// The key's bytes, for the one place that must hold them in an array: wrapping a key.
    var bytes: [UInt8] { withBytes { Array($0) } }

    /// Whether two keys are equal, in constant time.
    func matches(_ other: SecretKey) -> Bool {
        withBytes { a in other.withBytes { b in CRYPTO_memcmp(a.baseAddress!, b.baseAddress!, Self.byteCount) == 0 } }
    }

    public var description: String { "SecretKey(32 bytes, not shown)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
}

/// Random bytes from OpenSSL's CSPRNG (seeded by the kernel), for keys, salts and nonces.
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { fill($0) }
        return out
    }

    /// Fills `buffer` with random bytes. A generator that fails cannot be worked around, so it
    /// stops the process rather than hand out predictable keys.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard buffer.count <= Int(Int32.max),
            RAND_bytes(base.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)) == 1
        else { fatalError("OpenSSL's random generator failed") }
    }
}
