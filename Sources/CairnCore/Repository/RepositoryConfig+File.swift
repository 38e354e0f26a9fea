import Foundation

/// The config on disk: `config` and its copy `config.copy`, each a JSON object carrying a
/// checksum of its own bytes (docs/FORMAT.md, "config").
///
/// Everything in a repository depends on the config (the block size above all), so one flipped
/// byte in it must not take the repository offline: the checksum tells damage from a value, and
/// the copy, written beside it, stands in until `cairn repair` writes the damaged one again.
/// The checksum is a JSON field rather than a trailer so that the file stays plain JSON.
extension RepositoryConfig {
    /// The copy's file name, beside `config`.
    public static let copyName = "config.copy"
    static let checksumPrefix = "sha256:"
    /// What the checksum field holds while the checksum is computed.
    static let checksumPlaceholder = checksumPrefix + String(repeating: "0", count: 64)

    /// The file's bytes: pretty JSON, sorted keys, its checksum filled in.
    func fileBytes() throws(CairnError) -> [UInt8] {
        var unsealed = self
        unsealed.checksum = Self.checksumPlaceholder
        let text = try JSONCoding.encode(unsealed, pretty: true) + "\n"
        let digest = SHA256Hasher().digest(Array(text.utf8))
        return Array(
            text.replacingOccurrences(of: Self.checksumPlaceholder, with: Self.checksumPrefix + digest.hex).utf8)
    }

    /// The primary's key.
    public static let key = "config"

    /// Whether `storage` holds a config or its copy. One listing, which fails (rather than
    /// answering no) when the storage cannot be reached: a missing bucket, refused keys.
    public static func isPresent(in storage: any RepositoryStorage) throws(CairnError) -> Bool {
        let names = try storage.list(prefix: key)
        return names.contains(key) || names.contains(copyName)
    }

    /// Writes `config` and then its copy, each durably and atomically. `createOnly` (a new
    /// repository) refuses to write over a config someone else created meanwhile.
    func write(to storage: any RepositoryStorage, createOnly: Bool = false) throws(CairnError) {
        let bytes = try fileBytes()
        do throws(CairnError) {
            try storage.publish(bytes, as: Self.key, createOnly ? .createOnly : .replace)
        } catch  where error.code == .exists && createOnly {
            throw CairnError(.exists, "\(storage.location) is already a Cairn repository")
        }
        try storage.publish(bytes, as: Self.copyName, .replace)
    }

    /// Reads and checks one config file.
    ///
    /// Damage (bad JSON, a checksum that does not match, a missing field, an impossible value)
    /// throws `.damaged`; a file that is not a Cairn config at all, or one of an unknown format
    /// version, throws `.repository`. Every message names the file and the field.
    static func read(
        _ key: String, from storage: any RepositoryStorage, alsoKnown: Set<String> = []
    ) throws(CairnError) -> RepositoryConfig {
        let path = storage.describe(key)
        let repository = storage.location
        guard let bytes = try storage.readIfPresent(key, limit: 1 << 20) else {
            throw CairnError(.damaged, "the repository config \(path) is missing")
        }
        let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        guard let object else {
            throw CairnError(.damaged, "the repository config \(path) is damaged: it is not a JSON object")
        }
        if let sealed = object["checksum"] as? String {
            guard sealed.hasPrefix(checksumPrefix), sealed.utf8.count == checksumPlaceholder.utf8.count,
                let range = String(decoding: bytes, as: UTF8.self).range(of: sealed)
            else {
                throw CairnError(.damaged, "the repository config \(path) is damaged: its checksum field is malformed")
            }
            var text = String(decoding: bytes, as: UTF8.self)
            text.replaceSubrange(range, with: checksumPlaceholder)
            let actual = checksumPrefix + SHA256Hasher().digest(Array(text.utf8)).hex
            guard actual == sealed else {
                throw CairnError(.damaged, "the repository config \(path) is damaged: its checksum does not match")
            }
        }
        guard object["format"] as? String == formatName else {
            // No checksum vouches for it: a stray JSON file, or a config damaged where it says what it is.
            let code: CairnError.Code = object["checksum"] == nil ? .repository : .damaged
            throw CairnError(
                code,
                "\(repository) is not a Cairn repository (its config file is not a Cairn config)")
        }
        guard let version = object["version"] as? Int else {
            throw CairnError(.damaged, "the repository config \(path) is damaged: it has no format version")
        }
        guard version == currentVersion else {
            throw CairnError(
                .repository,
                "repository \(repository) has format version \(version); this Cairn reads version \(currentVersion) (use a Cairn that knows version \(version))"
            )
        }
        if let listed = object["features"] {
            guard let features = listed as? [String] else {
                throw CairnError(
                    .damaged, "the repository config \(path) is damaged: its features field is not a list of names")
            }
            if let feature = FormatFeature.unknown(in: features, alsoKnown: alsoKnown) {
                throw FormatFeature.refusal(
                    "repository \(repository)", feature: feature, code: .repository)
            }
        }
        let config = try JSONCoding.decode(RepositoryConfig.self, from: bytes, what: "the repository config \(path)")
        do throws(CairnError) {
            try validate(blockSize: config.blockSize)
        } catch {
            throw CairnError(.damaged, "the repository config \(path) is damaged: its \(error.message)")
        }
        guard config.packSize > 0, (1...19).contains(config.compressionLevel), config.compression == "zstd" else {
            throw CairnError(
                .damaged,
                "the repository config \(path) is damaged: compression \(config.compression) level \(config.compressionLevel), pack size \(config.packSize) are not values Cairn writes"
            )
        }
        return config
    }
}

/// Which config file a repository was opened with, and what is wrong with the other.
public struct ConfigHealth: Sendable, Equatable {
    /// Set when `config` was damaged and its copy was used: what was wrong with it.
    public var primaryDamage: String?
    /// Set when the copy is missing, damaged or differs from `config`.
    public var copyProblem: String?
    /// A config written before configs had a checksum and a copy (nothing is wrong with it).
    public var unsealed = false

    public var isHealthy: Bool { primaryDamage == nil && copyProblem == nil && !unsealed }

    /// One line for a person, or nil when all is well.
    public var warning: String? {
        if let primaryDamage {
            return
                "\(primaryDamage); using its copy \(RepositoryConfig.copyName) (run `cairn repair` to write it again)"
        }
        if unsealed {
            return
                "the repository config has no checksum and no copy (an older Cairn made it): run `cairn repair` to add them"
        }
        if let copyProblem { return "\(copyProblem) (run `cairn repair` to write it again)" }
        return nil
    }
}
