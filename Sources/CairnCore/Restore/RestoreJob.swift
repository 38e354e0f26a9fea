/// The output format of a restore.
public enum RestoreFormat: String, Sendable, CaseIterable {
    case raw
    case qcow2
    case vmdk
}

/// The kind of VMDK a `--format vmdk` restore writes.
public enum VMDKSubformat: String, Sendable, CaseIterable {
    /// A hosted sparse extent with its descriptor embedded: what `vmkfstools -i` imports on ESXi.
    case monolithicSparse
    /// Compressed grains in VMware's stream layout: what OVF/OVA import reads.
    case streamOptimized
}

/// What to restore and where.
public struct RestoreRequest: Sendable {
    public var id: RestorePointID
    /// The disk to restore; may be nil when the restore point has exactly one.
    public var disk: String?
    public var destination: String
    public var format: RestoreFormat = .raw
    public var force = false
    /// qcow2 output cluster size.
    public var clusterSize: UInt64 = 65536
    /// The kind of VMDK written when `format` is `.vmdk`.
    public var vmdkSubformat: VMDKSubformat = .monolithicSparse
    /// Write zeros for chunks that are damaged or missing instead of failing.
    public var allowDamaged = false

    public init(id: RestorePointID, disk: String?, destination: String) {
        self.id = id
        self.disk = disk
        self.destination = destination
    }
}

/// A guest byte range that could not be restored (only with `allowDamaged`).
public struct DamagedRange: Sendable, Codable, Equatable {
    public var offset: UInt64
    public var length: UInt64
    public var chunk: String
    public var reason: String
}

public struct RestoreResult: Sendable {
    public var disk: Manifest.DiskEntry
    public var bytesWritten: UInt64
    public var seconds: Double
    public var damaged: [DamagedRange]
}

public struct RestoreProgress: Sendable {
    public var bytesDone: UInt64
    public var bytesTotal: UInt64
    public var seconds: Double
}

/// Rebuilds one disk of a restore point, checking every chunk's digest on the way.
///
/// A walker thread reads the index tree in block order and hands out batches of digests; two
/// workers per core read, decompress and verify chunks and write runs of them at their offsets.
/// Zero blocks are never written (they stay holes) unless the target is a block device.
public final class RestoreJob {
    public let repository: Repository
    public let request: RestoreRequest
    public var lockWait: Double?
    public var progress: (@Sendable (RestoreProgress) -> Void)?

    public init(repository: Repository, request: RestoreRequest) {
        self.repository = repository
        self.request = request
    }

    public func run() throws(CairnError) -> RestoreResult {
        let clock = Stopwatch()
        let lock = try repository.lock(.shared, purpose: "cairn restore", wait: lockWait)
        defer { _ = lock }
        let manifest = try repository.catalog.manifest(request.id)
        let disk = try Self.selectDisk(manifest, request.disk)
        let root = disk.root
        guard manifest.blockSize == repository.store.blockSize else {
            throw CairnError(
                .damaged, "restore point \(request.id) has block size \(manifest.blockSize), not the repository's")
        }
        let walk = DiskWalk(
            store: repository.store, root: root, depth: disk.depth, blockCount: disk.blockCount, size: disk.size)
        let target: any RestoreTarget
        switch request.format {
        case .raw:
            target = try RawRestoreTarget(path: request.destination, size: disk.size, force: request.force)
        case .qcow2:
            target = try QCOW2RestoreTarget.make(
                path: request.destination, walk: walk, clusterSize: request.clusterSize, force: request.force)
        case .vmdk:
            target = try VMDKRestoreTarget.make(
                path: request.destination, walk: walk, subformat: request.vmdkSubformat, force: request.force)
        }
        do {
            let (written, damaged) = try walk.restore(
                into: target, allowDamaged: request.allowDamaged, progress: progress, clock: clock)
            try target.finish()
            return RestoreResult(disk: disk, bytesWritten: written, seconds: clock.elapsed, damaged: damaged)
        } catch  where error.code == .interrupted {
            target.discard()
            throw Self.interrupted(destination: request.destination)
        } catch {
            target.discard()
            throw error
        }
    }

    /// What a restore stopped by a signal says, once its output is discarded.
    static func interrupted(destination: String) -> CairnError {
        Cancellation.interrupted(
            FileSystem.exists(destination)
                ? "restore incomplete: \(destination) holds only part of the disk"
                : "restore incomplete (the unfinished \(destination) was removed)")
    }

    public static func selectDisk(_ manifest: Manifest, _ name: String?) throws(CairnError) -> Manifest.DiskEntry {
        if let name {
            guard let disk = manifest.disk(named: name) else {
                throw CairnError(
                    .notFound,
                    "restore point \(manifest.id) has no disk \(name) (it has \(manifest.disks.map(\.name).joined(separator: ", ")))"
                )
            }
            return disk
        }
        guard manifest.disks.count == 1 else {
            throw CairnError(
                .usage,
                "restore point \(manifest.id) holds \(manifest.disks.count) disks (\(manifest.disks.map(\.name).joined(separator: ", ")))",
                remedy: .nameDisk)
        }
        return manifest.disks[0]
    }
}
