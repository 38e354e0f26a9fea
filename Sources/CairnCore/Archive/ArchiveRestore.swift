import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What to restore from an archive, and where.
public struct ArchiveRestoreRequest: Sendable {
    /// The restore point's id as the archive lists it (`GROUP@TIME`), or `GROUP@latest` for the
    /// newest restore point of that group in the archive.
    public var point: RestorePointSelector
    public var disk: String?
    public var destination: String
    public var format: RestoreFormat = .raw
    /// qcow2 output cluster size.
    public var clusterSize: UInt64 = 65536
    /// The kind of VMDK written when `format` is `.vmdk`.
    public var vmdkSubformat: VMDKSubformat = .monolithicSparse
    public var force = false
    /// Chooses the output once the disk is known (read from the archive's manifest): its format,
    /// qcow2 cluster size and VMDK kind, as `cairn restore` chooses from the recorded source
    /// format. When set, it overrides the three fields above.
    public var chooseOutput: (@Sendable (Manifest.DiskEntry) throws(CairnError) -> RestoreOutputChoice)?

    public init(point: RestorePointSelector, disk: String?, destination: String) {
        self.point = point
        self.disk = disk
        self.destination = destination
    }
}

/// The output a restore writes: its format, the qcow2 cluster size, and the VMDK kind.
public struct RestoreOutputChoice: Sendable {
    public var format: RestoreFormat
    public var clusterSize: UInt64
    public var vmdkSubformat: VMDKSubformat

    public init(format: RestoreFormat, clusterSize: UInt64, vmdkSubformat: VMDKSubformat) {
        self.format = format
        self.clusterSize = clusterSize
        self.vmdkSubformat = vmdkSubformat
    }
}

public struct ArchiveRestoreResult: Sendable {
    public var id: String
    public var disk: Manifest.DiskEntry
    /// The format written (chosen by `chooseOutput` when the request has it).
    public var format: RestoreFormat
    public var bytesWritten: UInt64
    public var bytesRead: UInt64
    public var seconds: Double
    /// Damage met in parts of the archive this restore did not need.
    public var problems: [ArchiveProblem]
}

/// Rebuilds one disk from an archive in one sequential pass, with no repository.
///
/// Every index precedes every chunk, so the disk's block digests are known before its chunks
/// arrive: they go into a `BlockDigestTable` sorted by digest (in memory up to a million blocks,
/// then spilled to a temporary file beside the output and searched through a memory map), plus
/// one bit per block saying it needs a chunk and one byte per block saying it was written. Each
/// chunk is written, when it arrives, at every offset that needs it; since a chunk appears once
/// per archive and all its offsets are known, nothing is ever read back from the output or from
/// earlier in the archive. Zero blocks stay holes.
public final class ArchiveRestore {
    public let sources: [any ArchiveByteSource]
    public let request: ArchiveRestoreRequest
    public var progress: (@Sendable (_ bytesRead: UInt64, _ bytesWritten: UInt64, _ seconds: Double) -> Void)?
    /// The passphrase of an encrypted archive (asked only for one, when its label is read).
    public var passphrase: (() throws(CairnError) -> [UInt8])?

    /// What the workers share once the disk's digests are all known: read-only but for the
    /// record of which blocks were written.
    ///
    /// A chunk may arrive twice (in two records, or a frame and a record of its own) and two
    /// workers may then hand over the same digest at once: each block is claimed under a lock
    /// before it is written, so it is written, and counted in `written`, once.
    final class Plan: Sendable {
        let table: BlockDigestTable
        /// Blocks that need a chunk (all others are zero).
        let nonZero: ClusterBitmap
        /// The blocks written (or being written), each claimed by the one worker that writes it.
        private let restored: Mutex<ClusterBitmap>
        let target: any RestoreTarget
        let size: UInt64
        let blockSize: UInt64
        let written = AtomicCounter()

        init(
            table: BlockDigestTable, nonZero: ClusterBitmap, target: any RestoreTarget, size: UInt64, blockSize: UInt64
        ) {
            self.table = table
            self.nonZero = nonZero
            restored = Mutex(ClusterBitmap(clusterCount: nonZero.clusterCount))
            self.target = target
            self.size = size
            self.blockSize = blockSize
        }

        func contains(_ digest: ChunkDigest) -> Bool { !table.range(of: digest).isEmpty }

        /// Writes a chunk at every block that needs it and no other worker has claimed.
        func write(_ digest: ChunkDigest, _ plain: UnsafeRawBufferPointer) throws(CairnError) {
            for i in table.range(of: digest) {
                let block = table.block(at: i)
                let offset = block * blockSize
                let length = Int(min(blockSize, size - offset))
                guard plain.count == length else {
                    throw CairnError(
                        .damaged,
                        "chunk \(digest) holds \(plain.count) bytes where the disk needs \(length) at offset \(offset)")
                }
                guard claim(block) else { continue }
                try target.write(plain, atGuestOffset: offset)
                written.increment(by: length)
            }
        }

