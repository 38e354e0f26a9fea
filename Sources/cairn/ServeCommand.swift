import ArgumentParser
import CairnCore
import CairnServe
import CairnServeTLS
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve restore points read-only over NBD, straight from the repository.",
        discussion: """
            Each disk of each named restore point (all of them if none is named) becomes an NBD export
            named GROUP@TIME/DISK; GROUP@latest/DISK also works, and the empty name when there is one
            export. Every block is proved by its SHA-256 before it is sent; a damaged block fails its
            read with EIO. Holds the repository's shared lock (gc waits or fails). SIGTERM or SIGINT
            stops it after the replies in flight: exit 0.

            Over TCP (--listen) every client must start TLS (NBD_OPT_STARTTLS, an nbds:// URI) and
            show a certificate signed by --tls-ca; plain TCP needs --insecure. --listen HOST:0 binds
            a free port: the status (--json "listen") says which.
            """)

    @OptionGroup var repository: RepositoryOptions

    @Argument(
        help: "Restore points to serve: GROUP@TIME or GROUP@latest (default: every restore point).",
        completion: Completions.restorePoints)
    var ids: [String] = []

    @Option(help: "Unix socket to listen on (created owner-only, 0600; must not exist).", completion: Completions.files)
    var socket: String?

    @Option(help: "TCP address to listen on, HOST:PORT (port 0: any free one); needs --tls-* or --insecure.")
    var listen: String?

    @Option(
        help: "Server certificate (PEM, with SAN naming the address clients connect to) for TLS on --listen.",
        completion: Completions.files)
    var tlsCert: String?

    @Option(help: "Private key (PEM) of --tls-cert.", completion: Completions.files)
    var tlsKey: String?

    @Option(
        help: "CA certificate (PEM) that every client's certificate must be signed by.", completion: Completions.files)
    var tlsCa: String?

    @Flag(help: "Allow plain TCP without TLS (any host that reaches the port reads the disks).")
    var insecure = false

    @Option(help: "Seconds a client may take to choose an export, TLS handshake included.")
    var handshakeTimeout = 60

    @Option(help: "Bound on decompressed data kept in memory (e.g. 256M, 1G).")
    var cacheSize = "256M"

    @Option(help: "Connections served at once.")
    var maxConnections = 128

    @Flag(help: "Print the status (socket, exports, URIs) as one JSON object on start.")
    var json = false

    func run() throws {
        try runReportingErrors { () throws(CairnError) in
            let address = try listenAddress()
            let tls = try tlsCredentials(address)?.makeUpgrade()
            guard (1...3600).contains(handshakeTimeout) else {
                throw CairnError(.usage, "--handshake-timeout \(handshakeTimeout) is not between 1 and 3600 seconds")
            }
            let cacheBytes = try parseSize(cacheSize, option: "--cache-size")
            guard cacheBytes >= 4 << 20, cacheBytes <= 1 << 40 else {
                throw CairnError(.usage, "--cache-size \(cacheSize) is not between 4M and 1T")
            }
            guard maxConnections >= 1 else { throw CairnError(.usage, "--max-connections must be at least 1") }
            // Cache frames and large replies: mapped on their own, so freed ones leave the process.
            HeapTuning.mapAllocations(ofAtLeast: 512 << 10)
            let repo = try repository.open()
            let lock = try repo.lock(.shared, purpose: "cairn serve", wait: try repository.lockWaitSeconds())
            defer { _ = lock }
            var points: [RestorePointID] = []
            if ids.isEmpty {
                points = try repo.catalog.allPoints()
            } else {
                for id in ids {
                    let point = try repo.catalog.resolve(id)
                    if !points.contains(point) { points.append(point) }
                }
            }
            guard !points.isEmpty else {
                throw CairnError(.notFound, "repository \(repo.path) has no restore points to serve")
            }
            let cache = RecordCache(capacity: Int(cacheBytes))
            var exports: [NBDExport] = []
            for point in points {
                let manifest = try repo.catalog.manifest(point)
                guard manifest.blockSize == repo.store.blockSize else {
                    throw CairnError(
                        .damaged, "restore point \(point) has block size \(manifest.blockSize), not the repository's")
                }
                for disk in manifest.disks {
                    exports.append(
                        NBDExport(reader: try DiskReader(repository: repo, id: point, disk: disk, cache: cache)))
                }
            }
            var limits = NBDServerLimits()
            limits.maxConnections = maxConnections
            limits.handshakeTimeout = Int64(handshakeTimeout)
            let server = try NBDServer.start(
                exports: NBDExportList(exports), address: address, limits: limits, tls: tls,
                // Twice the cores: a thread that waits for a frame another thread is loading
                // (nbdcopy's many requests into one frame) must not leave a core idle.
                readThreads: max(4, 2 * ProcessInfoCores.count),
                log: { line in Terminal.printError("cairn serve: \(line)") })
            let stopped = DispatchSemaphore(value: 0)
            var sources: [any DispatchSourceSignal] = []
            for number in [SIGTERM, SIGINT] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { stopped.signal() }
                source.resume()
                sources.append(source)
            }
            printStatus(server: server, exports: exports, address: address, tls: tls != nil, cacheBytes: cacheBytes)
            stopped.wait()
            Terminal.printError("cairn serve: stopping: finishing the replies in flight")
            server.stop()
            let stats = cache.statistics
            Terminal.printError("cairn serve: stopped (cache: \(stats.hits) hits, \(stats.misses) misses)")
            _ = sources
        }
    }

    private func listenAddress() throws(CairnError) -> NBDListenAddress {
        switch (socket, listen) {
        case (let path?, nil):
            guard !path.isEmpty, path.utf8.count < 108 else {
                throw CairnError(.usage, "--socket \(path) is not a usable unix socket path (at most 107 bytes)")
            }
            if FileSystem.exists(path) {
                throw CairnError(.exists, "\(path) already exists: remove it or choose another --socket")
            }
            return .unix(path: path)
        case (nil, let text?):
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65535).contains(port)
            else {
                throw CairnError(.usage, "--listen \(text) is not HOST:PORT (e.g. 127.0.0.1:10809)")
            }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return .tcp(host: host, port: port)
        default:
            throw CairnError(.usage, "give exactly one of --socket PATH and --listen HOST:PORT")
        }
    }

    private func shownAddress(_ server: NBDServer, _ address: NBDListenAddress) -> String {
        guard case .tcp(let host, let port) = address else { return "\(address)" }
        return "\(NBDListenAddress.tcp(host: host, port: server.boundPort ?? port))"
    }

    /// The TLS files, checked against the transport: TCP needs them (or --insecure), a unix
    /// socket (owner-only) takes none.
    private func tlsCredentials(_ address: NBDListenAddress) throws(CairnError) -> NBDTLSCredentials? {
        let given = [tlsCert, tlsKey, tlsCa].compactMap { $0 }
        if case .unix = address {
            guard given.isEmpty else {
                throw CairnError(.usage, "--tls-cert, --tls-key and --tls-ca are for --listen (TCP), not --socket")
            }
            return nil
        }
        if insecure {
            guard given.isEmpty else {
                throw CairnError(
                    .usage, "--insecure serves plain TCP: it cannot be combined with --tls-cert/--tls-key/--tls-ca")
            }
            return nil
        }
        guard let tlsCert, let tlsKey, let tlsCa else {
            throw CairnError(
                .usage,
                given.isEmpty
                    ? "--listen serves over TCP, which needs TLS with client certificates: give --tls-cert, --tls-key and --tls-ca (or --insecure to serve plain TCP)"
                    : "TLS needs all three of --tls-cert, --tls-key and --tls-ca")
        }
        for (option, path) in [("--tls-cert", tlsCert), ("--tls-key", tlsKey), ("--tls-ca", tlsCa)] {
            guard FileSystem.exists(path) else { throw CairnError(.notFound, "\(option) \(path) does not exist") }
        }
        return NBDTLSCredentials(certificatePath: tlsCert, keyPath: tlsKey, caPath: tlsCa)
    }

    private func printStatus(
        server: NBDServer, exports: [NBDExport], address: NBDListenAddress, tls: Bool, cacheBytes: UInt64
    ) {
        func uri(_ export: NBDExport) -> String {
            switch address {
            case .unix(let path): return export.unixURI(socket: path)
            case .tcp(let host, let port): return export.tcpURI(host: host, port: server.boundPort ?? port, tls: tls)
            }
        }
        if json {
            let status = ServeStatus(
                pid: Int(getpid()), socket: { if case .unix(let p) = address { return p } else { return nil } }(),
                listen: {
                    if case .tcp(let h, _) = address { return "\(h):\(server.boundPort ?? 0)" } else { return nil }
                }(),
                port: server.boundPort, tls: tls,
                cacheSize: cacheBytes,
                exports: exports.map {
                    .init(
                        name: $0.name, uri: uri($0), id: $0.reader.id.description, group: $0.reader.id.group,
                        time: $0.reader.id.time.description, disk: $0.reader.disk.name, size: $0.size)
                })
            print((try? JSONCoding.encode(status)) ?? "{}")
        } else {
            print(
                "serving \(exports.count) export\(exports.count == 1 ? "" : "s") on \(shownAddress(server, address))\(tls ? " (TLS, client certificates)" : "") (read-only); stop with SIGTERM or Ctrl-C"
            )
            for export in exports {
                print("\(uri(export))  (\(Units.formatBytes(export.size)))")
            }
        }
        fflush(nil)
    }
}

/// `cairn serve --json`: printed once, when the server accepts connections.
struct ServeStatus: Encodable {
    var pid: Int
    var socket: String?
    var listen: String?
    /// The TCP port bound (the one chosen when --listen asked for port 0).
    var port: Int?
    /// True when clients must use TLS (nbds:// URIs).
    var tls: Bool
    var cacheSize: UInt64
    var exports: [Export]

    struct Export: Encodable {
        var name: String
        var uri: String
        var id: String
        var group: String
        var time: String
        var disk: String
        var size: UInt64
    }
}

enum ProcessInfoCores {
    static var count: Int { max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 64)) }
}
