/// Which guest ranges changed since a checkpoint: the seam between a dirty bitmap and the backup.
///
/// A backup that has one reads only the dirty ranges (rounded outward to whole blocks) and takes
/// the digests of clean blocks from the previous restore point without reading them. A qcow2
/// persistent bitmap (`QCOW2DirtyBitmap`) is one source; an NBD export's
/// `qemu:dirty-bitmap:NAME` context is another. A wrong "clean" loses data silently, so the
/// backup only asks a map it has decided to trust (`ChangeTrackingPolicy`), and an error from a
/// map makes it read the whole disk instead of failing.
/// Implementations are used from one thread at a time.
public protocol ChangedBlockMap: AnyObject {
    /// What the map is, for summaries and manifests ("qcow2 bitmap cairn.vm1.20261126T030000Z").
    var description: String { get }

    /// Describes the guest range starting at `offset`: how long it runs (at least 1 byte, at most
    /// `maxLength`) and whether any of it may have been written since the checkpoint.
    /// Clean ranges that follow each other may be reported in pieces.
    func changes(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ChangeExtent
}

/// A run of guest bytes that is dirty (may have changed) or clean (certainly did not).
public struct ChangeExtent: Sendable, Equatable {
    public var length: UInt64
    public var isDirty: Bool

    public init(length: UInt64, isDirty: Bool) {
        self.length = length
        self.isDirty = isDirty
    }
}
