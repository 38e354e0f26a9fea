import Foundation

/// Frees what no restore point needs (docs/INTEGRITY.md, "Garbage collection").
///
/// Mark: every index tree of every restore point is walked; its pages and data chunks are live.
/// Sweep: a pack with no live record is deleted; a pack whose live records fill less than
/// `liveThreshold` of it is rewritten (its live records copied, CRC-checked, into new packs); the
/// rest are kept. The chunk index is rewritten as one segment naming only live chunks.
///
/// Order, for crash safety: new packs durable and renamed → new segment durable → old segments
/// deleted → old packs deleted. At every point, each segment present names only packs that exist,
/// and the newest segment (searched first) names a copy of every live chunk. An interrupted run
/// leaves temporary files or packs no segment names; the next gc removes both.
///
/// Packs and segments are listed, written and deleted through the repository's storage.
///
/// On a local directory gc takes `locks/repository.lock` exclusively: backups, restores, verify
/// and prune take it shared, so none of them runs while gc deletes, and it deletes at once.
///
/// On storage several hosts share (`RepositoryLocking.collectsBesideBackups`) gc runs beside
/// backups in two phases: it takes only its own lease, first finishes the condemned lists of
/// earlier runs that are due (phase 2: mark again, delete what is still unneeded, revive the
/// rest), then condemns what it finds unneeded now (phase 1: `CondemnedList`), deleting nothing
/// a backup could still rely on. Rewritten packs' copies are written and indexed in phase 1;
/// their sources are condemned like dead packs.
public final class GarbageCollector {
    public let repository: Repository
    public var dryRun = false
    public var lockWait: Double?
    /// Packs whose live share (live record bytes over record bytes) is below this are rewritten.
    public var liveThreshold = 0.8
    /// Live chunks marked per pass over the digest space: bounds the mark set (about 50-80 bytes per
    /// entry), as verify does; a larger repository is marked in several passes.
    public var maxLivePerPass = 2_000_000
    /// Two-phase gc only: how long what this run condemns stays before a later run may delete
    /// it, so that restores and serves that opened the index before it was condemned finish
    /// (backups are waited for by their leases, however long they run).
    public var grace: Double = GarbageCollector.defaultGrace
    public static let defaultGrace: Double = 3600
    /// How far apart two hosts' clocks may be: each is checked to be within 5 minutes of the
    /// store's (`ClockCheck`), so two are within 10.
    static let clockMargin: Int64 = 600

    public struct Report: Codable, Sendable {
        public var dryRun: Bool
        public var liveThreshold: Double
        public var restorePoints = 0
        /// Distinct chunks (data and index pages) some restore point needs.
        public var chunksLive = 0
        /// Chunk records no restore point needs (including superseded duplicates).
        public var recordsDead = 0
        public var packsBefore = 0
        public var packsKept = 0
        public var packsRewritten = 0
        public var packsDeleted = 0
        public var packsWritten = 0
        /// Packs no index segment named (left by an interrupted backup or gc).
        public var orphanPacksDeleted = 0
        public var segmentsBefore = 0
        public var segmentsAfter = 0
        /// Temporary files of interrupted runs and markers of removed restore points.
        public var leftoversRemoved = 0
        public var bytesBefore: UInt64 = 0
        public var bytesAfter: UInt64 = 0
        public var bytesFreed: UInt64 = 0
        public var seconds = 0.0
        /// Whether gc ran beside backups, condemning first (an object store) rather than
        /// deleting at once under an exclusive lock (a local directory).
        public var twoPhase = false
        /// Packs this run condemned (dead, orphaned or rewritten): deleted by a later run.
        public var packsCondemned = 0
        /// Condemned packs of earlier runs deleted by this one.
        public var condemnedDeleted = 0
        /// Condemned packs of earlier runs kept because a restore point needs them again.
        public var condemnedRevived = 0
        /// Condemned lists of earlier runs not yet due (their grace period, or a backup that
        /// began before them, is still running).
        public var condemnedListsPending = 0
        /// Condemned lists this run finished (and removed).
        public var condemnedListsDone = 0
    }

    public init(repository: Repository) {
        self.repository = repository
    }

    private var store: ChunkStore { repository.store }

