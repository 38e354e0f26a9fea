import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

/// A private directory in tmpfs (`/dev/shm`, else `$TMPDIR`) where a target writes each input as
/// the file a parser opens by path (segments are memory-mapped, packs and images read with
/// `pread`), so the real file-reading code runs, at memory speed. Removed at exit.
public final class Scratch {
    public let path: String
    nonisolated(unsafe) private static var toRemove: String?

    public init(_ target: String) {
        let base: String
        if FileSystem.isDirectory("/dev/shm") {
            base = "/dev/shm"
        } else {
            base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        }
        path = "\(base)/cairn-fuzz-\(target)-\(getpid())"
        Self.removeTree(path)
        guard mkdir(path, 0o700) == 0 else { fatalError("cannot create the scratch directory \(path)") }
        Self.toRemove = path
        atexit {
            if let path = Scratch.toRemove { Scratch.removeTree(path) }
        }
    }

    /// Writes `bytes` to `relative` (created or truncated; parent directories made as needed).
    public func write(_ bytes: UnsafeRawBufferPointer, to relative: String) {
        let full = "\(path)/\(relative)"
        do {
            try FileSystem.createDirectories(FileSystem.directoryName(full))
            let file = try File.open(full, .createOrTruncate)
            if !bytes.isEmpty { try file.write(bytes, at: 0) }
        } catch {
            fatalError("cannot write the fuzz input to \(full): \(error)")
        }
    }

    public func write(_ bytes: [UInt8], to relative: String) {
        bytes.withUnsafeBytes { write($0, to: relative) }
    }

    /// Removes `relative` (a file or a whole directory tree) if it exists.
    public func remove(_ relative: String) {
        Self.removeTree("\(path)/\(relative)")
    }

    /// `rm -rf`: enough for the flat trees the targets make (no symlink games: they write only
    /// regular files and directories).
    static func removeTree(_ path: String) {
        if FileSystem.isDirectory(path) {
            for name in (try? FileSystem.list(path)) ?? [] { removeTree("\(path)/\(name)") }
            _ = rmdir(path)
        } else {
            _ = unlink(path)
        }
    }
}
