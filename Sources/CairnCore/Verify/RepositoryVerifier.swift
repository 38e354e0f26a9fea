import Foundation

/// Checks a repository end to end and records what it proved (docs/INTEGRITY.md).
///
/// 1. Metadata, always whole: every index segment (CRC, order, footer), every pack's header,
///    table and layout, the manifests, and every index tree of the restore points checked (each
///    page read back, CRC-checked, decompressed and re-hashed).
/// 2. Chunks, whole or a slice of the digest space (`--sample`): the trees are walked to mark the
///    data chunks in the slice, then every pack record in the slice is read once, in pack order,
///    on every core: its CRC always; decompression and SHA-256 too when a restore point needs it
///    and the index names that copy. A chunk shared by many restore points is thus checked once.
///    The mark set holds only the slice's chunks; when the index is large the slice is cut into
///    passes so the set stays under `maxMarkedPerPass` entries.
/// 3. Each damaged chunk is named with every restore point, disk and byte offset that needs it;
///    the results go beside each manifest (`TIME.verify`) and into `verify/damaged.json`.
public final class RepositoryVerifier {
    public let repository: Repository
    /// The restore points to check; nil: all of them (and every record in every pack).
    public var points: [RestorePointID]?
    /// Check only this share of the chunks (percent), rotating through the digest space.
    public var samplePercent: Double?
    public var lockWait: Double?
    public var progress: (@Sendable (VerifyProgress) -> Void)?
    /// What this host saw of an encrypted repository: restore points gone without a tombstone
    /// are problems (a roll-back), and what verify lists is remembered.
    public var seen: SeenRestorePoints?
    /// Mark-set budget per pass: about 80 bytes per entry (docs/INTEGRITY.md, "Memory").
    public var maxMarkedPerPass = 2_000_000

    private var store: ChunkStore { repository.store }
    private let clock = Stopwatch()
    private var report: VerifyReport
    /// Digest → why it is damaged and where the index says it lives (chunks restore points need).
    private var damaged: [ChunkDigest: (kind: ChunkKind, location: ChunkLocation?, reason: String)] = [:]
    private var pointProblems: [RestorePointID: [String]] = [:]
    private var blocksChecked: [RestorePointID: Int] = [:]

    public init(repository: Repository) {
        self.repository = repository
        report = VerifyReport(
            intact: true, scope: .full, samplePercent: nil, digestRange: DigestSlice.whole.description)
    }

    public func run() throws(CairnError) -> VerifyReport {
        let lock = try repository.lock(.shared, purpose: "cairn verify", wait: lockWait)
        defer { _ = lock }

        let catalog = repository.catalog
        let allPoints = try catalog.allPoints()
        let selected = points ?? allPoints
        var slice = DigestSlice.whole
        if let samplePercent {
            guard samplePercent > 0, samplePercent <= 100 else {
                throw CairnError(.usage, "a sample of \(samplePercent)% is not a percentage above 0 and at most 100")
            }
            slice = DigestSlice(start: SamplePosition.load(from: repository.storage), percent: samplePercent)
            report.scope = .sample
            report.samplePercent = samplePercent
            report.digestRange = slice.description
        }

        checkConfig()
        checkSegments()
        if let seen {
            report.problems += seen.rolledBack()
            seen.record(allPoints)
        }
        for unreadable in try catalog.unreadableManifests() {
            report.problems.append(
                "restore point \(repository.path)/\(unreadable.key) cannot be read: \(unreadable.problem)")
        }
        let packs = try checkPacks()
        var manifests: [(RestorePointID, Manifest)] = []
        for id in selected {
            do throws(CairnError) {
                let path = catalog.path(of: id)
                let manifest = try Manifest.decodeStrictly(try catalog.manifestBytes(id), path: path)
                guard manifest.blockSize == store.blockSize else {
                    throw CairnError(
                        .damaged,
                        "manifest of \(id) has block size \(manifest.blockSize), not the repository's \(store.blockSize)"
                    )
                }
                manifests.append((id, manifest))
            } catch {
                pointProblems[id, default: []].append(error.message)
            }
            report.manifestsChecked += 1
        }

        let estimate = store.indexSegments.reduce(0) { $0 + $1.entryCount }
        let share = slice.isWhole ? 1.0 : Double(slice.length) / 18_446_744_073_709_551_616.0
        let passes = max(1, Int((Double(estimate) * share / Double(maxMarkedPerPass)).rounded(.up)))
        for (n, part) in slice.split(passes).enumerated() {
            try checkChunks(in: part, manifests: manifests, packs: packs, firstPass: n == 0, allRecords: points == nil)
        }

        if !damaged.isEmpty {
            try nameDamage(allPoints: allPoints)
        }
        try Cancellation.check("nothing recorded")
        finish(selected: selected)
        if samplePercent != nil {
            recording { () throws(CairnError) in try SamplePosition.save(slice.end, to: repository.storage) }
        }
        report.seconds = clock.elapsed
        return report
    }

