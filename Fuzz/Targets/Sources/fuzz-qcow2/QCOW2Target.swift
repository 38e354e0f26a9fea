import CairnCore
import FuzzSupport

/// qcow2 header, extensions, snapshot table, L1/L2 tables, compressed and extended-L2 clusters,
/// backing and external data file names: the input is opened as an image file, as `cairn backup`
/// opens one, and every extent is mapped and every allocated byte read.
@main
enum QCOW2Target {
    /// Bounds per input, so a valid but large image costs milliseconds, not seconds: the parser's
    /// own bounds are what is under test, not the speed of reading a big disk.
    static let maxExtents = 4096
    static let maxBytesRead = 8 << 20
    static let readSize = 1 << 20

    static func main() {
        let scratch = Scratch("qcow2")
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readSize, alignment: 64)
        FuzzDriver.run { input in
            scratch.write(input, to: "image.qcow2")
            do {
                let image = try DiskImageOpener.open("\(scratch.path)/image.qcow2", format: .qcow2)
                _ = image.info
                var offset: UInt64 = 0
                var extents = 0
                var bytesRead = 0
                while offset < image.virtualSize, extents < maxExtents {
                    let extent = try image.extent(at: offset, maxLength: image.virtualSize - offset)
                    precondition(
                        extent.length >= 1 && extent.length <= image.virtualSize - offset,
                        "extent of \(extent.length) bytes at \(offset) breaks the DiskImage contract")
                    if !extent.isZero, bytesRead < maxBytesRead {
                        let count = Int(min(extent.length, UInt64(readSize)))
                        try image.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
                        bytesRead += count
                    }
                    offset += extent.length
                    extents += 1
                }
            } catch {
                // A refusal is the right answer to a malformed image.
            }
        }
    }
}
