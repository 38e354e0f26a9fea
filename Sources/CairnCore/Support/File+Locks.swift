import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Byte-range locks other programs hold on a file: how Cairn sees that QEMU has an image open.
extension File {
    /// Linux's F_OFD_GETLK, which Glibc only exports under _GNU_SOURCE.
    private static let getOpenFileDescriptionLock: Int32 = 36

    /// The byte QEMU's file driver locks (shared) while it holds the "write" permission:
    /// 100 + the permission's bit (write is bit 1). `block/file-posix.c`, `RAW_LOCK_PERM_BASE`.
    public static let qemuWriteLockByte: Int64 = 101

    /// True if some other open file description holds a lock on byte `offset` that a write lock
    /// would conflict with (F_OFD_GETLK, the test QEMU itself performs).
    public func isLockedByOthers(at offset: Int64) throws(CairnError) -> Bool {
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = off_t(offset)
        lock.l_len = 1
        lock.l_pid = 0
        while true {
            let result = withUnsafeMutablePointer(to: &lock) { pointer in
                fcntl(descriptor.rawValue, Self.getOpenFileDescriptionLock, UnsafeMutableRawPointer(pointer))
            }
            if result == 0 { break }
            let code = errno
            if code == EINTR { continue }
            throw CairnError(.io, "cannot query the locks on \(path)", errno: Errno(rawValue: code))
        }
        return lock.l_type != Int16(F_UNLCK)
    }
}
