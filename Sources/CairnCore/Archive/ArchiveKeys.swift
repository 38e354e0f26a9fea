import Foundation

/// The keys of an encrypted archive (docs/ARCHIVE-FORMAT.md, "Encrypted archives").
///
/// An archive of an encrypted repository carries the repository's records as stored (sealed,
/// under keyed chunk ids) and, in every volume's label, the repository's key files: the master
/// key wrapped by each passphrase, never the key itself. So a tape opens years later with a
/// passphrase alone. What the archive itself says about restore points (the manifest records and
/// the catalogs' lists of points) is sealed with `MetadataSeal` under names bound to the archive
/// id and the record's place, so a manifest moved to another archive or another position, or a
/// catalog moved to another volume, does not open.
struct ArchiveKeys {
    let master: MasterKey
    let archive: ArchiveID
    let seal: MetadataSeal

    /// An encrypted archive's label `created`: the field stays (older readers require it), the
    /// time does not.
    static let hiddenTime = "1970-01-01T00:00:00Z"

    init(master: MasterKey, archive: ArchiveID) {
        self.master = master
        self.archive = archive
        seal = MetadataSeal(keys: master)
    }

    /// The name the `ordinal`-th manifest record (from 0) of the archive is sealed as.
    func manifestName(_ ordinal: Int) -> String { "archive/\(archive.hex)/points/\(ordinal)" }

    /// An encrypted archive's manifest record body: the manifest's position among the
    /// archive's manifests (u32 LE, from 0), then the manifest sealed under that position's name.
    func manifestRecord(_ plain: [UInt8], position: Int) -> [UInt8] {
        var writer = ByteWriter(capacity: 4 + plain.count + MetadataSeal.overhead)
        writer.le(UInt32(position))
        writer.append(seal.seal(plain, name: manifestName(position)))
        return writer.bytes
    }

    /// The position and sealed file of a manifest record body.
    static func splitManifest(_ body: [UInt8]) throws(CairnError) -> (UInt32, [UInt8]) {
        guard body.count >= 4 + MetadataSeal.overhead else {
            throw CairnError(.damaged, "it is too short for a sealed manifest")
        }
        let position = UInt32(body[0]) | UInt32(body[1]) << 8 | UInt32(body[2]) << 16 | UInt32(body[3]) << 24
        return (position, Array(body[4...]))
    }

    /// The name the list of restore points in volume `volume`'s catalog is sealed as.
    func catalogName(_ volume: Int) -> String { "archive/\(archive.hex)/catalog/\(volume)" }

    /// A sealed catalog's points, as base64 text for its JSON.
    func sealPoints(_ points: [ArchivePointEntry], volume: Int) throws(CairnError) -> String {
        let plain = Array(try JSONCoding.encode(points).utf8)
        return Data(seal.seal(plain, name: catalogName(volume))).base64EncodedString()
    }

    /// The points a sealed catalog lists; `.damaged` if they do not open.
    func openPoints(_ text: String, volume: Int) throws(CairnError) -> [ArchivePointEntry] {
        guard let sealed = Data(base64Encoded: text) else {
            throw CairnError(.damaged, "the catalog of volume \(volume) is damaged: its sealed points are not base64")
        }
        let plain = try seal.open(Array(sealed), name: catalogName(volume))
        return try JSONCoding.decode(
            [ArchivePointEntry].self, from: plain, what: "the sealed points of volume \(volume)'s catalog")
    }

    /// A decoder that opens this archive's sealed records and proves chunks by their keyed ids.
    static func decoder(_ master: MasterKey?, outputBytes: Int) -> RecordDecoder {
        guard let master else { return RecordDecoder(outputBytes: outputBytes) }
        return RecordDecoder(
            codec: SealedRecordCodec(dataKey: master.dataKey), hasher: ChunkHasher(idKey: master.idKey),
            outputBytes: outputBytes)
    }

    /// Whether a label says its archive is encrypted.
    static func isEncrypted(_ label: ArchiveLabel) -> Bool {
        label.features?.contains(FormatFeature.encryption) == true
    }

    /// Why an encrypted label cannot be opened at all (no keys, or keys of another repository),
    /// or nil.
    static func problem(with label: ArchiveLabel) -> String? {
        guard let fingerprint = label.fingerprint, let keys = label.keys, !keys.isEmpty else {
            return "the label of an encrypted archive carries no key files"
        }
        for key in keys {
            if key.repository.lowercased() != label.repository.lowercased()
                || key.fingerprint.lowercased() != fingerprint.lowercased()
            {
                return "key file \(key.id) in the label belongs to another repository or master key"
            }
            if let problem = key.kdf.parameters.problem {
                return "key file \(key.id) in the label is refused: \(problem)"
            }
        }
        return nil
    }

    /// The master key that `passphrase` opens among the label's key files; `.passphrase` (one
    /// line) when it opens none.
    static func unlock(_ label: ArchiveLabel, passphrase: [UInt8]) throws(CairnError) -> MasterKey {
        if let problem = problem(with: label) { throw CairnError(.badArchive, problem) }
        let keys = label.keys ?? []
        for key in keys {
            if let master = try key.unwrap(passphrase) { return master }
        }
        let which = keys.count == 1 ? "does not open the key" : "opens none of the \(keys.count) keys"
        throw CairnError(.passphrase, "the passphrase \(which) of archive \(label.archive)")
    }

    /// What a reader does with an encrypted archive's label: unlock it with the passphrase, or
    /// (when `required` is false and no passphrase is given) read it without its content.
    static func unlocker(
        passphrase: (() throws(CairnError) -> [UInt8])?, required: Bool, operation: String
    ) -> (ArchiveLabel) throws(CairnError) -> MasterKey? {
        { (label: ArchiveLabel) throws(CairnError) -> MasterKey? in
            guard isEncrypted(label) else { return nil }
            guard let passphrase else {
                if let problem = problem(with: label) { throw CairnError(.badArchive, problem) }
                if !required { return nil }
                throw CairnError(
                    .usage,
                    "archive \(label.archive) is encrypted: \(operation) needs its passphrase (set CAIRN_PASSWORD_FILE or pass --password-command)"
                )
            }
            return try unlock(label, passphrase: try passphrase())
        }
    }
}