    // MARK: Metadata

    /// The config and its copy: damage to either is a problem (repairable with `cairn repair`);
    /// a config from before copies existed only a warning.
    private func checkConfig() {
        let health = repository.configHealth
        if let damage = health.primaryDamage { report.problems.append(damage) }
        if let problem = health.copyProblem { report.problems.append(problem) }
        if health.unsealed, let warning = health.warning { report.warnings.append(warning) }
    }

    private func checkSegments() {
        for segment in store.damagedSegments {
            report.problems.append(segment.error.message)
            report.segmentsChecked += 1
        }
        for segment in store.indexSegments {
            do throws(CairnError) {
                try segment.checkIntegrity()
                try segment.checkFooter()
            } catch {
                report.problems.append(error.message)
            }
            report.segmentsChecked += 1
        }
    }

    /// Checks every pack's header, table and layout; returns the packs whose tables can be trusted.
    private func checkPacks() throws(CairnError) -> [PackID] {
        var good: [PackID] = []
        for id in try store.packFilesOnDisk() {
            do throws(CairnError) {
                let reader = try store.packReader(id)
                try reader.checkHeader()
                try reader.checkLayout(try reader.readTable())
                good.append(id)
            } catch {
                // A condemned pack a gc beside this run has just deleted is not damage.
                if store.condemned.contains(id) && !store.storage.exists(id.relativePath) { continue }
                report.problems.append(error.message)
            }
            report.packsChecked += 1
        }
        return good
    }

    // MARK: Chunks

    private enum Check: UInt8, Sendable {
        /// CRC only: nobody checked here needs it, or an index page already re-hashed by the walk.
        case crc
        /// CRC, decompression and SHA-256.
        case full
    }

    private struct WorkUnit: Sendable {
        var pack: PackID
        var records: [(PackRecord, Check)]
        /// The unit's bytes, read ahead by the planner (nil until then, or when reading them
        /// whole would mostly read records no one asked for).
        var span: PackSpan? = nil

        /// From the first record's start to the last one's end.
        var byteRange: Range<UInt64> {
            guard let first = records.first?.0, let last = records.last?.0 else { return 0..<0 }
            return first.offset..<(last.offset + UInt64(PackFormat.recordHeaderSize) + UInt64(last.storedLength))
        }

        /// The bytes of the unit's records (a frame's members share one record).
        var recordBytes: UInt64 {
            var total: UInt64 = 0
            var previous: UInt64? = nil
            for (record, _) in records where record.offset != previous {
                total += UInt64(PackFormat.recordHeaderSize) + UInt64(record.storedLength)
                previous = record.offset
            }
            return total
        }
    }

    private struct RecordFailure {
        var record: PackRecord
        var pack: PackID
        var check: Check
        var reason: String
    }

