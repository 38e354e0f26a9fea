/// qcow2 output for restore: a fresh qcow2 v3 image holding only the clusters with data.
///
/// The allocation must be known before the first write (the writer lays out every table up
/// front), so the disk's index tree is walked once to mark clusters touched by non-zero blocks;
/// that pass reads only index pages. Memory: one bit per guest cluster.
final class QCOW2RestoreTarget: RestoreTarget, @unchecked Sendable {
    let writer: QCOW2Writer
    let needsZeroWrites = false

    private init(writer: QCOW2Writer) { self.writer = writer }

    static func make(path: String, walk: DiskWalk, clusterSize: UInt64, force: Bool) throws(CairnError) -> any RestoreTarget {
        let directory = FileSystem.directoryName(path)
        guard FileSystem.isDirectory(directory) else {
            throw CairnError(.notFound, "cannot restore to \(path): directory \(directory) does not exist")
        }
        if !force && FileSystem.exists(path) {
            throw CairnError(.exists, "\(path) exists; pass --force to overwrite it")
        }
        let clusters = (walk.size + clusterSize - 1) / clusterSize
        var bitmap = ClusterBitmap(clusterCount: clusters)
        let blockSize = UInt64(walk.blockSize)
        let zero = ZeroBlock.digest
        try walk.forEachBlock { (block, digest) throws(CairnError) in
            guard digest != zero else { return }
            let start = block * blockSize
            let end = min(walk.size, start + blockSize)
            var cluster = start / clusterSize
            while cluster * clusterSize < end {
                bitmap.set(cluster)
                cluster += 1
            }
        }
        return QCOW2RestoreTarget(
            writer: try QCOW2Writer(path: path, virtualSize: walk.size, clusterSize: clusterSize, allocated: bitmap, force: force))
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
