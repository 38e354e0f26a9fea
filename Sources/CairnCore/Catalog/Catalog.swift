/// The restore points of a repository: `points/GROUP/TIME.manifest`.
///
/// A restore point exists exactly when its manifest file does; it is renamed into place last, so
/// an interrupted backup never shows up here. In an encrypted repository the files beside the
/// names are sealed (`MetadataSeal`): this type is the one seam where they are read and written.
public final class Catalog: Sendable {
    public let root: String
    static let suffix = ".manifest"
    /// Seals manifests and verification records of an encrypted repository; nil otherwise.
    let seal: MetadataSeal?

    init(root: String, seal: MetadataSeal? = nil) {
        self.root = root
        self.seal = seal
    }

    /// A file's name relative to the repository, as a sealed file binds it.
    func objectName(_ id: RestorePointID, suffix: String) -> String {
        "\(FileSystem.baseName(root))/\(id.group)/\(id.time)\(suffix)"
    }

    /// Bytes as stored: sealed when the repository is encrypted.
    func stored(_ plain: [UInt8], _ id: RestorePointID, suffix: String) -> [UInt8] {
        seal.map { $0.seal(plain, name: objectName(id, suffix: suffix)) } ?? plain
    }

    /// Plain bytes of a file as stored.
    func plain(_ bytes: [UInt8], _ id: RestorePointID, suffix: String) throws(CairnError) -> [UInt8] {
        guard let seal else { return bytes }
        return try seal.open(bytes, name: objectName(id, suffix: suffix))
    }

    /// The manifest's plain bytes (`LINE\nsha256 HEX\n`), opened if sealed.
    func manifestBytes(_ id: RestorePointID) throws(CairnError) -> [UInt8] {
        let path = path(of: id)
        guard FileSystem.exists(path) else { throw CairnError(.notFound, "restore point \(id) does not exist") }
        return try plain(try FileSystem.readAll(path, limit: 16 << 20), id, suffix: Self.suffix)
    }

    public func groups() throws(CairnError) -> [String] {
        try FileSystem.list(root).filter { GroupName.isValid($0) && FileSystem.isDirectory("\(root)/\($0)") }
    }

    /// A group's restore points, oldest first.
    public func points(in group: String) throws(CairnError) -> [RestorePointID] {
        var ids: [RestorePointID] = []
        for name in try FileSystem.list("\(root)/\(group)") where name.hasSuffix(Self.suffix) && !name.hasPrefix(".") {
            if let time = Timestamp(parsing: String(name.dropLast(Self.suffix.count))) {
                ids.append(RestorePointID(group: group, time: time))
            }
        }
        return ids.sorted()
    }

    /// Every restore point, oldest first.
    public func allPoints() throws(CairnError) -> [RestorePointID] {
        var all: [RestorePointID] = []
        for group in try groups() { all += try points(in: group) }
        return all.sorted()
    }

    public func path(of id: RestorePointID) -> String {
        "\(root)/\(id.group)/\(id.time)\(Self.suffix)"
    }

    public func exists(_ id: RestorePointID) -> Bool { FileSystem.exists(path(of: id)) }

    public func manifest(_ id: RestorePointID) throws(CairnError) -> Manifest {
        try Manifest.decode(try manifestBytes(id), path: path(of: id))
    }

    /// Makes a restore point visible: the manifest is written atomically and durably.
    /// Create-only: a restore point, once visible, is never replaced.
    func write(_ manifest: Manifest, id: RestorePointID) throws(CairnError) {
        let repository = LocalDirectoryStorage(root: FileSystem.directoryName(root))
        try repository.publish(
            stored(try manifest.encoded(), id, suffix: Self.suffix), as: objectName(id, suffix: Self.suffix),
            .createOnly)
    }
}
