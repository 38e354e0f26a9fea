import CairnCore
import FuzzSupport

/// VMDK descriptor, hosted sparse header (KDMV), grain directory and tables, zeroed and
/// compressed grains, markers and the streamOptimized footer, through the real reader: the input
/// is opened as `cairn backup` opens a `.vmdk`, every extent is mapped and allocated bytes read.
///
/// Input layout: byte 0 chooses the files.
/// - bit 0 clear: the rest is `disk.vmdk` (a sparse or stream extent with its embedded
///   descriptor, or a descriptor alone).
/// - bit 0 set: bytes 1-2 (little-endian) are a length L; the next L bytes are the descriptor
///   file `disk.vmdk`, and the rest is `extent.vmdk`, which the descriptor may name as a SPARSE,
///   FLAT or VMFS extent (or as the parent's file, through `parentFileNameHint`).
@main
enum VMDKTarget {
    /// Bounds per input, so a valid but large image costs milliseconds: the reader's own bounds
    /// are under test, not the speed of reading a big disk.
    static let maxExtents = 4096
    static let maxBytesRead = 8 << 20
    static let readSize = 1 << 20

    static func main() {
        let scratch = Scratch("vmdk")
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readSize, alignment: 64)
        FuzzDriver.run { input in
            guard let options = input.first else { return }
            let rest = UnsafeRawBufferPointer(rebasing: input[1...])
            if options & 1 == 0 || rest.count < 2 {
                scratch.write(rest, to: "disk.vmdk")
                scratch.write(UnsafeRawBufferPointer(rebasing: rest[0..<0]), to: "extent.vmdk")
            } else {
                let length = min(rest.count - 2, Int(rest[0]) | Int(rest[1]) << 8)
                scratch.write(UnsafeRawBufferPointer(rebasing: rest[2..<(2 + length)]), to: "disk.vmdk")
                scratch.write(UnsafeRawBufferPointer(rebasing: rest[(2 + length)...]), to: "extent.vmdk")
            }
            do {
                let image = try DiskImageOpener.open("\(scratch.path)/disk.vmdk", format: .vmdk)
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
