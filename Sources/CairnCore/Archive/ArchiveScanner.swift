/// One sequential pass over an archive's records: manifests, index trees, chunks, the end.
///
/// Rebuilds each disk's block digests from its index pages as they stream by (one page per
/// tree level in memory) and hands them to `onLeaves`; decodes the chunks a consumer wants.
/// A chunk record carries one chunk or, as a frame record, several: each is an arriving chunk.
/// Verify, restore and import are this pass with different hooks.
final class ArchiveScanner {
    struct Point {
        var manifest: Manifest
        var location: ArchiveLocation
        /// Why the index is unusable, if it is.
        var indexProblem: String?
        var indexComplete = false
    }

    let records: ArchiveRecordReader
    var blocks: ArchiveBlockReader { records.blocks }
    private(set) var points: [Point] = []
    /// Chunks the chunk records carry (every member of a frame record counts).
    private(set) var chunks = 0
    private(set) var pages = 0
    private(set) var recordsRead = 0
    private(set) var end: ArchiveEnd?
    /// Manifest records read, decoded or not (an encrypted archive read without its key counts
    /// its restore points this way only).
    private(set) var manifestRecords = 0
    /// The least position the next sealed manifest may carry.
    private var nextManifestPosition: UInt32 = 0
    /// Checks frame member lists without the key.
    private lazy var listHasher = SHA256Hasher()
    /// What to do with an encrypted archive's label: its master key, or nil to read the archive
    /// without its content (structure and checksums only). Unset: an encrypted archive is refused.
    var unlock: ((ArchiveLabel) throws(CairnError) -> MasterKey?)?
    /// The archive's keys once its label is read; nil for an unencrypted archive.
    private(set) var keys: ArchiveKeys?
    /// Whether the label says the records are sealed.
    private(set) var encrypted = false
    /// False for an encrypted archive read without its key: manifests, index pages and chunks
    /// are checked by their CRCs only.
    var contentReadable: Bool { !encrypted || keys != nil }
    /// Chunks that no index needed (or repeated chunks), when `trackNeeds` is set: frame
    /// records carry the members nobody needs along with the ones somebody does.
    private(set) var unneededChunks = 0
    private var decoder: RecordDecoder?
    /// The largest plain chunk the label's block size allows (or an index page).
    private var maxChunk = 0
    /// The chunks of the current chunk record (storage reused from record to record).
    private var arriving: [ArrivingChunk] = []

    // Hooks.
    var onManifest: ((Int, Manifest, ArchiveLocation) throws(CairnError) -> Void)?
    var wantsLeaves: ((Int, Int) -> Bool)?
    var onLeaves: ((Int, Int, UInt64, [ChunkDigest]) throws(CairnError) -> Void)?
    var onIndexPage: ((ChunkDigest, EncodedRecord) throws(CairnError) -> Void)?
    /// Decides which chunks are decoded (default: all). A record is decoded if it carries a
    /// wanted chunk.
    var wantsChunk: ((ChunkDigest) throws(CairnError) -> Bool)?
    /// Gets each wanted chunk record (pack record as stored) once every chunk in it is proved.
    var onChunk: ((EncodedRecord, ArchiveLocation) throws(CairnError) -> Void)?
    /// When set, wanted chunk records go here undecoded (CRC and member list checked) instead
    /// of to `onChunk`, for a consumer that decodes them in parallel. The chunks the record
    /// carries come with the mask of the points needing each (with `trackNeeds`), for
    /// `chunkFailed`.
    var onChunkRecord: ((EncodedRecord, ArchiveLocation, [ArrivingChunk]) throws(CairnError) -> Void)?
    /// Keep the digests indexes need and strike them off as chunks arrive: `missing` at the end.
    var trackNeeds = false
    /// Stop at the first chunk record: every manifest and index has been read by then (list).
    var stopAtChunks = false
    /// Digest → restore points needing it (bit i = point i; bit 63 = point 63 or later).
    /// Chunks the indexes need and that have not arrived, with the restore points needing them.
    private(set) var needs = SpillingDigestMap(directory: ScratchDirectory.path)

    // Index tree walk state.
    private struct Frame {
        var entries: [ChunkDigest]
        var position: Int
        var level: Int
    }
    private var treePoint: Int?
    private var treeDisk = 0
    private var stack: [Frame] = []
    private var expected: (digest: ChunkDigest, level: Int)?
    private var leafCount: UInt64 = 0
    private var sawChunks = false