    public func run() throws(CairnError) -> Report {
        let clock = Stopwatch()
        let lock: RepositoryLock
        let beside = repository.locking.collectsBesideBackups
        do {
            lock = try repository.lock(beside ? .collector : .exclusive, purpose: "cairn gc", wait: lockWait)
        } catch  where error.code == .busy {
            throw CairnError(
                .busy,
                beside
                    ? "cannot run gc: \(error.message)"
                    : "cannot run gc: \(error.message), and gc needs it alone (no backup, restore, verify, prune or serve beside it)",
                remedy: .waitForLock)
        }
        defer { _ = lock }
        // The index as it is now that no one else writes: a backup that held the repository
        // while gc waited for it has committed segments this process has not seen, and their
        // packs would look like orphans.
        try store.reloadSegments()
        try store.requireWholeIndex(for: "gc")
        if !dryRun { try repository.markFeatures() }
        if let raw = ProcessInfo.processInfo.environment["CAIRN_TEST_GC_PAUSE"], let pause = Double(raw) {
            // Test hook: hold the lock for a while so tests can race a backup against gc.
            usleep(UInt32(pause * 1e6))
        }

        var report = Report(dryRun: dryRun, liveThreshold: liveThreshold)
        report.twoPhase = beside
        report.leftoversRemoved = try removeLeftovers()
        report.bytesBefore = try repositoryBytes(packs: try store.packFilesOnDisk(), segments: store.indexSegments)

        // Phase 2 first: what earlier runs condemned and is due goes (or is revived), before
        // this run condemns anything.
        var condemnedBefore = Set<PackID>()
        if beside { try finishCondemnedLists(&report) }
        // The restore points first, then the index: a backup commits its segments before its
        // manifest, so every listed restore point's chunks are in the index read after.
        let manifests = try allManifests()
        if beside {
            try store.reloadSegments()
            condemnedBefore = store.condemned
        }
        let segments = store.indexSegments
        report.segmentsBefore = segments.count

        // Mark, one slice of the digest space at a time, so the live set stays bounded; each
        // pack record gets one liveness flag (a byte per stored chunk).
        report.restorePoints = manifests.count
        let indexed = Set(segments.flatMap(\.packs))
        // Packs an earlier run condemned are left to that run's list.
        let onDisk = try store.packFilesOnDisk().filter { !condemnedBefore.contains($0) }
        let indexedOnDisk = onDisk.filter { indexed.contains($0) }
        report.packsBefore = onDisk.count + condemnedBefore.count
        var liveFlags: [PackID: [Bool]] = [:]
        var unresolvedEntries: [(ChunkDigest, ChunkLocation)] = []
        let estimate = segments.reduce(0) { $0 + $1.entryCount }
        let passes = max(1, (estimate + maxLivePerPass - 1) / maxLivePerPass)
        for slice in DigestSlice.whole.split(passes) {
            try Cancellation.check("nothing freed")
            let live = try markLive(in: slice, manifests: manifests)
            report.chunksLive += live.count
            var unresolved = live
            for pack in indexedOnDisk {
                let records = try store.packReader(pack).readTable()
                var flags = liveFlags[pack] ?? Array(repeating: false, count: records.count)
                for (k, r) in records.enumerated() where slice.contains(r.digest) && unresolved.contains(r.digest) {
                    if store.lookup(r.digest) == r.location(in: pack) {
                        unresolved.remove(r.digest)
                        flags[k] = true
                    }
                }
                liveFlags[pack] = flags
            }
            // Live chunks no pack on disk holds where the index says (damaged or missing): keep
            // their index entries, so verify keeps naming them and a backup can heal them.
            for digest in unresolved where !beside {
                if let location = store.lookup(digest) { unresolvedEntries.append((digest, location)) }
            }
        }

        // Sweep: decide per pack. The new index is written in bounded segments, each only after
        // the packs it names are durable.
        var toDelete: [PackID] = []
        var rewriter = PackRewriter(store: store, dryRun: dryRun)
        var entries: [(ChunkDigest, ChunkLocation)] = []
        var entriesTotal = 0
        var newSegments: [String] = []
        func flushEntries() throws(CairnError) {
            entriesTotal += entries.count
            guard !dryRun, !entries.isEmpty else {
                entries.removeAll(keepingCapacity: true)
                return
            }
            try rewriter.commit()
            let key = ChunkStore.newSegmentKey()
            try IndexSegment.write(entries: entries, as: key, in: store.storage)
            newSegments.append(key)
            entries.removeAll(keepingCapacity: true)
        }
        let stopped = "nothing freed (the repository is intact: run cairn gc again)"
        // A failed or stopped run removes the temporary packs it was writing.
        var packsCommitted = false
        defer { if !packsCommitted { rewriter.abandon() } }
        for pack in onDisk {
            try Cancellation.check(stopped)
            guard indexed.contains(pack) else {
                // Beside backups: perhaps a running backup's, whose segment is still to come.
                toDelete.append(pack)
                report.orphanPacksDeleted += 1
                continue
            }
            let reader = try store.packReader(pack)
            let records = try reader.readTable()
            let flags = liveFlags[pack] ?? []
            var liveRecords: [PackRecord] = []
            var liveBytes = 0.0
            // A frame's bytes count in proportion to its live members' share of its plain bytes.
            var frameSizes: [UInt64: Int] = [:]
            for r in records where r.frameOffset != nil { frameSizes[r.offset, default: 0] += Int(r.rawLength) }
            for (k, r) in records.enumerated() {
                if k < flags.count && flags[k] {
                    liveRecords.append(r)
                    let recordBytes = Double(PackFormat.recordHeaderSize + Int(r.storedLength))
                    if r.frameOffset == nil {
                        liveBytes += recordBytes
                    } else {
                        liveBytes += recordBytes * Double(r.rawLength) / Double(max(1, frameSizes[r.offset] ?? 1))
                    }
                } else {
                    report.recordsDead += 1
                }
            }
            let recordBytes =
                reader.size
                - UInt64(PackFormat.headerSize + PackFormat.footerSize + records.count * PackFormat.tableEntrySize)
            let share = recordBytes == 0 ? 0 : liveBytes / Double(recordBytes)
            if liveRecords.isEmpty {
                toDelete.append(pack)
                report.packsDeleted += 1
            } else if share < liveThreshold,
                let moved = try rewriter.copy(
                    liveRecords, frameSizes: frameSizes, liveThreshold: liveThreshold, from: reader)
            {
                entries += moved
                toDelete.append(pack)
                report.packsRewritten += 1
            } else {
                // Beside backups the index is not rewritten whole: kept packs keep their entries.
                if !beside { for r in liveRecords { entries.append((r.digest, r.location(in: pack))) } }
                report.packsKept += 1
            }
            if entries.count >= ChunkStore.flushThreshold { try flushEntries() }
        }
        entries += unresolvedEntries
        unresolvedEntries = []

        let changesIndex = !toDelete.isEmpty || report.packsRewritten > 0 || segments.count > 1
        if beside {
            report.packsCondemned = toDelete.count
            if !dryRun {
                // The copies and the segment naming them, durable, then the list: from the list
                // on, backups that start no longer use the condemned packs.
                try Cancellation.check(stopped)
                try flushEntries()
                try rewriter.commit()
                packsCommitted = true
                if !toDelete.isEmpty {
                    let now = Timestamp.now()
                    let list = CondemnedList(
                        created: now.description,
                        notBefore: Timestamp(seconds: now.seconds + Int64(grace.rounded(.up))).description,
                        packs: toDelete.map(\.hex))
                    let bytes = Array((try JSONCoding.encode(list) + "\n").utf8)
                    try store.storage.publish(bytes, as: CondemnedList.newKey(at: now), .createOnly)
                }
                // One segment again; everything kept, the condemned packs' entries too (a
                // backup that began before the list may still need them).
                try store.reloadSegments()
                if store.indexSegments.count > 1 { try store.compactIndex() }
                report.segmentsAfter = store.indexSegments.count
                report.bytesAfter = try measure()
            } else {
                try flushEntries()
                report.segmentsAfter = segments.count
                report.bytesAfter = report.bytesBefore + rewriter.bytesWritten
            }
        } else if !dryRun {
            if changesIndex {
                // 1, 2. New packs durable and in place, then the new index, durable, before
                // anything it replaces goes.
                try Cancellation.check(stopped)
                try flushEntries()
                try rewriter.commit()
                packsCommitted = true
                // 3. Old segments (from here on gc finishes: a stop would only leave more to do).
                let kept = Set(newSegments)
                try store.storage.delete(segments.map(\.key).filter { !kept.contains($0) })
                // 4. Old packs.
                store.dropPackReaders()
                try store.storage.delete(toDelete.map(\.relativePath))
                // 5. One segment again, by a streaming merge.
                try store.reloadSegments()
                if store.indexSegments.count > 1 { try store.compactIndex() }
            } else {
                try rewriter.commit()
            }
            packsCommitted = true
            report.segmentsAfter = store.indexSegments.count
            try pruneDamagedList()
            report.bytesAfter = try measure()
        } else {
            try flushEntries()
            report.segmentsAfter = changesIndex ? (entriesTotal == 0 ? 0 : 1) : segments.count
            let freed = toDelete.reduce(UInt64(0)) { $0 + ((try? store.packReader($1).size) ?? 0) }
            report.bytesAfter = report.bytesBefore - min(report.bytesBefore, freed) + rewriter.bytesWritten
        }
        report.packsWritten = rewriter.packsWritten
        report.bytesFreed = report.bytesBefore > report.bytesAfter ? report.bytesBefore - report.bytesAfter : 0
        report.seconds = clock.elapsed
        return report
    }

