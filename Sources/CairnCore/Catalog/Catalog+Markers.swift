/// Objects kept beside a restore point's manifest: `TIME.protected` and `TIME.verify` (hashed
/// names in an encrypted repository, as the manifest's).
///
/// The manifest is immutable and checksummed, so what changes over a restore point's life
/// (protection, the last verification) lives in small files next to it. A marker without a
/// manifest (left by an interrupted prune) is ignored and removed by `cairn gc`.
extension Catalog {
    static let protectedSuffix = ".protected"
    static let verifySuffix = ".verify"
    static let removedSuffix = ".gone"

    public func protectionMarkerPath(of id: RestorePointID) -> String {
        "\(storage.location)/\(key(id, suffix: Self.protectedSuffix))"
    }

    public func verificationPath(of id: RestorePointID) -> String {
        "\(storage.location)/\(key(id, suffix: Self.verifySuffix))"
    }

    public func isProtected(_ id: RestorePointID) -> Bool {
        storage.exists(key(id, suffix: Self.protectedSuffix))
    }

    /// Marks a restore point as protected: prune never removes it and forget refuses it. The
    /// marker's text (when it was protected) is sealed like the manifest beside it.
    func protect(_ id: RestorePointID) throws(CairnError) {
        let note = Array("protected \(Timestamp.now())\n".utf8)
        try storage.publish(
            stored(note, id, suffix: Self.protectedSuffix), as: key(id, suffix: Self.protectedSuffix), .replace)
    }

    func unprotect(_ id: RestorePointID) throws(CairnError) {
        try storage.delete([key(id, suffix: Self.protectedSuffix)])
    }

    /// The last recorded verification of a restore point, if any (an unreadable record counts as none).
    public func verification(of id: RestorePointID) -> VerificationRecord? {
        let key = key(id, suffix: Self.verifySuffix)
        guard storage.exists(key), let stored = try? readObject(key, limit: 1 << 20),
            let bytes = try? plain(stored, key: key)
        else { return nil }
        return try? JSONCoding.decode(VerificationRecord.self, from: bytes, what: "verification record")
    }

    func recordVerification(_ record: VerificationRecord, of id: RestorePointID) throws(CairnError) {
        let text = try JSONCoding.encode(record, pretty: true) + "\n"
        try storage.publish(
            stored(Array(text.utf8), id, suffix: Self.verifySuffix), as: key(id, suffix: Self.verifySuffix), .replace)
    }

    /// Removes one restore point: the manifest first (the restore point is gone the moment it
    /// is deleted), then its verification record, in one durable delete. Refuses a protected
    /// restore point.
    func remove(_ id: RestorePointID) throws(CairnError) {
        guard !isProtected(id) else {
            throw CairnError(.usage, "restore point \(id) is protected: run `cairn unprotect \(id)` first to remove it")
        }
        try recordRemoval(id)
        try storage.delete([key(id), key(id, suffix: Self.verifySuffix)])
    }

    /// In an encrypted repository, a removal leaves a tombstone beside where the manifest was
    /// (`T.gone`, sealed, bound to its name like the manifest), written before the manifest
    /// goes: proof that Cairn removed it, so that another host that saw the restore point does
    /// not take its absence for a roll-back (`SeenRestorePoints`). About 80 bytes each; an
    /// unencrypted repository writes none.
    private func recordRemoval(_ id: RestorePointID) throws(CairnError) {
        guard seal != nil else { return }
        let note = Array("removed \(id) \(Timestamp.now())\n".utf8)
        try storage.publish(
            stored(note, id, suffix: Self.removedSuffix), as: key(id, suffix: Self.removedSuffix), .replace)
    }

    /// Whether a tombstone that opens with this repository's key says Cairn removed `id`.
    func wasRemoved(_ id: RestorePointID) -> Bool {
        let key = key(id, suffix: Self.removedSuffix)
        guard seal != nil, storage.exists(key), let bytes = try? readObject(key, limit: 4096),
            let note = try? plain(bytes, key: key)
        else { return false }
        return note.starts(with: Array("removed \(id) ".utf8))
    }

    /// Keys of marker objects whose manifest no longer exists (left by an interrupted prune or
    /// forget). Found by name alone, so it needs no key and opens nothing.
    func orphanMarkers() throws(CairnError) -> [String] {
        let keys = try storage.list(prefix: Self.directory + "/")
        let present = Set(keys)
        var out: [String] = []
        for key in keys where key.split(separator: "/").count == 3 {
            for suffix in [Self.protectedSuffix, Self.verifySuffix] where key.hasSuffix(suffix) {
                if !present.contains(String(key.dropLast(suffix.count)) + Self.suffix) { out.append(key) }
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
