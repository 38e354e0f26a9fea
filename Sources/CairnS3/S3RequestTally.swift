import CairnCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How many requests of each kind this process sent to the store (tries, retries included), so
/// that an administrator can see what a night costs (`cairn -v` prints it at exit) and tests can
/// compare it with docs/research's table. LIST is a GET on the bucket itself.
public enum S3RequestTally {
    private static let counts = Mutex<[String: Int]>([:])

    public static func record(_ method: String, path: String) {
        // "/bucket" or "/bucket/": the bucket itself, listed (a key has a second segment).
        let isBucket = path.dropFirst().split(separator: "/", omittingEmptySubsequences: true).count <= 1
        let kind = method == "GET" && isBucket ? "LIST" : method
        counts.withLock { $0[kind, default: 0] += 1 }
        CairnLog.logger.debug("s3 \(kind) \(path)")
    }

    /// "s3 requests: 12 (PUT 7, GET 2, LIST 2, DELETE 1)", or nil if none was sent.
    public static var summary: String? {
        let now = counts.withLock { $0 }
        guard !now.isEmpty else { return nil }
        let order = ["PUT", "GET", "HEAD", "LIST", "DELETE"]
        let kinds = now.keys.sorted { (order.firstIndex(of: $0) ?? 9, $0) < (order.firstIndex(of: $1) ?? 9, $1) }
        let total = now.values.reduce(0, +)
        return "s3 requests: \(total) (\(kinds.map { "\($0) \(now[$0]!)" }.joined(separator: ", ")))"
    }

    /// Logs `summary` (at info level: shown with `-v`) when the process exits.
    public static func logAtExit() {
        guard !registered.exchange(true, ordering: .relaxed) else { return }
        atexit {
            if let line = S3RequestTally.summary { CairnLog.logger.info("\(line)") }
        }
    }

    private static let registered = Atomic<Bool>(false)
}
