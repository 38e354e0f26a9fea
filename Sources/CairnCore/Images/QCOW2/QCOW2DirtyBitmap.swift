/// One persistent qcow2 dirty bitmap, read from the file: which guest ranges were written while
/// it was enabled.
///
/// The bitmap table (one level, contiguous) is read and checked whole when the bitmap is opened;
/// bitmap data clusters are read as queries reach them, one cluster cached, so memory stays one
/// cluster plus the table (at most 8 MiB: QEMU caps a bitmap at 512 MiB of data) whatever the
/// disk's size. Bit *n* (least significant first in each byte) covers guest bytes
/// `[n·g, (n+1)·g)`; a table entry with offset 0 stands for a cluster of all zeros (bit 0 clear)
/// or all ones (bit 0 set). QEMU `docs/interop/qcow2.txt`, "Bitmap table" and "Bitmap data".
public final class QCOW2DirtyBitmap: ChangedBlockMap {
    public let entry: QCOW2BitmapDirectory.Entry
    let file: File
    let clusterSize: UInt64
    /// The guest size the bitmap covers (the active layer's size).
    let diskSize: UInt64
    let granularityBits: UInt64
    /// Bits in one bitmap data cluster.
    let bitsPerCluster: UInt64
    /// Bits the bitmap has: ceil(diskSize / granularity).
    let bitCount: UInt64
    let table: [UInt64]
    /// One bitmap data cluster, allocated once.
    private let buffer: UnsafeMutableRawBufferPointer
    private var cachedCluster = -1

    /// Bits 9–55 of a table entry: the data cluster's host offset.
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let allOnesFlag: UInt64 = 1

    public var description: String { "qcow2 bitmap \(entry.name)" }

    /// Opens the bitmap `entry` of `image`; refuses an `in_use` bitmap (its data is not saved)
    /// and any table entry that breaks the format.
    init(image: QCOW2Image, entry: QCOW2BitmapDirectory.Entry) throws(CairnError) {
        let name = "bitmap \"\(entry.name)\""
        guard !entry.isInUse else {
            throw image.bad("\(name) is in use (flag in_use): it was not saved cleanly, so its contents are unknown")
        }
        guard !entry.hasIncompatibleExtraData else {
            throw image.bad(
                "\(name) has \(entry.extraDataSize) bytes of extra data Cairn does not know, without the "
                    + "extra_data_compatible flag: the format forbids using it")
        }
        self.entry = entry
        file = image.file
        clusterSize = image.clusterSize
        diskSize = image.header.size / 512 * 512
        granularityBits = UInt64(entry.granularityBits)
        bitsPerCluster = clusterSize * 8
        let granularity = UInt64(1) << granularityBits
        bitCount = diskSize / granularity + (diskSize % granularity == 0 ? 0 : 1)
        // The directory checked tableSize against the disk and the file, and at most 512 MiB of data.
        let raw = try image.file.readBytes(count: Int(entry.tableSize) * 8, at: entry.tableOffset)
        table = raw.withUnsafeBytes { bytes in
            (0..<Int(entry.tableSize)).map {
                UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))
            }
        }
        for (index, word) in table.enumerated() {
            let at = "\(name): bitmap table entry \(index) (at 0x\(qcow2Hex(entry.tableOffset + UInt64(index) * 8)))"
            let host = word & Self.offsetMask
            guard word & ~(Self.offsetMask | Self.allOnesFlag) == 0, host == 0 || word & Self.allOnesFlag == 0 else {
                throw image.bad("\(at) has reserved bits set: 0x\(qcow2Hex(word))")
            }
            guard host != 0 else { continue }
            guard host % clusterSize == 0, host >= clusterSize else {
                throw image.bad(
                    "\(at) points at 0x\(qcow2Hex(host)), which is not a cluster boundary after the header cluster")
            }
            guard host <= image.fileSize, clusterSize <= image.fileSize - host else {
                throw image.bad(
                    "\(at): bitmap data at 0x\(qcow2Hex(host)) lies beyond the end of the file "
                        + "(size 0x\(qcow2Hex(image.fileSize))): the image is truncated")
            }
        }
        buffer = .allocate(byteCount: Int(clusterSize), alignment: 64)
    }

    deinit { buffer.deallocate() }

    public func changes(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ChangeExtent {
        // Past the bitmap's end nothing is known: call it dirty.
        guard offset < diskSize else { return ChangeExtent(length: max(1, maxLength), isDirty: true) }
        let end = offset + min(max(1, maxLength), diskSize - offset)
        let bit = offset >> granularityBits
        let cluster = bit / bitsPerCluster
        let firstBit = cluster * bitsPerCluster
        // Guest end of what this data cluster covers (the shift cannot overflow: bits < 2^52, g ≤ 31).
        let clusterEnd = min(end, (firstBit + bitsPerCluster) << granularityBits)
        let word = table[Int(cluster)]
        if word & Self.offsetMask == 0 {
            return ChangeExtent(length: clusterEnd - offset, isDirty: word & Self.allOnesFlag != 0)
        }
        try load(cluster: Int(cluster), host: word & Self.offsetMask)
        let lastBit = ((clusterEnd - 1) >> granularityBits) - firstBit
        let start = bit - firstBit
        let dirty = isSet(start)
        let fill: UInt8 = dirty ? 0xFF : 0
        var k = start + 1
        while k <= lastBit {
            if k & 7 == 0, k + 7 <= lastBit, buffer[Int(k >> 3)] == fill {
                k += 8
                continue
            }
            if isSet(k) != dirty { break }
            k += 1
        }
        let runEnd = min(clusterEnd, (firstBit + k) << granularityBits)
        return ChangeExtent(length: runEnd - offset, isDirty: dirty)
    }

    private func isSet(_ bit: UInt64) -> Bool { buffer[Int(bit >> 3)] >> (bit & 7) & 1 != 0 }

    private func load(cluster: Int, host: UInt64) throws(CairnError) {
        guard cluster != cachedCluster else { return }
        cachedCluster = -1
        try file.readExactly(into: buffer, at: host)
        // The bits past the disk's end must be zero (spec): anything else is not a bitmap QEMU wrote.
        let firstBit = UInt64(cluster) * bitsPerCluster
        if firstBit + bitsPerCluster > bitCount {
            var k = bitCount - firstBit
            while k < bitsPerCluster {
                if isSet(k) {
                    throw CairnError(
                        .badImage,
                        "\(file.path): qcow2 bitmap \"\(entry.name)\": data cluster at 0x\(qcow2Hex(host)) has bits "
                            + "set past the end of the disk")
                }
                k += 1
            }
        }
        cachedCluster = cluster
    }
}
