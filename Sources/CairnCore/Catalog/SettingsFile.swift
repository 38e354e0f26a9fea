/// A VM's settings file kept with a restore point: a libvirt domain XML, a VMware `.vmx`, a
/// Proxmox `qemu-server` conf.
///
/// A restore point exists as much for a changed configuration as for lost data, so the file goes
/// with the disks. It is cut into blocks and stored as ordinary data chunks, content-addressed:
/// an unchanged file costs nothing but its entry in the manifest, and gc, verify and archives
/// treat its chunks as they treat a disk's.
public struct SettingsFile: Codable, Sendable, Equatable {
    /// The file's name (no directory): the name it is restored under.
    public var name: String
    public var size: UInt64
    /// SHA-256 of the whole file, checked again when it is read back.
    public var digest: String
    /// Digests of its blocks (the repository's block size; the last may be shorter), in order.
    public var chunks: [String]

    /// Settings files are small; this bounds what a manifest lists and what a restore holds.
    public static let maxSize = 1 << 20
    public static let maxFiles = 64

    public var chunkDigests: [ChunkDigest] { chunks.compactMap(ChunkDigest.init(hex:)) }
}

extension SettingsFile {
    /// Reads `path` and stores its blocks (only those the repository lacks). Becomes durable when
    /// `transaction` commits, so a manifest naming it is written after that.
    static func store(path: String, into transaction: inout ChunkWriteTransaction) throws(CairnError) -> SettingsFile {
        let store = transaction.store
        guard FileSystem.exists(path) else { throw CairnError(.notFound, "settings file \(path) does not exist") }
        guard !FileSystem.isDirectory(path) else {
            throw CairnError(.usage, "settings file \(path) is a directory; name the file")
        }
        let size = try File.open(path, .readOnly).size()
        guard size <= UInt64(maxSize) else {
            throw CairnError(
                .usage, "settings file \(path) is \(size) bytes; settings files are kept up to \(maxSize) bytes")
        }
        let bytes = try FileSystem.readAll(path, limit: maxSize)
        let hasher = store.makeHasher()
        let wholeFile = SHA256Hasher()
        let encoder = store.makeEncoder()
        let blockSize = store.blockSize
        let slot = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkEncoder.slotSize(rawLength: blockSize), alignment: 64)
        defer { slot.deallocate() }
        var chunks: [String] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + blockSize, bytes.count)
            let (digest, record) = bytes[offset..<end].withUnsafeBytes { piece -> (ChunkDigest, EncodedRecord?) in
                let digest = hasher.digest(piece)
                return (
                    digest,
                    store.contains(digest) ? nil : encoder.encode(piece, digest: digest, kind: .data, into: slot)
                )
            }
            if let record { try transaction.store(record: record) }
            chunks.append(digest.hex)
            offset = end
        }
        return SettingsFile(
            name: FileSystem.baseName(path), size: UInt64(bytes.count), digest: wholeFile.digest(bytes).hex,
            chunks: chunks)
    }

    /// The file's bytes, every chunk proved by its digest and the whole by `digest`.
    func read(from store: ChunkStore) throws(CairnError) -> [UInt8] {
        guard size <= UInt64(Self.maxSize), chunks.count <= Self.maxSize / 512 + 1 else {
            throw CairnError(.damaged, "settings file \(name) claims \(size) bytes, more than a settings file can be")
        }
        let reader = ChunkReader(store: store)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(size))
        for hex in chunks {
            guard let digest = ChunkDigest(hex: hex) else {
                throw CairnError(.damaged, "settings file \(name) names a malformed chunk digest")
            }
            bytes.append(contentsOf: try reader.read(digest))
            guard bytes.count <= Int(size) else { break }
        }
        guard bytes.count == Int(size), SHA256Hasher().digest(bytes).hex == digest else {
            throw CairnError(.damaged, "settings file \(name) does not read back as stored (size or digest differ)")
        }
        return bytes
    }

    /// Checks a name from a manifest before it becomes a path: a plain file name only.
    static func isSafeName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.utf8.contains(0)
            && name.utf8.count <= 255
    }
}
