import CairnCore
import FuzzSupport

/// VMDK descriptor, hosted sparse header (KDMV), grain directory and tables, zeroed and
/// compressed grains, markers and the streamOptimized footer, ESXi's vmfsSparse (COWD) and
/// SEsparse deltas, through the real reader: the input is opened as `cairn backup` opens a
/// `.vmdk`, every extent is mapped and allocated bytes read.
///
/// Input layout: byte 0 chooses the files.
/// - bit 0 clear: the rest is `disk.vmdk` (a sparse or stream extent with its embedded
///   descriptor, or a descriptor alone).
/// - bit 0 set: bytes 1-2 (little-endian) are a length L; the next L bytes are the descriptor
///   file `disk.vmdk`, and the rest is `extent.vmdk`, which the descriptor may name as a SPARSE,
///   FLAT, VMFS, VMFSSPARSE or SESPARSE extent (or as the parent's file, through
///   `parentFileNameHint`).
/// - bits 0 and 1 set: as bit 0, but after L and `disk.vmdk` come a length M (2 bytes), M bytes
///   of `extent.vmdk`, and the rest is `parent.vmdk`, which `parentFileNameHint` may name: a
///   snapshot delta over its parent.
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
            // Splits off a file: a 2-byte length and that many bytes (fewer if the input ends).
            var remaining = rest
            func take() -> UnsafeRawBufferPointer {
                guard remaining.count >= 2 else { return UnsafeRawBufferPointer(rebasing: remaining[0..<0]) }
                let length = min(remaining.count - 2, Int(remaining[0]) | Int(remaining[1]) << 8)
                defer { remaining = UnsafeRawBufferPointer(rebasing: remaining[(2 + length)...]) }
                return UnsafeRawBufferPointer(rebasing: remaining[2..<(2 + length)])
            }
            let none = UnsafeRawBufferPointer(rebasing: rest[0..<0])
            if options & 1 == 0 || rest.count < 2 {
                scratch.write(rest, to: "disk.vmdk")
                scratch.write(none, to: "extent.vmdk")
                scratch.write(none, to: "parent.vmdk")
            } else if options & 2 == 0 {
                scratch.write(take(), to: "disk.vmdk")
                scratch.write(remaining, to: "extent.vmdk")
                scratch.write(none, to: "parent.vmdk")
            } else {
                scratch.write(take(), to: "disk.vmdk")
                scratch.write(take(), to: "extent.vmdk")
                scratch.write(remaining, to: "parent.vmdk")
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
