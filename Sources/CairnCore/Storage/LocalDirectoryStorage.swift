import CLinux
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A repository in a local directory: a key is a path below `root`.
///
/// The only place that knows how a local filesystem makes an object durable and atomic: an
/// object is written under a temporary name beside its final one (`.NAME.tmp-PID`, which
/// `removeLeftovers` recognises once its process is gone), synced (one `fsync`, or one `syncfs`
/// for a batch of several, which costs the same as one and spares a flush per pack), renamed
/// into place, and the directories that changed are synced, deepest first. A create-only
/// publish links instead of renaming, so an existing object is never replaced.
public struct LocalDirectoryStorage: RepositoryStorage {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public var location: String { root }

    /// The file that holds `key`.
    public func path(of key: String) -> String { "\(root)/\(key)" }

    public func stage(_ key: String) throws(CairnError) -> any StagedObject {
        let path = path(of: key)
        try FileSystem.createDirectories(FileSystem.directoryName(path))
        let temporary = FileSystem.temporaryName(for: path)
        return LocalStagedFile(
            key: key, path: path, temporaryPath: temporary, file: try File.open(temporary, .createNew))
    }

    public func commit(_ objects: [any StagedObject]) throws(CairnError) {
        guard !objects.isEmpty else { return }
        let files = objects.map(Self.local)
        for file in files { try file.writeOut() }
        if files.count == 1 {
            try files[0].file.sync()
        } else {
            try syncFilesystem()
        }
        var directories = Set<String>()
        for file in files {
            try FileSystem.rename(file.temporaryPath, to: file.path)
            directories.formUnion(changedDirectories(for: file.key))
        }
        try syncDirectories(directories)
    }

    public func abandon(_ object: any StagedObject) {
        try? FileSystem.remove(Self.local(object).temporaryPath)
    }

    public func publish(_ bytes: [UInt8], as key: String, _ mode: PublishMode) throws(CairnError) {
        let path = path(of: key)
        try FileSystem.createDirectories(FileSystem.directoryName(path))
        let temporary = FileSystem.temporaryName(for: path)
        do throws(CairnError) {
            let file = try File.open(temporary, .createOrTruncate)
            try file.write(bytes, at: 0)
            try file.sync()
            switch mode {
            case .replace:
                try FileSystem.rename(temporary, to: path)
            case .createOnly:
                try FileSystem.linkNew(temporary, to: path)
                try FileSystem.remove(temporary)
            }
        } catch {
            try? FileSystem.remove(temporary)
            throw error
        }
        try syncDirectories(changedDirectories(for: key))
    }

    public func open(_ key: String) throws(CairnError) -> any StoredObject {
        let file = try File.open(path(of: key), .readOnly)
        return LocalObject(file: file, size: try file.size())
    }

    /// Record reads (32 KiB and more) go around the page cache (`DirectReader`).
    public func openRecords(_ key: String) throws(CairnError) -> any StoredObject {
        let path = path(of: key)
        let file = try File.open(path, .readOnly)
        return LocalObject(file: file, size: try file.size(), direct: DirectReader(path: path))
    }

    public func map(_ key: String) throws(CairnError) -> MappedFile {
        try MappedFile(path: path(of: key))
    }

    public func list(prefix: String) throws(CairnError) -> [String] {
        // The directory the prefix names (up to its last `/`), walked below; hidden names are
        // temporary files of writers and never objects.
        let directory = prefix.lastIndex(of: "/").map { String(prefix[..<$0]) } ?? ""
        var keys: [String] = []
        func walk(_ relative: String) throws(CairnError) {
            let here = relative.isEmpty ? root : path(of: relative)
            for entry in try FileSystem.listEntries(here) where !entry.name.hasPrefix(".") {
                let key = relative.isEmpty ? entry.name : "\(relative)/\(entry.name)"
                if entry.isDirectory {
                    // Only directories that can hold keys with the prefix.
                    if key.hasPrefix(prefix) || prefix.hasPrefix(key + "/") { try walk(key) }
                } else if key.hasPrefix(prefix) {
                    keys.append(key)
                }
            }
        }
        try walk(directory)
        return keys.sorted()
    }

    public func delete(_ keys: [String]) throws(CairnError) {
        guard !keys.isEmpty else { return }
        var directories = Set<String>()
        for key in keys {
            try FileSystem.remove(path(of: key))
            directories.insert(FileSystem.directoryName(path(of: key)))
        }
        // A directory left empty below the top level (a pack fan-out directory) goes too, as an
        // object store has none; top-level ones (`packs`, `index`) stay.
        var parents = Set<String>()
        for directory in Self.deepestFirst(directories) {
            try FileSystem.syncDirectory(directory)
            let parent = FileSystem.directoryName(directory)
            if parent != root && parent.hasPrefix(root + "/") {
                FileSystem.removeDirectory(directory)  // only succeeds when empty
                parents.insert(parent)
            }
        }
        try syncDirectories(parents)
    }

    public func exists(_ key: String) -> Bool { FileSystem.exists(path(of: key)) }

