public import SystemPackage

/// A blocking NBD client for reading one export: the fixed newstyle handshake, structured replies,
/// metadata contexts (`base:allocation`, `qemu:dirty-bitmap:NAME`), and pipelined reads.
///
/// Protocol: `NetworkBlockDevice/nbd` `doc/proto.md`; what Cairn needs of it:
/// `../shared/research/live-vm.md` §1 and §6.1. One connection, used from one thread at a time.
/// Every length the server sends is checked against what was asked for (or a fixed bound) before
/// anything is allocated or written, and a server that errors, hangs up or stays silent for
/// `timeout` seconds fails the call with one line naming the export and the offset. After a
/// transport or protocol failure the connection is dead: every later call fails at once.
public final class NBDClient {
    /// How to negotiate.
    public struct Configuration: Sendable {
        /// Metadata contexts to select with `NBD_OPT_SET_META_CONTEXT` (ignored without structured
        /// replies). The server may select fewer; see `NBDClient.contexts`.
        public var metaContexts: [String]
        /// Seconds a send or receive may wait before the server counts as stalled.
        public var timeout: Double
        /// Ask for structured replies (needed for holes in READ replies and for block status).
        public var structuredReplies: Bool

        public static let defaultTimeout = 60.0

        public init(
            metaContexts: [String] = [NBDMetaContext.baseAllocation], timeout: Double = Self.defaultTimeout,
            structuredReplies: Bool = true
        ) {
            self.metaContexts = metaContexts
            self.timeout = timeout
            self.structuredReplies = structuredReplies
        }
    }

    public let uri: NBDURI
    public var exportName: String { uri.exportName }
    /// The export's size in bytes.
    public internal(set) var size: UInt64 = 0
    public internal(set) var transmissionFlags: NBDTransmissionFlags = []
    /// The server's block size constraints (`NBDBlockSize.assumed` if it sent none). Obeyed.
    public internal(set) var blockSize = NBDBlockSize.assumed
    /// True if the server agreed to structured replies.
    public internal(set) var structuredReplies = false
    /// The contexts the server selected, by name, with the ids it gave them.
    public internal(set) var contexts: [String: UInt32] = [:]

    /// Requests in flight at most (each up to `requestSize` bytes).
    let maxInFlight = 16
    /// Bytes one READ asks for at most: the server's maximum, capped so several are in flight.
    var requestSize: Int = 1 << 20

    let socket: NBDSocket
    var nextCookie: UInt64 = 1
    /// Set once the connection can no longer be trusted to be in step; later calls rethrow it.
    var broken: CairnError?
    var disconnected = false
    /// Set once the handshake is over: only then does `NBD_CMD_DISC` mean anything.
    var inTransmission = false
    /// Requests sent and not yet fully answered.
    var pending: [PendingRequest] = []
    /// Reused buffers: request/reply headers, one-block bounce, block status payloads.
    let scratch: UnsafeMutableRawBufferPointer
    var payload: UnsafeMutableRawBufferPointer
    /// The extents of the block status request in flight, for its context.
    var statusExtents: [NBDExtent] = []
    var statusContextID: UInt32 = 0
    var statusSeen = false

    static let scratchSize = 8192

    /// Connects, negotiates and enters transmission; throws a one-line `CairnError` on refusal.
    public convenience init(uri: NBDURI, configuration: Configuration = Configuration()) throws(CairnError) {
        let socket: NBDSocket
        do {
            switch uri.transport {
            case .unix(let path): socket = try NBDSocket.connect(unixPath: path, timeout: configuration.timeout)
            case .tcp(let host, let port):
                socket = try NBDSocket.connect(host: host, port: port, timeout: configuration.timeout)
            }
        } catch {
            throw CairnError(.io, "cannot connect to NBD server \(uri)", cause: error.text)
        }
        try self.init(uri: uri, socket: socket, configuration: configuration)
    }

    /// Negotiates over a stream socket that is already connected to the server (taking it over:
    /// the client closes it), for a peer handed over by socket activation or a `socketpair`,
    /// as the fuzz target does; `uri` names the export and appears in messages.
    public convenience init(
        uri: NBDURI, connectedSocket descriptor: FileDescriptor, configuration: Configuration = Configuration()
    ) throws(CairnError) {
        let socket: NBDSocket
        do {
            socket = try NBDSocket(adopting: descriptor.rawValue, timeout: configuration.timeout)
        } catch {
            throw CairnError(.io, "cannot use the socket of NBD server \(uri)", cause: error.text)
        }
        try self.init(uri: uri, socket: socket, configuration: configuration)
    }

    private init(uri: NBDURI, socket: NBDSocket, configuration: Configuration) throws(CairnError) {
        self.uri = uri
        self.socket = socket
        scratch = .allocate(byteCount: Self.scratchSize, alignment: 16)
        payload = .allocate(byteCount: 0, alignment: 16)
        try negotiate(configuration)
        inTransmission = true
        let minimum = Int(blockSize.minimum)
        let maximum =
            blockSize.maximum == NBDProtocol.unlimitedPayload
            ? Int(NBDProtocol.defaultMaxPayload) : Int(blockSize.maximum)
        requestSize = max(minimum, min(maximum, 1 << 20) / minimum * minimum)
    }

    deinit {
        disconnect()
        scratch.deallocate()
        payload.deallocate()
    }

    /// Ends the session cleanly with `NBD_CMD_DISC` (no reply is expected); safe to call twice.
    public func disconnect() {
        guard !disconnected else { return }
        disconnected = true
        guard inTransmission, broken == nil, pending.isEmpty else { return }
        let header = NBDRequestHeader(command: .disconnect, cookie: nextCookie, offset: 0, length: 0)
        header.encode(into: scratch)
        try? socket.send(UnsafeRawBufferPointer(rebasing: scratch[0..<NBDProtocol.requestHeaderSize]))
    }

    /// "NBD export "vda" (nbd+unix:///vda?socket=…)", the subject of every message.
    var subject: String { "NBD export \"\(exportName)\" (\(uri))" }

    /// Marks the connection dead and returns the error to throw.
    func fail(_ code: CairnError.Code, _ message: String, cause: String? = nil) -> CairnError {
        let error = CairnError(code, "\(subject): \(message)", cause: cause)
        if broken == nil { broken = error }
        return error
    }

    /// A transport failure while doing `what`, as one line.
    func fail(_ failure: NBDSocket.Failure, while what: String) -> CairnError {
        switch failure {
        case .timedOut:
            return fail(.io, "the server stopped answering while \(what)", cause: "no reply within the timeout")
        case .closed:
            return fail(.io, "the server closed the connection while \(what)")
        case .system(let errno):
            return fail(.io, "the connection failed while \(what)", cause: errno.description)
        }
    }

    func checkUsable() throws(CairnError) {
        if let broken { throw broken }
        if disconnected { throw CairnError(.usage, "\(subject): the connection was closed") }
    }
}

/// A run of an export's bytes with one status value in one metadata context.
public struct NBDExtent: Sendable, Hashable {
    public var length: UInt64
    /// The context's status bits (`NBDAllocationState` for base:allocation, `NBDDirtyState` for a
    /// dirty bitmap, a depth for qemu:allocation-depth).
    public var flags: UInt32

    public init(length: UInt64, flags: UInt32) {
        self.length = length
        self.flags = flags
    }
}
