import CairnCore
import CairnS3
import Foundation

/// How the command line reaches an `s3://` repository: `--endpoint` (else `$CAIRN_S3_ENDPOINT`),
/// `--region`, and the credentials of `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` or
/// `~/.aws/credentials` (`S3Credentials.fromEnvironment`), and where this host caches index
/// segments (`--cache-dir`, else `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`, else
/// `~/.cache/cairn`; none when not even `$HOME` is set).
struct ObjectStoreAccess {
    var endpoint: String?
    var region: String
    var cacheDirectory: String?

    static func defaultCacheDirectory(_ environment: [String: String]) -> String? {
        func set(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if let directory = set("CAIRN_CACHE_DIR") { return directory }
        if let xdg = set("XDG_CACHE_HOME") { return "\(xdg)/cairn" }
        return set("HOME").map { "\($0)/.cache/cairn" }
    }

    func storage(bucket: String, prefix: String) throws(CairnError) -> any RepositoryStorage {
        let environment = ProcessInfo.processInfo.environment
        guard let url = endpoint ?? environment["CAIRN_S3_ENDPOINT"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw CairnError(
                .usage,
                "s3://\(bucket)/\(prefix) needs the S3 store's address: pass --endpoint URL or set CAIRN_S3_ENDPOINT")
        }
        var options = S3Client.Options()
        options.region = region
        options.onRequest = { method, path in S3RequestTally.record(method.rawValue, path: path) }
        S3RequestTally.logAtExit()
        let client = S3Client(
            endpoint: try S3Endpoint(url: url), credentials: try S3Credentials.fromEnvironment(environment),
            options: options)
        return S3Storage(
            client: client, bucket: bucket, prefix: prefix,
            cacheDirectory: cacheDirectory ?? Self.defaultCacheDirectory(environment))
    }
}
