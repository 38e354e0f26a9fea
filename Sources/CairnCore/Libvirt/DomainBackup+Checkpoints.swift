/// How tonight's pull backup reads: incremental from the previous restore point's checkpoint, or
/// in full and why.
struct IncrementalPlan: Sendable, Equatable {
    /// The checkpoint the changes are read since; nil for a full read.
    var from: String?
    /// The disks read incrementally (qcow2 disks that have a bitmap of `from`).
    var disks: Set<String> = []
    /// Why the backup reads every disk in full; nil when incremental.
    var reason: String?
    /// Why a disk is read in full although the backup is incremental (a disk new since `from`).
    var diskReasons: [String: String] = [:]

    static func full(_ reason: String) -> IncrementalPlan { IncrementalPlan(from: nil, reason: reason) }
}

extension DomainBackup {
    /// This repository's checkpoints are `cairn-<first 8 of the repository id>-<UTC time>`.
    var checkpointPrefix: String { "cairn-\(repository.config.id.prefix(8))-" }

    func checkpointName() -> String {
        let time = Timestamp.now().description.filter { $0.isNumber || $0 == "T" || $0 == "Z" }
        let existing = Set(listCheckpoints())
        var name = "\(checkpointPrefix)\(time)"
        var n = 1
        while existing.contains(name) {
            n += 1
            name = "\(checkpointPrefix)\(time)-\(n)"
        }
        return name
    }

    func listCheckpoints() -> [String] {
        let listing = virsh.attempt(["checkpoint-list", domainName, "--name"])
        guard listing.ok else { return [] }
        return listing.output.split(whereSeparator: \.isNewline).map { String($0).trimmingSpaces }.filter {
            !$0.isEmpty
        }
    }

    /// Decides whether tonight is incremental, from the group's latest restore point.
    ///
    /// It is when that restore point was a pull backup of this domain (same UUID) and its
    /// checkpoint is still in libvirt, or can be redefined from the XML the restore point keeps
    /// (libvirt re-installed, the domain defined afresh or migrated: QEMU may still hold the
    /// bitmaps, which `--redefine-validate` checks). Anything else is a full read with the reason;
    /// nothing here fails the backup. The trust rule (`DiskChangeTracking`) checks each disk again
    /// against the restore point BackupJob walks beside.
    func planIncremental(
        group: String, definition: DomainDefinition, work: String, warnings: inout [String]
    ) -> IncrementalPlan {
        let catalog = repository.catalog
        let previousID: RestorePointID
        let previous: Manifest
        do {
            guard let latest = try catalog.points(in: group).last else {
                return .full("no previous restore point of group \(group)")
            }
            previousID = latest
            previous = try catalog.manifest(latest)
        } catch {
            return .full("the previous restore point could not be read: \(error.message)")
        }
        guard let prior = previous.domain else {
            return .full("the previous restore point \(previousID) was not made with --domain")
        }
        if let before = prior.uuid, let now = definition.uuid, before != now {
            return .full(
                "the previous restore point \(previousID) is of another domain named \(prior.name) (UUID \(before))")
        }
        guard prior.mode == "pull", let from = prior.checkpoint else {
            return .full(
                "the previous restore point \(previousID) was read from the shut-off domain's files, which starts no checkpoint"
            )
        }
        var kept: CheckpointDefinition?
        if let xml = prior.checkpointXML {
            do {
                kept = try CheckpointDefinition(xml: xml, expectedName: from)
            } catch {
                warnings.append("restore point \(previousID): \(error.message)")
            }
        }
        if !listCheckpoints().contains(from) {
            guard let kept else {
                return .full(
                    "libvirt has no checkpoint \(from) of the previous restore point \(previousID) any more, and no XML of it is kept to redefine it"
                )
            }
            if let failure = redefine(kept, work: work) {
                return .full(
                    "libvirt has no checkpoint \(from) of the previous restore point \(previousID) any more, and redefining it failed: \(failure)"
                )
            }
            warnings.append(
                "redefined checkpoint \(from) of domain \(domainName) from restore point \(previousID): libvirt had lost it"
            )
        }
        var plan = IncrementalPlan(from: from)
        for disk in definition.disks where disk.format == "qcow2" {
            let hadBitmap =
                kept.map { $0.disks[disk.target] == "bitmap" }
                ?? prior.disks.contains { $0.target == disk.target && $0.format == "qcow2" }
            if hadBitmap {
                plan.disks.insert(disk.target)
            } else {
                plan.diskReasons[disk.target] =
                    "disk \(disk.target) has no bitmap of checkpoint \(from) (it is new since restore point \(previousID))"
            }
        }
        guard !plan.disks.isEmpty else { return .full("no disk has a bitmap of checkpoint \(from)") }
        return plan
    }

