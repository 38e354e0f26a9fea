#if canImport(Glibc)
    import Glibc
#endif

/// Where archive blocks go: every call to `write(block:)` passes one whole block.
///
/// The block writer does not know whether it feeds files, a pipe or a tape drive: a tape in
/// fixed-block mode receives exactly one `write(2)` per block, as the st driver needs.
public protocol ArchiveSink: AnyObject {
    func beginVolume(_ number: Int) throws(CairnError)
    func write(block: UnsafeRawBufferPointer) throws(CairnError)
    func endVolume() throws(CairnError)
    /// Where the volumes went, one name per volume (`PATH.001`, or `-` for a stream).
    var volumeNames: [String] { get }
    /// Removes what a failed write left behind (volume files only).
    func discard()
}

/// Volumes as files `PATH.001`, `PATH.002`, …; each is written as `.PATH.001.tmp-PID` and synced
/// and renamed into place when complete, so a volume under its final name is always whole.
public final class VolumeFileSink: ArchiveSink {
    public let basePath: String
    let force: Bool
    private var file: File?
    /// The volume being written, under its temporary name.
    private var temporaryPath: String?
    public private(set) var volumeNames: [String] = []

    public init(basePath: String, force: Bool) throws(CairnError) {
        self.basePath = basePath
        self.force = force
        let directory = FileSystem.directoryName(basePath)
        guard FileSystem.isDirectory(directory) else {
            throw CairnError(.notFound, "cannot write archive \(basePath): directory \(directory) does not exist")
        }
        if !force && FileSystem.exists(Self.path(basePath, 1)) {
            throw CairnError(.exists, "\(Self.path(basePath, 1)) exists", remedy: .overwrite)
        }
        // Unfinished volumes of this base path that a killed write left behind.
        let base = FileSystem.baseName(basePath)
        DeadProcessFiles.sweep(directory) { name in
            DeadProcessFiles.pid(inTemporaryNameOf: base + ".", name)
        }
    }

    public static func path(_ base: String, _ volume: Int) -> String {
        let digits = String(volume)
        return base + "." + String(repeating: "0", count: max(0, 3 - digits.count)) + digits
    }

    public func beginVolume(_ number: Int) throws(CairnError) {
        let path = Self.path(basePath, number)
        if !force && FileSystem.exists(path) {
            throw CairnError(.exists, "\(path) exists", remedy: .overwrite)
        }
        let temporary = FileSystem.temporaryName(for: path)
        file = try File.open(temporary, .createOrTruncate)
        temporaryPath = temporary
        volumeNames.append(path)
    }

    public func write(block: UnsafeRawBufferPointer) throws(CairnError) {
        try file!.writeSequential(block)
    }

    public func endVolume() throws(CairnError) {
        guard let file, let temporaryPath, let path = volumeNames.last else { return }
        try file.sync()
        self.file = nil
        try FileSystem.rename(temporaryPath, to: path)
        self.temporaryPath = nil
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }

    public func discard() {
        file = nil
        if let temporaryPath { try? FileSystem.remove(temporaryPath) }
        temporaryPath = nil
        for name in volumeNames { try? FileSystem.remove(name) }
    }
}

/// One stream: stdout, a pipe, or a tape device node. Volumes follow each other in the stream.
public final class StreamSink: ArchiveSink {
    let file: File
    let name: String
    public private(set) var volumeNames: [String] = []

    public init(file: File, name: String) {
        self.file = file
        self.name = name
    }

    public func beginVolume(_ number: Int) throws(CairnError) { volumeNames.append(name) }

    public func write(block: UnsafeRawBufferPointer) throws(CairnError) {
        try file.writeSequential(block)
    }

    public func endVolume() throws(CairnError) {}
    public func discard() {}

    /// True when `path` names a character device (a tape drive such as /dev/nst0).
    public static func isCharacterDevice(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR
    }
}

/// Blocks kept in memory: for tests and in-process round trips.
public final class MemorySink: ArchiveSink {
    public private(set) var volumes: [[UInt8]] = []
    public init() {}
    public var volumeNames: [String] { volumes.indices.map { "memory.\($0 + 1)" } }
    public func beginVolume(_ number: Int) throws(CairnError) { volumes.append([]) }
    public func write(block: UnsafeRawBufferPointer) throws(CairnError) {
        volumes[volumes.count - 1].append(contentsOf: block)
    }
    public func endVolume() throws(CairnError) {}
    public func discard() {}
}