    // MARK: Phase 2 (beside backups)

    /// Deletes what due condemned lists name and no restore point needs without another copy,
    /// keeps (revives) the rest, drops the deleted packs' index entries, and removes the lists.
    /// A list is due once its `notBefore` passed and no group lease taken before it (by the
    /// holders' clocks, with `clockMargin`) is live: a backup that began before gc condemned
    /// may have deduplicated against a condemned pack and would commit after.
    private func finishCondemnedLists(_ report: inout Report) throws(CairnError) {
        let (lists, damaged) = try CondemnedList.all(in: store.storage)
        let now = Timestamp.now()
        var due: [(key: String, list: CondemnedList)] = []
        var unreadable = damaged
        for entry in lists {
            guard let created = entry.list.createdTime, let notBefore = entry.list.notBeforeTime else {
                unreadable.append(entry.key)
                continue
            }
            if now < notBefore {
                report.condemnedListsPending += 1
                continue
            }
            let holders = try repository.locking.groupHoldersStarted(before: created, margin: Self.clockMargin)
            if let first = holders.first {
                CairnLog.logger.info(
                    "\(store.storage.describe(entry.key)) waits for \(first)\(holders.count > 1 ? " and \(holders.count - 1) more" : ""), which began before it"
                )
                report.condemnedListsPending += 1
                continue
            }
            due.append(entry)
        }
        if !dryRun { try store.storage.delete(unreadable) }
        guard !due.isEmpty else { return }

        var doomed = Set(due.flatMap(\.list.packIDs))
        let present = Set(try store.packFilesOnDisk()).intersection(doomed).sorted { $0.hex < $1.hex }
        // Mark again, with every restore point committed now: a pack one of them needs, for a
        // chunk no pack outside the doomed ones holds, is revived.
        let manifests = try allManifests()
        try store.reloadSegments()  // after the manifests, as in `run()`
        let index = store.index
        let passes = max(1, (index.segments.reduce(0) { $0 + $1.entryCount } + maxLivePerPass - 1) / maxLivePerPass)
        var revived = Set<PackID>()
        for slice in DigestSlice.whole.split(passes) {
            try Cancellation.check("nothing deleted (the repository is intact: run cairn gc again)")
            let live = try markLive(in: slice, manifests: manifests)
            for pack in present where doomed.contains(pack) {
                let records: [PackRecord]
                do throws(CairnError) {
                    records = try store.packReader(pack).readTable()
                } catch {
                    // Unreadable: whatever it holds is damaged anyway, but gc deletes only what it can account for.
                    CairnLog.logger.warning("condemned pack \(pack.hex) kept: \(error.message)")
                    doomed.remove(pack)
                    revived.insert(pack)
                    continue
                }
                for r in records where slice.contains(r.digest) && live.contains(r.digest) {
                    if index.lookup(r.digest, excluding: doomed) == nil {
                        doomed.remove(pack)
                        revived.insert(pack)
                        break
                    }
                }
            }
        }
        report.condemnedRevived = revived.count
        report.condemnedDeleted = present.filter { doomed.contains($0) }.count
        report.condemnedListsDone = due.count
        guard !dryRun else { return }
        // Packs, then their entries, then the lists: a crash between leaves a list the next run
        // finishes (its packs already gone count as deleted).
        store.dropPackReaders()
        try store.storage.delete(present.filter { doomed.contains($0) }.map(\.relativePath))
        try store.reloadSegments()
        try store.compactIndex(dropping: doomed)
        try store.storage.delete(due.map(\.key))
    }

