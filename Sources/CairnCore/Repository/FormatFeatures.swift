/// The features of the on-disk format that a reader must understand, named in the repository
/// config and in every archive label (docs/FORMAT.md, "config"; docs/ARCHIVE-FORMAT.md, "Label").
///
/// Like qcow2's incompatible feature bits: the format version says how the files are laid
/// out, the features say what may be in them. A Cairn that meets a feature it does not know
/// refuses the repository or archive, naming the feature, instead of misreading it. A feature
/// is added to the list when a new kind of record or file appears (`encryption`, an
/// object-store layout), so an older Cairn stops at the door.
public enum FormatFeature {
    /// Frame records: several data chunks compressed together, listed in pack tables as
    /// `framed` entries and in version-2 index segments with their offset in the frame.
    public static let frames = "frames"

    /// An encrypted repository: keyed chunk ids, sealed records and metadata, key files in
    /// `keys/` (docs/FORMAT.md, "Encryption").
    public static let encryption = "encryption"

    /// A repository on an object store shared by hosts (`s3://BUCKET/PREFIX`): leases in
    /// `locks/` instead of flocks (docs/FORMAT.md, "Object-store layout"). An older Cairn, which
    /// would take flocks that no other host sees, refuses it by this name.
    public static let objectStore = "object-store"

    /// What this Cairn reads. An encrypted repository opens only with its passphrase
    /// (`Repository.init`), an encrypted archive with one of its label's keys (`ArchiveKeys`).
    public static let known: Set<String> = [frames, encryption, objectStore]

    /// What `cairn key` accepts beyond `known`: nothing more today (it was `encryption` while
    /// only keys were implemented).
    public static let keysOnly: Set<String> = []

    /// What this Cairn may write, so what it marks every config and label it writes with.
    public static let written: [String] = [frames]

    /// The first feature in `features` this Cairn does not know, if any.
    static func unknown(in features: [String], alsoKnown: Set<String> = []) -> String? {
        features.first { !known.contains($0) && !alsoKnown.contains($0) }
    }

    /// The one-line refusal of a repository or archive (`what`) that lists `feature`.
    static func refusal(_ what: String, feature: String, code: CairnError.Code) -> CairnError {
        CairnError(
            code,
            "\(what) uses the format feature '\(feature)', which this Cairn does not support: use a Cairn that does")
    }

    /// `features` with every feature this Cairn writes added (order kept, no repeats).
    static func adding(_ features: [String]?) -> [String] {
        var all = features ?? []
        for feature in written where !all.contains(feature) { all.append(feature) }
        return all
    }
}
