extension BackupJob {
    /// Refuses an image whose detected format differs from its disk's format in the group's
    /// previous restore point, unless the format was forced with `--format`.
    ///
    /// A qcow2 whose header was damaged has no magic and would back up as a raw disk of container
    /// bytes; a guest that writes a qcow2 header into its own raw disk would make Cairn read host
    /// files through a forged backing chain. Both show up as a change of format between two
    /// backups of the same disk, which a real conversion rarely is: so it is refused, and the
    /// message says how to accept a real one.
    ///
    /// Called right after the images are opened, before anything is stored.
    static func checkFormatsUnchanged(
        _ images: [(BackupSource, any DiskImage)], group: String, catalog: Catalog
    ) throws(CairnError) {
        // An unreadable catalog or manifest is the backup's own business to report (it reads them
        // next); this check only compares with a previous restore point it can read.
        guard images.contains(where: { $0.0.format == nil }),
            let previousID = (try? catalog.points(in: group))?.last,
            let previous = try? catalog.manifest(previousID)
        else { return }
        for (source, image) in images where source.format == nil {
            guard let before = previous.disk(named: source.diskName)?.source.format else { continue }
            let now = image.info.format
            guard before != now else { continue }
            let why =
                now == .raw
                ? "its qcow2 header may be damaged; if it was really converted to raw"
                : "a guest can write a \(now) header into its own raw disk; if it was really converted to \(now)"
            throw CairnError(
                .badImage,
                "\(source.path) reads as \(now), but disk \(source.diskName) was \(before) in the previous restore "
                    + "point \(previous.id): \(why), pass --format \(now); pass --format \(before) to read it as before"
            )
        }
    }
}