    // MARK: Helpers

    /// Every restore point's manifest, as the catalog lists them now.
    private func allManifests() throws(CairnError) -> [(RestorePointID, Manifest)] {
        var manifests: [(RestorePointID, Manifest)] = []
        for id in try repository.catalog.allPoints() { manifests.append((id, try repository.catalog.manifest(id))) }
        return manifests
    }

    /// Every chunk (data and index pages) in `slice` that some restore point needs.
    private func markLive(in slice: DigestSlice, manifests: [(RestorePointID, Manifest)]) throws(CairnError) -> Set<
        ChunkDigest
    > {
        var live = Set<ChunkDigest>()
        let zero = ZeroBlock.digest
        for (id, manifest) in manifests {
            for file in manifest.settings ?? [] {
                for digest in file.chunkDigests where slice.contains(digest) { live.insert(digest) }
            }
            for disk in manifest.disks {
                do throws(CairnError) {
                    let reader = try IndexTreeReader(
                        reader: ChunkReader(store: store), root: disk.root, depth: disk.depth,
                        blockCount: disk.blockCount)
                    reader.onPage = { if slice.contains($0) { live.insert($0) } }
                    while let digest = try reader.next() {
                        if digest != zero && slice.contains(digest) { live.insert(digest) }
                    }
                } catch {
                    throw CairnError(
                        .damaged,
                        "gc cannot tell which chunks restore point \(id) needs: the index of disk \(disk.name) is damaged (\(error.message)); run `cairn verify`, then heal it with a new backup or `cairn forget \(id)`"
                    )
                }
            }
        }
        return live
    }

