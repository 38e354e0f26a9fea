/// Seals an encrypted repository's metadata files (manifests, verification records): what would
/// otherwise show VM names, disk names and sizes, times and settings in the clear
/// (docs/FORMAT.md, "Sealed metadata").
///
/// A sealed file is `"CAIRNSL1"` ‖ salt (32 random bytes) ‖ AES-256-GCM ciphertext ‖ tag (16),
/// under the key HMAC-SHA256(meta key, "cairn/v1/meta" ‖ salt) with a zero nonce (each key
/// seals one file). The associated data is the magic and the file's name in the repository
/// (`points/GROUP/TIME.manifest`), so a file copied or renamed over another restore point's
/// does not open: a swapped restore point is detected. Metadata is small and written rarely, so
/// each call makes its own contexts; the data path uses `SealedRecordCodec`.
struct MetadataSeal: Sendable {
    static let magic = Array("CAIRNSL1".utf8)
    static let keyPurpose = Array("cairn/v1/meta".utf8)
    static let saltSize = 32
    static let overhead = magic.count + saltSize + AESGCM.tagSize

    private let metaKey: SecretKey

    init(keys: MasterKey) { metaKey = keys.metaKey }

    /// `plain` sealed as the file `name` (a key relative to the repository).
    func seal(_ plain: [UInt8], name: String) -> [UInt8] {
        let salt = SecureRandom.bytes(Self.saltSize)
        let sealed = AESGCM().seal(plain, key: key(salt), nonce: Self.nonce, aad: Self.magic + Array(name.utf8))
        return Self.magic + salt + sealed
    }

    /// The plain bytes of the sealed file `name`; `.damaged` if it is not sealed, was altered,
    /// or was sealed as another file.
    func open(_ bytes: [UInt8], name: String) throws(CairnError) -> [UInt8] {
        guard bytes.count >= Self.overhead, Array(bytes[0..<Self.magic.count]) == Self.magic else {
            throw CairnError(.damaged, "\(name) is damaged: it is not a sealed file of an encrypted repository")
        }
        let salt = Array(bytes[Self.magic.count..<(Self.magic.count + Self.saltSize)])
        let sealed = Array(bytes[(Self.magic.count + Self.saltSize)...])
        guard let plain = AESGCM().open(sealed, key: key(salt), nonce: Self.nonce, aad: Self.magic + Array(name.utf8))
        else {
            throw CairnError(
                .damaged,
                "\(name) is damaged: it fails authentication (altered, moved from another restore point, or not sealed with this repository's key)"
            )
        }
        return plain
    }

    static let namePurpose = Array("cairn/v1/name".utf8)

    /// The name an object is stored under in place of `text` (a group, or a group and a time):
    /// the first 16 bytes of HMAC-SHA256(meta key, "cairn/v1/name" ‖ text), in hex. The same
    /// text always gives the same name, so a group's objects are found without a listing of
    /// names, but a name says nothing of the text to someone without the key.
    func hiddenName(of text: String) -> String {
        String(HMACSHA256(key: metaKey).authenticate(Self.namePurpose + Array(text.utf8)).hex.prefix(32))
    }

    private static let nonce = [UInt8](repeating: 0, count: AESGCM.nonceSize)

    private func key(_ salt: [UInt8]) -> SecretKey {
        SecretKey(macOutput: HMACSHA256(key: metaKey).authenticate(Self.keyPurpose + salt))
    }
}
