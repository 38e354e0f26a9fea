import Foundation

/// One passphrase's copy of the master key, or one host key's: a file in the repository's
/// `keys/` directory; passphrase keys also go in every archive label (docs/FORMAT.md, "Key
/// files").
///
/// A passphrase is stretched by scrypt with the file's own salt into a key-encrypting key,
/// which seals the 32-byte master key with AES-256-GCM. A host key (`HostKey`: 32 random bytes
/// kept on one host, for unattended runs) needs no stretching: its key-encrypting key is
/// HKDF-SHA256 of those bytes with the salt, and its file says `hkdf-sha256` with N, r and p 0. The associated data binds the seal to
/// everything that decides how to open it, so that no field can be swapped or downgraded
/// unnoticed:
///
///     "cairn-key-v1" (12) | repository id (16) | key id (8) | N (u64 LE) | r (u32 LE) |
///     p (u32 LE) | salt (32) | fingerprint (16)                                  = 100 bytes
///
/// `created` and `hint` are for people and are not authenticated.
public struct KeyFile: Codable, Sendable, Equatable {
    /// Always `cairn-key`.
    public var format: String
    public var version: Int
    /// The repository's id (config `id`, 32 hex digits).
    public var repository: String
    /// 16 hex digits; also the file's name in `keys/`.
    public var id: String
    public var created: String
    /// Whose passphrase this is, in the words of whoever added it ("laptop", "offsite safe").
    public var hint: String?
    public var kdf: KDF
    /// Always `aes-256-gcm`.
    public var cipher: String
    /// 12 bytes in hex.
    public var nonce: String
    /// The sealed master key, 32 bytes and the 16-byte tag, in hex.
    public var wrapped: String
    /// The master key's fingerprint (`MasterKey.fingerprint`), in hex.
    public var fingerprint: String

    public struct KDF: Codable, Sendable, Equatable {
        /// `scrypt` for a passphrase, `hkdf-sha256` for a host key.
        public var name: String
        public var n: UInt64
        public var r: UInt32
        public var p: UInt32
        /// 32 bytes in hex.
        public var salt: String

        var parameters: ScryptParameters { ScryptParameters(n: n, r: r, p: p) }
    }

    /// Whether a host key opens this file (`hkdf-sha256`), not a passphrase.
    public var isHostKey: Bool { kdf.name == Self.hostKDFName }

    public static let formatName = "cairn-key"
    public static let currentVersion = 1
    public static let cipherName = "aes-256-gcm"
    public static let passphraseKDFName = "scrypt"
    public static let hostKDFName = "hkdf-sha256"
    /// The HKDF info of a host key's key-encrypting key.
    static let hostKeyInfo = Array("cairn/v1/host-key".utf8)
    static let saltSize = 32
    static let idSize = 8
    static let aadPrefix = Array("cairn-key-v1".utf8)
    /// Far above any real key file (about 600 bytes): the limit on what is read.
    static let maxFileSize = 64 << 10

    /// `master` wrapped under `passphrase` for the repository `repositoryID` (hex).
    /// `salt`, `nonce` and `id` are random unless given (the worked example in docs/FORMAT.md).
    static func wrap(
        _ master: MasterKey, repositoryID: String, passphrase: [UInt8], parameters: ScryptParameters = .standard,
        hint: String? = nil, salt: [UInt8] = SecureRandom.bytes(KeyFile.saltSize),
        nonce: [UInt8] = SecureRandom.bytes(AESGCM.nonceSize), id: [UInt8] = SecureRandom.bytes(KeyFile.idSize)
    ) throws(CairnError) -> KeyFile {
        var file = KeyFile(
            format: formatName, version: currentVersion, repository: repositoryID,
            id: Hex.encode(id), created: Timestamp.now().description, hint: hint,
            kdf: KDF(name: "scrypt", n: parameters.n, r: parameters.r, p: parameters.p, salt: Hex.encode(salt)),
            cipher: cipherName, nonce: Hex.encode(nonce), wrapped: "", fingerprint: master.fingerprintHex)
        let kek = try file.keyEncryptingKey(passphrase)
        let aad = try file.associatedData()
        file.wrapped = Hex.encode(AESGCM().seal(master.master.bytes, key: kek, nonce: nonce, aad: aad))
        return file
    }

