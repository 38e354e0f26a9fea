import CCrypto

/// HMAC-SHA256 (RFC 2104) through libcrypto's EVP_MAC, keyed once and reused for every message.
///
/// The keyed chunk ids of an encrypted repository: the same 32 bytes wide as a SHA-256
/// `ChunkDigest`, and about as fast (two extra compression blocks per message). Not safe to
/// share between threads: each worker owns one.
public final class HMACSHA256 {
    private let context: OpaquePointer

    /// A MAC under `key`.
    public convenience init(key: SecretKey) {
        self.init(keyBytes: key.bytes)
    }

    /// A MAC under a key of any length (RFC 4231's test keys are 20 and 131 bytes).
    public init(keyBytes: [UInt8]) {
        let context = keyBytes.withUnsafeBytes { k in
            var none: UInt8 = 0
            return withUnsafePointer(to: &none) { cairn_hmac_sha256_new(bytes(k, or: $0), k.count) }
        }
        guard let context else { fatalError("OpenSSL could not create an HMAC-SHA256 context") }
        self.context = context
    }

    deinit { EVP_MAC_CTX_free(context) }

    /// The MAC of `message`.
    public func authenticate(_ message: UnsafeRawBufferPointer) -> ChunkDigest {
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let ok = withUnsafeMutableBytes(of: &out) { raw in
            let target = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return cairn_hmac_sha256(context, bytes(message, or: target), message.count, target)
        }
        guard ok == 1 else { fatalError("OpenSSL's HMAC-SHA256 failed on \(message.count) bytes") }
        return ChunkDigest(w0: out.0, w1: out.1, w2: out.2, w3: out.3)
    }

    public func authenticate(_ message: [UInt8]) -> ChunkDigest {
        message.withUnsafeBytes { authenticate($0) }
    }
}
