import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

extension File {
    /// Sets the file's mode bits (`fchmod`), e.g. 0o644 for a file another user's service reads.
    public func setPermissions(_ mode: UInt32) throws(CairnError) {
        while fchmod(descriptor.rawValue, mode_t(mode)) != 0 {
            if errno == EINTR { continue }
            throw CairnError.io("chmod", path, Errno(rawValue: errno))
        }
    }

    /// The file's permission bits (`st_mode & 0o7777`).
    public func permissions() throws(CairnError) -> UInt32 {
        var st = stat()
        guard fstat(descriptor.rawValue, &st) == 0 else { throw CairnError.io("stat", path, Errno(rawValue: errno)) }
        return UInt32(st.st_mode) & 0o7777
    }
}