    private func checkChunks(
        in slice: DigestSlice, manifests: [(RestorePointID, Manifest)], packs: [PackID], firstPass: Bool,
        allRecords: Bool
    ) throws(CairnError) {
        // Mark: every data chunk in the slice that a checked restore point needs; pages are
        // verified as the walk reads them.
        var marked = Set<ChunkDigest>()
        var pages = Set<ChunkDigest>()
        let zero = ZeroBlock.digest
        for (id, manifest) in manifests {
            for file in manifest.settings ?? [] {
                for digest in file.chunkDigests where slice.contains(digest) { marked.insert(digest) }
            }
            for disk in manifest.disks {
                var blocks = 0
                walk(
                    id: id, disk: disk, recordProblems: firstPass, onPage: { pages.insert($0) },
                    onBlock: { _, digest in
                        if digest != zero && slice.contains(digest) {
                            marked.insert(digest)
                            blocks += 1
                        }
                    })
                blocksChecked[id, default: 0] += blocks
            }
        }

        // Plan: every record in the slice, in pack order.
        var units: [WorkUnit] = []
        var total = 0
        for pack in packs {
            let records: [PackRecord]
            do throws(CairnError) {
                records = try store.packReader(pack).readTable()
            } catch {
                continue  // reported by checkPacks
            }
            var current = WorkUnit(pack: pack, records: [])
            let ordered = records.sorted { ($0.offset, $0.frameOffset ?? 0) < ($1.offset, $1.frameOffset ?? 0) }
            for r in ordered where slice.contains(r.digest) {
                let location = r.location(in: pack)
                var check = Check.crc
                if r.kind == .data, marked.contains(r.digest), store.lookup(r.digest) == location {
                    marked.remove(r.digest)
                    check = .full
                } else if !allRecords && !(r.kind == .indexPage && pages.contains(r.digest)) {
                    continue  // only some restore points are checked: leave other records alone
                }
                // Units end between records, never inside a frame: each worker decompresses
                // a frame once for all its members. A unit's span is read in one request.
                let end = r.offset + UInt64(PackFormat.recordHeaderSize) + UInt64(r.storedLength)
                if let first = current.records.first?.0, current.records.last?.0.offset != r.offset,
                    current.records.count >= 256 || end - first.offset > UInt64(PackSpan.targetBytes)
                {
                    units.append(current)
                    current.records.removeAll(keepingCapacity: true)
                }
                current.records.append((r, check))
                total += 1
            }
            if !current.records.isEmpty { units.append(current) }
        }

        let failures = try runUnits(units, total: total)
        try Cancellation.check("nothing recorded")
        for f in failures {
            let location = f.record.location(in: f.pack)
            let needed =
                f.check == .full
                || (f.record.kind == .indexPage && pages.contains(f.record.digest)
                    && store.lookup(f.record.digest) == location)
            if needed {
                damaged[f.record.digest] = (f.record.kind, location, f.reason)
            } else {
                report.warnings.append(
                    "record of chunk \(f.record.digest) at offset \(f.record.offset) in pack \(f.pack) is damaged, but no restore point checked needs that copy (dead space: `cairn gc` drops it when it rewrites or deletes the pack): \(f.reason)"
                )
            }
        }

        // Needed chunks no intact pack holds where the index says: missing, or in a damaged pack.
        let reader = ChunkReader(store: store)
        for digest in marked {
            do throws(CairnError) {
                let bytes = try reader.read(digest)
                report.chunksChecked += 1
                report.bytesChecked += UInt64(bytes.count)
            } catch {
                damaged[digest] = (.data, store.lookup(digest), error.message)
            }
        }
    }

