/// A qcow2 image's guest view. (Being written: the reader lands with the qcow2 issue.)
public final class QCOW2Image: DiskImage {
    public let virtualSize: UInt64 = 0
    public var info: SourceImageInfo { SourceImageInfo(format: "qcow2", path: "", virtualSize: 0) }

    public init(file: File, snapshot: String?) throws(CairnError) {
        throw CairnError(.badImage, "\(file.path): qcow2 images are not supported yet")
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        ImageExtent(length: maxLength, isZero: true)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {}
}
