import Foundation

/// The repository's `config` file: format version and the choices fixed at `cairn init`.
public struct RepositoryConfig: Codable, Sendable, Equatable {
    /// Always `cairn-repository`: tells a stray JSON file from a repository's config.
    public var format: String
    /// On-disk format version. A Cairn that does not know it refuses the repository.
    public var version: Int
    /// 16 random bytes in hex, to tell repositories apart (archives record it).
    public var id: String
    /// Bytes per block: a power of two from 4 KiB to 4 MiB.
    public var blockSize: Int
    public var compression: String
    public var compressionLevel: Int
    /// Packs are closed once they reach this many bytes.
    public var packSize: Int
    public var created: String
    /// The format features a reader must understand (`FormatFeature`): `["frames"]` today.
    /// Absent in configs written before the list existed, which are marked on their first write
    /// (`Repository+Features.swift`).
    public var features: [String]?
    /// Set in an encrypted repository (feature `encryption`): how it is encrypted and which
    /// master key its key files must wrap. Absent in an unencrypted one.
    public var encryption: EncryptionSettings?
    /// `sha256:HEX` of the file's bytes with this field's HEX as zeros; absent in configs
    /// written before it existed (`RepositoryConfig+File.swift`).
    public var checksum: String?

    public static let currentVersion = 1
    public static let formatName = "cairn-repository"
    public static let defaultBlockSize = 64 << 10
    public static let blockSizeRange = (4 << 10)...(4 << 20)
    /// zstd level 2, tuned for 2 MiB frames (`ZstdCompressor`), chosen by measurement
    /// (docs/ARCHITECTURE.md, "Compression level"): 7% less stored than level 1 with frames for
    /// about 25% more CPU on the first night; level 3 would store another 2% less for 30% more.
    public static let defaultCompressionLevel = 2
    public static let defaultPackSize = 32 << 20

    public static func new(blockSize: Int, compressionLevel: Int) -> RepositoryConfig {
        RepositoryConfig(
            format: formatName, version: currentVersion, id: PackID.random().hex, blockSize: blockSize,
            compression: "zstd", compressionLevel: compressionLevel, packSize: defaultPackSize,
            created: Timestamp.now().description, features: FormatFeature.written)
    }

    /// Adds `features` the config does not declare yet, in order.
    mutating func declare(_ features: [String]) {
        for feature in features where !(self.features ?? []).contains(feature) {
            self.features = (self.features ?? []) + [feature]
        }
    }

    /// Equal but for the checksum.
    func sameSettings(as other: RepositoryConfig) -> Bool {
        var a = self
        var b = other
        a.checksum = nil
        b.checksum = nil
        return a == b
    }

    /// How an encrypted repository is encrypted (docs/FORMAT.md, "Encryption").
    public struct EncryptionSettings: Codable, Sendable, Equatable {
        /// The record and metadata AEAD: `aes-256-gcm`.
        public var cipher: String
        /// How chunk ids are made: `hmac-sha256` (keyed with the id key).
        public var chunkIDs: String
        /// The master key's fingerprint (`MasterKey.fingerprint`, hex): every key file must carry it.
        public var fingerprint: String

        public static func current(fingerprint: String) -> EncryptionSettings {
            EncryptionSettings(cipher: KeyFile.cipherName, chunkIDs: "hmac-sha256", fingerprint: fingerprint)
        }
    }

    public static func validate(blockSize: Int) throws(CairnError) {
        guard blockSizeRange.contains(blockSize), blockSize.nonzeroBitCount == 1 else {
            throw CairnError(.usage, "block size \(blockSize) is not a power of two from 4 KiB to 4 MiB")
        }
    }
}
