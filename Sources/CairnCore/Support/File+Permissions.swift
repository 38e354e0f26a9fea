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
}
