/// Appends to a file its owner just created, around the page cache.
///
/// Appended bytes gather in a reused, page-aligned buffer and reach the file in whole aligned
/// pieces written with O_DIRECT; at `finish()` the aligned part of what is left goes the same way
/// and the last partial page through the page cache. A pack is written once and not read again
/// in the run that writes it, and on a VM whose host reclaims idle guest memory, copying it into
/// fresh page cache was the largest cost of a first backup: 40% of night 0's CPU samples were
/// that copy, on the one thread that appends to packs (Benchmarks/README.md). Where the
/// filesystem refuses O_DIRECT (tmpfs, some FUSE mounts), at open or at a write, the same pieces
/// go through the page cache. Durability is still the owner's `fsync`, which covers both paths.
///
/// Not thread-safe: one writer appends, in order (a staged object's contract).
final class DirectAppender {
    /// The file, opened for ordinary writes: the fallback, the last partial page, and `fsync`.
    let file: File
    /// The same file opened for direct writes, nil once they are refused.
    private var direct: File?
    /// The aligned buffer bytes gather in; taken at the first append, given back at `finish()`.
    private var buffer: UnsafeMutableRawBufferPointer?
    /// Bytes in `buffer`, not yet on the file.
    private var buffered = 0
    /// Bytes on the file.
    private var written: UInt64 = 0
    /// The error of a write that failed: the file is missing bytes the owner counted as
    /// appended, so every later append and `finish()` fail with it too.
    private var failure: CairnError?

    /// Bytes a direct write carries at most: large enough that its cost is the device's, small
    /// enough that a few packs open at once stay a few MiB.
    static let pieceSize = 4 << 20
    private static let pool = BufferPool(capacity: 16 << 20, alignment: File.directAlignment)

    init(file: File) {
        self.file = file
        direct = File.openDirectWrite(file.path)
    }

    deinit {
        if let buffer { Self.pool.give(buffer) }
    }

    /// Bytes appended so far (on the file or still in the buffer).
    var size: UInt64 { written + UInt64(buffered) }

    func append(_ bytes: UnsafeRawBufferPointer) throws(CairnError) {
        if let failure { throw failure }
        var done = 0
        while done < bytes.count {
            let buffer = self.buffer ?? take()
            let piece = min(buffer.count - buffered, bytes.count - done)
            UnsafeMutableRawBufferPointer(rebasing: buffer[buffered..<buffered + piece])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + piece]))
            buffered += piece
            done += piece
            if buffered == buffer.count { try flush(count: buffered, direct: true) }
        }
    }

    /// Writes what is buffered and gives the buffer back. Later appends start a new buffer.
    func finish() throws(CairnError) {
        if let failure { throw failure }
        let aligned = buffered / File.directAlignment * File.directAlignment
        if aligned > 0 { try flush(count: aligned, direct: true) }
        if buffered > 0 { try flush(count: buffered, direct: false) }
        if let buffer {
            Self.pool.give(buffer)
            self.buffer = nil
        }
    }

    private func take() -> UnsafeMutableRawBufferPointer {
        let taken = Self.pool.take(Self.pieceSize)
        buffer = taken
        return taken
    }

    /// Writes the first `count` buffered bytes at the end of the file and moves the rest (less
    /// than a page, after a partial flush) to the buffer's start.
    private func flush(count: Int, direct useDirect: Bool) throws(CairnError) {
        guard let buffer else { return }
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        do throws(CairnError) {
            if useDirect, let direct {
                do throws(CairnError) {
                    try direct.write(bytes, at: written)
                } catch {
                    // A filesystem may accept O_DIRECT at open and refuse a write (EINVAL): the
                    // page cache takes this and every later piece, and a real I/O error fails
                    // there with its own message.
                    self.direct = nil
                    try file.write(bytes, at: written)
                }
            } else {
                try file.write(bytes, at: written)
            }
        } catch {
            failure = error
            throw error
        }
        written += UInt64(count)
        let rest = buffered - count
        if rest > 0 {
            buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + count, byteCount: rest)
        }
        buffered = rest
    }
}
