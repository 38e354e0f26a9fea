/// What to restore from an archive, and where.
public struct ArchiveRestoreRequest: Sendable {
    /// The restore point's id, exactly as the archive lists it (`GROUP@TIME`).
    public var point: String
    public var disk: String?
    public var destination: String
    public var format: RestoreFormat = .raw
    public var force = false

    public init(point: String, disk: String?, destination: String) {
        self.point = point
        self.disk = disk
        self.destination = destination
    }
}

public struct ArchiveRestoreResult: Sendable {
    public var id: String
    public var disk: Manifest.DiskEntry
    public var bytesWritten: UInt64
    public var bytesRead: UInt64
    public var seconds: Double
    /// Damage met in parts of the archive this restore did not need.
    public var problems: [ArchiveProblem]
}

/// Rebuilds one disk from an archive in one sequential pass, with no repository.
///
/// Every index precedes every chunk, so the disk's block digests are known before its chunks
/// arrive: they are kept as (digest, block) pairs sorted by digest (40 bytes per non-zero block;
/// docs/ARCHIVE-FORMAT.md, "Memory"). Each chunk is written, when it arrives, at every offset
/// that needs it; since a chunk appears once per archive and all its offsets are known, nothing
/// is ever read back from the output or from earlier in the archive. Zero blocks stay holes.
public final class ArchiveRestore {
    public let sources: [any ArchiveByteSource]
    public let request: ArchiveRestoreRequest
    public var progress: (@Sendable (_ bytesRead: UInt64, _ bytesWritten: UInt64, _ seconds: Double) -> Void)?

    private struct Entry {
        var digest: ChunkDigest
        var block: UInt64
    }

    public init(sources: [any ArchiveByteSource], request: ArchiveRestoreRequest) {
        self.sources = sources
        self.request = request
    }

    public func run() throws(CairnError) -> ArchiveRestoreResult {
        guard request.format == .raw else {
            throw CairnError(.usage, "--format \(request.format.rawValue) is not yet supported for archives: restore as raw and convert with qemu-img convert")
        }
        let clock = Stopwatch()
        let scanner = ArchiveScanner(sources: sources)
        var target: RawRestoreTarget?
        var targetPoint = -1
        var targetDisk = -1
        var disk: Manifest.DiskEntry?
        var blockSize: UInt64 = 0
        var entries: [Entry] = []
        var restored: [Bool] = []
        var sorted = false
        var written: UInt64 = 0
        var lastProgress = 0.0
        let zero = ZeroBlock.digest
        let request = request
        let progress = progress

        scanner.onManifest = { (index, manifest, _) throws(CairnError) in
            guard manifest.id == request.point, target == nil else { return }
            let chosen = try RestoreJob.selectDisk(manifest, request.disk)
            target = try RawRestoreTarget(path: request.destination, size: chosen.size, force: request.force)
            targetPoint = index
            targetDisk = manifest.disks.firstIndex { $0.name == chosen.name }!
            disk = chosen
            blockSize = UInt64(manifest.blockSize)
        }
        scanner.wantsLeaves = { p, d in p == targetPoint && d == targetDisk }
        scanner.onLeaves = { (_, _, first, digests) throws(CairnError) in
            for (k, digest) in digests.enumerated() {
                let block = first + UInt64(k)
                if digest == zero {
                    if target!.needsZeroWrites { try Self.writeZeros(target!, disk!, block: block, blockSize: blockSize) }
                    continue
                }
                entries.append(Entry(digest: digest, block: block))
            }
        }
        scanner.wantsChunk = { digest in
            guard targetPoint >= 0 else { return false }
            if !sorted {
                entries.sort { $0.digest < $1.digest }
                restored = Array(repeating: false, count: entries.count)
                sorted = true
            }
            let i = Self.lowerBound(entries, digest)
            return i < entries.count && entries[i].digest == digest
        }
        scanner.onChunk = { (digest, plain, _, _) throws(CairnError) in
            var i = Self.lowerBound(entries, digest)
            while i < entries.count && entries[i].digest == digest {
                let offset = entries[i].block * blockSize
                let length = Int(min(blockSize, disk!.size - offset))
                guard plain.count == length else {
                    throw CairnError(.damaged, "chunk \(digest) holds \(plain.count) bytes where the disk needs \(length) at offset \(offset)")
                }
                if !restored[i] {
                    try target!.write(plain, atGuestOffset: offset)
                    written += UInt64(length)
                    restored[i] = true
                }
                i += 1
            }
            if let progress, clock.elapsed - lastProgress >= 0.5 {
                lastProgress = clock.elapsed
                progress(scanner.blocks.bytesRead, written, clock.elapsed)
            }
        }

        var fatal: CairnError?
        do throws(CairnError) {
            try scanner.run()
        } catch {
            fatal = error
        }
        guard let target, let disk else {
            if let fatal { throw fatal }
            let ids = scanner.points.map(\.manifest.id)
            throw CairnError(
                .notFound,
                "restore point \(request.point) is not in the archive (it holds \(ids.isEmpty ? "no restore points" : ids.joined(separator: ", ")))")
        }
        let point = scanner.points[targetPoint]
        let missing = sorted ? restored.lazy.filter { !$0 }.count : entries.count
        if !point.indexComplete || missing > 0 {
            target.discard()
            var reason: String
            if let problem = point.indexProblem {
                reason = "its index is damaged: \(problem)"
            } else if !point.indexComplete {
                reason = "its index is incomplete"
            } else {
                let firstMissing = sorted ? entries[restored.firstIndex(of: false)!] : entries[0]
                reason = "\(missing) blocks have no intact chunk in the archive (e.g. block \(firstMissing.block), chunk \(firstMissing.digest))"
            }
            let seen = scanner.blocks.problems.map(\.description)
            if !seen.isEmpty { reason += "; damage found: " + seen.prefix(3).joined(separator: "; ") }
            if let fatal { throw CairnError(fatal.code, "cannot restore \(request.point) disk \(disk.name): \(fatal.message)") }
            throw CairnError(.damaged, "cannot restore \(request.point) disk \(disk.name): \(reason)")
        }
        try target.finish()
        var problems = scanner.blocks.problems
        if let fatal { problems.append(ArchiveProblem(location: nil, message: fatal.message, code: fatal.code)) }
        return ArchiveRestoreResult(
            id: request.point, disk: disk, bytesWritten: written, bytesRead: scanner.blocks.bytesRead, seconds: clock.elapsed,
            problems: problems)
    }

    private static func lowerBound(_ entries: [Entry], _ digest: ChunkDigest) -> Int {
        var low = 0
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].digest < digest { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private static func writeZeros(
        _ target: RawRestoreTarget, _ disk: Manifest.DiskEntry, block: UInt64, blockSize: UInt64
    ) throws(CairnError) {
        let offset = block * blockSize
        let zeros = [UInt8](repeating: 0, count: Int(min(blockSize, disk.size - offset)))
        var failure: CairnError?
        zeros.withUnsafeBytes { raw in
            do throws(CairnError) { try target.write(raw, atGuestOffset: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
