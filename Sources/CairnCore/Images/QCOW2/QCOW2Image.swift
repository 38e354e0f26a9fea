/// A qcow2 image's guest view: exactly what `qemu-img convert -O raw` produces, or a refusal.
///
/// Reads the active layer or one internal snapshot through the L1/L2 tables, follows the backing
/// chain for unallocated ranges, reads guest data from an external data file when there is one,
/// and decompresses deflate and zstd clusters. The source is opened read-only and never changed.
///
/// Where QEMU is lenient (it reads zeros past the end of the file, for example) this reader
/// refuses with one `.badImage` error naming the field and offset: a truncated or hostile image
/// must not back up as a wrong disk. Format and rules: `/work/shared/qcow2-reference.md` and QEMU
/// `docs/interop/qcow2.txt`.
public final class QCOW2Image: DiskImage {
    /// Backing chains deeper than this are refused (QEMU has no limit and can recurse until it crashes).
    static let maxChainDepth = 16
    /// The largest L1 table read: 32 MiB, as QEMU allows.
    static let maxL1Entries: UInt64 = 4 << 20
    /// The largest refcount table accepted: 8 MiB, as QEMU allows.
    static let maxRefcountTableBytes: UInt64 = 8 << 20

    public let file: File
    public let virtualSize: UInt64
    let header: QCOW2Header
    let fileSize: UInt64
    let clusterBits: UInt64
    let clusterSize: UInt64
    /// Entries per L2 table (cs/8, or cs/16 with extended L2 entries).
    let l2Entries: UInt64
    /// The L1 entries that cover `virtualSize` (the VM-state area beyond is never read).
    let l1: [UInt64]
    /// Host byte ranges of metadata that no data cluster may overlap.
    let metadata: [Range<UInt64>]
    /// Where guest data lives when the image has an external data file.
    let dataFile: File?
    let dataFileSize: UInt64
    let backing: (any DiskImage)?
    /// Resolved paths of the backing images, nearest first.
    let backingChain: [String]
    let snapshotName: String?

    let l2Cache: QCOW2L2Cache
    /// One decompressed cluster, reused; `decompressedCluster` says which guest cluster it holds.
    var clusterBuffer: [UInt8] = []
    var decompressedCluster: UInt64?
    var compressedBuffer: [UInt8] = []
    lazy var inflater = Inflater()
    lazy var zstd = ZstdDecompressor()

    public var info: SourceImageInfo {
        SourceImageInfo(
            format: .qcow2, path: file.path, virtualSize: virtualSize, clusterSize: clusterSize,
            qcow2Version: header.version, snapshot: snapshotName, backingChain: backingChain)
    }

    /// Opens `file` as qcow2; `snapshot` names an internal snapshot (by name or id) to read instead
    /// of the active layer.
    public convenience init(file: File, snapshot: String?) throws(CairnError) {
        let real = FileSystem.realPath(file.path) ?? file.path
        try self.init(file: file, snapshot: snapshot, openedChain: [real])
    }

    /// - Parameter openedChain: real paths of this image and every image above it in the chain,
    ///   to refuse loops; its count is this image's depth.
    init(file: File, snapshot: String?, openedChain: [String]) throws(CairnError) {
        self.file = file
        let path = file.path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): qcow2 \(message)") }

        fileSize = try file.size()
        header = try QCOW2Header.parse(file, fileSize: fileSize)
        clusterBits = UInt64(header.clusterBits)
        clusterSize = header.clusterSize
        l2Entries = clusterSize / (header.hasExtendedL2 ? 16 : 8)
        l2Cache = QCOW2L2Cache(tableSize: Int(clusterSize))

        // Choose the layer: the active L1 table or a snapshot's.
        let snapshots = try QCOW2Snapshot.readTable(file, fileSize: fileSize, header: header)
        var l1Offset = header.l1TableOffset
        var l1Size = header.l1Size
        var size = header.size
        var l1Field = "l1_table_offset at offset 40"
        if let snapshot {
            guard
                let chosen = snapshots.first(where: { $0.name == snapshot })
                    ?? snapshots.first(where: { $0.id == snapshot })
            else {
                let names = snapshots.map { "\"\($0.name)\" (id \($0.id))" }.joined(separator: ", ")
                throw CairnError(
                    .usage,
                    "\(path) has no internal snapshot named \"\(snapshot)\"; "
                        + (names.isEmpty ? "it has no snapshots" : "its snapshots are: \(names)"))
            }
            l1Offset = chosen.l1TableOffset
            l1Size = chosen.l1Size
            size = chosen.diskSize ?? header.size
            l1Field = "snapshot \"\(chosen.name)\" L1 table offset"
            snapshotName = chosen.name
        } else {
            snapshotName = nil
        }
        // QEMU rounds a size that is not a multiple of 512 down; so does this reader.
        virtualSize = size / 512 * 512

