/// Ranks of the set bits of a `ClusterBitmap`: where each set cluster goes when set clusters are
/// stored back to back in cluster order.
///
/// Keeps one prefix count per 512 clusters (8 bitmap words), so `rank` costs at most 8 popcounts.
struct ClusterRanks: Sendable {
    /// Clusters per prefix count.
    private static let block: UInt64 = 512
    let bitmap: ClusterBitmap
    private let prefix: [UInt64]

    init(_ bitmap: ClusterBitmap) {
        self.bitmap = bitmap
        var prefix: [UInt64] = []
        prefix.reserveCapacity(Int(bitmap.clusterCount / Self.block) + 1)
        var running: UInt64 = 0
        for (index, word) in bitmap.words.enumerated() {
            if index % Int(Self.block / 64) == 0 { prefix.append(running) }
            running += UInt64(word.nonzeroBitCount)
        }
        self.prefix = prefix
    }

    /// Set clusters before `cluster` (`cluster` < `clusterCount`).
    func rank(_ cluster: UInt64) -> UInt64 {
        let words = bitmap.words
        let wordIndex = Int(cluster / 64)
        var rank = prefix[Int(cluster / Self.block)]
        var index = wordIndex - wordIndex % Int(Self.block / 64)
        while index < wordIndex {
            rank += UInt64(words[index].nonzeroBitCount)
            index += 1
        }
        return rank + UInt64((words[wordIndex] & ((1 << (cluster % 64)) - 1)).nonzeroBitCount)
    }
}
