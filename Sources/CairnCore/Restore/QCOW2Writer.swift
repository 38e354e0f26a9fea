/// Writes a fresh qcow2 v3 image that holds only the clusters set in a `ClusterBitmap`.
///
/// All metadata is laid out up front, so guest data can then be written in any order and from
/// several threads (plain pwrites at computed offsets). Host layout, in clusters:
///
///     header | refcount table | refcount blocks | L1 table | L2 tables | data clusters
///
/// L2 tables exist only for L2 ranges with at least one set cluster, in guest order; data
/// clusters follow in guest order, so the host offset of guest cluster `c` is
/// `dataStart + rank(c) * clusterSize`, where `rank(c)` counts the set bits before `c`. Every host
/// cluster has refcount 1 (16-bit refcounts) and every L1/L2 entry carries the copied flag, which
/// is what `qemu-img check` expects of an image without snapshots.
///
/// Memory: the bitmap (one bit per guest cluster) plus one prefix count per 512 guest clusters.
///
/// `@unchecked Sendable`: after `init` only `file` changes (to nil, in `finish`, once the restore's
/// workers are joined); the workers' `write`s are `pwrite`s at offsets computed from immutable tables.
public final class QCOW2Writer: @unchecked Sendable {
    /// Clusters per rank block: prefix counts are kept per 8 bitmap words.
    private static let rankBlock: UInt64 = 512

    public let path: String
    public let virtualSize: UInt64
    public let clusterSize: UInt64
    private let allocated: ClusterBitmap
    /// Set bits before each rank block.
    private let rankPrefix: [UInt64]
    private let dataStart: UInt64
    /// Set to nil by `finish`; `write` must not run concurrently with it.
    private var file: File?

    /// Creates the file (must not exist unless `force`), lays out header, refcount table+blocks, L1,
    /// L2 tables for the allocated clusters, and reserves host clusters for every set bit in guest
    /// order, so writes can go in any order.
    public init(
        path: String, virtualSize: UInt64, clusterSize: UInt64, allocated: ClusterBitmap, force: Bool
    ) throws(CairnError) {
        guard clusterSize.nonzeroBitCount == 1, (512...(2 << 20)).contains(clusterSize) else {
            throw CairnError(.usage, "qcow2 cluster size \(clusterSize) is not a power of two from 512 B to 2 MiB")
        }
        let guestClusters = virtualSize / clusterSize + (virtualSize % clusterSize == 0 ? 0 : 1)
        guard allocated.clusterCount == guestClusters else {
            throw CairnError(
                .usage, "cluster bitmap covers \(allocated.clusterCount) clusters, the disk has \(guestClusters)")
        }
        if !force && FileSystem.exists(path) {
            throw CairnError(.exists, "\(path) already exists", remedy: .overwrite)
        }
        let layout = try QCOW2Layout(
            virtualSize: virtualSize, clusterSize: clusterSize, allocated: allocated)
        self.path = path
        self.virtualSize = virtualSize
        self.clusterSize = clusterSize
        self.allocated = allocated
        self.dataStart = layout.dataStart * clusterSize

        var prefix: [UInt64] = []
        prefix.reserveCapacity(Int(guestClusters / Self.rankBlock) + 1)
        var running: UInt64 = 0
        for (index, word) in allocated.words.enumerated() {
            if index % Int(Self.rankBlock / 64) == 0 { prefix.append(running) }
            running += UInt64(word.nonzeroBitCount)
        }
        rankPrefix = prefix

        let file = try File.open(path, force ? .createOrTruncate : .createNew)
        self.file = file
        do {
            try layout.writeMetadata(to: file, allocated: allocated) { cluster in self.hostOffset(of: cluster) }
            try file.truncate(to: layout.totalClusters * clusterSize)
        } catch {
            self.file = nil
            try? FileSystem.remove(path)
            throw error
        }
    }

    /// Host offset of set guest cluster `cluster`.
    private func hostOffset(of cluster: UInt64) -> UInt64 {
        let words = allocated.words
        let wordIndex = Int(cluster / 64)
        var rank = rankPrefix[Int(cluster / Self.rankBlock)]
        var index = wordIndex - wordIndex % Int(Self.rankBlock / 64)
        while index < wordIndex {
            rank += UInt64(words[index].nonzeroBitCount)
            index += 1
        }
        rank += UInt64((words[wordIndex] & ((1 << (cluster % 64)) - 1)).nonzeroBitCount)
        return dataStart + rank * clusterSize
    }