    /// `virsh checkpoint-create --redefine --redefine-validate`; nil on success, else libvirt's reason.
    private func redefine(_ checkpoint: CheckpointDefinition, work: String) -> String? {
        let file = "\(work)/redefine.xml"
        do {
            try FileSystem.writeAtomically(Array(checkpoint.redefinitionXML.utf8), to: file)
        } catch {
            return error.description
        }
        let result = virsh.attempt(["checkpoint-create", domainName, file, "--redefine", "--redefine-validate"])
        return result.ok ? nil : result.error
    }

    /// The new checkpoint's XML for the restore point to keep; nil, with a warning, if libvirt
    /// does not give it (the next night is then incremental only while libvirt keeps it).
    func checkpointXML(_ name: String, warnings: inout [String]) -> String? {
        let dump = virsh.attempt(["checkpoint-dumpxml", domainName, name, "--no-domain"])
        guard dump.ok, (try? CheckpointDefinition(xml: dump.output, expectedName: name)) != nil else {
            warnings.append(
                "the XML of checkpoint \(name) could not be kept (\(dump.ok ? "it does not parse" : dump.error)); if libvirt loses the checkpoint, the next night reads in full"
            )
            return nil
        }
        return dump.output
    }

    /// Changed-block tracking for one disk's export: the bitmap of the previous checkpoint when
    /// the plan reads it incrementally, the new checkpoint recorded as started for qcow2 disks.
    func changeTracking(
        for disk: DomainDefinition.Disk, plan: IncrementalPlan, checkpoint: String
    ) -> ChangeTrackingOptions {
        var options = ChangeTrackingOptions(fullEvery: fullEvery, sampleBlocks: sampleBlocks)
        guard disk.format == "qcow2" else {
            options.unavailable = "disk \(disk.target) is raw, and libvirt keeps dirty bitmaps in qcow2 disks only"
            return options
        }
        options.checkpoint = checkpoint
        if let from = plan.from, plan.disks.contains(disk.target) {
            options.dirtyBitmap = from
            options.exportBitmap = Self.exportBitmap(disk.target)
        } else {
            options.unavailable = plan.diskReasons[disk.target] ?? plan.reason ?? "no checkpoint to read from"
        }
        return options
    }

    func deleteCheckpoint(_ name: String) -> String? {
        let result = virsh.attempt(["checkpoint-delete", domainName, name])
        if result.ok { return nil }
        // A checkpoint whose bitmaps QEMU lost (an unclean stop, a replaced disk) can only go as
        // metadata; its bitmaps are gone already.
        if result.error.contains("bitmap") {
            let metadata = virsh.attempt(["checkpoint-delete", domainName, name, "--metadata"])
            if metadata.ok { return nil }
        }
        return "checkpoint \(name) of domain \(domainName) could not be removed: \(result.error)"
    }

    /// Removes this repository's checkpoints other than `keeping` (the one the next night reads
    /// from): every checkpoint costs a bitmap per disk that QEMU updates on each guest write.
    func deleteOlderCheckpoints(keeping: String) -> [String] {
        listCheckpoints().filter { $0.hasPrefix(checkpointPrefix) && $0 != keeping }.compactMap {
            deleteCheckpoint($0)
        }
    }
}