    /// Removes temporary files of interrupted runs and markers of removed restore points. Under
    /// gc's exclusive lock no other cairn process can be writing.
    private func removeLeftovers() throws(CairnError) -> Int {
        var removed = repository.removeLeftovers(dryRun: dryRun)
        let orphans = try repository.catalog.orphanMarkers()
        if !dryRun { try repository.catalog.storage.delete(orphans) }
        removed += orphans.count
        return removed
    }

    private func repositoryBytes(packs: [PackID], segments: [IndexSegment]) throws(CairnError) -> UInt64 {
        var total: UInt64 = 0
        for pack in packs { total += (try? store.packReader(pack).size) ?? 0 }
        for segment in segments { total += UInt64(segment.map.count) }
        return total
    }

    private func measure() throws(CairnError) -> UInt64 {
        let storage = store.storage
        var total: UInt64 = 0
        for key in try store.packFilesOnDisk().map(\.relativePath) + ChunkIndex.segmentKeys(in: storage) {
            total += (try? storage.open(key).size) ?? 0
        }
        return total
    }

    /// Drops healing-list entries whose pack is gone.
    private func pruneDamagedList() throws(CairnError) {
        guard repository.storage.exists(DamagedChunkList.key) else { return }
        var list = DamagedChunkList.load(from: repository.storage)
        let before = list.entries.count
        list.entries.removeAll { entry in
            guard let id = PackID(hex: entry.pack) else { return true }
            return !store.storage.exists(id.relativePath)
        }
        if list.entries.count != before { try list.save(to: repository.storage) }
    }
}

/// Copies live records out of sparse packs into new ones, checking each record's CRC on the way.
struct PackRewriter {
    let store: ChunkStore
    let dryRun: Bool
    /// Finished packs not yet committed.
    private var written: [PackWriter] = []
    private(set) var packsWritten = 0
    private(set) var bytesWritten: UInt64 = 0
    private var current: PackWriter?
    private var chunkReader: ChunkReader?
    private var encoder: ChunkEncoder?

    init(store: ChunkStore, dryRun: Bool) {
        self.store = store
        self.dryRun = dryRun
    }

