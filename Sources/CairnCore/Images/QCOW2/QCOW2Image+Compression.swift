/// Compressed clusters: locating the compressed bytes from the L2 descriptor and inflating them.
extension QCOW2Image {
    /// Decompresses the cluster described by `descriptor` into `clusterBuffer`, unless it is
    /// already there. It must inflate to exactly one cluster.
    ///
    /// Descriptor layout (reference §6): with `x = 62 - (cluster_bits - 8)`, bits 0..x-1 are the
    /// byte offset of the data and bits x..61 the number of additional 512-byte sectors. The last
    /// sector may run past the end of the file (QEMU 7.2 writes such images); anything shorter
    /// than that is a truncated image.
    func decompress(_ descriptor: UInt64, guest: UInt64) throws(CairnError) {
        if decompressedCluster == descriptor { return }
        decompressedCluster = nil
        let offsetBits = 62 - (clusterBits - 8)
        let bits = descriptor & ((1 << 62) - 1)
        let offset = bits & ((1 << offsetBits) - 1)
        let sectors = (bits >> offsetBits) + 1
        let length = sectors * 512 - offset % 512
        let what = "compressed cluster for guest offset 0x\(qcow2Hex(guest)) at host offset 0x\(qcow2Hex(offset))"
        guard offset >> 56 == 0 else { throw bad("\(what) has an offset beyond the 64 PiB the format allows") }
        guard offset >= clusterSize else { throw bad("\(what) lies inside the header cluster") }
        guard offset < fileSize else {
            throw bad("\(what) lies beyond the end of the file (size 0x\(qcow2Hex(fileSize))): the image is truncated")
        }
        let available = min(length, fileSize - offset)
        guard length - available < 512 else {
            throw bad(
                "\(what) (\(length) bytes) runs \(length - available) bytes past the end of the file "
                    + "(size 0x\(qcow2Hex(fileSize))): the image is truncated")
        }
        if compressedBuffer.count < Int(length) {
            compressedBuffer = [UInt8](repeating: 0, count: Int(clusterSize) * 2 + 512)
        }
        if clusterBuffer.count != Int(clusterSize) { clusterBuffer = [UInt8](repeating: 0, count: Int(clusterSize)) }

        let produced: Int
        do throws(CairnError) {
            produced = try compressedBuffer.withMutableBytesThrowing { compressed throws(CairnError) -> Int in
                let input = UnsafeRawBufferPointer(rebasing: compressed[0..<Int(available)])
                let n = try file.read(into: UnsafeMutableRawBufferPointer(mutating: input), at: offset)
                guard n == input.count else {
                    throw bad("file shrank while it was read: \(what) ends early")
                }
                return try clusterBuffer.withMutableBytesThrowing { output throws(CairnError) -> Int in
                    switch header.compressionType {
                    case .deflate: return try inflater.inflate(input, into: output)
                    case .zstd: return try zstd.decompressStream(input, into: output)
                    }
                }
            }
        } catch {
            if error.code == .badImage && error.message.hasPrefix(file.path) { throw error }
            throw bad("\(what) does not decompress (\(header.compressionType)): \(error.cause ?? error.message)")
        }
        guard produced == Int(clusterSize) else {
            throw bad("\(what) inflates to \(produced) bytes, not the cluster size \(clusterSize)")
        }
        decompressedCluster = descriptor
    }
}
