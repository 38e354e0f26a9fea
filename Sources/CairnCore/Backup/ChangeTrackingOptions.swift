/// What the administrator asked of changed-block tracking for one backup
/// (`cairn backup --dirty-bitmap NAME`, `--checkpoint NAME`, `--cbt`, `--full-every N`).
public struct ChangeTrackingOptions: Sendable, Equatable {
    /// Read this bitmap to skip clean blocks: a qcow2 persistent bitmap of each image.
    public var dirtyBitmap: String?
    /// The bitmap of this name was started at the moment of the view this backup reads; the
    /// restore point records it, so a later `--dirty-bitmap NAME` can be trusted against it.
    public var checkpoint: String?
    /// Cairn manages the checkpoints of offline qcow2 images itself: it adds the next bitmap
    /// before reading, reads with the one the previous restore point started, and removes the
    /// old one once the new restore point is committed.
    public var managed: Bool
    /// Read every disk in full when this many nights have used a bitmap since the last full read.
    public var fullEvery: Int?
    /// Clean blocks per disk to read anyway and compare with the previous restore point.
    public var sampleBlocks: Int
    /// The name an NBD export offers the bitmap under, when it is not `dirtyBitmap`: libvirt's
    /// incremental pull backup exports the changes since checkpoint `dirtyBitmap` of disk `vda`
    /// as `qemu:dirty-bitmap:backup-vda`. The trust rule still checks `dirtyBitmap`.
    public var exportBitmap: String?
    /// Why no bitmap can be read this time, known before the backup starts (libvirt lost the
    /// checkpoint, the disk is raw): the disk is read in full and the manifest says why.
    public var unavailable: String?

    public static let defaultSampleBlocks = 32

    public init(
        dirtyBitmap: String? = nil, checkpoint: String? = nil, managed: Bool = false, fullEvery: Int? = nil,
        sampleBlocks: Int = ChangeTrackingOptions.defaultSampleBlocks
    ) {
        self.dirtyBitmap = dirtyBitmap
        self.checkpoint = checkpoint
        self.managed = managed
        self.fullEvery = fullEvery
        self.sampleBlocks = sampleBlocks
    }

    /// True if any change tracking was asked for (otherwise the manifest records none).
    public var isRequested: Bool { dirtyBitmap != nil || checkpoint != nil || managed || unavailable != nil }

    /// Refuses combinations that cannot mean anything. The words are the library's; `cairn backup`
    /// checks its flags first and names them.
    public func validate() throws(CairnError) {
        if managed && (dirtyBitmap != nil || checkpoint != nil) {
            throw CairnError(
                .usage, "managed checkpoints choose their own bitmaps: name no dirty bitmap or checkpoint beside them")
        }
        if let fullEvery, fullEvery < 1 {
            throw CairnError(.usage, "a full read every \(fullEvery) nights is not possible: use 1 or more")
        }
        if fullEvery != nil && !isRequested {
            throw CairnError(
                .usage,
                "a full read every N nights needs changed-block tracking (managed checkpoints or a dirty bitmap)")
        }
        guard sampleBlocks >= 0 else { throw CairnError(.usage, "the clean blocks sampled per disk must be 0 or more") }
        for name in [dirtyBitmap, checkpoint, exportBitmap].compactMap({ $0 }) {
            guard !name.isEmpty, name.utf8.count <= QCOW2BitmapDirectory.maxNameLength, !name.contains("\0") else {
                throw CairnError(.usage, "bitmap name \"\(name)\" must be 1 to 1023 bytes without NUL")
            }
        }
    }
}
