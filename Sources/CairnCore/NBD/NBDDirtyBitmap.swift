/// An NBD export's `qemu:dirty-bitmap:NAME` context as a `ChangedBlockMap`: what libvirt's
/// incremental pull-mode backup and `qemu-nbd -B NAME` offer.
///
/// Asked about long spans and answered from the last reply while it covers the offset, so a
/// large clean disk costs a few block-status requests, not one per batch. A range the server
/// leaves undescribed counts as dirty only after being asked about; nothing is ever assumed clean.
public final class NBDDirtyBitmap: ChangedBlockMap {
    let client: NBDClient
    private var cursor: NBDStatusCursor
    public var description: String { "NBD \(cursor.context) of \(client.exportName)" }

    public static func context(forBitmap name: String) -> String { "qemu:dirty-bitmap:\(name)" }

    /// Nil when the server did not select the context (it does not have the bitmap).
    public init?(client: NBDClient, bitmap: String) {
        let context = Self.context(forBitmap: bitmap)
        guard client.contexts[context] != nil else { return nil }
        self.client = client
        cursor = NBDStatusCursor(context: context)
    }

    public func changes(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ChangeExtent {
        let limit = min(maxLength, client.size - offset)
        guard limit > 0 else { return ChangeExtent(length: 1, isDirty: true) }
        guard try cursor.seek(offset, limit: limit, client: client) else {
            return ChangeExtent(length: limit, isDirty: true)
        }
        let extent = cursor.extents[cursor.index]
        let length = min(limit, cursor.indexStart + extent.length - offset)
        return ChangeExtent(length: max(length, 1), isDirty: NBDDirtyState(rawValue: extent.flags).contains(.dirty))
    }
}
