import CCrypto

/// AES-256-GCM through libcrypto's EVP interface, with one context reused for every message.
///
/// Nonces are 12 bytes and tags 16, the only sizes Cairn writes. A sealed message is the
/// ciphertext (as long as the plain text) followed by the tag. Creating the context (and
/// fetching the cipher) costs more than sealing a small record, so each worker owns one sealer
/// for its whole life; a call redoes only the key schedule. Not safe to share between threads.
public final class AESGCM {
    public static let keySize = SecretKey.byteCount
    public static let nonceSize = 12
    public static let tagSize = 16

    private let context: OpaquePointer

    public init() {
        guard let context = cairn_aes256gcm_new() else {
            fatalError("OpenSSL could not create an AES-256-GCM context (out of memory, or no default provider)")
        }
        self.context = context
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    /// Seals `plain` into `sealed`, which must be exactly `plain.count + tagSize` bytes (it may
    /// begin at `plain`'s address: encryption in place). `nonce` is 12 bytes.
    public func seal(
        _ plain: UnsafeRawBufferPointer, key: SecretKey, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        into sealed: UnsafeMutableRawBufferPointer
    ) {
        precondition(nonce.count == Self.nonceSize && sealed.count == plain.count + Self.tagSize)
        let out = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let ok = key.withBytes { k in
            cairn_aes256gcm_seal(
                context, bytes(k, or: out), bytes(nonce, or: out), bytes(aad, or: out), aad.count,
                bytes(plain, or: out), plain.count, out, out + plain.count)
        }
        guard ok == 1 else { fatalError("OpenSSL's AES-256-GCM failed to seal \(plain.count) bytes") }
    }

    /// Opens `sealed` (ciphertext then tag) into `plain`, exactly `sealed.count - tagSize`
    /// bytes (it may begin at `sealed`'s address). False when the tag does not hold: the key,
    /// nonce, associated data or any byte differs from what was sealed; `plain` is then garbage.
    public func open(
        _ sealed: UnsafeRawBufferPointer, key: SecretKey, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        into plain: UnsafeMutableRawBufferPointer
    ) -> Bool {
        precondition(nonce.count == Self.nonceSize)
        guard sealed.count >= Self.tagSize, plain.count == sealed.count - Self.tagSize else { return false }
        let input = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let result = key.withBytes { k in
            cairn_aes256gcm_open(
                context, bytes(k, or: input), bytes(nonce, or: input), bytes(aad, or: input), aad.count, input,
                plain.count, input + plain.count,
                plain.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafeMutablePointer(mutating: input))
        }
        guard result >= 0 else { fatalError("OpenSSL's AES-256-GCM failed to open \(sealed.count) bytes") }
        return result == 1
    }

    /// `plain` sealed: ciphertext then tag.
    public func seal(_ plain: [UInt8], key: SecretKey, nonce: [UInt8], aad: [UInt8] = []) -> [UInt8] {
        var sealed = [UInt8](repeating: 0, count: plain.count + Self.tagSize)
        plain.withUnsafeBytes { p in
            nonce.withUnsafeBytes { n in
                aad.withUnsafeBytes { a in
                    sealed.withUnsafeMutableBytes { seal(p, key: key, nonce: n, aad: a, into: $0) }
                }
            }
        }
        return sealed
    }

    /// The plain bytes of `sealed`, or nil when its tag does not hold.
    public func open(_ sealed: [UInt8], key: SecretKey, nonce: [UInt8], aad: [UInt8] = []) -> [UInt8]? {
        guard sealed.count >= Self.tagSize else { return nil }
        var plain = [UInt8](repeating: 0, count: sealed.count - Self.tagSize)
        let ok = sealed.withUnsafeBytes { s in
            nonce.withUnsafeBytes { n in
                aad.withUnsafeBytes { a in
                    plain.withUnsafeMutableBytes { open(s, key: key, nonce: n, aad: a, into: $0) }
                }
            }
        }
        return ok ? plain : nil
    }
}

/// A buffer's address for OpenSSL, which wants one even for zero bytes (Swift's empty buffers
/// have none): `fallback`, never read, stands in then.
func bytes(_ buffer: UnsafeRawBufferPointer, or fallback: UnsafePointer<UInt8>) -> UnsafePointer<UInt8> {
    buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? fallback
}

func bytes(_ buffer: UnsafeRawBufferPointer, or fallback: UnsafeMutablePointer<UInt8>) -> UnsafePointer<UInt8> {
    bytes(buffer, or: UnsafePointer(fallback))
}
