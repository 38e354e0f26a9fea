#if canImport(Glibc)
    import Glibc
#endif

/// What `cairn restore --domain` wrote.
public struct DomainRestoreResult: Sendable {
    public var disks: [RestoreResult]
    /// Disk target → the image written.
    public var paths: [String: String]
    /// The domain XML written, with its disk paths rewritten.
    public var xmlPath: String
    /// The name the domain was defined under, with `--define`.
    public var defined: String?
}

/// Brings a domain's restore point back as a domain: every disk in the format it had, and its
/// XML pointing at the restored images; optionally defined in libvirt as a copy that can run
/// beside the original (new name, UUID and MAC addresses).
public struct DomainRestore {
    public let repository: Repository
    public var virsh = Virsh()
    public var lockWait: Double?
    public var force = false
    public var progress: (@Sendable (RestoreProgress) -> Void)?

    public init(repository: Repository) { self.repository = repository }

    public func run(_ id: RestorePointID, to directory: String, define newName: String?) throws(CairnError)
        -> DomainRestoreResult
    {
        let manifest = try repository.catalog.manifest(id)
        guard let domain = manifest.domain else {
            throw CairnError(
                .notFound, "restore point \(id) is not of a libvirt domain (it was not made with cairn backup --domain)"
            )
        }
        if let newName {
            guard GroupName.isValid(newName) else {
                throw CairnError(
                    .usage, "the new domain name \(newName) is not a plain name (letters, digits, -, _, .)")
            }
        }
        let name = newName ?? domain.name
        guard SettingsFile.isSafeName(domain.settingsFile), SettingsFile.isSafeName(name) else {
            throw CairnError(.damaged, "restore point \(id) names its domain or domain XML with a path, not a name")
        }
        guard let settings = manifest.settings?.first(where: { $0.name == domain.settingsFile }) else {
            throw CairnError(.damaged, "restore point \(id) lacks the domain XML \(domain.settingsFile) it names")
        }
        if !FileSystem.exists(directory) {
            guard FileSystem.isDirectory(FileSystem.directoryName(directory)) else {
                throw CairnError(.notFound, "cannot restore into \(directory): its parent directory does not exist")
            }
            try FileSystem.createDirectories(directory)
            // QEMU runs as another user (libvirt-qemu) and must pass through to the images,
            // which libvirt chowns to it when the domain starts; the files stay unreadable to others.
            chmod(directory, 0o711)
        }
        guard FileSystem.isDirectory(directory) else {
            throw CairnError(.exists, "\(directory) exists and is not a directory")
        }
        // libvirt needs absolute disk paths.
        let directory = FileSystem.realPath(directory) ?? directory
        let xmlPath = "\(directory)/\(name).xml"
        var planned: [(Manifest.DomainRecord.Disk, String, RestoreFormat)] = []
        for disk in domain.disks {
            guard GroupName.isValid(disk.target), manifest.disk(named: disk.target) != nil else {
                throw CairnError(
                    .damaged, "restore point \(id) lists domain disk \(disk.target) but holds no such disk")
            }
            guard let format = RestoreFormat(rawValue: disk.format) else {
                throw CairnError(
                    .damaged, "restore point \(id) records disk \(disk.target) in unknown format \(disk.format)")
            }
            planned.append((disk, "\(directory)/\(name)-\(disk.target).\(format.rawValue)", format))
        }
        for path in planned.map(\.1) + [xmlPath] where FileSystem.exists(path) && !force {
            throw CairnError(.exists, "\(path) exists", remedy: .overwrite)
        }
        let xml = try readSettings(settings)

        var results: [RestoreResult] = []
        var paths: [String: String] = [:]
        for (disk, path, format) in planned {
            var request = RestoreRequest(id: id, disk: disk.target, destination: path)
            request.format = format
            request.force = force
            let job = RestoreJob(repository: repository, request: request)
            job.lockWait = lockWait
            job.progress = progress
            results.append(try job.run())
            paths[disk.target] = path
        }
        let rewritten = try DomainDefinition.rewritten(
            xml: xml,
            disks: paths.mapValues { path in
                DomainDefinition.RestoredDisk(
                    path: path, format: planned.first { $0.1 == path }?.2.rawValue ?? "raw")
            },
            newName: newName)
        try FileSystem.writeAtomically(Array(rewritten.utf8), to: xmlPath)
        if newName != nil { try virsh.run(["define", xmlPath]) }
        return DomainRestoreResult(disks: results, paths: paths, xmlPath: xmlPath, defined: newName)
    }

    private func readSettings(_ file: SettingsFile) throws(CairnError) -> String {
        let lock = try repository.lock(.shared, purpose: "cairn restore", wait: lockWait)
        defer { _ = lock }
        return String(decoding: try file.read(from: repository.store), as: UTF8.self)
    }
}
