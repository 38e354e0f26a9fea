/// One bit per guest cluster: set = the cluster holds data and gets a host cluster.
///
/// A 1 TiB disk with 64 KiB clusters needs 2 MiB of bitmap, whatever is written.
public struct ClusterBitmap: Sendable {
    public let clusterCount: UInt64
    /// Bit `c % 64` of word `c / 64` is cluster `c`.
    private(set) var words: [UInt64]
    public private(set) var setCount: UInt64 = 0

    public init(clusterCount: UInt64) {
        self.clusterCount = clusterCount
        self.words = [UInt64](repeating: 0, count: Int((clusterCount + 63) / 64))
    }

    /// Marks `cluster` as holding data. Setting a bit twice is harmless.
    public mutating func set(_ cluster: UInt64) {
        precondition(cluster < clusterCount, "cluster \(cluster) is outside the bitmap of \(clusterCount) clusters")
        let bit: UInt64 = 1 << (cluster % 64)
        let index = Int(cluster / 64)
        if words[index] & bit == 0 {
            words[index] |= bit
            setCount += 1
        }
    }

    public func contains(_ cluster: UInt64) -> Bool {
        guard cluster < clusterCount else { return false }
        return words[Int(cluster / 64)] & (1 << (cluster % 64)) != 0
    }

    /// Number of set bits in clusters `0..<end`.
    /// - Complexity: O(end / 64); `QCOW2Writer` keeps prefix counts to make this O(1).
    func count(before end: UInt64) -> UInt64 {
        var total: UInt64 = 0
        for index in 0..<Int(end / 64) { total += UInt64(words[index].nonzeroBitCount) }
        if end % 64 != 0 { total += UInt64((words[Int(end / 64)] & ((1 << (end % 64)) - 1)).nonzeroBitCount) }
        return total
    }
}
