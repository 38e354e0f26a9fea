/// A VMDK disk's guest view: exactly what `qemu-img convert -O raw` produces, or a refusal.
///
/// Opens a text descriptor (monolithicFlat, twoGbMaxExtent*, ESXi `vmfs*` with `-flat.vmdk`,
/// ESXi's `vmfsSparse` and `seSparse` snapshot deltas) or a hosted sparse file with its embedded
/// descriptor (monolithicSparse, streamOptimized), maps each extent (flat, hosted sparse, COWD,
/// SEsparse, zero) into the guest address space, and follows `parentFileNameHint` for grains a
/// snapshot child does not hold. The files are opened read-only
/// and never changed. Where QEMU is lax (it skips extent lines it does not know, shortening the
/// disk; it does not check marker LBAs or the redundant directory) this reader refuses with one
/// `.badImage` error naming the field. Formats: docs/FORMAT.md, "VMDK sources".
public final class VMDKImage: DiskImage {
    /// Parent chains deeper than this are refused.
    static let maxChainDepth = 16
    /// Grain directory entries all of one image's extents may hold (16 MiB of directories), so a
    /// descriptor naming 1024 huge sparse extents cannot exhaust memory.
    static let maxDirectoryEntries: UInt64 = 4 << 20

    /// Where one extent's bytes come from.
    enum Storage {
        /// Raw bytes of `file` from `base`; holes found with SEEK_DATA/SEEK_HOLE.
        case flat(file: File, base: UInt64)
        case zero
        /// A hosted sparse (`VMDKSparseExtent`), vmfsSparse (`VMDKCOWDExtent`) or SEsparse
        /// (`VMDKSESparseExtent`) extent.
        case sparse(any VMDKGrainTables)
    }

    struct Part {
        /// Guest byte range of the extent.
        var start: UInt64
        var length: UInt64
        var storage: Storage
    }

    public let path: String
    public let virtualSize: UInt64
    /// Nil for a bare sparse extent opened without a descriptor.
    let descriptor: VMDKDescriptor?
    let parts: [Part]
    let parent: VMDKImage?
    /// Resolved paths of the parents, nearest first.
    let parentChain: [String]

    public var info: SourceImageInfo {
        // A hosted sparse grain is a layout worth keeping in a qcow2 restore; ESXi's 512-byte
        // COWD and 4 KiB SEsparse grains are not.
        let grain = parts.lazy.compactMap { part -> UInt64? in
            if case .sparse(let extent) = part.storage, let hosted = extent as? VMDKSparseExtent {
                return hosted.header.grainBytes
            }
            return nil
        }.first
        return SourceImageInfo(
            format: .vmdk, path: path, virtualSize: virtualSize, clusterSize: grain,
            backingChain: parentChain.isEmpty ? nil : parentChain, vmdkCreateType: descriptor?.createType)
    }

    /// Opens `file` (a descriptor or a sparse extent) as a VMDK disk.
    public convenience init(file: File) throws(CairnError) {
        try self.init(file: file, openedChain: [FileSystem.realPath(file.path) ?? file.path])
    }

    /// - Parameter openedChain: real paths of this image and every child above it, to refuse loops;
    ///   its count is this image's depth.
    init(file: File, openedChain: [String]) throws(CairnError) {
        let path = file.path
        self.path = path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): vmdk \(message)") }
        let fileSize = try file.size()
        let head = try file.readBytes(count: Int(min(fileSize, 32)), at: 0)

        var ownExtent: VMDKSparseExtent?
        let descriptor: VMDKDescriptor?
        if head.starts(with: VMDKSparseHeader.magic) {
            let header = try VMDKSparseHeader.parse(file, at: 0, fileSize: fileSize)
            let extent = try VMDKSparseExtent(file: file, fileSize: fileSize, header: header)
            ownExtent = extent
            if header.descriptorOffset != 0 && header.descriptorSectors != 0 {
                let text = try file.readBytes(
                    count: Int(header.descriptorSectors * 512), at: header.descriptorOffset * 512)
                // A twoGbMaxExtentSparse extent file reserves descriptor sectors but leaves them empty.
                descriptor =
                    text.first == 0 ? nil : try VMDKDescriptor.parse(text, source: path + " (embedded descriptor)")
            } else {
                descriptor = nil
            }
        } else if VMDKDescriptor.looksLikeDescriptor(head) {
            guard fileSize <= UInt64(VMDKDescriptor.maxBytes) else {
                throw bad("descriptor file is \(fileSize) bytes, more than the \(VMDKDescriptor.maxBytes) allowed")
            }
            descriptor = try VMDKDescriptor.parse(try file.readBytes(count: Int(fileSize), at: 0), source: path)
        } else if head.starts(with: VMDKCOWDHeader.magic) || VMDKImage.isSESparse(head) {
            let kind = head.starts(with: VMDKCOWDHeader.magic) ? "vmfsSparse (COWD)" : "SEsparse"
            throw bad(
                "file is an ESXi \(kind) snapshot delta extent, which holds only the changed grains: back up the descriptor that names it (\"disk-000001.vmdk\" for \"disk-000001-delta.vmdk\" or \"-sesparse.vmdk\"), which also names its parent"
            )
        } else {
            throw bad("file starts with neither KDMV nor \"# Disk DescriptorFile\"")
        }
        self.descriptor = descriptor

