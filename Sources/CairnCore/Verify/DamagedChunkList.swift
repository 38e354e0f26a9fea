/// The chunks verify found damaged, by location: `verify/damaged.json`.
///
/// A backup treats a chunk whose index location is listed here as absent and stores it again
/// (also when the block is unchanged since the previous restore point). The new copy goes into a
/// newer index segment, which lookups search first, so the listed location stops mattering: the
/// repository is healed without rewriting anything. An entry whose digest the index no longer
/// resolves to the listed location is stale and is dropped by the next verify or gc.
public struct DamagedChunkList: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var digest: String
        public var pack: String
        public var offset: UInt64
        public var storedLength: UInt32
        public var rawLength: UInt32
        /// Set when the chunk is a member of a frame record.
        public var frameOffset: UInt32?
        public var reason: String

        public init(digest: ChunkDigest, location: ChunkLocation, reason: String) {
            self.digest = digest.hex
            pack = location.pack.hex
            offset = location.offset
            storedLength = location.storedLength
            rawLength = location.rawLength
            frameOffset = location.frameOffset
            self.reason = reason
        }

        var location: ChunkLocation? {
            guard let id = PackID(hex: pack) else { return nil }
            return ChunkLocation(
                pack: id, offset: offset, storedLength: storedLength, rawLength: rawLength, frameOffset: frameOffset)
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) { self.entries = entries }

    static let key = "verify/damaged.json"

    /// The list in `storage`, or an empty one if there is none or it cannot be read: a lost list
    /// only means the next backup does not heal until verify runs again.
    static func load(from storage: any RepositoryStorage) -> DamagedChunkList {
        guard let bytes = try? storage.readIfPresent(key, limit: 64 << 20),
            let list = try? JSONCoding.decode(DamagedChunkList.self, from: bytes, what: "damaged chunk list")
        else { return DamagedChunkList() }
        return list
    }

    func save(to storage: any RepositoryStorage) throws(CairnError) {
        let text = try JSONCoding.encode(self, pretty: true) + "\n"
        try storage.publish(Array(text.utf8), as: Self.key, .replace)
    }

    /// Digest → damaged location, for the chunk store's lookups.
    var locations: [ChunkDigest: ChunkLocation] {
        var out: [ChunkDigest: ChunkLocation] = [:]
        for e in entries {
            if let d = ChunkDigest(hex: e.digest), let l = e.location { out[d] = l }
        }
        return out
    }
}