    /// Mode 0600 from the start (never readable by others, not even for a moment), in a directory
    /// created 0700; linked into place, so an existing file is never replaced.
    public func publishPrivate(_ bytes: [UInt8], as key: String) throws(CairnError) {
        let target = path(of: key)
        let directory = FileSystem.directoryName(target)
        if !FileSystem.exists(directory) {
            try FileSystem.createDirectories(directory)
            if chmod(directory, 0o700) != 0 { throw CairnError.io("chmod", directory, Errno(rawValue: errno)) }
        }
        let temporary = FileSystem.temporaryName(for: target)
        do throws(CairnError) {
            let handle = try File.open(temporary, .createOrTruncate)
            try handle.setPermissions(0o600)
            try handle.write(bytes, at: 0)
            try handle.sync()
            try FileSystem.linkNew(temporary, to: target)
            try? FileSystem.remove(temporary)
        } catch {
            try? FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.syncDirectory(directory)
    }

    /// flocks on `locks/*.lock`, released by the kernel when their process dies.
    public func makeLocking() -> any RepositoryLocking { FileLocking(root: root) }

    /// Directories where writers put temporary files (the same ones as before the seam, so a
    /// sweep's count is unchanged).
    public func removeLeftovers(dryRun: Bool) -> Int {
        var directories = ["index", "points", "verify", "packs"].map(path(of:))
        for sub in (try? FileSystem.list(path(of: "packs"))) ?? [] { directories.append(path(of: "packs/\(sub)")) }
        for group in (try? FileSystem.list(path(of: "points"))) ?? [] {
            directories.append(path(of: "points/\(group)"))
        }
        var removed = 0
        for directory in directories {
            for name in (try? FileSystem.list(directory)) ?? [] where name.hasPrefix(".") {
                guard let range = name.range(of: ".tmp-"), let pid = Int32(name[range.upperBound...]) else { continue }
                guard pid == getpid() || !ProcessLiveness.isAlive(pid) else { continue }
                if !dryRun { try? FileSystem.remove("\(directory)/\(name)") }
                removed += 1
            }
        }
        return removed
    }

    // MARK: Durability

    /// The directories whose entries change when `key` appears or goes: its own, and every one
    /// between it and the root (a fan-out directory may be new).
    private func changedDirectories(for key: String) -> Set<String> {
        var directories: Set<String> = [FileSystem.directoryName(path(of: key))]
        var relative = FileSystem.directoryName(key)
        while relative != "." && relative != "/" && !relative.isEmpty {
            directories.insert(path(of: relative))
            relative = FileSystem.directoryName(relative)
        }
        return directories
    }

    private func syncDirectories(_ directories: Set<String>) throws(CairnError) {
        for directory in Self.deepestFirst(directories) { try FileSystem.syncDirectory(directory) }
    }

    private static func deepestFirst(_ directories: Set<String>) -> [String] {
        directories.sorted { ($0.utf8.count, $0) > ($1.utf8.count, $1) }
    }

    /// Forces everything written to the repository's filesystem to stable storage.
    private func syncFilesystem() throws(CairnError) {
        let fd = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw CairnError.io("open", root, .init(rawValue: errno)) }
        defer { close(fd) }
        if cairn_syncfs(fd) != 0 { throw CairnError.io("sync the filesystem of", root, .init(rawValue: errno)) }
        try FaultInjection.countWrite(root)
    }

    private static func local(_ object: any StagedObject) -> LocalStagedFile {
        guard let file = object as? LocalStagedFile else {
            preconditionFailure("an object staged by another storage was given to LocalDirectoryStorage")
        }
        return file
    }
}

/// A file being written under its temporary name, around the page cache (`DirectAppender`).
final class LocalStagedFile: StagedObject {
    let key: String
    let path: String
    let temporaryPath: String
    let file: File
    private let appender: DirectAppender

    init(key: String, path: String, temporaryPath: String, file: File) {
        self.key = key
        self.path = path
        self.temporaryPath = temporaryPath
        self.file = file
        appender = DirectAppender(file: file)
    }

    var size: UInt64 { appender.size }

    func append(_ bytes: UnsafeRawBufferPointer) throws(CairnError) {
        try appender.append(bytes)
    }

    /// Writes what is still buffered and starts the writeback of what went through the page
    /// cache. A write that fails here fails the commit (`writeOut`), with its own message.
    func seal() {
        if (try? appender.finish()) != nil { file.startWriteback() }
    }

    /// Every appended byte on the file, or the error of the write that lost some.
    func writeOut() throws(CairnError) {
        try appender.finish()
    }
}

/// A committed file, read with pread: through `direct` for reads of at least `directMinimum`
/// bytes when it was opened for records, through the page cache otherwise (small reads keep the
/// kernel's readahead).
struct LocalObject: StoredObject {
    let file: File
    let size: UInt64
    var direct: DirectReader? = nil

    static let directMinimum = 32 << 10

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int {
        if let direct, buffer.count >= Self.directMinimum, let n = try direct.read(into: buffer, at: offset) {
            return n
        }
        return try file.read(into: buffer, at: offset)
    }

    func readBytes(count: Int, at offset: UInt64) throws(CairnError) -> [UInt8] {
        try file.readBytes(count: count, at: offset)
    }
}
