import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Directory-level operations: atomic replacement, durable renames, listings.
///
/// Durability rule used throughout the repository: write a temporary file, fsync it, rename it
/// into place, fsync the directory. A reader sees either the old state or the new, never a torn file.
public enum FileSystem {
    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates `path` and any missing parents.
    public static func createDirectories(_ path: String) throws(CairnError) {
        if isDirectory(path) { return }
        let parent = directoryName(path)
        if parent != path && !parent.isEmpty { try createDirectories(parent) }
        if mkdir(path, 0o750) != 0 && errno != EEXIST {
            throw CairnError.io("create directory", path, Errno(rawValue: errno))
        }
    }

    public static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// Flushes a directory's entries, so that a rename or create inside it survives a crash.
    public static func syncDirectory(_ path: String) throws(CairnError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw CairnError.io("open directory", path, Errno(rawValue: errno)) }
        defer { close(fd) }
        while fsync(fd) != 0 {
            if errno != EINTR { throw CairnError.io("sync directory", path, Errno(rawValue: errno)) }
        }
        try FaultInjection.countWrite(path)
    }

    public static func rename(_ from: String, to: String) throws(CairnError) {
        if Glibc.rename(from, to) != 0 { throw CairnError.io("rename \(from) to", to, Errno(rawValue: errno)) }
        try FaultInjection.countWrite(to)
    }

    /// Gives `from` the second name `to`, failing with `.exists` if `to` exists: a rename that
    /// never replaces. On a filesystem without hard links it falls back to a check and a rename
    /// (safe under the repository's locks, which keep writers of one name apart).
    public static func linkNew(_ from: String, to: String) throws(CairnError) {
        if link(from, to) != 0 {
            let error = errno
            if error == EEXIST { throw CairnError(.exists, "\(to) exists already: it is not replaced") }
            guard error == EPERM || error == ENOTSUP || error == EOPNOTSUPP else {
                throw CairnError.io("link \(from) to", to, Errno(rawValue: error))
            }
            guard !exists(to) else { throw CairnError(.exists, "\(to) exists already: it is not replaced") }
            try rename(from, to: to)
            return
        }
        try FaultInjection.countWrite(to)
    }

    public static func remove(_ path: String) throws(CairnError) {
        if unlink(path) != 0 && errno != ENOENT { throw CairnError.io("remove", path, Errno(rawValue: errno)) }
    }

    public static func removeDirectory(_ path: String) {
        _ = rmdir(path)
    }

    /// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, directory fsync).
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws(CairnError) {
        let temporary = temporaryName(for: path)
        do {
            let file = try File.open(temporary, .createOrTruncate)
            try file.write(bytes, at: 0)
            try file.sync()
        } catch {
            try? remove(temporary)
            throw error
        }
        try rename(temporary, to: path)
        try syncDirectory(directoryName(path))
    }

    /// A name beside `path` that marks an unfinished write: `.NAME.tmp-PID`.
    public static func temporaryName(for path: String) -> String {
        "\(directoryName(path))/.\(baseName(path)).tmp-\(getpid())"
    }

    public static func readAll(_ path: String, limit: Int = 64 << 20) throws(CairnError) -> [UInt8] {
        let file = try File.open(path, .readOnly)
        let size = try file.size()
        guard size <= UInt64(limit) else {
            throw CairnError(.damaged, "\(path) is \(size) bytes, more than the \(limit) this file can be")
        }
        return try file.readBytes(count: Int(size), at: 0)
    }

    /// The names in a directory, without `.` and `..`, sorted.
    public static func list(_ path: String) throws(CairnError) -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw CairnError.io("list", path, Errno(rawValue: errno))
        }
        defer { closedir(dir) }
        var names: [String] = []
        // A record from readdir(3) is only as long as its name (`d_reclen`), not `sizeof(struct
        // dirent)`: copying `entry.pointee` read past the end of glibc's buffer for the last
        // record in it (AddressSanitizer under Fuzz/). The name is read in place instead.
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        while let entry = readdir(dir) {
            let name = String(
                cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// The entries of a directory, without `.` and `..`, sorted by name, each with whether it is a
    /// directory (from `d_type`, or `stat` for a link or where the filesystem does not fill it in).
    public static func listEntries(_ path: String) throws(CairnError) -> [(name: String, isDirectory: Bool)] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw CairnError.io("list", path, Errno(rawValue: errno))
        }
        defer { closedir(dir) }
        var entries: [(name: String, isDirectory: Bool)] = []
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let typeOffset = MemoryLayout<dirent>.offset(of: \dirent.d_type)!
        while let entry = readdir(dir) {
            // Read in place, as `list` does: a record is only as long as its name.
            let raw = UnsafeRawPointer(entry)
            let name = String(cString: (raw + nameOffset).assumingMemoryBound(to: CChar.self))
            guard name != "." && name != ".." else { continue }
            let type = raw.load(fromByteOffset: typeOffset, as: UInt8.self)
            // A symbolic link counts as what it points to, as `stat` sees it.
            let isDirectory =
                type == UInt8(DT_UNKNOWN) || type == UInt8(DT_LNK)
                ? Self.isDirectory("\(path)/\(name)") : type == UInt8(DT_DIR)
            entries.append((name, isDirectory))
        }
        return entries.sorted { $0.name < $1.name }
    }

    /// `path` made absolute against the working directory, without resolving symlinks (an
    /// administrator's `/var/lib/libvirt/images/...` stays as written), `.` and empty components
    /// dropped. Recorded paths are absolute so that `show` and `archive catalog` say where a
    /// disk or volume really was, whatever directory the command ran in.
    public static func absolutePath(_ path: String) -> String {
        var full = path
        if !path.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&buffer, buffer.count) != nil else { return path }
            full = String(cString: buffer) + "/" + path
        }
        let parts = full.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    /// Resolves symlinks and `..`; nil if the path does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