        guard let descriptor else {
            // A bare sparse extent: QEMU reads it as a disk of its capacity, and so does this reader.
            let extent = ownExtent!
            virtualSize = extent.header.capacity * 512
            parts = [Part(start: 0, length: virtualSize, storage: .sparse(extent))]
            parent = nil
            parentChain = []
            return
        }

        if let ownExtent {
            // An embedded descriptor describes its own file, whatever name its extent line gives
            // (users rename .vmdk files; QEMU ignores the name too).
            guard descriptor.createType == "monolithicSparse" || descriptor.createType == "streamOptimized" else {
                throw bad(
                    "embedded descriptor has createType \"\(descriptor.createType)\": only monolithicSparse and streamOptimized embed one"
                )
            }
            guard descriptor.extents[0].type == .sparse else {
                throw bad(
                    "embedded descriptor's extent is \(descriptor.extents[0].type.rawValue), not this SPARSE file")
            }
            try Self.checkCapacity(ownExtent.header.capacity, descriptor.extents[0], field: "descriptor extent 1", bad)
            try Self.checkCompression(ownExtent, descriptor, field: "descriptor extent 1", bad)
            virtualSize = descriptor.extents[0].sectors * 512
            parts = [Part(start: 0, length: virtualSize, storage: .sparse(ownExtent))]
        } else {
            (parts, virtualSize) = try Self.openExtents(descriptor, path: path, bad)
        }
        if descriptor.parentCID != VMDKDescriptor.noParent, let hint = descriptor.parentFileNameHint {
            guard openedChain.count < Self.maxChainDepth else {
                throw bad("parent chain is deeper than \(Self.maxChainDepth) images")
            }
            let resolved = try Self.resolve(hint, nextTo: path, field: "parentFileNameHint")
            guard let real = FileSystem.realPath(resolved) else {
                throw bad("parentFileNameHint \"\(hint)\" (looked for at \(resolved)) does not exist")
            }
            guard !openedChain.contains(real) else {
                throw bad("parentFileNameHint \"\(hint)\" makes a loop: \(real) is already in the chain")
            }
            let parentImage = try VMDKImage(file: try File.open(resolved, .readOnly), openedChain: openedChain + [real])
            guard let parentCID = parentImage.descriptor?.cid else {
                throw bad("parent \(resolved) has no descriptor, so its CID cannot be checked")
            }
            guard parentCID == descriptor.parentCID else {
                throw bad(
                    "parentCID is \(vmdkHex32(descriptor.parentCID)) but the parent \(resolved) has CID \(vmdkHex32(parentCID)): the parent changed after this snapshot was taken"
                )
            }
            parent = parentImage
            parentChain = [resolved] + parentImage.parentChain
        } else {
            parent = nil
            parentChain = []
        }
    }

    /// Opens the extents a descriptor file names, in guest order; returns them and the disk size.
    private static func openExtents(
        _ descriptor: VMDKDescriptor, path: String, _ bad: (String) -> CairnError
    ) throws(CairnError) -> ([Part], UInt64) {
        var parts: [Part] = []
        var start: UInt64 = 0
        var directoryEntries: UInt64 = 0
        /// Counts an extent's grain directory entries against the image's bound.
        func countEntries(_ entries: UInt64, _ field: String) throws(CairnError) {
            directoryEntries += entries
            guard directoryEntries <= maxDirectoryEntries else {
                throw bad(
                    "\(field): the sparse extents need more than \(maxDirectoryEntries) grain directory entries in all")
            }
        }
        for (index, extent) in descriptor.extents.enumerated() {
            let field = "descriptor extent \(index + 1)"
            let length = extent.sectors * 512
            guard let name = extent.fileName else {
                parts.append(Part(start: start, length: length, storage: .zero))
                start += length
                continue
            }
            let resolved = try resolve(name, nextTo: path, field: "\(field) file name")
            guard FileSystem.realPath(resolved) != nil else {
                throw bad("\(field) file \"\(name)\" (looked for at \(resolved)) does not exist")
            }
            switch extent.type {
            case .zero:
                parts.append(Part(start: start, length: length, storage: .zero))
            case .flat, .vmfs:
                let extentFile = try File.open(resolved, .readOnly)
                let size = try extentFile.size()
                let end = (extent.offset + extent.sectors) * 512
                guard end <= size else {
                    throw bad(
                        "\(field) (\"\(name)\", offset \(extent.offset), \(extent.sectors) sectors) ends at byte \(end), beyond the end of its file (\(size) bytes)"
                    )
                }
                parts.append(
                    Part(start: start, length: length, storage: .flat(file: extentFile, base: extent.offset * 512)))
            case .sparse:
                let extentFile = try File.open(resolved, .readOnly)
                let size = try extentFile.size()
                let header = try VMDKSparseHeader.parse(extentFile, at: 0, fileSize: size)
                try countEntries(header.directoryEntries, field)
                let sparse = try VMDKSparseExtent(file: extentFile, fileSize: size, header: header)
                try checkCapacity(sparse.header.capacity, extent, field: field, bad)
                try checkCompression(sparse, descriptor, field: field, bad)
                parts.append(Part(start: start, length: length, storage: .sparse(sparse)))
            case .vmfsSparse:
                let extentFile = try File.open(resolved, .readOnly)
                let size = try extentFile.size()
                let head = try extentFile.readBytes(count: Int(min(size, 4)), at: 0)
                guard head.starts(with: VMDKCOWDHeader.magic) else {
                    throw bad("\(field) is VMFSSPARSE but its file \"\(name)\" does not start with COWD")
                }
                let header = try VMDKCOWDHeader.parse(extentFile, fileSize: size)
                try countEntries(header.directoryEntries, field)
                try checkCapacity(header.capacity, extent, field: field, bad)
                let delta = try VMDKCOWDExtent(file: extentFile, fileSize: size, header: header)
                parts.append(Part(start: start, length: length, storage: .sparse(delta)))
            case .seSparse:
                let extentFile = try File.open(resolved, .readOnly)
                let size = try extentFile.size()
                guard isSESparse(try extentFile.readBytes(count: Int(min(size, 8)), at: 0)) else {
                    throw bad("\(field) is SESPARSE but its file \"\(name)\" does not start with the SEsparse magic")
                }
                let header = try VMDKSESparseHeader.parse(extentFile, fileSize: size)
                try countEntries(header.directoryEntries, field)
                try checkCapacity(header.capacity, extent, field: field, bad)
                let delta = try VMDKSESparseExtent(file: extentFile, fileSize: size, header: header)
                parts.append(Part(start: start, length: length, storage: .sparse(delta)))
            }
            start += length
        }
        return (parts, start)

    }

    /// A sparse extent's header capacity (in sectors) must be its extent line's size: QEMU takes
    /// the header's, which would shift every later extent.
    private static func checkCapacity(
        _ capacity: UInt64, _ extent: VMDKDescriptor.Extent, field: String, _ bad: (String) -> CairnError
    ) throws(CairnError) {
        guard capacity == extent.sectors else {
            throw bad(
                "\(field) is \(extent.sectors) sectors but its sparse header's capacity is \(capacity): the capacity is not the extent's size"
            )
        }
    }

    /// True if `head` starts with SEsparse's const header magic (0xcafebabe as a little-endian u64).
    static func isSESparse(_ head: [UInt8]) -> Bool {
        head.starts(with: [0xBE, 0xBA, 0xFE, 0xCA, 0, 0, 0, 0])
    }

    private static func checkCompression(
        _ sparse: VMDKSparseExtent, _ descriptor: VMDKDescriptor, field: String, _ bad: (String) -> CairnError
    ) throws(CairnError) {
        if sparse.header.isCompressed != (descriptor.createType == "streamOptimized") {
            throw bad(
                "\(field) is \(sparse.header.isCompressed ? "" : "not ")compressed, but createType is \"\(descriptor.createType)\""
            )
        }
    }

    /// An extent or parent file name as a path next to the descriptor; absolute names and names
    /// that climb out with `..` are refused, so a hostile descriptor cannot read other files.
    static func resolve(_ name: String, nextTo imagePath: String, field: String) throws(CairnError) -> String {
        let components = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.hasPrefix("/"), !components.contains(".."), !name.utf8.contains(0) else {
            throw CairnError(
                .badImage,
                "\(imagePath): vmdk \(field) \"\(name)\" is empty, absolute or climbs out with \"..\": only names next to the descriptor are read"
            )
        }
        return FileSystem.directoryName(imagePath) + "/" + name
    }
}