    /// Writes guest bytes at a guest offset. Every cluster the range touches must be set in `allocated`.
    public func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        guard let file else { preconditionFailure("a qcow2 writer was written to after finish") }
        let count = UInt64(bytes.count)
        guard offset <= virtualSize, count <= virtualSize - offset else {
            throw CairnError(
                .usage, "\(path): write of \(count) bytes at \(offset) runs past the disk's end at \(virtualSize)")
        }
        var done: UInt64 = 0
        while done < count {
            let guest = offset + done
            let cluster = guest / clusterSize
            guard allocated.contains(cluster) else {
                throw CairnError(
                    .usage, "\(path): guest cluster \(cluster) (offset \(guest)) was not reserved in the cluster bitmap"
                )
            }
            // Consecutive set clusters are consecutive on the host: write them in one call.
            var end = (cluster + 1) * clusterSize
            while end < offset + count && allocated.contains(end / clusterSize) { end += clusterSize }
            let length = min(end, offset + count) - guest
            let host = hostOffset(of: cluster) + guest % clusterSize
            try file.write(UnsafeRawBufferPointer(rebasing: bytes[Int(done)..<Int(done + length)]), at: host)
            done += length
        }
    }

    /// fsyncs and closes. The file is complete after this.
    public func finish() throws(CairnError) {
        guard let file else { return }
        try file.sync()
        self.file = nil
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }
}

/// Where `QCOW2Writer` puts each metadata structure, in host clusters, and the code writing them.
///
/// The refcount structures must count themselves, so their size is found by iterating to a
/// fixed point (it converges in two or three rounds).
struct QCOW2Layout {
    static let headerLength = 112
    /// refcount_order 4: 16-bit refcounts, as QEMU writes by default.
    static let refcountOrder: UInt32 = 4
    static let copiedFlag: UInt64 = 1 << 63

    let virtualSize: UInt64
    let clusterSize: UInt64
    let l2Entries: UInt64
    let l1Size: UInt64
    let refcountTableClusters: UInt64
    let refcountBlocks: UInt64
    let l1Clusters: UInt64
    let l2Tables: UInt64
    let dataClusters: UInt64

    var refcountTableStart: UInt64 { 1 }
    var refcountBlockStart: UInt64 { refcountTableStart + refcountTableClusters }
    var l1Start: UInt64 { refcountBlockStart + refcountBlocks }
    var l2Start: UInt64 { l1Start + l1Clusters }
    var dataStart: UInt64 { l2Start + l2Tables }
    var totalClusters: UInt64 { dataStart + dataClusters }

    init(virtualSize: UInt64, clusterSize: UInt64, allocated: ClusterBitmap) throws(CairnError) {
        self.virtualSize = virtualSize
        self.clusterSize = clusterSize
        l2Entries = clusterSize / 8
        l1Size = (allocated.clusterCount + l2Entries - 1) / l2Entries
        guard l1Size <= 4 << 20 else {
            throw CairnError(
                .usage, "a \(virtualSize)-byte disk needs an L1 table over 32 MiB: use a larger cluster size")
        }
        l1Clusters = (l1Size * 8 + clusterSize - 1) / clusterSize
        var tables: UInt64 = 0
        let wordsPerRange = Int(l2Entries / 64)
        for range in 0..<Int(l1Size) {
            let words = allocated.words[
                (range * wordsPerRange)..<min(allocated.words.count, (range + 1) * wordsPerRange)]
            if words.contains(where: { $0 != 0 }) { tables += 1 }
        }
        l2Tables = tables
        dataClusters = allocated.setCount

        let perBlock = clusterSize * 8 / (1 << UInt64(Self.refcountOrder))
        let fixed = 1 + l1Clusters + l2Tables + dataClusters
        var table: UInt64 = 1
        var blocks: UInt64 = 1
        while true {
            let total = fixed + table + blocks
            let neededBlocks = (total + perBlock - 1) / perBlock
            let neededTable = (neededBlocks * 8 + clusterSize - 1) / clusterSize
            if neededBlocks <= blocks && neededTable <= table { break }
            blocks = max(blocks, neededBlocks)
            table = max(table, neededTable)
        }
        refcountTableClusters = table
        refcountBlocks = blocks
    }

