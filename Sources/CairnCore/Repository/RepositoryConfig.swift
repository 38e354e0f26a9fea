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

    /// Equal but for the checksum.
    func sameSettings(as other: RepositoryConfig) -> Bool {
        var a = self
        var b = other
        a.checksum = nil
        b.checksum = nil
        return a == b
    }

    public static func validate(blockSize: Int) throws(CairnError) {
        guard blockSizeRange.contains(blockSize), blockSize.nonzeroBitCount == 1 else {
            throw CairnError(.usage, "block size \(blockSize) is not a power of two from 4 KiB to 4 MiB")
        }
    }
}
