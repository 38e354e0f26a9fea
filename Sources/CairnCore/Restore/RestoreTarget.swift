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
///
/// Aligned runs are written around the page cache (O_DIRECT, through a reused aligned buffer):
/// a restore writes each byte once and never reads it back, and on a VM whose host reclaims idle
/// guest memory, filling fresh page cache cost more system time than the restore's
/// decompression and hashing together (a 1.15 GiB restore: 3.4-3.7 s buffered, 1.5-1.8 s
/// direct; Benchmarks/README.md). What is not aligned (an odd-sized disk's last block) goes
/// through the page cache, as does everything when the filesystem refuses O_DIRECT.
final class RawRestoreTarget: RestoreTarget {
    let file: File
    let path: String
    let needsZeroWrites: Bool
    private let created: Bool
    /// The same file opened for direct writes, when its filesystem allows them.
    private let direct: File?
    /// Aligned buffers direct writes are copied into, reused while warm (one per writer at once).
    private static let bounce = BufferPool(capacity: 16 << 20, alignment: File.directAlignment)
    private static let bounceSize = 2 << 20

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
        direct = File.openDirectWrite(path)
    }

    private let unflushed = AtomicCounter()
    /// Writeback is started every this many bytes, so the final fsync overlaps with the restore.
    private static let writebackInterval = 64 << 20

    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        let alignment = File.directAlignment
        let alignedCount = bytes.count / alignment * alignment
        if direct != nil, offset % UInt64(alignment) == 0, alignedCount > 0, alignedCount < bytes.count {
            // An odd-sized disk's last run: its aligned part direct, the rest buffered.
            try write(UnsafeRawBufferPointer(rebasing: bytes[0..<alignedCount]), atGuestOffset: offset)
            try write(
                UnsafeRawBufferPointer(rebasing: bytes[alignedCount...]), atGuestOffset: offset + UInt64(alignedCount))
            return
        }
        if let direct, offset % UInt64(alignment) == 0, bytes.count % alignment == 0,
            UInt(bitPattern: bytes.baseAddress) % UInt(alignment) == 0
        {
            // Staged in an aligned buffer already (a restore worker's run): written from there.
            do throws(CairnError) {
                try direct.write(bytes, at: offset)
            } catch {
                try file.write(bytes, at: offset)
            }
            return
        }
        if let direct, offset % UInt64(alignment) == 0, bytes.count % alignment == 0 {
            let buffer = Self.bounce.take(Self.bounceSize)
            defer { Self.bounce.give(buffer) }
            var done = 0
            while done < bytes.count {
                let piece = min(buffer.count, bytes.count - done)
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + piece]))
                let part = UnsafeRawBufferPointer(rebasing: buffer[0..<piece])
                do throws(CairnError) {
                    try direct.write(part, at: offset + UInt64(done))
                } catch {
                    // A filesystem may accept O_DIRECT at open and refuse a write (EINVAL): the
                    // page cache takes it, and a real I/O error fails there with its message.
                    try file.write(part, at: offset + UInt64(done))
                }
                done += piece
            }
            return
        }
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
