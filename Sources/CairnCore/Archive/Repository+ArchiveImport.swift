extension Repository {
    /// Makes an empty encrypted repository from an encrypted archive's label, for `archive
    /// import` into a new location: the archive's repository id (the salt of every derived key,
    /// so of every chunk id and seal), its master key's fingerprint and its key files. It is the
    /// archived repository again, with the same passphrases; the master key is never written.
    ///
    /// `path` must be missing or an empty directory. The block size is the archive's; the
    /// compression level is the default (readers do not need it).
    static func create(at path: String, fromArchive label: ArchiveLabel) throws(CairnError) {
        _ = try keysCarried(by: label)
        try create(in: try prepareDirectory(path), fromArchive: label)
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }

    /// The same in `storage` (an object store's bucket and prefix, declaring `features` such as
    /// `object-store`); refused when a config is there already.
    static func create(
        in storage: any RepositoryStorage, fromArchive label: ArchiveLabel, features extra: [String] = []
    ) throws(CairnError) {
        let (fingerprint, keys) = try keysCarried(by: label)
        if try RepositoryConfig.isPresent(in: storage) {
            throw CairnError(.exists, "\(storage.location) is already a Cairn repository")
        }
        // The key files first: a config that declares encryption always has a key beside it.
        for key in keys { try KeyDirectory.write(key, into: storage) }
        var config = RepositoryConfig.new(
            blockSize: label.chunkBlockSize, compressionLevel: RepositoryConfig.defaultCompressionLevel)
        config.id = label.repository.lowercased()
        config.declare([FormatFeature.encryption] + extra)
        config.encryption = .current(fingerprint: fingerprint.lowercased())
        try config.write(to: storage, createOnly: true)
    }

    /// The key fingerprint and key files an encrypted archive carries, its block size checked;
    /// any other archive cannot make a repository.
    private static func keysCarried(by label: ArchiveLabel) throws(CairnError) -> (String, [KeyFile]) {
        guard label.isEncrypted, let fingerprint = label.fingerprint, let keys = label.keys, !keys.isEmpty else {
            throw CairnError(.usage, "only an encrypted archive carries the keys a repository is made from")
        }
        try RepositoryConfig.validate(blockSize: label.chunkBlockSize)
        return (fingerprint, keys)
    }
}
