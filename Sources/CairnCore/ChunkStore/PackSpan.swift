/// A run of one pack's bytes read in one request, ahead of the records in it being checked.
///
/// Verify reads every record of a repository once. Read one by one, each record waits for its
/// own read (around the page cache, so with no kernel readahead behind it), and a worker that
/// waits is a core idle: a seventh of verify's time on the benchmark. Verify's planner reads
/// each unit of work's span while the workers check earlier units, and a worker's `ChunkReader`
/// takes its records from the span without a copy (`PackReader.readRecord(from:)`).
///
/// The bytes are read whole or are short only where the pack ends: a record the span does not
/// hold entirely is read on its own, so a truncated pack gives the same error as without one.
final class PackSpan: @unchecked Sendable {
    // Unchecked: the buffer is written once, in `init`, and only read after that.

    /// The pack the bytes are from.
    let pack: PackID
    /// The pack offset of `bytes[0]`.
    let offset: UInt64
    private let buffer: UnsafeMutableRawBufferPointer
    /// The bytes read: `buffer`'s first `count`.
    private let count: Int

    /// The most a span holds, unless one record is larger (a frame of up to 2 MiB and more).
    /// Direct reads of 1 MiB ran as fast as larger ones here.
    static let targetBytes = 1 << 20
    /// Every span's buffer, whatever it holds: `targetBytes` or one largest record, and the
    /// alignment around either. One size, so that every buffer given back is taken again.
    static let bufferBytes = BufferPool.rounded(
        max(targetBytes, RecordHeader.size + ChunkReader.maxFramePayload) + 2 * File.directAlignment)
    /// Spans in flight are taken from here and given back, so their pages stay warm.
    private static let pool = BufferPool(capacity: 8 * bufferBytes, alignment: File.directAlignment)

    /// Reads `range` of `pack`, from the aligned offset below it (a direct read lands there
    /// without a bounce copy) to the end of the range or of the pack. Nil when that is more than
    /// a span holds (a table claiming records larger than any Cairn writes).
    init?(reading range: Range<UInt64>, of pack: PackReader) throws(CairnError) {
        let alignment = UInt64(File.directAlignment)
        let start = range.lowerBound / alignment * alignment
        let (aligned, overflow) = (range.upperBound - start).addingReportingOverflow(alignment - 1)
        guard !overflow, aligned / alignment * alignment <= UInt64(Self.bufferBytes) else { return nil }
        self.pack = pack.id
        offset = start
        buffer = Self.pool.take(Self.bufferBytes)
        do {
            let length = Int(aligned / alignment * alignment)
            count = try pack.readSpan(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]), at: start)
        } catch {
            Self.pool.give(buffer)
            throw error
        }
    }

    deinit { Self.pool.give(buffer) }

    /// The `count` bytes at pack offset `at`, or nil unless the span holds all of them.
    func bytes(at position: UInt64, count wanted: Int) -> UnsafeRawBufferPointer? {
        guard position >= offset, position - offset <= UInt64(count), wanted <= count - Int(position - offset) else {
            return nil
        }
        let start = Int(position - offset)
        return UnsafeRawBufferPointer(rebasing: buffer[start..<(start + wanted)])
    }
}
