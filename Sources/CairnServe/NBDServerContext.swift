import CairnCore
import NIOCore
import NIOPosix
import Synchronization

/// Limits that keep one client from costing the server more than its share.
public struct NBDServerLimits: Sendable {
    /// The longest option a client may send (its data); longer ones are answered
    /// `NBD_REP_ERR_TOO_BIG` and their bytes discarded unread.
    public var maxOptionLength = 64 << 10
    /// Options one connection may send before it must enter transmission.
    public var maxOptions = 1024
    /// The largest READ (the maximum payload announced in `NBD_INFO_BLOCK_SIZE`).
    public var maxReadLength = 32 << 20
    /// Bytes of replies one connection may have queued or being read at once (one READ of
    /// `maxReadLength` is always let through); reading its socket stops above this, so a
    /// client that does not read its replies stalls only itself and holds at most this much.
    public var maxBytesInFlight = 8 << 20
    /// Requests one connection may have outstanding.
    public var maxRequestsInFlight = 64
    /// Extents one block-status reply may list (without `REQ_ONE`).
    public var maxExtents = 16_384
    /// Seconds a connection may take to reach transmission, its TLS handshake included: a
    /// client that stalls in either is closed then (and only ever holds its own connection).
    public var handshakeTimeout: Int64 = 60
    /// Connections at once; more are closed on arrival.
    public var maxConnections = 128

    public init() {}
}

/// What every connection of one server shares: the exports, the thread pool that reads the
/// repository, the limits, the TLS context (if TLS is required), the log and the list of live
/// connections (for a clean stop).
final class NBDServerContext: Sendable {
    let exports: NBDExportList
    let threadPool: NIOThreadPool
    let limits: NBDServerLimits
    /// Set when every client must start TLS (`NBD_OPT_STARTTLS`) before any other option.
    let tls: (any NBDTLSUpgrade)?
    let log: @Sendable (String) -> Void
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let counter = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)

    init(
        exports: NBDExportList, threadPool: NIOThreadPool, limits: NBDServerLimits, tls: (any NBDTLSUpgrade)?,
        log: @escaping @Sendable (String) -> Void
    ) {
        self.exports = exports
        self.threadPool = threadPool
        self.limits = limits
        self.tls = tls
        self.log = log
    }

    /// Registers a new connection; returns its number, or nil if the server is full or stopping.
    func admit(_ channel: any Channel) -> Int? {
        let admitted = connections.withLock { live -> Bool in
            guard !stopping.load(ordering: .relaxed), live.count < limits.maxConnections else { return false }
            live[ObjectIdentifier(channel)] = channel
            return true
        }
        guard admitted else { return nil }
        return counter.wrappingAdd(1, ordering: .relaxed).newValue
    }

    func remove(_ channel: any Channel) {
        _ = connections.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    var live: [any Channel] { connections.withLock { Array($0.values) } }
}

/// Tells a connection the server is stopping: finish the replies in flight, then close.
struct NBDDrainEvent: Sendable {}
