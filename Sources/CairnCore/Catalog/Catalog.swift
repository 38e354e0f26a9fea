/// The restore points of a repository: one manifest object per restore point under `points/`.
///
/// A restore point exists exactly when its manifest does; it is published last (create-only), so
/// an interrupted backup never shows up here. Everything goes through the repository's storage,
/// so the catalog is the same on a local directory and on an object store.
///
/// An unencrypted repository names a manifest `points/GROUP/TIME.manifest`. An encrypted one
/// names it by keyed hashes (`PointNames`), so neither VM names nor times show in the names, and
/// seals it (`MetadataSeal`), bound to that name; the catalog learns a restore point's id by
/// opening its manifest, and checks that the id names that very object. This type is the one
/// seam where those objects are named, read and written.
public final class Catalog: Sendable {
    public let storage: any RepositoryStorage
    static let directory = "points"
    static let suffix = ".manifest"
    /// Seals manifests and verification records of an encrypted repository; nil otherwise.
    let seal: MetadataSeal?
    let names: PointNames

    init(storage: any RepositoryStorage, seal: MetadataSeal? = nil) {
        self.storage = storage
        self.seal = seal
        names = seal.map { PointNames.keyed($0) } ?? .plain
    }

    /// An object's key in the repository, as a sealed object binds it.
    func key(_ id: RestorePointID, suffix: String = suffix) -> String {
        "\(Self.directory)/\(names.directory(id.group))/\(names.stem(id))\(suffix)"
    }

    /// Where a restore point's manifest is, for messages (a file path in a local repository).
    public func path(of id: RestorePointID) -> String {
        "\(storage.location)/\(key(id))"
    }

    /// Bytes as stored: sealed when the repository is encrypted.
    func stored(_ plain: [UInt8], _ id: RestorePointID, suffix: String) -> [UInt8] {
        seal.map { $0.seal(plain, name: key(id, suffix: suffix)) } ?? plain
    }

    /// Plain bytes of an object as stored.
    func plain(_ bytes: [UInt8], key: String) throws(CairnError) -> [UInt8] {
        guard let seal else { return bytes }
        return try seal.open(bytes, name: key)
    }

    static let maxManifestSize = 16 << 20

    /// The bytes of an object, refusing one too large to be what the catalog writes.
    func readObject(_ key: String, limit: Int) throws(CairnError) -> [UInt8] {
        let object = try storage.open(key)
        guard object.size <= UInt64(limit) else {
            throw CairnError(
                .damaged, "\(storage.location)/\(key) is damaged: it is \(object.size) bytes, more than \(limit)")
        }
        return try object.readBytes(count: Int(object.size), at: 0)
    }

    /// The manifest's plain bytes (`LINE\nsha256 HEX\n`), opened if sealed.
    func manifestBytes(_ id: RestorePointID) throws(CairnError) -> [UInt8] {
        let key = key(id)
        guard let bytes = try storage.readIfPresent(key, limit: Self.maxManifestSize) else {
            throw CairnError(.notFound, "restore point \(id) does not exist")
        }
        return try plain(bytes, key: key)
    }

    public func groups() throws(CairnError) -> [String] {
        switch names {
        case .plain:
            var groups: Set<String> = []
            for key in try manifestKeys(under: Self.directory + "/") {
                let group = key.split(separator: "/")[1]
                if GroupName.isValid(String(group)) { groups.insert(String(group)) }
            }
            return groups.sorted()
        case .keyed:
            return Set(try scan(under: Self.directory + "/").points.map(\.group)).sorted()
        }
    }

    /// Whether a group has any restore point (or a manifest that could not be read).
    public func hasGroup(_ group: String) throws(CairnError) -> Bool {
        try !manifestKeys(under: groupPrefix(group)).isEmpty
    }

    /// A group's restore points, oldest first.
    public func points(in group: String) throws(CairnError) -> [RestorePointID] {
        try scan(group: group).points
    }

