public import CairnCore
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Where a server listens.
public enum NBDListenAddress: Sendable, CustomStringConvertible {
    /// A unix socket, created owner-only (0600).
    case unix(path: String)
    /// A TCP address (TLS with client certificates, or plain with `--insecure`).
    case tcp(host: String, port: Int)

    public var description: String {
        switch self {
        case .unix(let path): return path
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// A read-only NBD server over a repository's restore points, on swift-nio.
///
/// One event loop per core handles sockets and the protocol; repository reads (index pages,
/// decompression, SHA-256) run on a separate thread pool so they never block a loop.
public final class NBDServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let context: NBDServerContext
    private let channel: any Channel
    public let address: NBDListenAddress
    /// The port actually bound (for `--listen HOST:0`).
    public let boundPort: Int?

    /// Starts listening; returns once the socket accepts connections.
    ///
    /// With `tls`, every client must negotiate TLS (`NBD_OPT_STARTTLS`) and show a certificate
    /// the CA signed before it sees anything but `NBD_REP_ERR_TLS_REQD`.
    public static func start(
        exports: NBDExportList, address: NBDListenAddress, limits: NBDServerLimits = NBDServerLimits(),
        tls: (any NBDTLSUpgrade)? = nil, readThreads: Int, log: @escaping @Sendable (String) -> Void
    ) throws(CairnError) -> NBDServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: max(1, readThreads))
        pool.start()
        let context = NBDServerContext(exports: exports, threadPool: pool, limits: limits, tls: tls, log: log)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { channel in
                guard let number = context.admit(channel) else {
                    log(
                        "refused a connection: \(context.stopping.load(ordering: .relaxed) ? "stopping" : "at the limit of \(limits.maxConnections) connections")"
                    )
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NBDConnection(server: context, number: number))
                }
            }
        let channel: any Channel
        do {
            switch address {
            case .unix(let path):
                // Owner-only from the first moment: the socket is created under this umask.
                let old = umask(0o177)
                defer { umask(old) }
                channel = try bootstrap.bind(unixDomainSocketPath: path).wait()
            case .tcp(let host, let port):
                channel = try bootstrap.childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                    .bind(host: host, port: port).wait()
            }
        } catch {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            throw CairnError(.io, "cannot listen on \(address)", cause: "\(error)")
        }
        return NBDServer(group: group, context: context, channel: channel, address: address)
    }

    private init(
        group: MultiThreadedEventLoopGroup, context: NBDServerContext, channel: any Channel, address: NBDListenAddress
    ) {
        self.group = group
        self.context = context
        self.channel = channel
        self.address = address
        boundPort = channel.localAddress?.port
    }

    /// Stops accepting, lets every connection finish the replies it has in flight (at most
    /// `grace` seconds: a client that stopped reading its replies cannot hold the server up longer), closes them, and releases the threads. Removes a unix socket.
    public func stop(grace: Int64 = 10) {
        context.stopping.store(true, ordering: .relaxed)
        try? channel.close().wait()
        let live = context.live
        for connection in live {
            connection.pipeline.fireUserInboundEventTriggered(NBDDrainEvent())
        }
        let deadline = NIODeadline.now() + .seconds(grace)
        for connection in live {
            let closed = connection.closeFuture
            let timeout = connection.eventLoop.scheduleTask(deadline: deadline) { connection.close(promise: nil) }
            try? closed.wait()
            timeout.cancel()
        }
        try? context.threadPool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
        if case .unix(let path) = address { unlink(path) }
    }
}
