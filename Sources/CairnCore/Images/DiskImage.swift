/// A guest disk as a backup reads it: its size, which ranges are known to read as zeros, and reads.
///
/// Raw files and qcow2 images (with backing chains, snapshots, external data files) all come
/// through this one door, so the backup pipeline never knows which format it is reading.
/// Implementations are used from one thread at a time.
public protocol DiskImage: AnyObject {
    /// What the guest sees, in bytes.
    var virtualSize: UInt64 { get }

    /// Format facts recorded in the restore point (needed to restore to the same format).
    var info: SourceImageInfo { get }

    /// Describes the guest range starting at `offset`: how long it runs (at least 1 byte, at most
    /// `maxLength`, never past `virtualSize`) and whether it is known to read as zeros, in which
    /// case the backup skips it without reading (holes, unallocated or zero clusters), or, through
    /// a `ChangeTrackedImage`, known unchanged since the base restore point.
    func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent

    /// Reads exactly `buffer.count` guest bytes starting at `offset` (`offset + count <= virtualSize`).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError)

    /// True if `read` may be called from several threads at once (plain `pread`, no caches):
    /// the backup then reads in its worker threads, so copying from the page cache uses every core.
    var supportsConcurrentReads: Bool { get }
}

extension DiskImage {
    public var supportsConcurrentReads: Bool { false }
}

/// A run of guest bytes with one state: data to read, known zeros, or unchanged since the base.
public struct ImageExtent: Sendable, Equatable {
    public enum State: UInt8, Sendable {
        /// Must be read.
        case data
        /// Reads as zeros without being read (holes, unallocated or zero clusters).
        case zero
        /// Reads as it did at the base restore point (a trusted dirty bitmap calls it clean): its
        /// blocks take the base's digests without being read. Only a `ChangeTrackedImage` says so.
        case unchanged
    }

    public var length: UInt64
    public var state: State
    /// True if the range reads as zeros without needing to be read.
    public var isZero: Bool { state == .zero }

    public init(length: UInt64, state: State) {
        self.length = length
        self.state = state
    }

    public init(length: UInt64, isZero: Bool) {
        self.init(length: length, state: isZero ? .zero : .data)
    }
}

/// The source image's format facts, kept in the restore point's manifest.
public struct SourceImageInfo: Codable, Sendable, Equatable {
    public var format: ImageFormat
    /// The path the image was read from, as given.
    public var path: String
    public var virtualSize: UInt64
    /// qcow2 only: the source's cluster size.
    public var clusterSize: UInt64?
    /// qcow2 only: header version (2 or 3).
    public var qcow2Version: UInt32?
    /// qcow2 only: the internal snapshot that was read instead of the active layer.
    public var snapshot: String?
    /// qcow2 and vmdk: the backing (parent) chain that was flattened into the guest view, nearest first.
    public var backingChain: [String]?
    /// Where the bytes came from: `nbd` for an NBD export (`path` is then its URI); absent for a
    /// file or block device (and in restore points written before NBD sources existed).
    public var kind: DiskSourceKind?
    /// vmdk only: the descriptor's createType (`monolithicSparse`, `vmfs`, ...).
    public var vmdkCreateType: String?

    public init(
        format: ImageFormat, path: String, virtualSize: UInt64, clusterSize: UInt64? = nil, qcow2Version: UInt32? = nil,
        snapshot: String? = nil, backingChain: [String]? = nil, kind: DiskSourceKind? = nil,
        vmdkCreateType: String? = nil
    ) {
        self.format = format
        self.path = path
        self.virtualSize = virtualSize
        self.clusterSize = clusterSize
        self.qcow2Version = qcow2Version
        self.snapshot = snapshot
        self.backingChain = backingChain
        self.kind = kind
        self.vmdkCreateType = vmdkCreateType
    }
}

/// The image formats Cairn reads.
/// How a disk was read, as manifests record it (`sourceKind`, `source.kind`).
public enum DiskSourceKind: String, Codable, Sendable, CaseIterable {
    /// An image file or a block device.
    case file
    /// An NBD export.
    case nbd
}

public enum ImageFormat: String, Codable, Sendable, CaseIterable {
    case raw
    case qcow2
    case vmdk
}