    /// Every restore point, oldest first.
    public func allPoints() throws(CairnError) -> [RestorePointID] {
        try scan(under: Self.directory + "/").points
    }

    /// A group's restore points and the manifests of it that could not be read. In an
    /// encrypted repository a manifest that does not open names no restore point, so it is
    /// listed here as damage rather than silently skipped.
    func scan(group: String) throws(CairnError) -> CatalogScan {
        try scan(under: groupPrefix(group))
    }

    /// Every manifest that could not be opened, with why (always empty in an unencrypted
    /// repository, whose names are the restore points' ids).
    public func unreadableManifests() throws(CairnError) -> [UnreadableManifest] {
        try scan(under: Self.directory + "/").unreadable
    }

    private func groupPrefix(_ group: String) -> String {
        "\(Self.directory)/\(names.directory(group))/"
    }

    private func manifestKeys(under prefix: String) throws(CairnError) -> [String] {
        try storage.list(prefix: prefix).filter {
            $0.hasSuffix(Self.suffix) && $0.split(separator: "/").count == 3
        }
    }

    private func scan(under prefix: String) throws(CairnError) -> CatalogScan {
        var result = CatalogScan()
        for key in try manifestKeys(under: prefix) {
            let parts = key.split(separator: "/")
            switch names {
            case .plain:
                let stem = parts[2].dropLast(Self.suffix.count)
                guard GroupName.isValid(String(parts[1])), let time = Timestamp(parsing: String(stem)) else { continue }
                result.points.append(RestorePointID(group: String(parts[1]), time: time))
            case .keyed:
                do throws(CairnError) {
                    let manifest = try Manifest.decode(
                        try plain(try readObject(key, limit: Self.maxManifestSize), key: key),
                        path: "\(storage.location)/\(key)")
                    guard self.key(manifest.id) == key else {
                        throw CairnError(
                            .damaged,
                            "\(storage.location)/\(key) is damaged: it holds restore point \(manifest.id), which is stored under another name"
                        )
                    }
                    result.points.append(manifest.id)
                } catch {
                    result.unreadable.append(UnreadableManifest(key: key, problem: error.message))
                }
            }
        }
        result.points.sort()
        return result
    }

    public func exists(_ id: RestorePointID) -> Bool { storage.exists(key(id)) }

    public func manifest(_ id: RestorePointID) throws(CairnError) -> Manifest {
        try Manifest.decode(try manifestBytes(id), path: path(of: id))
    }

    /// Makes a restore point visible: the manifest is written atomically and durably.
    /// Create-only: a restore point, once visible, is never replaced.
    func write(_ manifest: Manifest, id: RestorePointID) throws(CairnError) {
        try storage.publish(stored(try manifest.encoded(), id, suffix: Self.suffix), as: key(id), .createOnly)
    }
}

/// What a listing of manifests found.
struct CatalogScan {
    var points: [RestorePointID] = []
    var unreadable: [UnreadableManifest] = []
}

/// A manifest object that names no restore point: it does not open, or it holds another's.
public struct UnreadableManifest: Sendable, Equatable {
    /// Its key in the repository (`points/…/….manifest`).
    public var key: String
    public var problem: String
}

/// How restore-point objects are named: by group and time in the clear, or by keyed hashes of
/// them in an encrypted repository (docs/FORMAT.md, "Sealed metadata").
enum PointNames: Sendable {
    case plain
    case keyed(MetadataSeal)

    func directory(_ group: String) -> String {
        switch self {
        case .plain: return group
        case .keyed(let seal): return seal.hiddenName(of: "group\n\(group)")
        }
    }

    func stem(_ id: RestorePointID) -> String {
        switch self {
        case .plain: return id.time.description
        case .keyed(let seal): return seal.hiddenName(of: "point\n\(id.group)\n\(id.time)")
        }
    }
}
