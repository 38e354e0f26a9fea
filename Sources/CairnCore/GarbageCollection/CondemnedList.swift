/// The packs one gc run found unneeded in a repository that several hosts share, kept until a
/// later run deletes them (docs/FORMAT.md, "Condemned lists"; docs/INTEGRITY.md, "Garbage
/// collection beside backups").
///
/// On an object store gc runs beside backups, so a pack that no restore point needs when gc
/// looks may be needed by a backup that began before and has not committed yet: it deduplicated
/// against the pack's chunks, or uploaded the pack itself and has not written the segment that
/// names it. So gc only condemns (phase 1): it writes this list, create-only, and deletes
/// nothing. Every process that opens the store afterwards treats a condemned pack as absent for
/// deduplication (a backup stores such a chunk again) and reads it only when no other copy is
/// indexed. A later gc (phase 2) takes the list once `notBefore` has passed and no group lease
/// taken before `created` (with a margin for clocks) is still live, marks again, and deletes
/// each condemned pack none of whose records a restore point still needs without another copy;
/// the others it revives (keeps). Then it drops their index entries and deletes the list last,
/// so a crash at any point leaves a list that the next run takes up again.
struct CondemnedList: Codable, Sendable, Equatable {
    /// When gc wrote it (UTC, `2026-12-02T15:00:00Z`; gc's clock, checked against the store's).
    var created: String
    /// The earliest time a later gc may delete what it names.
    var notBefore: String
    /// The condemned packs, by id (hex).
    var packs: [String]

    static let prefix = "gc/"
    /// A list of 10 million packs is about 700 MB; far beyond any repository, and still bounded.
    static let readLimit = 1 << 30

    /// A new list's key: named by its creation time (so they sort) and a random tag.
    static func newKey(at time: Timestamp) -> String {
        "\(prefix)condemned-\(time.seconds)-\(Hex.encode(SecureRandom.bytes(4))).json"
    }

    var packIDs: [PackID] { packs.compactMap { PackID(hex: $0) } }

    var createdTime: Timestamp? { Timestamp(parsing: created) }
    var notBeforeTime: Timestamp? { Timestamp(parsing: notBefore) }

    /// Every list in `storage` with its key, oldest first. A list that cannot be read as one is
    /// left out with a warning: nothing it names is deleted by it (only a list read whole
    /// deletes), and gc removes it so the next run condemns afresh.
    static func all(in storage: any RepositoryStorage) throws(CairnError) -> (
        lists: [(key: String, list: CondemnedList)], damaged: [String]
    ) {
        var lists: [(key: String, list: CondemnedList)] = []
        var damaged: [String] = []
        for key in try storage.list(prefix: prefix) where key.hasSuffix(".json") && key.contains("/condemned-") {
            guard let bytes = try storage.readIfPresent(key, limit: readLimit) else { continue }
            do throws(CairnError) {
                lists.append((key, try JSONCoding.decode(CondemnedList.self, from: bytes, what: storage.describe(key))))
            } catch {
                CairnLog.logger.warning("\(error.message): gc ignores it and removes it")
                damaged.append(key)
            }
        }
        return (lists, damaged)
    }

    /// The packs every readable list in `storage` condemns.
    static func condemnedPacks(in storage: any RepositoryStorage) throws(CairnError) -> Set<PackID> {
        Set(try all(in: storage).lists.flatMap(\.list.packIDs))
    }
}
