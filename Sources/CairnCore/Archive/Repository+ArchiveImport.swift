extension Repository {
    /// Makes an empty encrypted repository from an encrypted archive's label, for `archive
    /// import` into a new location: the archive's repository id (the salt of every derived key,
    /// so of every chunk id and seal), its master key's fingerprint and its key files. It is the
    /// archived repository again, with the same passphrases; the master key is never written.
    ///
    /// `path` must be missing or an empty directory. The block size is the archive's; the
    /// compression level is the default (readers do not need it).
    static func create(at path: String, fromArchive label: ArchiveLabel) throws(CairnError) {
        guard label.isEncrypted, let fingerprint = label.fingerprint, let keys = label.keys, !keys.isEmpty else {
            throw CairnError(.usage, "only an encrypted archive carries the keys a repository is made from")
        }
        try RepositoryConfig.validate(blockSize: label.chunkBlockSize)
        if FileSystem.exists(path) {
            guard FileSystem.isDirectory(path), try FileSystem.list(path).isEmpty else {
                throw CairnError(.exists, "\(path) is not empty: a repository needs a new or empty directory")
            }
        }
        let parent = FileSystem.directoryName(path)
        guard FileSystem.isDirectory(parent) else {
            throw CairnError(.notFound, "cannot create repository \(path): directory \(parent) does not exist")
        }
        try FileSystem.createDirectories(path)
        for sub in ["packs", "index", "points", "locks"] {
            try FileSystem.createDirectories("\(path)/\(sub)")
        }
        let storage = LocalDirectoryStorage(root: path)
        // The key files first: a config that declares encryption always has a key beside it.
        for key in keys { try KeyDirectory.write(key, into: storage) }
        var config = RepositoryConfig.new(
            blockSize: label.chunkBlockSize, compressionLevel: RepositoryConfig.defaultCompressionLevel)
        config.id = label.repository.lowercased()
        config.features = (config.features ?? []) + [FormatFeature.encryption]
        config.encryption = .current(fingerprint: fingerprint.lowercased())
        try config.write(to: storage, createOnly: true)
        try FileSystem.syncDirectory(parent)
    }
}