    /// Checks the planned records on every core (a `.discard` pipeline over the units).
    private func runUnits(_ units: [WorkUnit], total: Int) throws(CairnError) -> [RecordFailure] {
        let done = AtomicCounter()
        let bytes = AtomicCounter()
        let full = AtomicCounter()
        let failures = NSLockBox<[RecordFailure]>([])
        let store = self.store
        let progress = self.progress
        let clock = self.clock
        let workers = min(Parallelism.workers, max(1, units.count))
        let pipeline = Pipeline<WorkUnit>(
            name: "cairn-verify", workers: workers, delivery: .discard, capacity: workers,
            interruptedMessage: "nothing recorded"
        ) { worker in
            let reader = ChunkReader(store: store)
            let buffer = WorkerBuffer(
                byteCount: PackFormat.recordHeaderSize + ZstdCompressor.bound(reader.maxChunk)
                    + SealedRecordCodec.overhead)
            var lastProgress = 0.0
            return { (unit: inout WorkUnit) throws(CairnError) in
                reader.span = unit.span
                defer {
                    reader.span = nil
                    unit.span = nil
                }
                for (record, check) in unit.records {
                    let location = record.location(in: unit.pack)
                    do throws(CairnError) {
                        switch check {
                        case .crc where record.frameOffset != nil:
                            // The frame's CRC, and its decompression, once for all its members.
                            _ = try reader.frameBytes(location)
                        case .full:
                            let plain = try reader.read(record.digest, at: location)
                            bytes.increment(by: plain.count)
                            full.increment()
                        case .crc:
                            guard PackFormat.recordHeaderSize + Int(record.storedLength) <= buffer.bytes.count else {
                                throw CairnError(
                                    .damaged, "record claims \(record.storedLength) stored bytes, more than any chunk")
                            }
                            _ = try store.packReader(unit.pack).readRecord(
                                at: record.offset, storedLength: Int(record.storedLength), expected: record.digest,
                                into: buffer.bytes, from: unit.span)
                        }
                    } catch {
                        failures.withLock {
                            $0.append(
                                RecordFailure(record: record, pack: unit.pack, check: check, reason: error.message))
                        }
                    }
                }
                let n = done.increment(by: unit.records.count)
                if worker == 0, let progress, clock.elapsed - lastProgress >= 0.5 {
                    lastProgress = clock.elapsed
                    progress(
                        VerifyProgress(
                            phase: "chunks", chunksDone: n, chunksTotal: total, bytesDone: UInt64(bytes.current),
                            seconds: clock.elapsed))
                }
            }
        }
        do throws(CairnError) {
            for var unit in units {
                // Read ahead here, while the workers check earlier units. A span that cannot
                // be read is left out: its records are read one by one, and fail by name.
                let range = unit.byteRange
                if unit.recordBytes * 2 >= UInt64(range.count) {
                    unit.span = try? PackSpan(reading: range, of: store.packReader(unit.pack))
                }
                try pipeline.submit(unit)
            }
        } catch {
            pipeline.stop(error)
        }
        try pipeline.finish()
        report.recordsChecked += total
        report.chunksChecked += full.current
        report.bytesChecked += UInt64(bytes.current)
        return failures.value
    }

    // MARK: Trees

    /// Walks one disk's index tree, calling `body` with each block's index and digest. A damaged
    /// tree is recorded as a problem of the restore point (and its failing page as a damaged chunk).
    private func walk(
        id: RestorePointID, disk: Manifest.DiskEntry, recordProblems: Bool, onPage: @escaping (ChunkDigest) -> Void,
        onBlock body: (UInt64, ChunkDigest) -> Void
    ) {
        var lastPage: ChunkDigest?
        var block: UInt64 = 0
        do throws(CairnError) {
            let reader = try IndexTreeReader(
                reader: ChunkReader(store: store), root: disk.root, depth: disk.depth, blockCount: disk.blockCount)
            var pagesSeen = 0
            reader.onPage = { digest in
                lastPage = digest
                pagesSeen += 1
                onPage(digest)
            }
            while let digest = try reader.next() {
                body(block, digest)
                block += 1
            }
            if recordProblems { report.pagesChecked += pagesSeen }
            guard block == disk.blockCount else {
                throw CairnError(
                    .damaged, "index tree of disk \(disk.name) ends after \(block) of \(disk.blockCount) blocks")
            }
        } catch {
            guard recordProblems else { return }
            let offset = block * UInt64(store.blockSize)
            pointProblems[id, default: []].append(
                "index of disk \(disk.name) is damaged from disk offset \(offset) on: \(error.message)")
            if let page = lastPage, damaged[page] == nil {
                do throws(CairnError) {
                    _ = try ChunkReader(store: store).read(page)
                } catch let pageError {
                    damaged[page] = (.indexPage, store.lookup(page), pageError.message)
                }
            }
        }
    }

    /// Finds every restore point, disk and offset that needs a damaged chunk.
    /// How a settings file stands where a disk name would in `neededBy`.
    static let settingsPrefix = "settings file "