/// Opens an image by path or NBD URI, detecting a file's format by magic unless one is forced.
///
/// Detection refuses rather than guesses (see `ImageSignature`): a VHDX, VDI, LUKS, QED, VHD,
/// Parallels, DMG, Bochs or qcow (version 1) image is refused by name, and so is a file
/// whose name claims a format its bytes lack (`vm.qcow2` without qcow2's magic, a damaged header
/// most likely). `--format raw` (`format: .raw`) reads any file as raw bytes.
public enum DiskImageOpener {
    public static let qcow2Magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]

    /// The byte QEMU's file driver locks while it holds write permission on an image
    /// (`RAW_LOCK_PERM_BASE` 100 + bit 1, `BLK_PERM_WRITE`; QEMU `block/file-posix.c`).
    public static let qemuWriteLockByte: UInt64 = 101

    /// Opens `path`: an NBD URI (`nbd://`, `nbd+unix://`) or an image file or block device, as
    /// given (a backup opens its sources through `DiskSource`, which records absolute paths).
    ///
    /// A file that a running QEMU holds for writing is refused unless `allowLive`: its bytes
    /// change while they are read, so the copy would be crash-inconsistent at best.
    public static func open(
        _ path: String, format: ImageFormat? = nil, snapshot: String? = nil, allowLive: Bool = false,
        nbdTimeout: Double = NBDClient.Configuration.defaultTimeout, nbdContexts: [String] = []
    ) throws(CairnError) -> any DiskImage {
        if NBDURI.looksLikeURI(path) {
            return try openNBD(path, format: format, snapshot: snapshot, timeout: nbdTimeout, contexts: nbdContexts)
        }
        return try openFile(path, format: format, snapshot: snapshot, allowLive: allowLive)
    }

    /// Connects to the NBD export `uri`; an export has no snapshots and always reads as raw.
    static func openNBD(
        _ uri: String, format: ImageFormat?, snapshot: String?, timeout: Double, contexts: [String]
    ) throws(CairnError) -> any DiskImage {
        if let snapshot {
            throw CairnError(.usage, "\(uri) is an NBD export: it has no snapshot \"\(snapshot)\"")
        }
        if let format, format != .raw {
            throw CairnError(
                .usage, "\(uri) is an NBD export: the server already decodes the image, so it reads as raw",
                remedy: .readAsRaw)
        }
        return try NBDImage(uri: NBDURI(parsing: uri), extraContexts: contexts, timeout: timeout)
    }

    /// Opens an image file or block device, detecting its format by magic unless one is forced.
    static func openFile(
        _ path: String, format: ImageFormat?, snapshot: String?, allowLive: Bool
    ) throws(CairnError) -> any DiskImage {
        // One rule for exit codes: a source that is not there was named wrongly (not found, as
        // for a restore point or a group); one that is there but is no disk image is a bad image.
        if FileSystem.isDirectory(path) {
            throw CairnError(
                .badImage, "\(path) is a directory, not a disk image: name an image file, a block device or an NBD URI")
        }
        let file: File
        do {
            file = try File.open(path, .readOnly)
        } catch let error where error.code == .notFound {
            throw CairnError(.notFound, "image \(path) does not exist")
        }
        if !allowLive, try file.isByteLockedByOthers(qemuWriteLockByte) {
            throw CairnError(
                .badImage,
                "\(path) is held for writing by a running QEMU (its image lock): a copy read now is crash-inconsistent. Back up the VM through the NBD export of `virsh backup-begin` (pull mode) or from an external snapshot",
                remedy: .allowLive)
        }
        let detected: ImageFormat
        if format == .raw {
            detected = .raw
        } else {
            let signature = try ImageSignature.identify(file, size: try file.size())
            if case .foreign(let foreign) = signature {
                throw CairnError(
                    .badImage,
                    "\(path) is a \(foreign.name) image; Cairn reads raw, qcow2 and VMDK images (convert it with "
                        + "`qemu-img convert -O qcow2`, or read it as raw to back up its bytes as they are)",
                    remedy: .readAsRaw)
            }
            if format == nil, let claimed = ImageSignature.claimed(byName: path), claimed != signature {
                let holds = signature == .none ? "has no known image signature" : "holds \(signature.name)"
                let damaged = claimed == .qcow2 ? " (no qcow2 magic at offset 0: is its header damaged?)" : ""
                let override = signature == .qcow2 ? "read it as qcow2 to read the qcow2 it holds, or " : ""
                throw CairnError(
                    .badImage,
                    "\(path) is named as a \(claimed.name) image but \(holds)\(damaged); "
                        + "\(override)read it as raw to back up its bytes as they are",
                    remedy: signature == .qcow2 ? .readAsQCOW2OrRaw : .readAsRaw)
            }
            detected = format ?? (signature == .qcow2 ? .qcow2 : signature == .vmdk ? .vmdk : .raw)
        }
        switch detected {
        case .raw:
            if let snapshot {
                throw CairnError(.usage, "\(path) is a raw image: it has no snapshot \"\(snapshot)\"")
            }
            return try RawImage(file: file)
        case .qcow2:
            return try QCOW2Image(file: file, snapshot: snapshot)
        case .vmdk:
            if let snapshot {
                throw CairnError(
                    .usage, "\(path) is a vmdk image: snapshot \"\(snapshot)\" can name qcow2 snapshots only")
            }
            return try VMDKImage(file: file)
        }
    }
}
