import AsyncHTTPClient
public import CairnCore
import NIOCore
public import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking S3 client for the few calls a repository needs: PUT (create-only with
/// `If-None-Match: *`), ranged GET, HEAD, DELETE, ListObjectsV2 and bucket creation; path-style,
/// every payload signed with its SHA-256 (`SigV4Signer`).
///
/// Cairn's storage seam is synchronous, and its callers are plain threads (the pipeline's) or
/// the main thread. Requests run on async-http-client's event loops; the calling thread waits for
/// the future (`EventLoopFuture.wait`, which refuses to run on an event loop), so no Swift task
/// is ever blocked and the cooperative pool is not involved. Several requests can be started at
/// once (`start`) and waited for in turn (`finish`).
///
/// Transient failures are retried with exponential backoff and jitter: a connection that fails
/// or stalls past `Options.readTimeout`, and 500, 502, 503 (SlowDown), 504, 408 and 429 replies.
/// Replies are read into memory only up to a bound (`S3Request.replyLimit`): a hostile or
/// broken server cannot make the client allocate without limit.
public final class S3Client: Sendable {
    public struct Options: Sendable {
        /// The region in the credential scope; single-zone RGW accepts `us-east-1`.
        public var region = "us-east-1"
        /// Tries per request, the first included.
        public var attempts = 6
        /// Backoff before the second try, doubled for each next one up to `maxBackoff` (seconds).
        public var firstBackoff = 0.2
        public var maxBackoff = 10.0
        /// Seconds to connect, and seconds without a byte from the server before the try fails.
        public var connectTimeout: Int64 = 10
        public var readTimeout: Int64 = 60
        /// Seconds one try may take in all (a 32 MiB pack on a slow link still fits).
        public var requestTimeout: Int64 = 900
        /// Largest XML reply read (a ListObjectsV2 page of 1,000 keys is about 300 KB).
        public var maxXMLReply = 8 << 20
        /// Largest difference, in seconds, between this host's clock and the store's `Date`
        /// before the client refuses to go on (`S3Client+Clock.swift`); nil checks nothing.
        public var maxClockSkew: Int64? = 300
        /// Called with each try's method and path (`/bucket/key`) as it is sent: request counts
        /// for tests and measurements; nil in normal runs.
        public var onRequest: (@Sendable (HTTPMethod, String) -> Void)?

        public init() {}
    }

    public let endpoint: S3Endpoint
    public let options: Options
    let signer: SigV4Signer
    private let http: HTTPClient
    /// Whether a reply's `Date` was compared with the local clock yet (once per client).
    private let clockChecked = Atomic<Bool>(false)

    public init(endpoint: S3Endpoint, credentials: S3Credentials, options: Options = Options()) {
        self.endpoint = endpoint
        self.options = options
        signer = SigV4Signer(credentials: credentials, region: options.region)
        let configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(options.connectTimeout), read: .seconds(options.readTimeout)),
            decompression: .disabled)
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    deinit {
        // Not the blocking shutdown: the last reference may go on any thread.
        http.shutdown { _ in }
    }

    // MARK: Requests

    /// One request, before it is signed. `path` is `/bucket` or `/bucket/key`, not encoded.
    public struct Request: Sendable {
        public var method: HTTPMethod
        public var path: String
        public var query: [(String, String)] = []
        public var headers: [(String, String)] = []
        public var body: [UInt8] = []
        /// Hex SHA-256 of `body`, when the caller has it already (a staged object hashed as it was
        /// written); computed otherwise.
        public var payloadHash: String?
        /// Largest reply body accepted.
        public var replyLimit: Int
        /// The request in a person's words, for errors: `PUT s3://bucket/key`.
        public var what: String

        public init(
            _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], headers: [(String, String)] = [],
            body: [UInt8] = [], payloadHash: String? = nil, replyLimit: Int, what: String
        ) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.body = body
            self.payloadHash = payloadHash
            self.replyLimit = replyLimit
            self.what = what
        }
    }

    /// A reply: status, headers and (bounded) body.
    public struct Reply: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: [UInt8]

        public func header(_ name: String) -> String? { headers.first(name: name) }
    }

    /// A request under way.
    public struct Pending: Sendable {
        let request: Request
        let future: EventLoopFuture<Reply>
    }

    /// Why one try failed, and whether another may succeed.
    enum Failure: Error {
        case retryable(String)
        case final(CairnError)
    }

    /// Sends a request, retrying transient failures; any status that is not retried is returned.
    public func send(_ request: Request) throws(CairnError) -> Reply {
        try send(request, after: nil)
    }

    /// Starts one try of a request without waiting for it.
    public func start(_ request: Request) throws(CairnError) -> Pending {
        let payloadHash = request.payloadHash ?? SHA256Hasher().digest(request.body).hex
        let amzDate = Self.amzDate(time(nil))
        var headers = request.headers
        headers += [("host", endpoint.hostHeader), ("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash)]
        let authorization = signer.authorization(
            method: request.method.rawValue, path: request.path, query: request.query, headers: headers,
            payloadHash: payloadHash, amzDate: amzDate)
        headers.append(("authorization", authorization))
        var url = "\(endpoint)\(SigV4Signer.uriEncode(request.path, keepSlash: true))"
        if !request.query.isEmpty {
            url +=
                "?"
                + request.query.map {
                    "\(SigV4Signer.uriEncode($0.0, keepSlash: false))=\(SigV4Signer.uriEncode($0.1, keepSlash: false))"
                }.joined(separator: "&")
        }
        let http: HTTPClient.Request
        do {
            http = try HTTPClient.Request(
                url: url, method: request.method, headers: HTTPHeaders(headers),
                body: request.body.isEmpty && request.method != .PUT ? nil : .bytes(request.body))
        } catch {
            throw CairnError(.usage, "\(request.what): cannot make a request for \(url)", cause: "\(error)")
        }
        let collector = ReplyCollector(
            dataLimit: request.replyLimit, errorLimit: options.maxXMLReply, hasBody: request.method != .HEAD)
        options.onRequest?(request.method, request.path)
        let task = self.http.execute(
            request: http, delegate: collector, deadline: .now() + .seconds(options.requestTimeout))
        return Pending(request: request, future: task.futureResult)
    }

    /// Waits for a started try; a transient failure is retried from here.
    public func finish(_ pending: Pending) throws(CairnError) -> Reply {
        switch wait(pending) {
        case .success(let reply): return reply
        case .failure(.final(let error)): throw error
        case .failure(.retryable(let reason)): return try send(pending.request, after: reason)
        }
    }

    private func send(_ request: Request, after firstFailure: String?) throws(CairnError) -> Reply {
        var last = firstFailure
        var attempt = firstFailure == nil ? 0 : 1
        while attempt < options.attempts {
            if attempt > 0 { backoff(attempt) }
            attempt += 1
            switch wait(try start(request)) {
            case .success(let reply): return reply
            case .failure(.final(let error)): throw error
            case .failure(.retryable(let reason)): last = reason
            }
        }
        throw CairnError(
            .io, "\(request.what) failed \(options.attempts) times at \(endpoint)", cause: last ?? "no reason given")
    }

    private func wait(_ pending: Pending) -> Result<Reply, Failure> {
        let reply: Reply
        do {
            reply = try pending.future.wait()
        } catch let error as ReplyCollector.TooLarge {
            return .failure(
                .final(
                    CairnError(
                        .io,
                        "\(pending.request.what): the reply from \(endpoint) is larger than \(error.limit) bytes, "
                            + "more than such a reply can be: it is not an S3 store, or it is broken")))
        } catch let error as HTTPClientError where error == .readTimeout {
            return .failure(.retryable("no reply within \(options.readTimeout) s"))
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            return .failure(.retryable("not done within \(options.requestTimeout) s"))
        } catch {
            return .failure(.retryable(Self.oneLine("\(error)")))
        }
        if let limit = options.maxClockSkew, let date = reply.header("date"),
            !clockChecked.exchange(true, ordering: .relaxed),
            let skewed = Self.clockSkewError(date: date, local: Int64(time(nil)), limit: limit, endpoint: endpoint)
        {
            clockChecked.store(false, ordering: .relaxed)  // every later request fails too
            return .failure(.final(skewed))
        }
        if [500, 502, 503, 504, 408, 429].contains(reply.status) {
            return .failure(
                .retryable(Self.describe(status: reply.status, body: reply.body, xmlLimit: options.maxXMLReply)))
        }
        return .success(reply)
    }

    private func backoff(_ attempt: Int) {
        let seconds = min(options.maxBackoff, options.firstBackoff * Double(1 << min(attempt - 1, 20)))
        let jittered = seconds * Double.random(in: 0.5...1.0)
        usleep(UInt32(jittered * 1_000_000))
    }

    // MARK: Errors

    /// The error for a reply no caller expected: its status and S3's code and message.
    public func unexpected(_ reply: Reply, _ what: String) -> CairnError {
        CairnError(
            .io,
            "\(what) at \(endpoint) failed: \(Self.describe(status: reply.status, body: reply.body, xmlLimit: options.maxXMLReply))"
        )
    }

    /// `HTTP 404 NoSuchBucket: The specified bucket does not exist`, from an S3 error document,
    /// or the status alone when the body is not one.
    static func describe(status: Int, body: [UInt8], xmlLimit: Int) -> String {
        var text = "HTTP \(status)"
        if status == 507 { text += " (the store is full)" }
        guard !body.isEmpty, body.count <= xmlLimit,
            let error = try? S3XML.parse(body, what: "the error reply"), error.name == "Error"
        else { return text }
        if let code = error.text(of: "Code"), !code.isEmpty { text += " \(oneLine(code))" }
        if let message = error.text(of: "Message"), !message.isEmpty { text += ": \(oneLine(message))" }
        return text
    }

    /// A server's text made safe for one line of a message: no control characters, at most 200 characters.
    static func oneLine(_ text: String) -> String {
        let cleaned = String(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : Character($0) })
        return cleaned.count > 200 ? String(cleaned.prefix(200)) + "…" : cleaned
    }

    /// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
    static func amzDate(_ seconds: time_t) -> String {
        var t = seconds
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }
}

