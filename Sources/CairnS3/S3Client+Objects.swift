public import CairnCore
import NIOHTTP1

/// The object calls, each a `Request` and the statuses it expects.
extension S3Client {
    /// One page of a ListObjectsV2 reply.
    public struct ListPage: Sendable {
        public var keys: [(key: String, size: UInt64)]
        /// Where the next page starts, when the listing was truncated.
        public var continuation: String?
    }

    static func path(_ bucket: String, _ key: String? = nil) -> String {
        key.map { "/\(bucket)/\($0)" } ?? "/\(bucket)"
    }

    /// The request that writes `body` to `key` (`If-None-Match: *` when `createOnly`).
    public func putRequest(
        bucket: String, key: String, body: [UInt8], payloadHash: String? = nil, createOnly: Bool
    ) -> Request {
        Request(
            .PUT, Self.path(bucket, key), headers: createOnly ? [("if-none-match", "*")] : [], body: body,
            payloadHash: payloadHash, replyLimit: options.maxXMLReply, what: "PUT s3://\(bucket)/\(key)")
    }

    /// Checks a PUT's reply: a create-only PUT onto an existing key is `.exists`.
    public func checkPut(_ reply: Reply, bucket: String, key: String) throws(CairnError) {
        switch reply.status {
        case 200...299: return
        case 412: throw CairnError(.exists, "s3://\(bucket)/\(key) exists already at \(endpoint)")
        default: throw unexpected(reply, "PUT s3://\(bucket)/\(key)")
        }
    }

    /// Writes an object whole; with `createOnly`, fails with `.exists` if the key exists.
    public func put(
        bucket: String, key: String, body: [UInt8], payloadHash: String? = nil, createOnly: Bool = false
    ) throws(CairnError) {
        let reply = try send(
            putRequest(bucket: bucket, key: key, body: body, payloadHash: payloadHash, createOnly: createOnly))
        try checkPut(reply, bucket: bucket, key: key)
    }

    /// Reads `range` of an object (the whole object when nil). A range that starts at or past the
    /// end reads nothing; a missing key is `.notFound`.
    public func get(bucket: String, key: String, range: Range<UInt64>? = nil, limit: Int) throws(CairnError) -> [UInt8]
    {
        let what = "GET s3://\(bucket)/\(key)"
        var headers: [(String, String)] = []
        if let range {
            if range.isEmpty { return [] }
            headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
        }
        let reply = try send(Request(.GET, Self.path(bucket, key), headers: headers, replyLimit: limit, what: what))
        switch reply.status {
        case 200, 206:
            if let range, reply.status == 206, reply.body.count > range.count {
                throw CairnError(
                    .io, "\(what): \(reply.body.count) bytes came for a range of \(range.count): the store is broken")
            }
            if let range, reply.status == 200, range.lowerBound > 0 {
                throw CairnError(.io, "\(what): the store ignored the byte range asked for")
            }
            return reply.body
        case 416: return []
        case 404: throw CairnError(.notFound, "s3://\(bucket)/\(key) does not exist at \(endpoint)")
        default: throw unexpected(reply, what)
        }
    }

    /// The size of an object, or nil when it does not exist.
    public func head(bucket: String, key: String) throws(CairnError) -> UInt64? {
        let what = "HEAD s3://\(bucket)/\(key)"
        let reply = try send(Request(.HEAD, Self.path(bucket, key), replyLimit: options.maxXMLReply, what: what))
        switch reply.status {
        case 200:
            guard let length = reply.header("content-length").flatMap({ UInt64($0) }) else {
                throw CairnError(.io, "\(what): the reply has no Content-Length")
            }
            return length
        case 404: return nil
        default: throw unexpected(reply, what)
        }
    }

    /// The request that deletes `key`.
    public func deleteRequest(bucket: String, key: String) -> Request {
        Request(.DELETE, Self.path(bucket, key), replyLimit: options.maxXMLReply, what: "DELETE s3://\(bucket)/\(key)")
    }

    /// Checks a DELETE's reply; a key that was not there is no error.
    public func checkDelete(_ reply: Reply, bucket: String, key: String) throws(CairnError) {
        guard (200...299).contains(reply.status) || reply.status == 404 else {
            throw unexpected(reply, "DELETE s3://\(bucket)/\(key)")
        }
    }

    public func delete(bucket: String, key: String) throws(CairnError) {
        try checkDelete(try send(deleteRequest(bucket: bucket, key: key)), bucket: bucket, key: key)
    }

    /// One page (at most 1,000 keys) of the keys under `prefix`, in the store's order.
    public func listPage(bucket: String, prefix: String, continuation: String?) throws(CairnError) -> ListPage {
        let what = "the listing of s3://\(bucket)/\(prefix)"
        var query = [("list-type", "2"), ("prefix", prefix)]
        if let continuation { query.append(("continuation-token", continuation)) }
        let reply = try send(
            Request(.GET, Self.path(bucket), query: query, replyLimit: options.maxXMLReply, what: what))
        guard reply.status == 200 else { throw unexpected(reply, what) }
        return try Self.parseListPage(reply.body, prefix: prefix, what: what)
    }

    /// Every key under `prefix`, following continuation tokens.
    public func list(bucket: String, prefix: String) throws(CairnError) -> [(key: String, size: UInt64)] {
        var keys: [(key: String, size: UInt64)] = []
        var continuation: String?
        repeat {
            let page = try listPage(bucket: bucket, prefix: prefix, continuation: continuation)
            keys += page.keys
            continuation = page.continuation
        } while continuation != nil
        return keys
    }

    /// Reads a `ListBucketResult`; a truncated page must say where the next one starts, and
    /// every key must lie under the prefix asked for.
    static func parseListPage(_ body: [UInt8], prefix: String, what: String) throws(CairnError) -> ListPage {
        let root = try S3XML.parse(body, what: what)
        guard root.name == "ListBucketResult" else {
            throw CairnError(.io, "\(what) is a <\(oneLine(root.name))>, not a <ListBucketResult>")
        }
        var keys: [(key: String, size: UInt64)] = []
        for entry in root.children("Contents") {
            guard let key = entry.text(of: "Key"), !key.isEmpty,
                let size = entry.text(of: "Size").flatMap({ UInt64($0) })
            else { throw CairnError(.io, "\(what) has an entry without a key or a size") }
            keys.append((key, size))
        }
        if let stray = keys.first(where: { !$0.key.hasPrefix(prefix) }) {
            throw CairnError(.io, "\(what) names \(oneLine(stray.key)), which is not under \(oneLine(prefix))")
        }
        var continuation: String?
        switch root.text(of: "IsTruncated") {
        case "true":
            guard let token = root.text(of: "NextContinuationToken"), !token.isEmpty else {
                throw CairnError(.io, "\(what) is truncated but gives no NextContinuationToken")
            }
            continuation = token
        case "false", nil: break
        case let other?: throw CairnError(.io, "\(what) has IsTruncated '\(oneLine(other))'")
        }
        return ListPage(keys: keys, continuation: continuation)
    }

    /// Creates a bucket; one this user already owns is no error.
    public func createBucket(_ bucket: String) throws(CairnError) {
        let what = "creating bucket \(bucket)"
        let reply = try send(Request(.PUT, Self.path(bucket), replyLimit: options.maxXMLReply, what: what))
        if (200...299).contains(reply.status) { return }
        if reply.status == 409,
            Self.describe(status: 409, body: reply.body, xmlLimit: options.maxXMLReply).contains(
                "BucketAlreadyOwnedByYou")
        {
            return
        }
        throw unexpected(reply, what)
    }
}