    /// Writes header, refcount table and blocks, L1 and L2 tables. `hostOffset` maps a set guest
    /// cluster to its reserved host offset.
    func writeMetadata(
        to file: File, allocated: ClusterBitmap, hostOffset: (UInt64) -> UInt64
    ) throws(CairnError) {
        let cs = clusterSize
        let cluster = Int(cs)

        // Header: version 3, no backing file, no extensions (the end marker is the zero padding).
        var header = ByteWriter(capacity: cluster)
        header.be(UInt32(0x5146_49FB))
        header.be(UInt32(3))
        header.be(UInt64(0))  // backing_file_offset
        header.be(UInt32(0))  // backing_file_size
        header.be(UInt32(cs.trailingZeroBitCount))
        // qcow2 sizes are whole 512-byte sectors; round up as `qemu-img convert` does for raw input.
        header.be((virtualSize + 511) / 512 * 512)
        header.be(UInt32(0))  // crypt_method
        header.be(UInt32(l1Size))
        header.be(l1Size == 0 ? 0 : l1Start * cs)  // an empty disk has no L1 table
        header.be(refcountTableStart * cs)
        header.be(UInt32(refcountTableClusters))
        header.be(UInt32(0))  // nb_snapshots
        header.be(UInt64(0))  // snapshots_offset
        header.be(UInt64(0))  // incompatible_features
        header.be(UInt64(0))  // compatible_features
        header.be(UInt64(0))  // autoclear_features
        header.be(Self.refcountOrder)
        header.be(UInt32(Self.headerLength))
        header.zeros(cluster - header.count)  // compression_type 0, padding, extension end marker
        try file.write(header.bytes, at: 0)

        // Refcount table, then blocks: every host cluster in use exactly once.
        var table = ByteWriter(capacity: Int(refcountTableClusters * cs))
        for block in 0..<refcountBlocks { table.be((refcountBlockStart + block) * cs) }
        table.zeros(Int(refcountTableClusters * cs) - table.count)
        try file.write(table.bytes, at: refcountTableStart * cs)
        let perBlock = cs / 2
        var block = [UInt8](repeating: 0, count: cluster)
        for index in 0..<refcountBlocks {
            let used = min(perBlock, totalClusters - min(totalClusters, index * perBlock))
            for entry in 0..<Int(perBlock) {
                block[entry * 2] = 0
                block[entry * 2 + 1] = UInt64(entry) < used ? 1 : 0
            }
            try file.write(block, at: (refcountBlockStart + index) * cs)
        }

        // L1, then one L2 table per L2 range that holds a set cluster.
        let wordsPerRange = Int(l2Entries / 64)
        var l1 = ByteWriter(capacity: Int(l1Clusters * cs))
        var l2Index: UInt64 = 0
        var l2 = [UInt8](repeating: 0, count: cluster)
        for range in 0..<Int(l1Size) {
            let first = range * wordsPerRange
            let words = allocated.words[first..<min(allocated.words.count, first + wordsPerRange)]
            guard words.contains(where: { $0 != 0 }) else {
                l1.be(UInt64(0))
                continue
            }
            let tableOffset = (l2Start + l2Index) * cs
            l2Index += 1
            l1.be(Self.copiedFlag | tableOffset)
            for i in l2.indices { l2[i] = 0 }
            for (wordIndex, word) in zip(words.indices, words) where word != 0 {
                var bits = word
                while bits != 0 {
                    let bit = UInt64(bits.trailingZeroBitCount)
                    bits &= bits - 1
                    let guestCluster = UInt64(wordIndex) * 64 + bit
                    let entry = Self.copiedFlag | hostOffset(guestCluster)
                    let at = Int(guestCluster % l2Entries) * 8
                    withUnsafeBytes(of: entry.bigEndian) { l2.replaceSubrange(at..<at + 8, with: $0) }
                }
            }
            try file.write(l2, at: tableOffset)
        }
        l1.zeros(Int(l1Clusters * cs) - l1.count)
        if l1Size > 0 { try file.write(l1.bytes, at: l1Start * cs) }
    }
}
