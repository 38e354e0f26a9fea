import CZlib

/// Deflate decompression with one reusable zlib stream, for qcow2 clusters and VMDK grains.
///
/// qcow2's "deflate" compression type stores each cluster as a raw deflate stream (RFC 1951, no
/// header or checksum) written with a small window; decoding with the largest raw window
/// (`windowBits = -15`) reads every such stream. A VMDK streamOptimized grain is a zlib stream
/// (RFC 1950: a header, deflate, an Adler-32 checksum), as VMware and QEMU's `compress()` write it.
/// The `z_stream` lives at a fixed heap address for the object's whole life because zlib checks
/// that the stream it is handed is the one it was initialised with.
final class Inflater {
    /// The framing around the deflate data.
    enum Framing {
        /// RFC 1951 deflate alone (qcow2).
        case rawDeflate
        /// RFC 1950 zlib: header, deflate, Adler-32 (VMDK).
        case zlib
    }

    private let stream: UnsafeMutablePointer<z_stream>

    init(_ framing: Framing = .rawDeflate) {
        stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let windowBits: Int32 = framing == .zlib ? 15 : -15
        let rc = inflateInit2_(stream, windowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        if rc != Z_OK { fatalError("zlib could not create an inflate stream (error \(rc))") }
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Inflates `source` into `destination` until the destination is full or the deflate stream
    /// ends; returns the number of bytes produced. Trailing input is ignored.
    ///
    /// Throws a `.badImage` error with zlib's reason when the data is not valid deflate.
    func inflate(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> Int {
        inflateReset(stream)
        guard let input = source.baseAddress, let output = destination.baseAddress, destination.count > 0 else {
            return 0
        }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(source.count)
        stream.pointee.next_out = output.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(destination.count)
        while true {
            let rc = CZlib.inflate(stream, Z_SYNC_FLUSH)
            let produced = destination.count - Int(stream.pointee.avail_out)
            switch rc {
            case Z_OK:
                if stream.pointee.avail_out == 0 || stream.pointee.avail_in == 0 { return produced }
            case Z_STREAM_END, Z_BUF_ERROR:
                // Z_BUF_ERROR: no progress possible (input exhausted); the caller sees a short result.
                return produced
            default:
                let reason = stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(rc)"
                throw CairnError(.badImage, "deflate data does not decompress", cause: reason)
            }
        }
    }
}