    private func nameDamage(allPoints: [RestorePointID]) throws(CairnError) {
        var uses: [ChunkDigest: [String: VerifyReport.Use]] = [:]
        func note(_ digest: ChunkDigest, _ id: RestorePointID, _ disk: String, _ offset: UInt64) {
            let key = "\(id)\u{0}\(disk)"
            var use =
                uses[digest]?[key]
                ?? VerifyReport.Use(restorePoint: id.description, disk: disk, offsets: [], moreOffsets: 0)
            if use.offsets.count < VerifyReport.maxOffsetsListed {
                use.offsets.append(offset)
            } else {
                use.moreOffsets += 1
            }
            uses[digest, default: [:]][key] = use
        }
        let bs = UInt64(store.blockSize)
        for id in allPoints {
            guard let manifest = try? repository.catalog.manifest(id) else { continue }
            for file in manifest.settings ?? [] {
                for (k, digest) in file.chunkDigests.enumerated() where damaged[digest] != nil {
                    note(digest, id, "\(Self.settingsPrefix)\(file.name)", UInt64(k) * bs)
                }
            }
            for disk in manifest.disks {
                var block: UInt64 = 0
                walk(
                    id: id, disk: disk, recordProblems: false,
                    onPage: { [damaged] page in
                        if damaged[page] != nil { note(page, id, disk.name, block * bs) }
                    },
                    onBlock: { index, digest in
                        block = index + 1
                        if damaged[digest] != nil { note(digest, id, disk.name, index * bs) }
                    })
                // A damaged page also makes the point itself damaged; make sure it is listed.
            }
        }
        for (digest, info) in damaged.sorted(by: { $0.key < $1.key }) {
            let neededBy = (uses[digest] ?? [:]).values.sorted {
                ($0.restorePoint, $0.disk) < ($1.restorePoint, $1.disk)
            }
            for use in neededBy {
                if let id = RestorePointID(parsing: use.restorePoint) {
                    let what = use.disk.hasPrefix(Self.settingsPrefix) ? use.disk : "disk \(use.disk)"
                    pointProblems[id, default: []].append(
                        "\(what) needs damaged chunk \(digest) at offset \(use.offsets.first ?? 0)\(use.offsets.count + use.moreOffsets > 1 ? " and \(use.offsets.count + use.moreOffsets - 1) more" : "")"
                    )
                }
            }
            report.damagedChunks.append(
                VerifyReport.DamagedChunk(
                    digest: digest.hex, kind: info.kind == .data ? "data" : "index page", pack: info.location?.pack.hex,
                    offset: info.location?.offset, reason: info.reason, neededBy: neededBy))
        }
    }

    // MARK: Results

    /// Records one result; a failure (a full disk) is kept for the report instead of thrown, so
    /// verify still prints and exits with its verdict (docs/INTEGRITY.md).
    private func recording(_ body: () throws(CairnError) -> Void) {
        do {
            try body()
        } catch {
            if report.recordingFailure == nil { report.recordingFailure = error.description }
        }
    }

    private func finish(selected: [RestorePointID]) {
        let now = Timestamp.now()
        let selectedSet = Set(selected)
        for id in selected {
            var problems = pointProblems[id] ?? []
            // Deduplicate (a damaged page is reported by the walk and by naming).
            var seen = Set<String>()
            problems = problems.filter { seen.insert($0).inserted }
            let result: VerificationResult = problems.isEmpty ? .intact : .damaged
            let blocks = blocksChecked[id] ?? 0
            report.restorePoints.append(
                VerifyReport.PointResult(id: id, result: result, blocksChecked: blocks, problems: problems))
            let record = VerificationRecord(
                time: now, result: result, scope: report.scope, samplePercent: report.samplePercent,
                chunksChecked: blocks,
                damagedChunks: problems.count, problems: Array(problems.prefix(20)))
            if repository.catalog.exists(id) {
                recording { () throws(CairnError) in try repository.catalog.recordVerification(record, of: id) }
            }
        }
        // Damage to points outside the selection still counts (the chunk is shared).
        for (id, problems) in pointProblems where !selectedSet.contains(id) && !problems.isEmpty {
            report.problems.append("restore point \(id) (not checked in this run) also needs a damaged chunk")
        }

        // The healing list: replaced by a full run, merged by a partial one.
        var list =
            points == nil && samplePercent == nil ? DamagedChunkList() : DamagedChunkList.load(from: repository.storage)
        list.entries.removeAll { entry in
            guard let digest = ChunkDigest(hex: entry.digest) else { return true }
            return store.lookup(digest) != entry.location || damaged[digest] != nil
        }
        for (digest, info) in damaged.sorted(by: { $0.key < $1.key }) {
            if let location = info.location {
                list.entries.append(.init(digest: digest, location: location, reason: info.reason))
            }
        }
        if !list.entries.isEmpty || repository.storage.exists(DamagedChunkList.key) {
            recording { () throws(CairnError) in try list.save(to: repository.storage) }
        }
        report.intact =
            report.problems.isEmpty && damaged.isEmpty && report.restorePoints.allSatisfy { $0.result == .intact }
    }
}
