import Foundation

/// A host key: 32 random bytes kept in a file on one hypervisor host (mode 0600), opening one
/// key file of one repository (docs/FORMAT.md, "Host keys").
///
/// Why it exists: a nightly backup from cron or a systemd timer runs unattended, so its
/// passphrase sits in a file on the host anyway (`CAIRN_PASSWORD_FILE`), and scrypt then spends
/// about 0.4 s and 128 MiB on every command to protect a secret the host holds in the clear. A
/// host key is as strong as the best passphrase (256 random bits) without the stretching, and it
/// is revoked on its own (`cairn key remove ID`) when the host is retired or lost, without
/// changing anyone's passphrase. It is not carried in archive labels: a tape restores with a
/// passphrase, years after the host is gone. Proxmox Backup Server's key files without a KDF
/// (`--kdf none`) serve the same purpose.
public struct HostKey: Sendable {
    /// The repository (config `id`, hex) whose key file this opens.
    public let repository: String
    /// The key file in the repository's `keys/` that this opens.
    public let keyID: String
    let secret: SecretKey

    public static let formatName = "cairn-host-key"
    public static let currentVersion = 1
    /// Far above a real host key file (about 200 bytes).
    static let maxFileSize = 4096

    /// The file on the host: JSON, sorted keys, a final newline.
    struct Stored: Codable {
        var format: String
        var version: Int
        var repository: String
        var key: String
        var created: String
        /// 64 hex digits.
        var secret: String
    }

    /// A new random host key for `repository`'s key `keyID`.
    static func make(repository: String, keyID: String) -> HostKey {
        HostKey(repository: repository, keyID: keyID, secret: .random())
    }

    /// Reads the host key file at `path`, refusing one that others than its owner can read (as
    /// ssh refuses a private key: a secret anyone on the host can copy protects nothing).
    public static func read(_ path: String) throws(CairnError) -> HostKey {
        let file: File
        do throws(CairnError) {
            file = try File.open(path, .readOnly)
        } catch {
            throw CairnError(.usage, "cannot read the host key \(path): \(error.message)", cause: error.cause)
        }
        let mode = try file.permissions()
        guard mode & 0o077 == 0 else {
            throw CairnError(
                .usage,
                "the host key \(path) is readable by others (mode \(String(mode, radix: 8))): `chmod 600 \(path)`, and consider it exposed"
            )
        }
        let size = try file.size()
        guard size <= UInt64(maxFileSize) else {
            throw CairnError(.usage, "\(path) is \(size) bytes: not a Cairn host key")
        }
        return try parse(try file.readBytes(count: Int(size), at: 0), name: path)
    }

    /// Checks a host key file's bytes; `name` is used in messages.
    static func parse(_ bytes: [UInt8], name: String) throws(CairnError) -> HostKey {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            object["format"] as? String == formatName
        else { throw CairnError(.usage, "\(name) is not a Cairn host key") }
        guard object["version"] as? Int == currentVersion else {
            throw CairnError(
                .usage,
                "the host key \(name) has version \(object["version"].map { "\($0)" } ?? "none"); this Cairn reads version \(currentVersion)"
            )
        }
        let stored = try JSONCoding.decode(Stored.self, from: bytes, what: "host key \(name)")
        guard Hex.decode(stored.repository, count: 16) != nil, Hex.decode(stored.key, count: KeyFile.idSize) != nil,
            let secret = Hex.decode(stored.secret, count: SecretKey.byteCount)
        else { throw CairnError(.usage, "the host key \(name) is damaged: a hex field has the wrong length") }
        return HostKey(
            repository: stored.repository.lowercased(), keyID: stored.key.lowercased(), secret: SecretKey(bytes: secret)
        )
    }

    /// Writes the host key to `path`: create-only, mode 0600, durable.
    public func write(to path: String) throws(CairnError) {
        let stored = Stored(
            format: Self.formatName, version: Self.currentVersion, repository: repository, key: keyID,
            created: Timestamp.now().description, secret: Hex.encode(secret.bytes))
        let bytes = Array((try JSONCoding.encode(stored, pretty: true) + "\n").utf8)
        let file: File
        do throws(CairnError) {
            file = try File.open(path, .createNew)
        } catch {
            throw CairnError(.exists, "cannot create the host key \(path): \(error.message)", cause: error.cause)
        }
        try file.setPermissions(0o600)
        try file.write(bytes, at: 0)
        try file.sync()
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }
}

/// What opens an encrypted repository: a person's passphrase, or a host's key.
public enum KeySecret: Sendable {
    case passphrase([UInt8])
    case hostKey(HostKey)
}
