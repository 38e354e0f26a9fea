import CLinux
public import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// An open file with the calls Cairn needs, each retried on `EINTR` and turned into a `CairnError`.
///
/// This is the only place that talks to the kernel about files: pread/pwrite loops, SEEK_DATA,
/// fsync, flock and hole punching. It owns its descriptor and closes it when released.
///
/// `@unchecked Sendable`: it wraps a C file descriptor (swift-system's `FileDescriptor` is not
/// `Sendable`); every property is immutable, the calls threads share (`pread`/`pwrite` at explicit
/// offsets, `fsync`, `sync_file_range`) are safe on one descriptor, and it is closed only in `deinit`.
public final class File: @unchecked Sendable {
    /// Linux's SEEK_DATA and SEEK_HOLE, which Glibc only exports under _GNU_SOURCE.
    private let seekData: Int32 = 3
    private let seekHole: Int32 = 4

    public let path: String
    public let descriptor: FileDescriptor

    private init(path: String, descriptor: FileDescriptor) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { try? descriptor.close() }

    public enum Mode: Sendable {
        case readOnly
        case readWrite
        /// Create a new file; fail if it exists.
        case createNew
        /// Create or truncate.
        case createOrTruncate
    }

    public static func open(_ path: String, _ mode: Mode) throws(CairnError) -> File {
        let fd: FileDescriptor
        do {
            switch mode {
            case .readOnly:
                fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec], retryOnInterrupt: true)
            case .readWrite:
                fd = try FileDescriptor.open(
                    FilePath(path), .readWrite, options: [.closeOnExec], retryOnInterrupt: true)
            case .createNew:
                fd = try FileDescriptor.open(
                    FilePath(path), .readWrite, options: [.create, .exclusiveCreate, .closeOnExec],
                    permissions: [.ownerReadWrite, .groupRead], retryOnInterrupt: true)
            case .createOrTruncate:
                fd = try FileDescriptor.open(
                    FilePath(path), .readWrite, options: [.create, .truncate, .closeOnExec],
                    permissions: [.ownerReadWrite, .groupRead], retryOnInterrupt: true)
            }
        } catch let errno as Errno {
            if errno == .noSuchFileOrDirectory { throw CairnError(.notFound, "\(path) does not exist") }
            throw CairnError.io("open", path, errno)
        } catch {
            throw CairnError(.io, "cannot open \(path)", cause: "\(error)")
        }
        return File(path: path, descriptor: fd)
    }

    /// Writes to a direct handle must start at a multiple of this, span a multiple of it, and come
    /// from memory aligned to it (the strictest logical block size Linux devices have).
    public static let directAlignment = 4096

    /// Opens an existing file a second time for writes around the page cache (O_DIRECT), or nil
    /// when its filesystem does not offer them (tmpfs, some FUSE mounts): callers then write
    /// through the page cache as before.
    public static func openDirectWrite(_ path: String) -> File? {
        let fd = path.withCString { cairn_open_direct_write($0) }
        guard fd >= 0 else { return nil }
        return File(path: path, descriptor: FileDescriptor(rawValue: fd))
    }

    /// Opens an existing file a second time for reads around the page cache (O_DIRECT), or nil
    /// when its filesystem does not offer them. Reads through it must follow `directAlignment`:
    /// `readDirect(into:at:)` does.
    public static func openDirectRead(_ path: String) -> File? {
        let fd = path.withCString { cairn_open_direct_read($0) }
        guard fd >= 0 else { return nil }
        return File(path: path, descriptor: FileDescriptor(rawValue: fd))
    }

    /// Reads through a direct handle into `buffer` (aligned, its count a multiple of
    /// `directAlignment`) at an aligned `offset`. Returns the bytes read, fewer only at end of
    /// file (a direct read stops there at any length, and one past it would be unaligned), or
    /// nil when the filesystem refuses direct reads after all (EINVAL): read through the page
    /// cache then.
    public func readDirect(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int? {
        do {
            // A direct read shorter than asked and not aligned is the end of the file.
            return try readLoop(into: buffer, at: offset, stopAt: { $0 % Self.directAlignment != 0 })
        } catch  where error == .invalidArgument {
            return nil
        } catch {
            throw CairnError.io("read", path, error)
        }
    }

    /// Wraps a descriptor the process already has (stdin, stdout). It is not closed by this object.
    public static func standard(_ fd: FileDescriptor, name: String) -> File {
        let dup = (try? fd.duplicate()) ?? fd
        return File(path: name, descriptor: dup)
    }

    // MARK: Reading and writing

    /// Reads up to `buffer.count` bytes at `offset`; returns fewer only at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int {
        do {
            return try readLoop(into: buffer, at: offset, stopAt: { _ in false })
        } catch {
            throw CairnError.io("read", path, error)
        }
    }

    /// Reads until `buffer` is full, the file ends (a read of 0), or `stopAt` says a read's
    /// count means the end; returns the bytes read.
    private func readLoop(
        into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, stopAt: (Int) -> Bool
    ) throws(Errno) -> Int {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try descriptor.read(
                    fromAbsoluteOffset: Int64(offset) + Int64(done),
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), retryOnInterrupt: true)
            } catch {
                throw error as? Errno ?? .ioError
            }
            if n == 0 { break }
            done += n
            if stopAt(n) { break }
        }
        return done
    }

    /// Reads exactly `buffer.count` bytes at `offset`, or fails naming what was short.
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        let n = try read(into: buffer, at: offset)
        if n != buffer.count {
            throw CairnError(
                .io,
                "\(path) ends at byte \(offset + UInt64(n)), \(buffer.count - n) bytes short of what is needed at offset \(offset)"
            )
        }
    }

    /// Reads up to `count` bytes sequentially from the current position (pipes, stdin).
    public func readSequential(into buffer: UnsafeMutableRawBufferPointer) throws(CairnError) -> Int {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try descriptor.read(
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), retryOnInterrupt: true)
            } catch {
                throw CairnError.io("read", path, error as? Errno ?? .ioError)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func readBytes(count: Int, at offset: UInt64) throws(CairnError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withMutableBytesThrowing { raw throws(CairnError) in try read(into: raw, at: offset) }
        bytes.removeLast(count - n)
        return bytes
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(CairnError) {
        var done = 0
        while done < buffer.count {
            do {
                done += try descriptor.write(
                    toAbsoluteOffset: Int64(offset) + Int64(done),
                    UnsafeRawBufferPointer(rebasing: buffer[done...]), retryOnInterrupt: true)
            } catch {
                throw CairnError.io("write", path, error as? Errno ?? .ioError)
            }
        }
        try FaultInjection.countWrite(path)
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(CairnError) {
        try bytes.withBytesThrowing { raw throws(CairnError) in try write(raw, at: offset) }
    }

    /// Writes all bytes at the current position (pipes, stdout, tape devices).
    public func writeSequential(_ buffer: UnsafeRawBufferPointer) throws(CairnError) {
        var done = 0
        while done < buffer.count {
            do {
                done += try descriptor.write(UnsafeRawBufferPointer(rebasing: buffer[done...]), retryOnInterrupt: true)
            } catch {
                throw CairnError.io("write", path, error as? Errno ?? .ioError)
            }
        }
        try FaultInjection.countWrite(path)
    }

    // MARK: Metadata

    public func size() throws(CairnError) -> UInt64 {
        var st = stat()
        let rc = fstat(descriptor.rawValue, &st)
        if rc != 0 { throw CairnError.io("stat", path, Errno(rawValue: errno)) }
        if (st.st_mode & S_IFMT) == S_IFBLK {
            // A block device reports size 0 in st_size; ask the device.
            let end = lseek(descriptor.rawValue, 0, SEEK_END)
            if end < 0 { throw CairnError.io("size", path, Errno(rawValue: errno)) }
            return UInt64(end)
        }
        return UInt64(st.st_size)
    }

    public var isRegularFile: Bool {
        var st = stat()
        return fstat(descriptor.rawValue, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// The next offset at or after `offset` that holds data, or nil when only a hole follows.
    /// Filesystems without SEEK_DATA report everything as data, which is merely slower.
    public func nextData(from offset: UInt64) throws(CairnError) -> UInt64? {
        let r = lseek(descriptor.rawValue, off_t(offset), seekData)
        if r >= 0 { return UInt64(r) }
        switch errno {
        case ENXIO: return nil
        case EINVAL, ENOTSUP: return offset
        default: throw CairnError.io("seek in", path, Errno(rawValue: errno))
        }
    }

    /// The next hole at or after `offset` (the end of file counts as a hole).
    public func nextHole(from offset: UInt64) throws(CairnError) -> UInt64 {
        let r = lseek(descriptor.rawValue, off_t(offset), seekHole)
        if r >= 0 { return UInt64(r) }
        switch errno {
        case ENXIO: return offset
        case EINVAL, ENOTSUP: return try size()
        default: throw CairnError.io("seek in", path, Errno(rawValue: errno))
        }
    }

    public func truncate(to size: UInt64) throws(CairnError) {
        while ftruncate(descriptor.rawValue, off_t(size)) != 0 {
            if errno != EINTR { throw CairnError.io("resize", path, Errno(rawValue: errno)) }
        }
    }

    /// Forces the file's data and metadata to stable storage.
    public func sync() throws(CairnError) {
        while fsync(descriptor.rawValue) != 0 {
            if errno != EINTR { throw CairnError.io("sync", path, Errno(rawValue: errno)) }
        }
        try FaultInjection.countWrite(path)
    }

    /// Asks the kernel to start writing the file's dirty pages now, without waiting, so that a
    /// later `sync()` finds little left to do. Best effort: errors surface at `sync()`.
    public func startWriteback() {
        _ = cairn_start_writeback(descriptor.rawValue)
    }

    // MARK: Locks

    public enum LockKind: Sendable { case shared, exclusive }

    /// Takes an flock; returns false if another process holds a conflicting one.
    /// The kernel drops the lock when the process dies, so no lock outlives a crash.
    public func tryLock(_ kind: LockKind) throws(CairnError) -> Bool {
        let op = (kind == .shared ? LOCK_SH : LOCK_EX) | LOCK_NB
        while flock(descriptor.rawValue, op) != 0 {
            if errno == EINTR { continue }
            if errno == EWOULDBLOCK { return false }
            throw CairnError.io("lock", path, Errno(rawValue: errno))
        }
        return true
    }

    public func unlock() {
        _ = flock(descriptor.rawValue, LOCK_UN)
    }

    /// Linux's F_OFD_GETLK, which Glibc only exports under _GNU_SOURCE.
    private let getOFDLock: Int32 = 36

    /// True if another open file description holds a POSIX/OFD lock that conflicts with a write
    /// lock on the one byte at `offset` (the test QEMU's image locking uses, `F_OFD_GETLK`).
    public func isByteLockedByOthers(_ offset: UInt64) throws(CairnError) -> Bool {
        var lock = Glibc.flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = off_t(offset)
        lock.l_len = 1
        lock.l_pid = 0
        while fcntl(descriptor.rawValue, getOFDLock, &lock) != 0 {
            if errno == EINTR { continue }
            // A filesystem without OFD locks cannot show QEMU's locks either.
            if errno == EINVAL || errno == ENOLCK || errno == EOPNOTSUPP { return false }
            throw CairnError.io("probe the locks of", path, Errno(rawValue: errno))
        }
        return lock.l_type != Int16(F_UNLCK)
    }
}
