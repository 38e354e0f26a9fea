/// A raw disk image or block device: guest bytes are the file's bytes.
///
/// Holes are found with SEEK_DATA/SEEK_HOLE, so a thin disk is backed up without reading its
/// unallocated ranges.
public final class RawImage: DiskImage {
    public let file: File
    public let virtualSize: UInt64
    public var info: SourceImageInfo { SourceImageInfo(format: .raw, path: file.path, virtualSize: virtualSize) }
    private let canSeekHoles: Bool
    public var supportsConcurrentReads: Bool { true }

    public init(file: File) throws(CairnError) {
        self.file = file
        self.virtualSize = try file.size()
        self.canSeekHoles = file.isRegularFile
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        let limit = min(maxLength, virtualSize - offset)
        guard canSeekHoles else { return ImageExtent(length: limit, isZero: false) }
        guard let data = try file.nextData(from: offset) else {
            return ImageExtent(length: limit, isZero: true)
        }
        if data > offset {
            return ImageExtent(length: min(limit, data - offset), isZero: true)
        }
        let hole = try file.nextHole(from: offset)
        return ImageExtent(length: max(1, min(limit, hole - offset)), isZero: false)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        let n = try file.read(into: buffer, at: offset)
        if n != buffer.count {
            throw CairnError(
                .badImage,
                "\(file.path) shrank while it was read: it ends at \(offset + UInt64(n)), not at \(virtualSize)")
        }
    }
}
