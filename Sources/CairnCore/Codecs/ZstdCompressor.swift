import CZstd

/// zstd compression with one reusable context, for chunks compressed one at a time.
public final class ZstdCompressor {
    private let context: OpaquePointer
    public let level: Int32

    public init(level: Int32) {
        guard let context = ZSTD_createCCtx() else { fatalError("zstd could not create a context (out of memory)") }
        self.context = context
        self.level = level
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 0)
        ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1)
        // Levels 1 and 2 are tuned for frames of up to 2 MiB (docs/ARCHITECTURE.md, "Compression
        // level", with the sets measured): zstd's fast match finder with a window that spans a
        // whole frame (2^21 bytes, where they would use 2^19 or 2^20), matches from 5 bytes
        // (where they want 6 or 7) and a 2^16-entry hash table. 2^17 entries store 0.8% less but
        // compress 11% slower: the larger table (512 KiB) misses the core's cache, while the
        // instructions per byte are the same.
        if level <= 2 {
            ZSTD_CCtx_setParameter(context, ZSTD_c_windowLog, 21)
            ZSTD_CCtx_setParameter(context, ZSTD_c_minMatch, 5)
            ZSTD_CCtx_setParameter(context, ZSTD_c_hashLog, 16)
        }
    }

    deinit {
        ZSTD_freeCCtx(context)
        if let probeContext { ZSTD_freeCCtx(probeContext) }
        probeScratch.deallocate()
    }

    // MARK: The incompressibility probe

    /// Inputs at least this long are probed before they are compressed.
    public static let probeMinimum = 256 << 10
    /// The probe compresses this many pieces of `probePiece` bytes, spread evenly over the input.
    static let probePieces = 8
    static let probePiece = 4096
    /// Pieces that shrink by less than this, all together, mark the input incompressible.
    static let probeThreshold = 0.97

    private var probeContext: OpaquePointer?
    private let probeScratch = UnsafeMutableRawBufferPointer.allocate(
        byteCount: ZSTD_compressBound(ZstdCompressor.probePiece), alignment: 16)

    /// Whether compressing `source` is likely to pay: false when evenly spread samples of it do
    /// not shrink (already compressed or encrypted guest data), so the caller stores it as is.
    ///
    /// Compressing incompressible data costs zstd as much as compressing text, for nothing:
    /// measured on the benchmark's random disk, 1 GiB took 1.8 s to back up, almost all of it
    /// zstd finding nothing. Eight 4 KiB samples at level 1 cost 2.5% of compressing a 2 MiB
    /// frame (callgrind instructions); stopping as soon as the verdict is known cuts that on
    /// compressible data to the first piece or two. Inputs shorter than `probeMinimum` are not
    /// probed (true).
    public func worthCompressing(_ source: UnsafeRawBufferPointer) -> Bool {
        guard source.count >= Self.probeMinimum, let base = source.baseAddress else { return true }
        if probeContext == nil {
            guard let made = ZSTD_createCCtx() else { return true }
            ZSTD_CCtx_setParameter(made, ZSTD_c_compressionLevel, 1)
            ZSTD_CCtx_setParameter(made, ZSTD_c_checksumFlag, 0)
            probeContext = made
        }
        let stride = (source.count - Self.probePiece) / (Self.probePieces - 1)
        let threshold = Self.probeThreshold * Double(Self.probePieces * Self.probePiece)
        var compressed = 0
        for i in 0..<Self.probePieces {
            let n = ZSTD_compress2(
                probeContext, probeScratch.baseAddress, probeScratch.count, base + i * stride, Self.probePiece)
            if ZSTD_isError(n) != 0 { return true }
            compressed += n
            // The verdict is already known when even pieces that do not shrink at all (at most
            // `probeScratch.count` bytes each) could not bring the total to the threshold: on
            // compressible data that is after the first piece or two, an eighth of the cost.
            if Double(compressed + (Self.probePieces - 1 - i) * probeScratch.count) < threshold { return true }
        }
        return Double(compressed) < threshold
    }

    /// The most bytes compressing `count` bytes can produce.
    public static func bound(_ count: Int) -> Int { ZSTD_compressBound(count) }

    /// Compresses `source` into `destination`; returns the compressed length, or nil when the
    /// result would not be smaller than the input (the caller then stores it uncompressed).
    public func compress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        let limit = min(destination.count, source.count - 1)
        guard limit > 0 else { return nil }
        let n = ZSTD_compress2(context, destination.baseAddress, limit, source.baseAddress, source.count)
        if ZSTD_isError(n) != 0 { return nil }
        return n
    }
}

/// zstd decompression with one reusable context.
public final class ZstdDecompressor {
    private let context: OpaquePointer

    public init() {
        guard let context = ZSTD_createDCtx() else { fatalError("zstd could not create a context (out of memory)") }
        self.context = context
    }

    deinit { ZSTD_freeDCtx(context) }

    /// Decompresses one or more whole frames; returns the number of bytes produced, or throws
    /// a `.damaged` error with zstd's reason.
    public func decompress(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> Int {
        let n = ZSTD_decompressDCtx(
            context, destination.baseAddress, destination.count, source.baseAddress, source.count)
        if ZSTD_isError(n) != 0 {
            throw CairnError(.damaged, "zstd data does not decompress", cause: String(cString: ZSTD_getErrorName(n)))
        }
        return n
    }

    /// Decompresses a stream of frames until `destination` is full; trailing input is ignored.
    /// Used for qcow2's zstd clusters, whose compressed length is only known to the sector.
    ///
    /// A frame that holds more than fits is refused, as QEMU refuses it (`qcow2_zstd_decompress`):
    /// read with the wrong cluster size, a cluster's frame would otherwise yield its first part
    /// as if it were the whole cluster.
    public func decompressStream(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> Int {
        ZSTD_DCtx_reset(context, ZSTD_reset_session_only)
        var input = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
        var output = ZSTD_outBuffer(dst: destination.baseAddress, size: destination.count, pos: 0)
        var rc = 0
        while output.pos < output.size {
            let before = (input.pos, output.pos)
            rc = ZSTD_decompressStream(context, &output, &input)
            if ZSTD_isError(rc) != 0 {
                throw CairnError(
                    .damaged, "zstd data does not decompress", cause: String(cString: ZSTD_getErrorName(rc)))
            }
            if input.pos == input.size && (rc == 0 || output.pos < output.size) {
                break  // the last frame ended, or the input ran out mid-frame (a short result)
            }
            if input.pos == before.0 && output.pos == before.1 { break }  // no progress: never spin
        }
        if output.pos == output.size && rc != 0 {
            throw CairnError(
                .damaged, "zstd data does not decompress",
                cause: "its frame holds more than the \(output.size) bytes expected")
        }
        return output.pos
    }
}
