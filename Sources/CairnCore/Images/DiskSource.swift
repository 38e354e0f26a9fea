/// Where a disk's bytes come from: the seam between a source a person names (a file, a block
/// device, an NBD export; later others, such as a Ceph RBD image) and the `DiskImage` the backup
/// reads through.
///
/// A source knows how it is recorded in the restore point (`location`), the disk name it gives
/// when none is chosen, whether a previous restore point read the same disk (changed-block
/// tracking trusts a bitmap only then), and how to open itself.
public protocol DiskSource: Sendable, CustomStringConvertible {
    /// As the restore point records it (`SourceImageInfo.path`) and messages name it: an
    /// absolute path or a URI.
    var location: String { get }

    /// The disk's name in the restore point when none is given.
    var defaultDiskName: String { get }

    /// Whether `recorded` (a previous restore point's source) is this disk.
    func isSameDisk(as recorded: SourceImageInfo) -> Bool

    /// Opens the disk for reading.
    func open(_ options: DiskOpenOptions) throws(CairnError) -> any DiskImage
}

extension DiskSource {
    public var description: String { location }
}

/// How a backup opens its source.
public struct DiskOpenOptions: Sendable {
    /// Force this format instead of detecting it (files only; an NBD export reads as raw).
    public var format: ImageFormat?
    /// A qcow2 internal snapshot to read instead of the active layer.
    public var snapshot: String?
    /// Read a file even though a running QEMU holds it for writing (crash-inconsistent).
    public var allowLive = false
    /// Seconds an NBD server may stay silent before the read fails.
    public var nbdTimeout = NBDClient.Configuration.defaultTimeout
    /// NBD metadata contexts to ask for beside `base:allocation` (a dirty bitmap's).
    public var nbdContexts: [String] = []

    public init(
        format: ImageFormat? = nil, snapshot: String? = nil, allowLive: Bool = false,
        nbdTimeout: Double = NBDClient.Configuration.defaultTimeout, nbdContexts: [String] = []
    ) {
        self.format = format
        self.snapshot = snapshot
        self.allowLive = allowLive
        self.nbdTimeout = nbdTimeout
        self.nbdContexts = nbdContexts
    }
}

/// An image file or a block device, by its absolute path.
public struct FileDiskSource: DiskSource {
    public let path: String

    /// `path` is made absolute (against the working directory), as the restore point records it.
    public init(path: String) {
        self.path = FileSystem.absolutePath(path)
    }

    public var location: String { path }
    public var defaultDiskName: String { FileSystem.baseName(path) }

    public func isSameDisk(as recorded: SourceImageInfo) -> Bool { recorded.path == path }

    public func open(_ options: DiskOpenOptions) throws(CairnError) -> any DiskImage {
        try DiskImageOpener.openFile(
            path, format: options.format, snapshot: options.snapshot, allowLive: options.allowLive)
    }
}

/// An NBD export (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`).
///
/// The URI is kept as given and parsed when the export is opened, so a malformed one fails the
/// backup at the moment every other source is opened.
public struct NBDDiskSource: DiskSource {
    public let uri: String

    public init(uri: String) { self.uri = uri }

    public var location: String { uri }

    /// The export's name (its last path component), `nbd` for the default export "".
    public var defaultDiskName: String {
        guard let parsed = try? NBDURI(parsing: uri) else { return FileSystem.baseName(uri) }
        let name = FileSystem.baseName(parsed.exportName)
        return name.isEmpty ? "nbd" : name
    }

    /// An export's URI names a socket that may be new each night (libvirt's pull mode): any
    /// export recorded under the same disk name counts, and the recorded checkpoint decides.
    public func isSameDisk(as recorded: SourceImageInfo) -> Bool { recorded.kind == .nbd || recorded.path == uri }

    public func open(_ options: DiskOpenOptions) throws(CairnError) -> any DiskImage {
        try DiskImageOpener.openNBD(
            uri, format: options.format, snapshot: options.snapshot, timeout: options.nbdTimeout,
            contexts: options.nbdContexts)
    }
}

/// Reading a source as a command line or a domain definition names it.
public enum DiskSources {
    /// An NBD URI (`nbd://…`, `nbd+unix://…`) or else a file or block device.
    public static func source(for text: String) -> any DiskSource {
        NBDURI.looksLikeURI(text) ? NBDDiskSource(uri: text) : FileDiskSource(path: text)
    }
}
