import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A read-only memory map of a whole file.
///
/// Chunk index segments are searched in place through the page cache: their size on disk does
/// not become heap memory, and the kernel keeps only the pages that lookups touch.
///
/// `@unchecked Sendable`: it wraps an `mmap` pointer; the mapping is read-only, never changes and
/// is unmapped only in `deinit`, so any number of threads may read it at once.
public final class MappedFile: @unchecked Sendable {
    let path: String
    let count: Int
    private let base: UnsafeMutableRawPointer?

    public init(path: String) throws(CairnError) {
        self.path = path
        let file = try File.open(path, .readOnly)
        let size = try file.size()
        count = Int(size)
        if size == 0 {
            base = nil
            return
        }
        let p = mmap(nil, Int(size), PROT_READ, MAP_SHARED, file.descriptor.rawValue, 0)
        if p == MAP_FAILED || p == nil {
            throw CairnError.io("map", path, Errno(rawValue: errno))
        }
        base = p
    }

    deinit {
        if let base { munmap(base, count) }
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
