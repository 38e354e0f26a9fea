#if canImport(Glibc)
    import Glibc
#endif

/// VMDK output for restore (`--format vmdk`): a monolithicSparse image for `vmkfstools -i`, or a
/// streamOptimized one for OVF/OVA import.
///
/// Both need the allocation before the first write, so, as for qcow2, the disk's index is walked
/// once to mark the 64 KiB grains touched by non-zero blocks (one bit per grain). A
/// monolithicSparse image then takes writes in any order at computed offsets. A stream must be
/// written in guest order with each grain compressed, while restore writes come from several
/// workers in any order (and from an archive in the order its chunks arrive): they go to a sparse
/// scratch file beside the output first, which `finish` reads back grain by grain, in order,
/// into the stream. That costs the restored data's size in scratch space, never memory.
enum VMDKRestoreTarget {
    static func make(path: String, walk: DiskWalk, subformat: VMDKSubformat, force: Bool) throws(CairnError)
        -> any RestoreTarget
    {
        let zero = ZeroBlock.digest
        return try make(
            path: path, size: walk.size, blockSize: UInt64(walk.blockSize), subformat: subformat, force: force
        ) { (mark) throws(CairnError) in
            try walk.forEachBlock { (block, digest) throws(CairnError) in
                if digest != zero { mark(block) }
            }
        }
    }

    /// Lays out a VMDK whose allocated grains are those touched by the blocks `nonZeroBlocks`
    /// reports (it calls its argument once per non-zero block).
    static func make(
        path: String, size: UInt64, blockSize: UInt64, subformat: VMDKSubformat, force: Bool,
        nonZeroBlocks: ((UInt64) -> Void) throws(CairnError) -> Void
    ) throws(CairnError) -> any RestoreTarget {
        try checkRestoreDestination(path, force: force, allowDevice: false)
        let grain = VMDKSparseWriter.grainBytes
        let capacityBytes = (size + 511) / 512 * 512
        var bitmap = ClusterBitmap(clusterCount: (capacityBytes + grain - 1) / grain)
        try nonZeroBlocks { block in
            let start = block * blockSize
            let end = min(size, start + blockSize)
            var index = start / grain
            while index * grain < end {
                bitmap.set(index)
                index += 1
            }
        }
        switch subformat {
        case .monolithicSparse:
            return VMDKSparseRestoreTarget(
                writer: try VMDKSparseWriter(path: path, virtualSize: size, allocated: bitmap))
        case .streamOptimized:
            return try VMDKStreamRestoreTarget(path: path, size: size, allocated: bitmap)
        }
    }
}

/// monolithicSparse output: writes go straight to their grains.
final class VMDKSparseRestoreTarget: RestoreTarget, Sendable {
    let writer: VMDKSparseWriter
    let needsZeroWrites = false

    init(writer: VMDKSparseWriter) { self.writer = writer }

    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        try writer.write(bytes, atGuestOffset: offset)
    }

    func finish() throws(CairnError) { try writer.finish() }

    func discard() { writer.discard() }
}

/// streamOptimized output: writes land in a sparse scratch file; `finish` compresses its
/// allocated grains, in order, into the stream, then renames the stream into place.
final class VMDKStreamRestoreTarget: RestoreTarget, Sendable {
    let path: String
    let size: UInt64
    let needsZeroWrites = false
    private let allocated: ClusterBitmap
    private let scratchPath: String
    private let scratch: File
    private let temporaryPath: String

    init(path: String, size: UInt64, allocated: ClusterBitmap) throws(CairnError) {
        try VMDKSparseWriter.checkFileName(FileSystem.baseName(path))
        self.path = path
        self.size = size
        self.allocated = allocated
        temporaryPath = FileSystem.temporaryName(for: path)
        scratchPath = "\(FileSystem.directoryName(path))/.\(FileSystem.baseName(path)).scratch-\(getpid())"
        scratch = try File.open(scratchPath, .createOrTruncate)
        do { try scratch.truncate(to: size) } catch {
            try? FileSystem.remove(scratchPath)
            throw error
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        let count = UInt64(bytes.count)
        guard offset <= size, count <= size - offset else {
            throw CairnError(
                .usage, "\(path): write of \(count) bytes at \(offset) runs past the disk's end at \(size)")
        }
        try scratch.write(bytes, at: offset)
    }

    func finish() throws(CairnError) {
        defer { try? FileSystem.remove(scratchPath) }
        do {
            let writer = try VMDKStreamWriter(
                path: temporaryPath, virtualSize: size, fileName: FileSystem.baseName(path))
            let grainBytes = VMDKStreamWriter.grainBytes
            let grain = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(grainBytes), alignment: 4096)
            defer { grain.deallocate() }
            for index in 0..<allocated.clusterCount where allocated.contains(index) {
                if index & 255 == 0 { try Cancellation.check("restore incomplete") }
                let start = index * grainBytes
                let length = Int(min(grainBytes, size - min(size, start)))
                if length > 0 {
                    try scratch.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: grain[0..<length]), at: start)
                }
                UnsafeMutableRawBufferPointer(rebasing: grain[length...]).initializeMemory(as: UInt8.self, repeating: 0)
                try writer.append(grain: index, UnsafeRawBufferPointer(grain))
            }
            try writer.finish()
            try FileSystem.rename(temporaryPath, to: path)
            try FileSystem.syncDirectory(FileSystem.directoryName(path))
        } catch {
            try? FileSystem.remove(temporaryPath)
            throw error
        }
    }

    func discard() {
        try? FileSystem.remove(scratchPath)
        try? FileSystem.remove(temporaryPath)
    }
}