    /// `master` wrapped under the host key `secret` (no KDF: the secret is 32 random bytes).
    static func wrap(
        _ master: MasterKey, repositoryID: String, hostSecret secret: SecretKey, hint: String? = nil,
        salt: [UInt8] = SecureRandom.bytes(KeyFile.saltSize), nonce: [UInt8] = SecureRandom.bytes(AESGCM.nonceSize),
        id: [UInt8] = SecureRandom.bytes(KeyFile.idSize)
    ) throws(CairnError) -> KeyFile {
        var file = KeyFile(
            format: formatName, version: currentVersion, repository: repositoryID,
            id: Hex.encode(id), created: Timestamp.now().description, hint: hint,
            kdf: KDF(name: hostKDFName, n: 0, r: 0, p: 0, salt: Hex.encode(salt)),
            cipher: cipherName, nonce: Hex.encode(nonce), wrapped: "", fingerprint: master.fingerprintHex)
        let kek = try file.hostKeyEncryptingKey(secret)
        let aad = try file.associatedData()
        file.wrapped = Hex.encode(AESGCM().seal(master.master.bytes, key: kek, nonce: nonce, aad: aad))
        return file
    }

    /// The master key, or nil if `passphrase` is not this file's (or the file was altered: the
    /// two look the same, by design). Throws only for a file that cannot be tried at all.
    func unwrap(_ passphrase: [UInt8]) throws(CairnError) -> MasterKey? {
        guard !isHostKey else { return nil }
        return try open(with: try keyEncryptingKey(passphrase))
    }

    /// The master key, or nil if `secret` is not this host key file's (or the file was altered).
    func unwrap(hostSecret secret: SecretKey) throws(CairnError) -> MasterKey? {
        guard isHostKey else { return nil }
        return try open(with: try hostKeyEncryptingKey(secret))
    }

    private func open(with kek: SecretKey) throws(CairnError) -> MasterKey? {
        let aad = try associatedData()
        guard let nonce = Hex.decode(self.nonce, count: AESGCM.nonceSize),
            let sealed = Hex.decode(self.wrapped, count: SecretKey.byteCount + AESGCM.tagSize),
            let repositoryID = Hex.decode(self.repository, count: 16),
            let plain = AESGCM().open(sealed, key: kek, nonce: nonce, aad: aad)
        else { return nil }
        let master = MasterKey(master: SecretKey(bytes: plain), repositoryID: repositoryID)
        // The fingerprint is in the associated data, so this holds for every file Cairn wrote.
        guard master.fingerprintHex == fingerprint.lowercased() else { return nil }
        return master
    }

    /// The key-encrypting key: scrypt of the passphrase with this file's salt and parameters.
    private func keyEncryptingKey(_ passphrase: [UInt8]) throws(CairnError) -> SecretKey {
        guard let salt = Hex.decode(kdf.salt, count: Self.saltSize) else {
            throw CairnError(.damaged, "key file \(id) is damaged: its salt is not 32 bytes of hex")
        }
        var derived = try Scrypt.derive(
            passphrase: passphrase, salt: salt, parameters: kdf.parameters, count: SecretKey.byteCount)
        defer { for i in derived.indices { derived[i] = 0 } }
        return SecretKey(bytes: derived)
    }

    /// A host key's key-encrypting key: HKDF-SHA256 of the secret, this file's salt, and the
    /// info `cairn/v1/host-key`.
    private func hostKeyEncryptingKey(_ secret: SecretKey) throws(CairnError) -> SecretKey {
        guard let salt = Hex.decode(kdf.salt, count: Self.saltSize) else {
            throw CairnError(.damaged, "key file \(id) is damaged: its salt is not 32 bytes of hex")
        }
        return SecretKey(
            bytes: HKDF.sha256(key: secret.bytes, salt: salt, info: Self.hostKeyInfo, count: SecretKey.byteCount))
    }

