/// An encrypted repository's master key and the keys derived from it (docs/FORMAT.md, "Keys").
///
/// The master key is 32 random bytes made at `cairn init --encryption` and never changed: every
/// key file wraps this one key under its own passphrase. Each use has its own key, derived with
/// HKDF-SHA256 (salt: the repository id's 16 bytes; info: the purpose), so a weakness in one use
/// says nothing about another:
///
///     id key     "cairn/v1/id"     HMAC-SHA256 chunk ids
///     data key   "cairn/v1/data"   sealing records (packs, archives)
///     meta key   "cairn/v1/meta"   sealing manifests, index segments, catalogs; the fingerprint
///
/// The fingerprint, the first 16 bytes of HMAC-SHA256(meta key, "cairn key fingerprint"), names
/// the master key without revealing it: every key file of a repository carries the same one,
/// and the config records it.
public struct MasterKey: Sendable {
    let master: SecretKey
    let idKey: SecretKey
    let dataKey: SecretKey
    let metaKey: SecretKey
    /// 16 bytes, the same in every key file of the repository.
    public let fingerprint: [UInt8]

    static let fingerprintMessage = Array("cairn key fingerprint".utf8)

    /// The keys of `master` in the repository whose id is `repositoryID` (16 bytes).
    init(master: SecretKey, repositoryID: [UInt8]) {
        self.master = master
        idKey = HKDF.key(from: master, salt: repositoryID, purpose: "cairn/v1/id")
        dataKey = HKDF.key(from: master, salt: repositoryID, purpose: "cairn/v1/data")
        metaKey = HKDF.key(from: master, salt: repositoryID, purpose: "cairn/v1/meta")
        fingerprint = Array(HMACSHA256(key: metaKey).authenticate(Self.fingerprintMessage).bytes.prefix(16))
    }

    /// A new random master key for the repository `repositoryID`.
    static func generate(repositoryID: [UInt8]) -> MasterKey {
        MasterKey(master: .random(), repositoryID: repositoryID)
    }

    public var fingerprintHex: String { Hex.encode(fingerprint) }
}