    init(sources: [any ArchiveByteSource]) {
        records = ArchiveRecordReader(blocks: ArchiveBlockReader(sources: sources))
        // Unowned: the block reader holds this closure and the scanner holds the reader.
        records.blocks.onLabel = { [unowned self] (label) throws(CairnError) in try self.opened(label) }
    }

    /// Told volume 1's label before `unlock` (import opens or makes its repository here).
    var onLabel: ((ArchiveLabel) throws(CairnError) -> Void)?

    /// Volume 1's label: an encrypted archive's keys are unlocked before any record is read.
    private func opened(_ label: ArchiveLabel) throws(CairnError) {
        try onLabel?(label)
        guard label.isEncrypted else { return }
        encrypted = true
        guard let unlock else {
            throw CairnError(.badArchive, "archive \(label.archive) is encrypted, which this reader does not handle")
        }
        guard let archive = ArchiveID(hex: label.archive) else {
            throw CairnError(.badArchive, "the label's archive id \(label.archive) is malformed")
        }
        keys = try unlock(label).map { ArchiveKeys(master: $0, archive: archive) }
    }

    private func report(_ location: ArchiveLocation?, _ message: String, _ code: CairnError.Code = .damaged) {
        blocks.report(location, message, code)
    }

    static func pointBit(_ point: Int) -> UInt64 { 1 << UInt64(min(point, 63)) }

    /// Reads the archive to its end. Structural faults throw; damage is reported and stepped over.
    func run() throws(CairnError) {
        while let record = try records.next() {
            try Cancellation.check("stopped before the end of the archive")
            recordsRead += 1
            if end != nil {
                report(record.location, "a \(record.type.name) record after the end record", .badArchive)
                continue
            }
            switch record.type {
            case .manifest: try manifest(record)
            case .indexPage: try page(record)
            case .chunk:
                if stopAtChunks {
                    abandonTree(reason: "chunks begin before the index is complete")
                    return
                }
                try chunk(record)
            case .end:
                abandonTree(reason: "the end record comes before the index is complete")
                do throws(CairnError) {
                    end = try JSONCoding.decode(ArchiveEnd.self, from: Array(record.body), what: "the end record")
                } catch {
                    report(record.location, error.message, .badArchive)
                }
            }
        }
        abandonTree(reason: "the archive ends before the index is complete")
        if end == nil {
            report(nil, "the archive has no end record: it is incomplete", .badArchive)
        }
    }

    private func ensureDecoder() throws(CairnError) -> RecordDecoder {
        if let decoder { return decoder }
        guard let label = blocks.label else { throw CairnError(.badArchive, "records before a volume label") }
        maxChunk = max(label.chunkBlockSize, IndexTree.pageBytes)
        let made = ArchiveKeys.decoder(keys?.master, outputBytes: max(maxChunk, PackFormat.maxFrameBytes))
        decoder = made
        return made
    }

    /// A chunk or index page record's pack record, checked (`EncodedRecord(checking:)`).
    private func checked(_ body: UnsafeRawBufferPointer) throws(CairnError) -> EncodedRecord {
        try EncodedRecord(checking: body, maxChunk: maxChunk, malformed: .badArchive)
    }

    private func manifest(_ record: ArchiveRecord) throws(CairnError) {
        abandonTree(reason: "the next manifest begins before the index is complete")
        if sawChunks {
            report(record.location, "a manifest after the chunks: the archive's records are out of order", .badArchive)
        }
        manifestRecords += 1
        // Sealed and no key: the restore point stays unknown, its pages are checked by CRC only.
        guard contentReadable else { return }
        let manifest: Manifest
        do throws(CairnError) {
            var bytes = Array(record.body)
            if let keys {
                let (position, sealed) = try ArchiveKeys.splitManifest(bytes)
                // Positions only grow: a manifest moved to another place is out of order, and
                // one lost with a damaged block costs no other its name.
                guard position >= nextManifestPosition else {
                    throw CairnError(
                        .badArchive, "it carries manifest position \(position), after \(nextManifestPosition - 1)")
                }
                nextManifestPosition = position + 1
                bytes = try keys.seal.open(sealed, name: keys.manifestName(Int(position)))
            }
            manifest = try Manifest.decode(bytes, path: "record \(record.ordinal)")
        } catch {
            report(
                record.location, "manifest record \(record.ordinal): \(error.message); its index pages are skipped",
                .damaged)
            return
        }
        guard manifest.blockSize == blocks.label?.chunkBlockSize else {
            report(
                record.location, "restore point \(manifest.id) has block size \(manifest.blockSize), not the archive's",
                .badArchive)
            return
        }
        let index = points.count
        points.append(Point(manifest: manifest, location: record.location))
        if trackNeeds {
            // Settings files' chunks travel after the disks' and are needed like theirs.
            for file in manifest.settings ?? [] {
                for digest in file.chunkDigests { try needs.insert(digest, mask: Self.pointBit(index)) }
            }
        }
        try onManifest?(index, manifest, record.location)
        treePoint = index
        startDisk(0)
    }

