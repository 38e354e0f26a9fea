/// Files kept beside a restore point's manifest: `TIME.protected` and `TIME.verify`.
///
/// The manifest is immutable and checksummed, so what changes over a restore point's life
/// (protection, the last verification) lives in small files next to it. A marker without a
/// manifest (left by an interrupted prune) is ignored and removed by `cairn gc`.
extension Catalog {
    static let protectedSuffix = ".protected"
    static let verifySuffix = ".verify"

    public func protectionMarkerPath(of id: RestorePointID) -> String {
        "\(root)/\(id.group)/\(id.time)\(Self.protectedSuffix)"
    }

    public func verificationPath(of id: RestorePointID) -> String {
        "\(root)/\(id.group)/\(id.time)\(Self.verifySuffix)"
    }

    public func isProtected(_ id: RestorePointID) -> Bool {
        FileSystem.exists(protectionMarkerPath(of: id))
    }

    /// Marks a restore point as protected: prune never removes it and forget refuses it.
    func protect(_ id: RestorePointID) throws(CairnError) {
        let note = "protected \(Timestamp.now())\n"
        try FileSystem.writeAtomically(Array(note.utf8), to: protectionMarkerPath(of: id))
    }

    func unprotect(_ id: RestorePointID) throws(CairnError) {
        try FileSystem.remove(protectionMarkerPath(of: id))
        try FileSystem.syncDirectory("\(root)/\(id.group)")
    }

    /// The last recorded verification of a restore point, if any (an unreadable record counts as none).
    public func verification(of id: RestorePointID) -> VerificationRecord? {
        guard let stored = try? FileSystem.readAll(verificationPath(of: id), limit: 1 << 20),
            let bytes = try? plain(stored, id, suffix: Self.verifySuffix)
        else { return nil }
        return try? JSONCoding.decode(VerificationRecord.self, from: bytes, what: "verification record")
    }

    func recordVerification(_ record: VerificationRecord, of id: RestorePointID) throws(CairnError) {
        let text = try JSONCoding.encode(record, pretty: true) + "\n"
        try FileSystem.writeAtomically(
            stored(Array(text.utf8), id, suffix: Self.verifySuffix), to: verificationPath(of: id))
    }

    /// Removes one restore point: the manifest first (the restore point is gone the moment it
    /// is unlinked), then its verification record; the directory is synced once at the end.
    /// Refuses a protected restore point.
    func remove(_ id: RestorePointID) throws(CairnError) {
        guard !isProtected(id) else {
            throw CairnError(.usage, "restore point \(id) is protected: run `cairn unprotect \(id)` first to remove it")
        }
        try FileSystem.remove(path(of: id))
        try FileSystem.remove(verificationPath(of: id))
        try FileSystem.syncDirectory("\(root)/\(id.group)")
    }

    /// Marker files whose manifest no longer exists (left by an interrupted prune or forget).
    func orphanMarkers() throws(CairnError) -> [String] {
        var out: [String] = []
        for group in try groups() {
            let dir = "\(root)/\(group)"
            for name in try FileSystem.list(dir) where !name.hasPrefix(".") {
                for suffix in [Self.protectedSuffix, Self.verifySuffix] where name.hasSuffix(suffix) {
                    let stem = String(name.dropLast(suffix.count))
                    if !FileSystem.exists("\(dir)/\(stem)\(Self.suffix)") { out.append("\(dir)/\(name)") }
                }
            }
        }
        return out
    }
}

/// What verify concluded about a restore point.
public enum VerificationResult: String, Codable, Sendable {
    case intact, damaged
}

/// How much verify checked.
public enum VerificationScope: String, Codable, Sendable {
    /// Every chunk.
    case full
    /// Metadata and the chunks in a share of the digest space (`cairn verify --sample`).
    case sample
}

/// What `cairn verify` proved about one restore point, stored as `points/GROUP/TIME.verify`.
public struct VerificationRecord: Codable, Sendable, Equatable {
    /// When the verification finished.
    public var time: Timestamp
    public var result: VerificationResult
    public var scope: VerificationScope
    /// For a sample: the share of the digest space checked, in percent.
    public var samplePercent: Double?
    /// Chunks of this restore point whose data was checked in this run.
    public var chunksChecked: Int
    /// Damaged chunks this restore point needs.
    public var damagedChunks: Int
    /// The first problems found, one line each.
    public var problems: [String]

    public init(
        time: Timestamp, result: VerificationResult, scope: VerificationScope, samplePercent: Double?,
        chunksChecked: Int,
        damagedChunks: Int,
        problems: [String]
    ) {
        self.time = time
        self.result = result
        self.scope = scope
        self.samplePercent = samplePercent
        self.chunksChecked = chunksChecked
        self.damagedChunks = damagedChunks
        self.problems = problems
    }
}