extension S3Client {
    /// The access key id requests are signed with (never the secret).
    public var signerAccessKey: String { signer.credentials.accessKeyID }
}

/// Collects a reply's body up to a bound: `dataLimit` for a success (the object or range asked
/// for), `errorLimit` for anything else (an error document), so a hostile server cannot make the
/// client allocate more; a Content-Length above the bound fails at once.
///
/// `@unchecked Sendable`: async-http-client calls a delegate on its request's event loop only.
final class ReplyCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = S3Client.Reply

    struct TooLarge: Error {
        let limit: Int
    }

    private let dataLimit: Int
    private let errorLimit: Int
    private let hasBody: Bool
    private var status = 0
    private var headers = HTTPHeaders()
    private var limit = 0
    private var body = ByteBuffer()

    init(dataLimit: Int, errorLimit: Int, hasBody: Bool) {
        self.dataLimit = dataLimit
        self.errorLimit = errorLimit
        self.hasBody = hasBody
    }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        status = Int(head.status.code)
        headers = head.headers
        limit = (200..<300).contains(status) ? dataLimit : errorLimit
        // A HEAD reply's Content-Length is the object's, with no body behind it.
        if hasBody, let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > limit {
            return task.eventLoop.makeFailedFuture(TooLarge(limit: limit))
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ part: ByteBuffer) -> EventLoopFuture<Void> {
        guard body.readableBytes + part.readableBytes <= limit else {
            return task.eventLoop.makeFailedFuture(TooLarge(limit: limit))
        }
        var part = part
        body.writeBuffer(&part)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        S3Client.Reply(status: status, headers: headers, body: Array(body.readableBytesView))
    }
}