    private func startDisk(_ disk: Int) {
        guard let p = treePoint else { return }
        let disks = points[p].manifest.disks
        treeDisk = disk
        stack = []
        leafCount = 0
        if disk == disks.count {
            points[p].indexComplete = points[p].indexProblem == nil
            treePoint = nil
            expected = nil
            return
        }
        let root = disks[disk].root
        guard (1...8).contains(disks[disk].depth) else {
            failTree("disk \(disks[disk].name) has a malformed depth")
            return
        }
        expected = (root, 0)
    }

    private func failTree(_ reason: String) {
        guard let p = treePoint else { return }
        if points[p].indexProblem == nil { points[p].indexProblem = reason }
        treePoint = nil
        expected = nil
        stack = []
    }

    private func abandonTree(reason: String) {
        guard let p = treePoint else { return }
        let disk = points[p].manifest.disks.indices.contains(treeDisk) ? points[p].manifest.disks[treeDisk].name : "?"
        failTree("\(reason) (disk \(disk))")
        report(points[p].location, "restore point \(points[p].manifest.id): \(points[p].indexProblem!)")
    }

    private func page(_ record: ArchiveRecord) throws(CairnError) {
        pages += 1
        guard contentReadable else {
            checkSealed(record, kind: "index page")
            return
        }
        guard let p = treePoint, let (want, level) = expected else {
            // Pages of a manifest that was lost or of a tree already failed: skipped quietly.
            return
        }
        let decoder = try ensureDecoder()
        let disk = points[p].manifest.disks[treeDisk]
        let plain: [ChunkDigest]
        do throws(CairnError) {
            let page = try checked(record.body)
            let header = page.header
            guard header.digest == want, header.kind == .indexPage else {
                throw CairnError(
                    .badArchive, "index page \(header.digest) arrives where page \(want) is expected: a page is missing"
                )
            }
            let bytes = try decoder.openProved(page)
            guard bytes.count % ChunkDigest.byteCount == 0 else {
                throw CairnError(.damaged, "index page \(want) is not a whole number of digests")
            }
            plain = (0..<(bytes.count / 32)).map { ChunkDigest(loadingFrom: bytes, at: $0 * 32) }
            try onIndexPage?(want, page)
        } catch {
            report(
                record.location, "restore point \(points[p].manifest.id) disk \(disk.name): \(error.message)",
                error.code)
            failTree("its index page \(want) is damaged or missing (\(record.location))")
            return
        }
        if level == disk.depth - 1 {
            guard leafCount + UInt64(plain.count) <= disk.blockCount else {
                report(
                    record.location,
                    "restore point \(points[p].manifest.id) disk \(disk.name): the index lists more than \(disk.blockCount) blocks",
                    .badArchive)
                failTree("its index lists too many blocks")
                return
            }
            if trackNeeds {
                let bit = Self.pointBit(p)
                let zero = ZeroBlock.digest
                for digest in plain where digest != zero { try needs.insert(digest, mask: bit) }
            }
            if wantsLeaves?(p, treeDisk) == true { try onLeaves?(p, treeDisk, leafCount, plain) }
            leafCount += UInt64(plain.count)
        } else {
            guard !plain.isEmpty else {
                failTree("its index page \(want) is empty")
                return
            }
            stack.append(Frame(entries: plain, position: 0, level: level))
        }
        while var top = stack.popLast() {
            if top.position < top.entries.count {
                expected = (top.entries[top.position], top.level + 1)
                top.position += 1
                stack.append(top)
                return
            }
        }
        guard leafCount == disk.blockCount else {
            report(
                record.location,
                "restore point \(points[p].manifest.id) disk \(disk.name): the index lists \(leafCount) of \(disk.blockCount) blocks",
                .badArchive)
            failTree("its index is short")
            return
        }
        startDisk(treeDisk + 1)
    }

