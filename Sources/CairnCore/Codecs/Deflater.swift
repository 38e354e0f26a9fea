import CZlib

/// zlib compression (RFC 1950: header, deflate, Adler-32) with one reusable stream, for the
/// grains of a streamOptimized VMDK, which VMware and QEMU write as one zlib stream per grain.
///
/// The `z_stream` lives at a fixed heap address for the object's whole life because zlib checks
/// that the stream it is handed is the one it was initialised with (as in `Inflater`).
final class Deflater {
    private let stream: UnsafeMutablePointer<z_stream>

    /// `level` is zlib's: 1 (fastest) to 9 (smallest); 6, zlib's default, is what `compress()` uses.
    init(level: Int32 = 6) {
        stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = deflateInit2_(
            stream, level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        if rc != Z_OK { fatalError("zlib could not create a deflate stream (error \(rc))") }
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// The most bytes `compress` can produce from `count` input bytes: size buffers with this.
    func bound(_ count: Int) -> Int { Int(deflateBound(stream, uLong(count))) }

    /// Compresses all of `source` into `destination` as one complete zlib stream; returns its length.
    /// `destination` must hold `bound(source.count)` bytes.
    func compress(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> Int {
        deflateReset(stream)
        guard let output = destination.baseAddress else { preconditionFailure("deflate was given no output buffer") }
        let input = source.baseAddress ?? UnsafeRawPointer(output)
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(source.count)
        stream.pointee.next_out = output.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(destination.count)
        let rc = deflate(stream, Z_FINISH)
        guard rc == Z_STREAM_END else {
            // Only a destination smaller than `bound` can stop a Z_FINISH short.
            throw CairnError(
                .usage, "deflate of \(source.count) bytes did not fit \(destination.count) bytes (zlib \(rc))")
        }
        return destination.count - Int(stream.pointee.avail_out)
    }
}
