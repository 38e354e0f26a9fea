/// Names chunks: SHA-256 of the plain bytes in an unencrypted repository, HMAC-SHA256 under the
/// id key in an encrypted one (docs/FORMAT.md, "Encryption").
///
/// Chosen once per repository (`ChunkStore.makeHasher()`), so the two kinds of id never mix in
/// one store. One per worker: it owns its OpenSSL context for its whole life and allocates
/// nothing per chunk. Index pages, settings-file pieces and disk blocks are all named by it;
/// the zero block keeps its fixed name (`ZeroBlock.digest`) in both, since it is never stored.
public final class ChunkHasher {
    private let plain: SHA256Hasher?
    private let keyed: HMACSHA256?

    /// Plain SHA-256 ids.
    public init() {
        plain = SHA256Hasher()
        keyed = nil
    }

    /// Keyed ids under `idKey` (nil: plain SHA-256).
    init(idKey: SecretKey?) {
        if let idKey {
            plain = nil
            keyed = HMACSHA256(key: idKey)
        } else {
            plain = SHA256Hasher()
            keyed = nil
        }
    }

    /// Whether ids are keyed.
    var isKeyed: Bool { keyed != nil }

    /// The id of a chunk whose plain bytes are `bytes`.
    public func digest(_ bytes: UnsafeRawBufferPointer) -> ChunkDigest {
        if let keyed { return keyed.authenticate(bytes) }
        return plain!.digest(bytes)
    }

    public func digest(_ bytes: [UInt8]) -> ChunkDigest {
        bytes.withUnsafeBytes { digest($0) }
    }
}