    private func chunk(_ record: ArchiveRecord) throws(CairnError) {
        abandonTree(reason: "chunks begin before the index is complete")
        sawChunks = true
        guard contentReadable else {
            checkSealed(record, kind: "chunk")
            return
        }
        let decoder = try ensureDecoder()
        let chunkRecord: EncodedRecord
        do throws(CairnError) {
            chunkRecord = try checked(record.body)
            let blockSize = blocks.label!.chunkBlockSize
            for member in chunkRecord.members where member.kind != .data || member.rawLength > blockSize {
                throw CairnError(
                    .badArchive,
                    "chunk record \(chunkRecord.header.digest) is not a data chunk of at most the block size")
            }
        } catch {
            chunks += 1
            report(record.location, "chunk record \(record.ordinal): \(error.message)", error.code)
            return
        }
        chunks += chunkRecord.members.count
        arriving.removeAll(keepingCapacity: true)
        var wanted = wantsChunk == nil
        for member in chunkRecord.members {
            var neededBy: UInt64 = 0
            if trackNeeds {
                if let mask = needs.take(member.digest) { neededBy = mask } else { unneededChunks += 1 }
            }
            arriving.append(ArrivingChunk(digest: member.digest, neededBy: neededBy))
            if !wanted, let wantsChunk { wanted = try wantsChunk(member.digest) }
        }
        guard wanted else { return }
        if let onChunkRecord {
            try onChunkRecord(chunkRecord, record.location, arriving)
            return
        }
        do throws(CairnError) {
            _ = try decoder.openProved(chunkRecord)
            try onChunk?(chunkRecord, record.location)
        } catch {
            guard error.code == .damaged else { throw error }
            try chunkFailed(
                arriving,
                problem: ArchiveProblem(
                    location: record.location, message: "chunk record \(record.ordinal): \(error.message)",
                    code: .damaged))
        }
    }

    /// Without the key, what can be checked of a sealed page or chunk record: its pack record's
    /// lengths, CRC and kind, and a frame's member list against its digest (a plain SHA-256).
    private func checkSealed(_ record: ArchiveRecord, kind: String) {
        let isPage = record.type == .indexPage
        let blockSize = blocks.label!.chunkBlockSize
        maxChunk = max(blockSize, IndexTree.pageBytes)
        var carried = 1
        do throws(CairnError) {
            let checked = try checked(record.body)
            if isPage {
                guard checked.header.kind == .indexPage else {
                    throw CairnError(.badArchive, "an index page record holds a \(checked.header.kind) record")
                }
                return
            }
            carried = checked.members.count
            for member in checked.members where member.kind != .data || member.rawLength > blockSize {
                throw CairnError(
                    .badArchive, "chunk record \(checked.header.digest) is not a data chunk of at most the block size")
            }
            if checked.header.isFrame, listHasher.digest(checked.memberList) != checked.header.digest {
                throw CairnError(.damaged, "the member list of the frame record does not match its digest")
            }
        } catch {
            report(record.location, "\(kind) record \(record.ordinal): \(error.message)", error.code)
        }
        if !isPage { chunks += carried }
    }

    /// A chunk record turned out damaged: the points needing its chunks miss them.
    func chunkFailed(_ chunks: [ArrivingChunk], problem: ArchiveProblem) throws(CairnError) {
        var mask: UInt64 = 0
        for chunk in chunks where chunk.neededBy != 0 {
            try needs.insert(chunk.digest, mask: chunk.neededBy)
            mask |= chunk.neededBy
        }
        var problem = problem
        problem.message += describe(mask)
        blocks.report(problem.location, problem.message, problem.code)
    }

    /// "needed by vm1@…, vm2@…" for a points mask.
    func describe(_ mask: UInt64) -> String {
        guard mask != 0 else { return "" }
        let ids = points.indices.filter { mask & Self.pointBit($0) != 0 }.map { points[$0].manifest.id.description }
        return "; needed by \(ids.joined(separator: ", "))"
    }

    /// Restore points missing at least one chunk after the pass (with `trackNeeds`).
    func pointsMissingChunks() -> Set<Int> {
        let mask = needs.unionOfRemaining
        return Set(points.indices.filter { mask & Self.pointBit($0) != 0 })
    }
}

/// A chunk a chunk record carries, and the restore points needing it (bit i = point i; 0 when
/// no index needs it or needs are not tracked).
struct ArrivingChunk {
    var digest: ChunkDigest
    var neededBy: UInt64
}