        /// Marks `block` as restored; false if it already was (another worker writes it).
        private func claim(_ block: UInt64) -> Bool {
            restored.withLock { restored in
                guard !restored.contains(block) else { return false }
                restored.set(block)
                return true
            }
        }

        /// The first non-zero block no chunk arrived for, and how many there are.
        var missing: (first: UInt64, count: Int)? {
            restored.withLock { restored -> (first: UInt64, count: Int)? in
                var first: UInt64?
                var count = 0
                for block in 0..<nonZero.clusterCount where nonZero.contains(block) && !restored.contains(block) {
                    if first == nil { first = block }
                    count += 1
                }
                return first.map { (first: $0, count: count) }
            }
        }
    }

    /// (digest, block) pairs held in memory before the table spills sorted runs to disk.
    public var digestTableRunLimit = 1 << 20

    public init(sources: [any ArchiveByteSource], request: ArchiveRestoreRequest) {
        self.sources = sources
        self.request = request
    }

    public func run() throws(CairnError) -> ArchiveRestoreResult {
        let runLimit = digestTableRunLimit
        let clock = Stopwatch()
        let scanner = ArchiveScanner(sources: sources)
        scanner.unlock = ArchiveKeys.unlocker(passphrase: passphrase, required: true, operation: "archive restore")
        var target: (any RestoreTarget)?
        var chosen: Manifest?
        var targetPoint = -1
        var targetDisk = -1
        var disk: Manifest.DiskEntry?
        var blockSize: UInt64 = 0
        var table: BlockDigestTable?
        var nonZero = ClusterBitmap(clusterCount: 0)
        var plan: Plan?
        var workers: ArchiveChunkWorkers?
        var lastProgress = 0.0
        let zero = ZeroBlock.digest
        var request = request
        let progress = progress
        defer {
            // The callbacks capture the scanner and the table: release them, and the temporary files.
            scanner.onManifest = nil
            scanner.wantsLeaves = nil
            scanner.onLeaves = nil
            scanner.wantsChunk = nil
            scanner.onChunkRecord = nil
            table?.close()
        }
        let selector = request.point

        scanner.onManifest = { (index, manifest, _) throws(CairnError) in
            // Every manifest and index precedes every chunk, so the newest is known in time.
            let id = manifest.id
            guard selector.admits(id) else { return }
            if let current = chosen?.id, id <= current { return }
            let selected = try RestoreJob.selectDisk(manifest, request.disk)
            if let choose = request.chooseOutput {
                let choice = try choose(selected)
                (request.format, request.clusterSize, request.vmdkSubformat) =
                    (choice.format, choice.clusterSize, choice.vmdkSubformat)
            }
            try checkRestoreDestination(request.destination, force: request.force, allowDevice: request.format == .raw)
            chosen = manifest
            targetPoint = index
            targetDisk = manifest.disks.firstIndex { $0.name == selected.name }!
            disk = selected
            blockSize = UInt64(manifest.blockSize)
            table = BlockDigestTable(directory: Self.scratchDirectory(for: request.destination), runLimit: runLimit)
            nonZero = ClusterBitmap(clusterCount: selected.blockCount)
        }
        /// Once the disk's digests are all known: the output (whose qcow2 layout needs them) and
        /// the plan of which chunk goes where.
        func makePlan() throws(CairnError) -> Plan {
            let disk = disk!
            let table = table!
            try table.finish()
            let made: any RestoreTarget
            switch request.format {
            case .raw:
                made = try RawRestoreTarget(path: request.destination, size: disk.size, force: request.force)
            case .qcow2:
                made = try QCOW2RestoreTarget.make(
                    path: request.destination, size: disk.size, blockSize: blockSize, clusterSize: request.clusterSize,
                    force: request.force
                ) { mark in
                    for block in 0..<nonZero.clusterCount where nonZero.contains(block) { mark(block) }
                }
            case .vmdk:
                made = try VMDKRestoreTarget.make(
                    path: request.destination, size: disk.size, blockSize: blockSize,
                    subformat: request.vmdkSubformat, force: request.force
                ) { mark in
                    for block in 0..<nonZero.clusterCount where nonZero.contains(block) { mark(block) }
                }
            }
            target = made
            if made.needsZeroWrites {
                // A block device holds no holes: write zeros between the non-zero blocks (in block order here).
                for block in 0..<disk.blockCount where !nonZero.contains(block) {
                    try Self.writeZeros(made, disk, block: block, blockSize: blockSize)
                }
            }
            return Plan(table: table, nonZero: nonZero, target: made, size: disk.size, blockSize: blockSize)
        }
        scanner.wantsLeaves = { p, d in p == targetPoint && d == targetDisk }
        scanner.onLeaves = { (_, _, first, digests) throws(CairnError) in
            for (k, digest) in digests.enumerated() where digest != zero {
                let block = first + UInt64(k)
                guard block < nonZero.clusterCount else {
                    throw CairnError(.badArchive, "the index of the restore point lists more blocks than its disk has")
                }
                try table!.append(digest, block: block)
                nonZero.set(block)
            }
        }
        scanner.wantsChunk = { (digest) throws(CairnError) in
            guard targetPoint >= 0 else { return false }
            if plan == nil {
                // The first chunk: every index has been read, the disk's digests are complete.
                let made = try makePlan()
                plan = made
                workers = ArchiveChunkWorkers(chunkBlockSize: Int(blockSize), keys: scanner.keys?.master) {
                    (digest, plain, _) throws(CairnError) in
                    try made.write(digest, plain)
                }
            }
            return plan!.contains(digest)
        }
        // Unowned: the scanner holds this closure, so a strong capture would keep both alive.
        scanner.onChunkRecord = { [unowned scanner] (record, location, chunks) throws(CairnError) in
            try workers!.submit(record, location: location, chunks: chunks)
            if let progress, clock.elapsed - lastProgress >= 0.5 {
                lastProgress = clock.elapsed
                progress(scanner.blocks.bytesRead, UInt64(plan!.written.current), clock.elapsed)
            }
        }

        var fatal: CairnError?
        var chunkProblems: [ArchiveProblem] = []
        do throws(CairnError) {
            try scanner.run()
            if let workers { chunkProblems = try workers.finish().map(\.problem) }
        } catch {
            workers?.stop()
            fatal = error
        }
        if plan == nil && fatal == nil && disk != nil {
            // No chunk arrived at all (an empty disk, or all chunks missing): the output still gets made.
            do throws(CairnError) { plan = try makePlan() } catch { fatal = error }
        }
        guard let target, let disk, let point = chosen else {
            if let fatal { throw fatal }
            let ids = scanner.points.map(\.manifest.id.description)
            throw CairnError(
                .notFound,
                "restore point \(request.point) is not in the archive (it holds \(ids.isEmpty ? "no restore points" : ids.joined(separator: ", ")))"
            )
        }
        let finalPlan = plan!
        let scanned = scanner.points[targetPoint]
        let missing = finalPlan.missing
        let problems = (scanner.blocks.problems + chunkProblems).sorted {
            ($0.location?.volume ?? Int.max, $0.location?.block ?? Int.max) < (
                $1.location?.volume ?? Int.max, $1.location?.block ?? Int.max
            )
        }
        if !scanned.indexComplete || missing != nil
            || (fatal != nil && fatal!.code != .badArchive && fatal!.code != .damaged)
        {
            target.discard()
            if let fatal, fatal.code == .interrupted { throw RestoreJob.interrupted(destination: request.destination) }
            if let fatal, fatal.code != .badArchive && fatal.code != .damaged { throw fatal }
            var reason: String
            if let problem = scanned.indexProblem {
                reason = "its index is damaged: \(problem)"
            } else if !scanned.indexComplete {
                reason = "its index is incomplete"
            } else if let missing {
                reason =
                    "\(missing.count) blocks have no intact chunk in the archive (e.g. block \(missing.first), disk offset \(missing.first * blockSize))"
            } else {
                reason = "the archive is damaged"
            }
            let seen = problems.map(\.description)
            if !seen.isEmpty { reason += "; damage found: " + seen.prefix(3).joined(separator: "; ") }
            if let fatal {
                throw CairnError(fatal.code, "cannot restore \(point.id) disk \(disk.name): \(fatal.message)")
            }
            throw CairnError(.damaged, "cannot restore \(point.id) disk \(disk.name): \(reason)")
        }
        try target.finish()
        var all = problems
        if let fatal { all.append(ArchiveProblem(location: nil, message: fatal.message, code: fatal.code)) }
        return ArchiveRestoreResult(
            id: point.id.description, disk: disk, format: request.format,
            bytesWritten: UInt64(finalPlan.written.current),
            bytesRead: scanner.blocks.bytesRead,
            seconds: clock.elapsed, problems: all)
    }

    /// Where the digest table may spill: beside the output file, or the temporary directory for a
    /// device (whose directory, /dev, is no place for files).
    static func scratchDirectory(for destination: String) -> String {
        var st = stat()
        if stat(destination, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK {
            if let tmp = getenv("TMPDIR") { return String(cString: tmp) }
            return "/var/tmp"
        }
        return FileSystem.directoryName(destination)
    }

    private static func writeZeros(
        _ target: any RestoreTarget, _ disk: Manifest.DiskEntry, block: UInt64, blockSize: UInt64
    ) throws(CairnError) {
        let offset = block * blockSize
        let zeros = WorkerBuffer(byteCount: Int(min(blockSize, disk.size - offset)), zeroed: true)
        try target.write(UnsafeRawBufferPointer(zeros.bytes), atGuestOffset: offset)
    }
}