        // L1 table: big enough for the disk, bounded, aligned and inside the file. What it must
        // cover is the size as the header gives it, before rounding (QEMU's "L1 table is too small").
        let l2Span = clusterSize * l2Entries
        let needed = size / l2Span + (size % l2Span == 0 ? 0 : 1)
        guard UInt64(l1Size) <= Self.maxL1Entries, needed <= Self.maxL1Entries else {
            throw bad(
                "l1_size is \(l1Size) entries (\(needed) needed for size \(size)): at most \(Self.maxL1Entries) are allowed"
            )
        }
        guard UInt64(l1Size) >= needed else {
            throw bad("l1_size is \(l1Size) entries, fewer than the \(needed) that size \(size) needs")
        }
        let l1Bytes = UInt64(l1Size) * 8
        // Even an empty L1 table must have an aligned offset, as QEMU requires ("L1 table offset invalid").
        guard l1Offset % clusterSize == 0 else {
            throw bad(
                "\(l1Field) is 0x\(qcow2Hex(l1Offset)): it must be a multiple of the cluster size 0x\(qcow2Hex(clusterSize))"
            )
        }
        if l1Size > 0 {
            guard l1Offset >= clusterSize else {
                throw bad(
                    "\(l1Field) is 0x\(qcow2Hex(l1Offset)): it must be a non-zero multiple of the cluster size 0x\(qcow2Hex(clusterSize))"
                )
            }
            guard l1Offset <= fileSize, l1Bytes <= fileSize - l1Offset else {
                throw bad(
                    "L1 table at 0x\(qcow2Hex(l1Offset)) (\(l1Bytes) bytes) lies beyond the end of the file "
                        + "(size 0x\(qcow2Hex(fileSize))): the image is truncated")
            }
        }
        let table = try file.readBytes(count: Int(needed * 8), at: l1Offset)
        l1 = table.withUnsafeBytes { raw in
            (0..<Int(needed)).map { UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        }

        // Refcount table: not needed to read, but it is metadata that data must not overlap.
        let refcountOffset = header.refcountTableOffset
        let refcountBytes = UInt64(header.refcountTableClusters) * clusterSize
        guard refcountBytes <= Self.maxRefcountTableBytes else {
            throw bad(
                "refcount_table_clusters at offset 56 is \(header.refcountTableClusters): the table may be at most 8 MiB"
            )
        }
        guard refcountBytes > 0 else {
            throw bad("refcount_table_clusters at offset 56 is 0: the image has no refcount table, which QEMU refuses")
        }
        guard refcountOffset % clusterSize == 0, refcountOffset != 0,
            refcountOffset <= fileSize, refcountBytes <= fileSize - refcountOffset
        else {
            throw bad(
                "refcount_table_offset at offset 48 is 0x\(qcow2Hex(refcountOffset)) (\(refcountBytes) bytes): it is "
                    + "misaligned or lies beyond the end of the file (size 0x\(qcow2Hex(fileSize)))")
        }
        metadata = [0..<clusterSize, l1Offset..<l1Offset + l1Bytes, refcountOffset..<refcountOffset + refcountBytes]

        // External data file, named relative to this image's directory.
        if header.hasDataFile, let name = header.dataFile {
            let resolved = Self.resolve(name, nextTo: path)
            guard FileSystem.exists(resolved) else {
                throw bad("external data file \"\(name)\" (looked for at \(resolved)) does not exist")
            }
            let data = try File.open(resolved, .readOnly)
            dataFile = data
            dataFileSize = try data.size()
        } else {
            dataFile = nil
            dataFileSize = 0
        }

        let chain = try Self.openBacking(header: header, of: path, openedChain: openedChain)
        backing = chain?.image
        backingChain = chain.map { [$0.path] + (($0.image as? QCOW2Image)?.backingChain ?? []) } ?? []

        try checkRefcountTable(at: refcountOffset, bytes: refcountBytes)
        try checkL1Entries(l1Field: l1Field, l1Offset: l1Offset)
    }

    /// `name` as a path: absolute as given, relative to the directory of `imagePath` otherwise.
    static func resolve(_ name: String, nextTo imagePath: String) -> String {
        if name.hasPrefix("/") { return name }
        return FileSystem.directoryName(imagePath) + "/" + name
    }
}
