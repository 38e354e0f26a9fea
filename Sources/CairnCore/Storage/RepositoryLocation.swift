/// Where `--repo` says the repository is: a local directory, or `s3://BUCKET[/PREFIX]`.
///
/// Parsed here only, so every command reads a location the same way. Which client reaches an
/// object store is the command line's business (`CairnS3`); the core only knows the names.
public enum RepositoryLocation: Equatable, Sendable, CustomStringConvertible {
    /// A directory on this host.
    case directory(String)
    /// A bucket of an S3 store, and the prefix of every key in it (empty, or ending in `/`).
    case objectStore(bucket: String, prefix: String)

    public static let s3Scheme = "s3://"

    /// Reads `text`: `s3://BUCKET[/PREFIX]` names an object store, anything else a directory.
    ///
    /// The bucket follows S3's naming rules (3 to 63 lower-case letters, digits, `.` and `-`,
    /// beginning and ending with a letter or digit); the prefix is `/`-separated parts without
    /// empty ones, `.` or `..`, so no key it forms can climb out of it.
    public init(parsing text: String) throws(CairnError) {
        guard text.hasPrefix(Self.s3Scheme) else {
            self = .directory(text)
            return
        }
        func bad(_ why: String) -> CairnError {
            CairnError(.usage, "the repository '\(text)' \(why) (expected s3://BUCKET or s3://BUCKET/PREFIX)")
        }
        let rest = text.dropFirst(Self.s3Scheme.count)
        let bucket = String(rest.prefix { $0 != "/" })
        var prefix = String(rest.dropFirst(bucket.count + 1))  // after the one `/`
        guard (3...63).contains(bucket.utf8.count) else { throw bad("names no bucket of 3 to 63 characters") }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        guard bucket.allSatisfy(allowed.contains), let first = bucket.first, let last = bucket.last,
            first != "." && first != "-", last != "." && last != "-"
        else {
            throw bad("has a bucket name S3 does not allow (lower-case letters, digits, '.' and '-')")
        }
        if prefix.hasSuffix("/") { prefix.removeLast() }
        if !prefix.isEmpty {
            let parts = prefix.split(separator: "/", omittingEmptySubsequences: false)
            guard !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                throw bad("has a prefix with an empty part, '.' or '..'")
            }
            guard !prefix.contains(where: { $0.isNewline || $0 == "?" || $0 == "#" }) else {
                throw bad("has a prefix with a line break, '?' or '#'")
            }
            prefix += "/"
        }
        self = .objectStore(bucket: bucket, prefix: prefix)
    }

    public var isObjectStore: Bool {
        if case .objectStore = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .directory(let path): return path
        case .objectStore(let bucket, let prefix): return "\(Self.s3Scheme)\(bucket)/\(prefix)"
        }
    }
}
