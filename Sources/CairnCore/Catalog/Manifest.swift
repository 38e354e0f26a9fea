/// A restore point: what was backed up, when, and the root of each disk's index tree.
///
/// Stored as `points/GROUP/TIME.manifest`: one line of JSON, then `sha256 HEX` of that line
/// (docs/FORMAT.md, "Manifests"). Written last, after every chunk it names is durable.
public struct Manifest: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public var format: Int
    public var id: RestorePointID
    public var group: String
    public var time: Timestamp
    /// The Cairn that wrote it (`cairn 0.1.0`).
    public var tool: String
    /// The repository's id, so an imported restore point can be told from a native one.
    public var repository: String
    public var blockSize: Int
    public var disks: [DiskEntry]
    public var stats: BackupStats
    /// The restore point whose index the backup walked beside; informational only: this restore
    /// point does not depend on it.
    public var previous: RestorePointID?
    /// The VM's settings files kept with the restore point (absent when none were given).
    public var settings: [SettingsFile]?
    /// For `cairn backup --domain`: the libvirt domain the disks belong to (absent otherwise).
    public var domain: DomainRecord? = nil

    public struct DiskEntry: Codable, Sendable, Equatable {
        /// The image's file name.
        public var name: String
        /// Guest bytes.
        public var size: UInt64
        public var blockCount: UInt64
        /// Digest of the index tree's root page.
        public var root: ChunkDigest
        public var depth: Int
        /// Blocks that are all zero (holes, unallocated clusters or zero data).
        public var zeroBlocks: UInt64
        /// Blocks whose digest differs from the previous restore point's at the same offset.
        public var changedBlocks: UInt64
        public var source: SourceImageInfo
        /// How the disk was read: `file` (an image file or device) or `nbd` (an NBD export).
        /// Absent in manifests written before changed-block tracking.
        public var sourceKind: DiskSourceKind? = nil
        /// Bytes read from this disk.
        public var bytesRead: UInt64? = nil
        /// Bytes of this disk that a trusted dirty bitmap marked clean, so they were not read.
        public var bytesSkipped: UInt64? = nil
        /// Changed-block tracking, when it was asked for.
        public var cbt: ChangeTracking? = nil
    }

    /// What changed-block tracking did for one disk (docs/FORMAT.md, "Changed-block tracking").
    public struct ChangeTracking: Codable, Sendable, Equatable {
        /// True if clean blocks were taken from the previous restore point without being read.
        public var used: Bool
        /// The bitmap that was (or would have been) read.
        public var bitmap: String?
        /// The bitmap started at this restore point's moment: a later backup may trust it
        /// against this restore point.
        public var started: String?
        /// Why the bitmap was not used (the disk was read in full).
        public var reason: String?
        /// Nights read with a bitmap since the last full read (0 for a full read).
        public var nightsSinceFullRead: Int
        /// Clean blocks read anyway and checked against the previous restore point.
        public var sampledBlocks: UInt64?

        public init(
            used: Bool, bitmap: String?, started: String?, reason: String?, nightsSinceFullRead: Int,
            sampledBlocks: UInt64? = nil
        ) {
            self.used = used
            self.bitmap = bitmap
            self.started = started
            self.reason = reason
            self.nightsSinceFullRead = nightsSinceFullRead
            self.sampledBlocks = sampledBlocks
        }
    }

    public struct BackupStats: Codable, Sendable, Equatable {
        /// Bytes read from the images (holes and unallocated ranges are not read).
        public var bytesRead: UInt64
        /// Uncompressed bytes of chunks that were new to the repository.
        public var bytesNew: UInt64
        /// Bytes added to packs (compressed records, index pages included).
        public var bytesStored: UInt64
        public var chunksNew: Int
        public var seconds: Double
    }

    public func disk(named name: String) -> DiskEntry? { disks.first { $0.name == name } }

    public var totalSize: UInt64 { disks.reduce(0) { $0 + $1.size } }

    func encoded() throws(CairnError) -> [UInt8] {
        let line = try JSONCoding.encode(self)
        let digest = SHA256Hasher().digest(Array(line.utf8))
        return Array("\(line)\nsha256 \(digest.hex)\n".utf8)
    }

    static func decode(_ bytes: [UInt8], path: String) throws(CairnError) -> Manifest {
        guard let newline = bytes.firstIndex(of: 10) else {
            throw CairnError(.damaged, "manifest \(path) is damaged: no checksum line")
        }
        let line = Array(bytes[..<newline])
        let rest = String(decoding: bytes[(newline + 1)...], as: UTF8.self).trimmingSpaces
        let actual = SHA256Hasher().digest(line)
        guard rest.hasPrefix("sha256 "), ChunkDigest(hex: String(rest.dropFirst(7))) == actual else {
            throw CairnError(.damaged, "manifest \(path) is damaged: its checksum does not match")
        }
        let manifest = try JSONCoding.decode(Manifest.self, from: line, what: "manifest \(path)")
        guard manifest.format == currentFormat else {
            throw CairnError(
                .repository, "manifest \(path) has format \(manifest.format); this Cairn reads format \(currentFormat)")
        }
        return manifest
    }
}
