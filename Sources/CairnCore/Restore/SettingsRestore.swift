/// Writes a restore point's settings files (domain XML, `.vmx`) back into a directory.
public struct SettingsRestore {
    public let repository: Repository
    public var lockWait: Double?
    /// Overwrite files that exist.
    public var force = false

    public init(repository: Repository) { self.repository = repository }

    /// Writes every settings file of `id` into `directory` (created if missing, as one level),
    /// each proved by its digest and written atomically. Returns the paths written; a restore
    /// point without settings files writes nothing.
    public func run(_ id: RestorePointID, to directory: String) throws(CairnError) -> [String] {
        let lock = try repository.lock(.shared, purpose: "cairn restore", wait: lockWait)
        defer { _ = lock }
        let files = try repository.catalog.manifest(id).settings ?? []
        guard !files.isEmpty else { return [] }
        if !FileSystem.exists(directory) {
            guard FileSystem.isDirectory(FileSystem.directoryName(directory)) else {
                throw CairnError(
                    .notFound, "cannot write settings into \(directory): its parent directory does not exist")
            }
            try FileSystem.createDirectories(directory)
        }
        guard FileSystem.isDirectory(directory) else {
            throw CairnError(.exists, "\(directory) exists and is not a directory")
        }
        // Read and check everything before writing anything.
        var contents: [(String, [UInt8])] = []
        for file in files {
            guard SettingsFile.isSafeName(file.name) else {
                throw CairnError(
                    .damaged, "restore point \(id) names a settings file \"\(file.name)\" that is not a plain file name"
                )
            }
            let path = "\(directory)/\(file.name)"
            if FileSystem.exists(path) && !force {
                throw CairnError(.exists, "\(path) exists", remedy: .overwrite)
            }
            contents.append((path, try file.read(from: repository.store)))
        }
        for (path, bytes) in contents { try FileSystem.writeAtomically(bytes, to: path) }
        return contents.map(\.0)
    }
}
