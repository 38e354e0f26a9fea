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

/// A raw image file (sparse: zero blocks stay holes) or a block device.
final class RawRestoreTarget: RestoreTarget, @unchecked Sendable {
    let file: File
    let path: String
    let needsZeroWrites: Bool
    private let created: Bool

    init(path: String, size: UInt64, force: Bool) throws(CairnError) {
        self.path = path
        let directory = FileSystem.directoryName(path)
        guard FileSystem.isDirectory(directory) else {
            throw CairnError(.notFound, "cannot restore to \(path): directory \(directory) does not exist")
        }
        var st = stat()
        let exists = stat(path, &st) == 0
        let isDevice = exists && (st.st_mode & S_IFMT) == S_IFBLK
        if exists && !isDevice && !force {
            throw CairnError(.exists, "\(path) exists; pass --force to overwrite it")
        }
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

    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        try file.write(bytes, at: offset)
    }

    func finish() throws(CairnError) {
        try file.sync()
    }

    func discard() {
        if created { try? FileSystem.remove(path) }
    }
}
