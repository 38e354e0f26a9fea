/// qcow2 output for restore: a fresh qcow2 v3 image holding only the clusters with data.
///
/// The allocation must be known before the first write (the writer lays out every table up
/// front), so the disk's index tree is walked once to mark clusters touched by non-zero blocks;
/// that pass reads only index pages. Memory: one bit per guest cluster.
final class QCOW2RestoreTarget: RestoreTarget {
    let writer: QCOW2Writer
    let needsZeroWrites = false

    private init(writer: QCOW2Writer) { self.writer = writer }

    static func make(path: String, walk: DiskWalk, clusterSize: UInt64, force: Bool) throws(CairnError)
        -> any RestoreTarget
    {
        let zero = ZeroBlock.digest
        return try make(
            path: path, size: walk.size, blockSize: UInt64(walk.blockSize), clusterSize: clusterSize, force: force
        ) {
            (mark) throws(CairnError) in
            try walk.forEachBlock { (block, digest) throws(CairnError) in
                if digest != zero { mark(block) }
            }
        }
    }

    /// Lays out a qcow2 whose allocated clusters are those touched by the blocks that
    /// `nonZeroBlocks` reports (it calls its argument once per non-zero block).
    static func make(
        path: String, size: UInt64, blockSize: UInt64, clusterSize: UInt64, force: Bool,
        nonZeroBlocks: ((UInt64) -> Void) throws(CairnError) -> Void
    ) throws(CairnError) -> any RestoreTarget {
        try checkRestoreDestination(path, force: force, allowDevice: false)
        var bitmap = ClusterBitmap(clusterCount: (size + clusterSize - 1) / clusterSize)
        try nonZeroBlocks { block in
            let start = block * blockSize
            let end = min(size, start + blockSize)
            var cluster = start / clusterSize
            while cluster * clusterSize < end {
                bitmap.set(cluster)
                cluster += 1
            }
        }
        return QCOW2RestoreTarget(
            writer: try QCOW2Writer(
                path: path, virtualSize: size, clusterSize: clusterSize, allocated: bitmap, force: force))
    }

    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        try writer.write(bytes, atGuestOffset: offset)
    }

    func finish() throws(CairnError) {
        try writer.finish()
    }

    func discard() {
        try? FileSystem.remove(writer.path)
    }
}
