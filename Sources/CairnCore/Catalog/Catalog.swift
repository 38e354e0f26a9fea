/// The restore points of a repository: `points/GROUP/TIME.manifest`.
///
/// A restore point exists exactly when its manifest file does; it is renamed into place last, so
/// an interrupted backup never shows up here.
public final class Catalog: Sendable {
    public let root: String
    static let suffix = ".manifest"

    init(root: String) { self.root = root }

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
        let path = path(of: id)
        guard FileSystem.exists(path) else { throw CairnError(.notFound, "restore point \(id) does not exist") }
        return try Manifest.decode(try FileSystem.readAll(path, limit: 16 << 20), path: path)
    }

    /// Makes a restore point visible: the manifest is written atomically and durably.
    /// Create-only: a restore point, once visible, is never replaced.
    func write(_ manifest: Manifest, id: RestorePointID) throws(CairnError) {
        let repository = LocalDirectoryStorage(root: FileSystem.directoryName(root))
        try repository.publish(
            try manifest.encoded(), as: "\(FileSystem.baseName(root))/\(id.group)/\(id.time)\(Self.suffix)",
            .createOnly)
    }

    /// Resolves `GROUP@TIME` or `GROUP@latest` to an existing restore point.
    public func resolve(_ text: String) throws(CairnError) -> RestorePointID {
        if text.hasSuffix("@latest") {
            let group = String(text.dropLast("@latest".count))
            try GroupName.validate(group)
            guard let latest = try points(in: group).last else {
                throw CairnError(.notFound, "group \(group) has no restore points")
            }
            return latest
        }
        guard let id = RestorePointID(parsing: text) else {
            throw CairnError(
                .usage,
                "\"\(text)\" is not a restore point id: use GROUP@TIME (e.g. vm1@2026-11-26T03:00:00Z) or GROUP@latest")
        }
        guard exists(id) else {
            let known = (try? points(in: id.group)) ?? []
            let hint =
                known.isEmpty
                ? "group \(id.group) has no restore points"
                : "\(id.group) has \(known.count), the newest \(known.last!)"
            throw CairnError(.notFound, "restore point \(id) does not exist (\(hint))")
        }
        return id
    }

    /// The newest restore point of `group` at or before `time`.
    public func latest(in group: String, atOrBefore time: Timestamp) throws(CairnError) -> RestorePointID {
        let candidates = try points(in: group).filter { $0.time <= time }
        guard let id = candidates.last else {
            let first = try points(in: group).first
            throw CairnError(
                .notFound,
                first.map { "group \(group) has no restore point at or before \(time) (the oldest is \($0.time))" }
                    ?? "group \(group) has no restore points")
        }
        return id
    }
}
