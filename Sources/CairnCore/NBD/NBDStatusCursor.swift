/// The last block-status reply for one metadata context, walked forward as a backup reads.
///
/// Asks about long spans (`NBDImage.statusSpan`) and answers from the reply while it covers the
/// offset, so a large disk costs a few block-status requests, not one per batch. Shared by
/// `NBDImage` (`base:allocation`) and `NBDDirtyBitmap` (`qemu:dirty-bitmap:NAME`).
struct NBDStatusCursor {
    let context: String
    private(set) var extents: [NBDExtent] = []
    private var start: UInt64 = 0
    private var end: UInt64 = 0
    /// The extent last used, and where it starts.
    private(set) var index = 0
    private(set) var indexStart: UInt64 = 0

    init(context: String) { self.context = context }

    /// Positions the cursor on the extent holding `offset`, asking the server when the last
    /// reply does not cover it. Returns false when the server described nothing there.
    mutating func seek(_ offset: UInt64, limit: UInt64, client: NBDClient) throws(CairnError) -> Bool {
        if extents.isEmpty || offset < start || offset >= end {
            extents = try client.blockStatus(context: context, offset: offset, length: max(limit, NBDImage.statusSpan))
            guard !extents.isEmpty else { return false }
            start = offset
            index = 0
            indexStart = offset
            end = extents.reduce(offset) { $0 + $1.length }
        }
        // Reads go forward; restart from the front otherwise.
        if offset < indexStart {
            index = 0
            indexStart = start
        }
        while offset >= indexStart + extents[index].length {
            indexStart += extents[index].length
            index += 1
        }
        return true
    }
}
