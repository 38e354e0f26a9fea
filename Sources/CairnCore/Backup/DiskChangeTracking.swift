/// Changed-block tracking for one disk of one backup: which bitmap to read, whether to trust it,
/// which bitmap to start, and the clean-up once the restore point is committed.
///
/// The trust rule (research `live-vm.md` §6.3). A wrong "clean" loses data silently, so the
/// bitmap is used only when every condition holds: the group's previous restore point has this
/// disk, from the same path, with the same virtual size (the block size is the repository's),
/// and `cairn verify` has not found it damaged; it recorded this bitmap as started at its
/// moment; `--full-every` does not call for a full read; and, for a qcow2 file, no writer holds
/// the image (QEMU's lock byte), the bitmaps are consistent (autoclear bit 0), the whole
/// directory is well formed, and the bitmap is not `in_use` and is enabled. Otherwise the disk is
/// read in full and `reason` says why. Nothing here ever fails the backup: a bitmap problem
/// costs a full read, and at worst a warning.
final class DiskChangeTracking {
    let options: ChangeTrackingOptions
    let source: BackupSource
    let group: String
    /// The bitmap to read, if any.
    private(set) var bitmap: String?
    /// The bitmap started at this backup's moment, once it is known to exist.
    private(set) var started: String?
    /// Why the disk is read in full; nil while the bitmap is still trusted.
    private(set) var reason: String?
    private(set) var warnings: [String] = []
    private(set) var map: (any ChangedBlockMap)?
    private let base: Manifest.DiskEntry?

    /// Managed bitmaps are named `cairn.GROUP.TIME`; every other `cairn.GROUP.` bitmap is removed
    /// after a commit.
    static func managedPrefix(group: String) -> String { "cairn.\(group)." }

    static func managedName(group: String, time: Timestamp) -> String {
        managedPrefix(group: group) + time.description.filter { $0 != "-" && $0 != ":" }
    }

    init(
        options: ChangeTrackingOptions, source: BackupSource, id: RestorePointID, previousID: RestorePointID?,
        base: Manifest.DiskEntry?, previousDamaged: Bool
    ) {
        self.options = options
        self.source = source
        self.base = base
        group = id.group
        if options.managed {
            bitmap = base?.cbt?.started
            started = Self.managedName(group: id.group, time: id.time)
        } else {
            bitmap = options.dirtyBitmap
            started = options.checkpoint
        }
        reason = Self.precondition(
            options: options, source: source, bitmap: bitmap, previousID: previousID, base: base,
            previousDamaged: previousDamaged)
    }

    /// The checks on the previous restore point, before any image is opened.
    private static func precondition(
        options: ChangeTrackingOptions, source: BackupSource, bitmap: String?, previousID: RestorePointID?,
        base: Manifest.DiskEntry?, previousDamaged: Bool
    ) -> String? {
        if let why = options.unavailable { return why }
        guard options.managed || options.dirtyBitmap != nil else { return "no --dirty-bitmap was given" }
        guard let previousID, let base else {
            return "no previous restore point of this group holds disk \(source.diskName)"
        }
        if previousDamaged { return "the previous restore point \(previousID) was found damaged by cairn verify" }
        if source.snapshot != nil { return "an internal snapshot is read (--snapshot), which bitmaps do not track" }
        // The source decides (an NBD export's URI names a socket that may be new each night, so
        // the disk's name and the recorded checkpoint identify it, not the path).
        if !source.source.isSameDisk(as: base.source) {
            return
                "the previous restore point read disk \(source.diskName) from \(base.source.path), not \(source.path)"
        }
        guard let bitmap else { return "the previous restore point \(previousID) started no bitmap" }
        guard base.cbt?.started == bitmap else {
            let other = base.cbt?.started.map { "it started \($0)" } ?? "it started none"
            return
                "the previous restore point \(previousID) did not record bitmap \(bitmap) as started at its moment (\(other))"
        }
        if let n = options.fullEvery {
            let nights = (base.cbt?.nightsSinceFullRead ?? 0) + 1
            if nights >= n {
                return
                    "--full-every \(n): \(nights - 1) night\(nights == 2 ? "" : "s") read with a bitmap since the last full read"
            }
        }
        return nil
    }

