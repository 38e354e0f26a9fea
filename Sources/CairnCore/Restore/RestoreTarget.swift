#if canImport(Glibc)
    import Glibc
#endif

/// Where restored guest bytes go. Writes may come from several threads, in any order.
protocol RestoreTarget: AnyObject, Sendable {
    /// Whether zero blocks must be written explicitly (a block device cannot hold holes).
    var needsZeroWrites: Bool { get }
    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError)
    func finish() throws(CairnError)
    /// Removes a half-written output after a failure.
    func discard()
}

/// Fails early, before any work, if the output cannot be created: its directory is missing, or it
/// exists and `force` was not given (an existing block device is fine for raw output).
func checkRestoreDestination(_ path: String, force: Bool, allowDevice: Bool) throws(CairnError) {
    let directory = FileSystem.directoryName(path)
    guard FileSystem.isDirectory(directory) else {
        throw CairnError(.notFound, "cannot restore to \(path): directory \(directory) does not exist")
    }
    var st = stat()
    guard stat(path, &st) == 0 else { return }
    if allowDevice && (st.st_mode & S_IFMT) == S_IFBLK { return }
    if !force { throw CairnError(.exists, "\(path) exists", remedy: .overwrite) }
}

/// A raw image file (sparse: zero blocks stay holes) or a block device.
final class RawRestoreTarget: RestoreTarget {
    let file: File
    let path: String
    let needsZeroWrites: Bool
    private let created: Bool

    init(path: String, size: UInt64, force: Bool) throws(CairnError) {
        self.path = path
        try checkRestoreDestination(path, force: force, allowDevice: true)
        var st = stat()
        let isDevice = stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK
        if isDevice {
            file = try File.open(path, .readWrite)
            let deviceSize = try file.size()
            guard deviceSize >= size else {
                throw CairnError(.usage, "block device \(path) holds \(deviceSize) bytes, less than the disk's \(size)")
            }
            needsZeroWrites = true
            created = false
        } else {
            file = try File.open(path, .createOrTruncate)
            try file.truncate(to: size)
            needsZeroWrites = false
            created = true
        }
    }

    private let unflushed = AtomicCounter()
    /// Writeback is started every this many bytes, so the final fsync overlaps with the restore.
    private static let writebackInterval = 64 << 20

    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        try file.write(bytes, at: offset)
        let pending = unflushed.increment(by: bytes.count)
        if pending >= Self.writebackInterval && pending - bytes.count < Self.writebackInterval {
            unflushed.increment(by: -pending)
            file.startWriteback()
        }
    }

    func finish() throws(CairnError) {
        try file.sync()
    }

    func discard() {
        if created { try? FileSystem.remove(path) }
    }
}
