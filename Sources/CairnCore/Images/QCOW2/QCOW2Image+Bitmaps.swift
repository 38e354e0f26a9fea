/// Persistent dirty bitmaps of the active layer, for changed-block tracking.
extension QCOW2Image {
    /// The image's bitmap directory, fully checked; nil if the image has no bitmaps extension.
    public func bitmapDirectory() throws(CairnError) -> QCOW2BitmapDirectory? {
        try QCOW2BitmapDirectory.read(self)
    }

    /// Opens the persistent bitmap `name` for dirty/clean queries.
    ///
    /// Refuses (with a message that says why) when the image has no such bitmap, when the
    /// bitmaps are stale (autoclear bit 0 clear), when any directory entry is malformed, and when
    /// the bitmap is `in_use`. Whether the bitmap may be *trusted* for a backup is decided by the
    /// caller (`ChangeTrackingPolicy`): this only guarantees it is read exactly as stored.
    public func dirtyBitmap(named name: String) throws(CairnError) -> QCOW2DirtyBitmap {
        guard let directory = try bitmapDirectory() else {
            throw bad("has no persistent bitmaps, so bitmap \"\(name)\" does not exist")
        }
        guard directory.isConsistent else {
            throw bad(
                "bitmaps are stale: autoclear bit 0 is clear, so a program that does not know bitmaps wrote the image")
        }
        guard let entry = directory.entry(named: name) else {
            let names = directory.entries.map { "\"\($0.name)\"" }.joined(separator: ", ")
            throw bad("has no bitmap \"\(name)\" (its bitmaps: \(names))")
        }
        return try QCOW2DirtyBitmap(image: self, entry: entry)
    }
}