    /// Before the image is opened for the backup: for managed checkpoints, checks the bitmap to
    /// read as it is now, then adds the next one (QEMU rewrites the directory when it does).
    func prepare() {
        guard options.managed, let next = started else { return }
        started = nil
        let image: any DiskImage
        do {
            // A probe of the headers: the writer's lock is checked below, and the backup's own
            // open refuses a live image unless --allow-live.
            image = try source.source.open(DiskOpenOptions(format: source.format, allowLive: true))
        } catch {
            return  // The backup's own open reports it.
        }
        guard let qcow2 = image as? QCOW2Image else {
            giveUp("\(source.path) is not qcow2: only qcow2 images carry persistent bitmaps")
            warnings.append("--cbt: \(source.path) is not qcow2, so no bitmap was started")
            return
        }
        if reason == nil { evaluate(qcow2) }
        map = nil  // QEMU is about to rewrite the bitmaps; they are read again after it.
        if (try? qcow2.file.isLockedByOthers(at: File.qemuWriteLockByte)) ?? true {
            giveUp("a program (a running VM?) holds \(source.path) open for writing")
            warnings.append("--cbt: \(source.path) is held open for writing, so no bitmap was started")
            return
        }
        do {
            try QemuImgBitmaps.add(next, to: source.path)
            started = next
        } catch {
            warnings.append(
                "--cbt: no bitmap was started on \(source.path), the next backup will read it in full: \(error)")
        }
    }

    /// Once the image is open for the backup: the checks on the image itself, and the map.
    func attach(_ image: any DiskImage) {
        if let nbd = image as? NBDImage {
            attach(nbd)
            return
        }
        let qcow2 = image as? QCOW2Image
        if !options.managed, let checkpoint = started {
            // The administrator says this bitmap was started now: record it only if it is there and recording.
            if let qcow2, let entry = try? qcow2.bitmapDirectory()?.entry(named: checkpoint), entry.isEnabled,
                !entry.isInUse
            {
                started = checkpoint
            } else {
                started = nil
                warnings.append(
                    "--checkpoint \(checkpoint): \(source.path) has no enabled bitmap of that name, so none was recorded"
                )
            }
        }
        guard reason == nil else { return }
        guard let qcow2 else {
            giveUp("\(source.path) is not qcow2: only qcow2 images carry persistent bitmaps")
            return
        }
        evaluate(qcow2)
    }

    /// An NBD export: whoever froze the view started the bitmap (libvirt's checkpoint, the
    /// administrator's script), so `--checkpoint` is recorded as said; the bitmap to read must be
    /// one the server offers as `qemu:dirty-bitmap:NAME`.
    private func attach(_ image: NBDImage) {
        if options.managed {
            started = nil
            giveUp("--cbt manages bitmaps in qcow2 files; for an NBD export use --dirty-bitmap and --checkpoint")
            return
        }
        guard reason == nil, let bitmap, let base else { return }
        if image.virtualSize != base.size {
            giveUp("the virtual size changed from \(base.size) to \(image.virtualSize) bytes")
            return
        }
        let exported = options.exportBitmap ?? bitmap
        guard let map = NBDDirtyBitmap(client: image.client, bitmap: exported) else {
            giveUp("the NBD server does not offer \(NBDDirtyBitmap.context(forBitmap: exported))")
            return
        }
        self.map = map
    }

    /// The checks on a qcow2 image and its bitmap; on success `map` is the bitmap.
    private func evaluate(_ image: QCOW2Image) {
        guard let bitmap, let base else { return }
        if image.virtualSize != base.size {
            giveUp("the virtual size changed from \(base.size) to \(image.virtualSize) bytes")
            return
        }
        if (try? image.file.isLockedByOthers(at: File.qemuWriteLockByte)) ?? true {
            giveUp("a program (a running VM?) holds \(source.path) open for writing")
            return
        }
        do {
            let opened = try image.dirtyBitmap(named: bitmap)
            guard opened.entry.isEnabled else {
                giveUp("bitmap \(bitmap) is disabled, so it has not recorded every write")
                return
            }
            map = opened
        } catch {
            giveUp(error.message)
        }
    }

    /// Stops trusting the bitmap: the disk is read in full.
    func giveUp(_ why: String) {
        if reason == nil { reason = why }
        map = nil
    }

    /// What the manifest records for this disk.
    func record(used: Bool, sampledBlocks: UInt64) -> Manifest.ChangeTracking {
        Manifest.ChangeTracking(
            used: used, bitmap: bitmap, started: started, reason: used ? nil : reason,
            nightsSinceFullRead: used ? (base?.cbt?.nightsSinceFullRead ?? 0) + 1 : 0,
            sampledBlocks: used ? sampledBlocks : nil)
    }

    /// After the restore point is committed: removes the managed bitmaps no restore point needs
    /// any more (the one just read, and any a crashed run left behind).
    func finish() {
        guard options.managed, let started else { return }
        let prefix = Self.managedPrefix(group: group)
        let stale: [String]
        do {
            guard let image = try source.source.open(DiskOpenOptions(format: .qcow2)) as? QCOW2Image,
                let directory = try image.bitmapDirectory()
            else { return }
            stale = directory.entries.map(\.name).filter { $0.hasPrefix(prefix) && $0 != started }
        } catch {
            warnings.append("--cbt: old bitmaps on \(source.path) were left in place: \(error)")
            return
        }
        for name in stale {
            do {
                try QemuImgBitmaps.remove(name, from: source.path)
            } catch {
                warnings.append("--cbt: \(error)")
            }
        }
    }
}
