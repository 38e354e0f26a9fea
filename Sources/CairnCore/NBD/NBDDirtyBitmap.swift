/// An NBD export's `qemu:dirty-bitmap:NAME` context as a `ChangedBlockMap`: what libvirt's
/// incremental pull-mode backup and `qemu-nbd -B NAME` offer.
///
/// Asked about long spans and answered from the last reply while it covers the offset, so a
/// large clean disk costs a few block-status requests, not one per batch. A range the server
/// leaves undescribed counts as dirty only after being asked about; nothing is ever assumed clean.
public final class NBDDirtyBitmap: ChangedBlockMap {
    let client: NBDClient
    let context: String
    public var description: String { "NBD \(context) of \(client.exportName)" }

    private var extents: [NBDExtent] = []
    private var start: UInt64 = 0
    private var index = 0
    private var indexStart: UInt64 = 0
    private var end: UInt64 = 0

    public static func context(forBitmap name: String) -> String { "qemu:dirty-bitmap:\(name)" }

    /// Nil when the server did not select the context (it does not have the bitmap).
    public init?(client: NBDClient, bitmap: String) {
        let context = Self.context(forBitmap: bitmap)
        guard client.contexts[context] != nil else { return nil }
        self.client = client
        self.context = context
    }

    public func changes(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ChangeExtent {
        let limit = min(maxLength, client.size - offset)
        guard limit > 0 else { return ChangeExtent(length: 1, isDirty: true) }
        if extents.isEmpty || offset < start || offset >= end {
            extents = try client.blockStatus(context: context, offset: offset, length: max(limit, NBDImage.statusSpan))
            guard !extents.isEmpty else { return ChangeExtent(length: limit, isDirty: true) }
            start = offset
            index = 0
            indexStart = offset
            end = extents.reduce(offset) { $0 + $1.length }
        }
        if offset < indexStart {
            index = 0
            indexStart = start
        }
        while offset >= indexStart + extents[index].length {
            indexStart += extents[index].length
            index += 1
        }
        let extent = extents[index]
        let length = min(limit, indexStart + extent.length - offset)
        return ChangeExtent(length: max(length, 1), isDirty: NBDDirtyState(rawValue: extent.flags).contains(.dirty))
    }
}
