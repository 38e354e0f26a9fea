/// Reads byte ranges of a file around the page cache, at any offset and length.
///
/// A direct read must start, end and land on `File.directAlignment`: this reads the aligned
/// span that covers the range into a reused aligned buffer and copies the range out (a copy
/// between warm buffers, a small fraction of reading into fresh page cache on a VM whose host
/// reclaims idle guest memory: a restore from packs not in the cache spent 1.2 s of system
/// time on it; Benchmarks/README.md). Packs are read this way: each record is read once per
/// restore, verify or gc, so the page cache would only hold it at the expense of the guests'
/// own cached data.
struct DirectReader: Sendable {
    /// The file opened with O_DIRECT.
    let file: File

    /// Aligned spans are read into these, reused while warm.
    private static let bounce = BufferPool(capacity: 16 << 20, alignment: File.directAlignment)

    /// A reader for `path`, or nil when its filesystem does not offer direct reads.
    init?(path: String) {
        guard let file = File.openDirectRead(path) else { return nil }
        self.file = file
    }

    /// Reads up to `buffer.count` bytes at `offset` (fewer only at end of file), or nil when the
    /// filesystem refuses the direct read: the caller reads through the page cache.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) -> Int? {
        guard !buffer.isEmpty else { return 0 }
        let alignment = UInt64(File.directAlignment)
        if offset % alignment == 0, buffer.count % Int(alignment) == 0,
            UInt(bitPattern: buffer.baseAddress!) % UInt(alignment) == 0
        {
            // Already aligned (a `PackSpan`): straight into the caller's buffer.
            return try file.readDirect(into: buffer, at: offset)
        }
        let start = offset / alignment * alignment
        let lead = Int(offset - start)
        let (end, overflow) = (offset + UInt64(buffer.count)).addingReportingOverflow(alignment - 1)
        guard !overflow else { return nil }
        let span = Int(end / alignment * alignment - start)
        let aligned = Self.bounce.take(span)
        defer { Self.bounce.give(aligned) }
        guard let n = try file.readDirect(into: UnsafeMutableRawBufferPointer(rebasing: aligned[0..<span]), at: start)
        else { return nil }
        let count = min(max(n - lead, 0), buffer.count)
        if count > 0 {
            buffer.baseAddress!.copyMemory(from: aligned.baseAddress! + lead, byteCount: count)
        }
        return count
    }
}