    /// Copies `records` of the pack `reader` reads; returns their new locations, or nil (the pack
    /// is then kept as it is) when a live record fails its CRC or digest: a damaged copy is never
    /// spread. A frame record is copied whole while at least `liveThreshold` of its bytes live;
    /// below that its live members are compressed again as a smaller frame, so dead blocks
    /// inside frames do not pin space forever. `frameSizes` gives each frame's plain bytes.
    mutating func copy(
        _ records: [PackRecord], frameSizes: [UInt64: Int], liveThreshold: Double, from reader: PackReader
    ) throws(CairnError) -> [(ChunkDigest, ChunkLocation)]? {
        // Records on disk, each with its live members (one for a record that is not a frame).
        var groups: [[PackRecord]] = []
        for r in records.sorted(by: { ($0.offset, $0.frameOffset ?? 0) < ($1.offset, $1.frameOffset ?? 0) }) {
            if r.frameOffset != nil, let last = groups.last?.first, last.offset == r.offset {
                groups[groups.count - 1].append(r)
            } else {
                groups.append([r])
            }
        }
        // First read and check everything, so that a damaged record leaves nothing half copied.
        var blobs: [(bytes: [UInt8], live: Set<ChunkDigest>)] = []
        for group in groups {
            let first = group[0]
            let liveBytes = group.reduce(0) { $0 + Int($1.rawLength) }
            if first.frameOffset != nil, Double(liveBytes) < Double(frameSizes[first.offset] ?? 0) * liveThreshold {
                guard let bytes = try recompress(group, in: reader.id) else { return nil }
                blobs.append((bytes, Set(group.map(\.digest))))
                continue
            }
            let bytes = try reader.object.readBytes(
                count: PackFormat.recordHeaderSize + Int(first.storedLength), at: first.offset)
            guard bytes.count == PackFormat.recordHeaderSize + Int(first.storedLength) else { return nil }
            let intact = bytes.withUnsafeBytes { raw in
                guard let header = (try? EncodedRecord(checking: raw))?.header else { return false }
                return first.frameOffset == nil ? header.digest == first.digest && !header.isFrame : header.isFrame
            }
            guard intact else { return nil }
            blobs.append((bytes, Set(group.map(\.digest))))
        }
        if dryRun {
            bytesWritten += blobs.reduce(0) { $0 + UInt64($1.bytes.count) }
            return records.map { ($0.digest, $0.location(in: reader.id)) }
        }
        var moved: [(ChunkDigest, ChunkLocation)] = []
        for blob in blobs {
            bytesWritten += UInt64(blob.bytes.count)
            if current == nil { current = try PackWriter(in: store.storage) }
            let pack = current!
            var result: Result<ArraySlice<PackRecord>, CairnError> = .success([])
            blob.bytes.withUnsafeBytes { raw in
                do throws(CairnError) {
                    // Checked when it was read (or just encoded): this only finds its members again.
                    result = .success(try pack.append(record: try EncodedRecord(checking: raw, checkCRC: false)))
                } catch {
                    result = .failure(error)
                }
            }
            for entry in try result.get() where blob.live.contains(entry.digest) {
                moved.append((entry.digest, entry.location(in: pack.id)))
            }
            if pack.size >= store.packTargetSize {
                try pack.finish()
                written.append(pack)
                packsWritten += 1
                current = nil
            }
        }
        return moved
    }

    /// The live members of one frame, proved by their digests and encoded as a new record;
    /// nil if any of them is damaged.
    private mutating func recompress(_ members: [PackRecord], in pack: PackID) throws(CairnError) -> [UInt8]? {
        let reader = chunkReader ?? ChunkReader(store: store)
        chunkReader = reader
        let encoder = self.encoder ?? store.makeEncoder()
        self.encoder = encoder
        var parts: [(bytes: UnsafeRawBufferPointer, digest: ChunkDigest)] = []
        for member in members {
            // All slices point into the reader's one cached frame, valid until it reads another.
            guard let bytes = try? reader.read(member.digest, at: member.location(in: pack)) else { return nil }
            parts.append((bytes, member.digest))
        }
        let total = parts.reduce(0) { $0 + $1.bytes.count }
        var out = [UInt8](repeating: 0, count: ChunkEncoder.frameSlotSize(members: parts.count, rawLength: total))
        let length = out.withUnsafeMutableBytes { slot in
            (parts.count == 1
                ? encoder.encode(parts[0].bytes, digest: parts[0].digest, kind: .data, into: slot)
                : encoder.encodeFrame(count: parts.count, into: slot) { parts[$0] }).bytes.count
        }
        out.removeLast(out.count - length)
        return out
    }

    /// Removes the temporary packs of a failed or stopped run.
    mutating func abandon() {
        current?.abandon()
        current = nil
        for pack in written { pack.abandon() }
        written.removeAll()
    }

    /// Makes the new packs durable and visible under their names (no segment names them yet).
    mutating func commit() throws(CairnError) {
        if let pack = current {
            try pack.finish()
            written.append(pack)
            packsWritten += 1
            current = nil
        }
        // On failure `written` is kept, so that `abandon()` removes the temporary packs.
        try store.storage.commit(written.map(\.object))
        written.removeAll()
    }
}