    /// The 100 bytes the seal authenticates (see the type's documentation).
    func associatedData() throws(CairnError) -> [UInt8] {
        guard let repositoryID = Hex.decode(repository, count: 16), let keyID = Hex.decode(id, count: Self.idSize),
            let salt = Hex.decode(kdf.salt, count: Self.saltSize),
            let fingerprintBytes = Hex.decode(fingerprint, count: 16)
        else { throw CairnError(.damaged, "key file \(id) is damaged: an id, salt or fingerprint is malformed") }
        var writer = ByteWriter(capacity: 100)
        writer.append(Self.aadPrefix)
        writer.append(repositoryID)
        writer.append(keyID)
        writer.le(kdf.n)
        writer.le(kdf.r)
        writer.le(kdf.p)
        writer.append(salt)
        writer.append(fingerprintBytes)
        return writer.bytes
    }

    /// The file's bytes: pretty JSON with sorted keys and a final newline.
    public func fileBytes() throws(CairnError) -> [UInt8] {
        Array((try JSONCoding.encode(self, pretty: true) + "\n").utf8)
    }

    /// What decides whether the rest can be read at all; every other field may be missing here.
    private struct Header: Decodable {
        var format: String?
        var version: Int?

        private enum CodingKeys: String, CodingKey { case format, version }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            format = try? container.decodeIfPresent(String.self, forKey: .format)
            version = try? container.decodeIfPresent(Int.self, forKey: .version)
        }
    }

    /// Reads and checks a key file's bytes; `name` ("keys/ID", or a path) is used in messages.
    /// Anything malformed is `.damaged`; a key file of an unknown version is `.repository`.
    public static func parse(_ bytes: [UInt8], name: String) throws(CairnError) -> KeyFile {
        // The format and version are read by the same decoder as the rest, never by a second
        // JSON parser: given a field twice, two parsers may each keep a different copy, and a
        // file would pass the check with one value and be written back with the other.
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(bytes)) else {
            throw CairnError(.damaged, "key file \(name) is damaged: it is not a JSON object (truncated?)")
        }
        guard header.format == formatName else {
            throw CairnError(.damaged, "\(name) is not a Cairn key file")
        }
        guard header.version == currentVersion else {
            throw CairnError(
                .repository,
                "key file \(name) has version \(header.version.map { "\($0)" } ?? "none"); this Cairn reads version \(currentVersion)"
            )
        }
        let file = try JSONCoding.decode(KeyFile.self, from: bytes, what: "key file \(name)")
        guard [passphraseKDFName, hostKDFName].contains(file.kdf.name), file.cipher == cipherName else {
            throw CairnError(
                .damaged,
                "key file \(name) names kdf \(file.kdf.name) and cipher \(file.cipher); Cairn writes scrypt or hkdf-sha256 and \(cipherName)"
            )
        }
        if file.isHostKey {
            guard file.kdf.n == 0, file.kdf.r == 0, file.kdf.p == 0 else {
                throw CairnError(.damaged, "key file \(name) is damaged: a host key's n, r and p are 0")
            }
        } else if let problem = file.kdf.parameters.problem {
            throw CairnError(.damaged, "key file \(name) is refused: \(problem)")
        }
        guard Hex.decode(file.repository, count: 16) != nil, Hex.decode(file.id, count: idSize) != nil,
            Hex.decode(file.kdf.salt, count: saltSize) != nil, Hex.decode(file.nonce, count: AESGCM.nonceSize) != nil,
            Hex.decode(file.wrapped, count: SecretKey.byteCount + AESGCM.tagSize) != nil,
            Hex.decode(file.fingerprint, count: 16) != nil
        else {
            throw CairnError(.damaged, "key file \(name) is damaged: a hex field has the wrong length")
        }
        return file
    }
}
