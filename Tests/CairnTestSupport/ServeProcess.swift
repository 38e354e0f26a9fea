public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `cairn serve` running as a process on a socket in a temporary directory, for tests that
/// point real NBD clients at it. Standard output and error go to files: the first line of
/// output (the `--json` status) says the server is listening.
public final class ServeProcess: @unchecked Sendable {
    public let socket: String
    public let process = Process()
    private let outPath: String
    private let errPath: String
    /// The `--json` status printed on start.
    public private(set) var status: [String: Any] = [:]

    /// Starts `cairn serve --repo REPO ARGS --socket DIR/serve.sock --json` (or, with `listen`,
    /// `--listen LISTEN` instead of the socket) and waits (up to 30 s) until it listens. Throws
    /// with its error output if it exits first.
    public init(
        repo: String, arguments: [String] = [], directory: String, listen: String? = nil,
        environment: [String: String] = [:]
    ) throws {
        socket = "\(directory)/serve.sock"
        outPath = "\(directory)/serve.out"
        errPath = "\(directory)/serve.err"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: CairnProcess.executable)
        let transport = listen.map { ["--listen", $0] } ?? ["--socket", socket]
        process.arguments = ["serve", "--repo", repo] + arguments + transport + ["--json"]
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "CAIRN_REPO")
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        for _ in 0..<3000 {
            let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first, text.contains("\n") {
                status = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
                return
            }
            if !process.isRunning { break }
            usleep(10_000)
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        throw QemuToolError(message: "cairn serve did not start (exit \(process.terminationStatus)): \(standardError)")
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// The exports from the status: name, uri, size, ...
    public var exports: [[String: Any]] { status["exports"] as? [[String: Any]] ?? [] }

    /// The URI of the first (or only) export.
    public var uri: String { exports.first?["uri"] as? String ?? "" }

    /// The TCP port the server bound (`--listen HOST:0` picks a free one), or 0.
    public var port: Int { status["port"] as? Int ?? 0 }

    public var standardError: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` and waits up to `timeout` seconds; returns the exit status (nil: still
    /// running, then killed).
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, timeout: Double = 30) -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }
}

/// A minimal NBD client over a raw unix socket, for what real clients never send: garbage,
/// oversized options, writes to a read-only export, a hang-up in the middle of a reply.
public final class RawNBDClient {
    public let fd: Int32

    /// Connects over TCP to 127.0.0.1:`port`.
    public init(tcpPort port: Int, timeout: Int = 10) throws {
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw QemuToolError(message: "cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    public init(socket path: String, timeout: Int = 10) throws {
        fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw QemuToolError(message: "cannot connect to \(path): errno \(errno)")
        }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(fd) }

    public func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    /// Sends all of `bytes`; false if the peer is gone.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    /// Exactly `count` bytes, or nil on end of stream, error or time-out.
    public func receive(_ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + done, count - done, 0) }
            if n <= 0 { return nil }
            done += n
        }
        return out
    }

    /// True once the server has closed the connection (reads end), within the time-out.
    public func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        while true {
            let n = Glibc.recv(fd, &byte, 1, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    // MARK: Encoding

    public static func be<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    public static func load<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value = value << 8 | T(bytes[offset + i]) }
        return value
    }

    /// Reads the 18-byte greeting and answers with fixed newstyle and no zeroes.
    public func greet() -> Bool {
        guard let greeting = receive(18) else { return false }
        guard Self.load(UInt64.self, greeting, at: 0) == 0x4E42_444D_4147_4943 else { return false }
        return send(Self.be(UInt32(3)))
    }

    public func sendOption(_ option: UInt32, _ data: [UInt8]) -> Bool {
        send(Self.be(UInt64(0x4948_4156_454F_5054)) + Self.be(option) + Self.be(UInt32(data.count)) + data)
    }

    /// One option reply: (option, type, data), or nil.
    public func receiveOptionReply() -> (option: UInt32, type: UInt32, data: [UInt8])? {
        guard let header = receive(20), Self.load(UInt64.self, header, at: 0) == 0x0003_E889_0455_65A9 else {
            return nil
        }
        let length = Int(Self.load(UInt32.self, header, at: 16))
        guard length <= 1 << 20, let data = receive(length) else { return nil }
        return (Self.load(UInt32.self, header, at: 8), Self.load(UInt32.self, header, at: 12), data)
    }

    /// STRUCTURED_REPLY, SET_META_CONTEXT base:allocation and GO for `export`; returns the size.
    public func open(_ export: String, structured: Bool = true) -> UInt64? {
        guard greet() else { return nil }
        if structured {
            guard sendOption(8, []), receiveOptionReply()?.type == 1 else { return nil }
            let name = Array(export.utf8)
            let query = Array("base:allocation".utf8)
            let data = Self.be(UInt32(name.count)) + name + Self.be(UInt32(1)) + Self.be(UInt32(query.count)) + query
            guard sendOption(10, data) else { return nil }
            while let reply = receiveOptionReply() {
                if reply.type == 1 { break }
                if reply.type != 4 { return nil }
            }
        }
        let name = Array(export.utf8)
        guard sendOption(7, Self.be(UInt32(name.count)) + name + Self.be(UInt16(0))) else { return nil }
        var size: UInt64?
        while let reply = receiveOptionReply() {
            if reply.type == 3, Self.load(UInt16.self, reply.data, at: 0) == 0 {
                size = Self.load(UInt64.self, reply.data, at: 2)
            }
            if reply.type == 1 { return size }
            if reply.type & 0x8000_0000 != 0 { return nil }
        }
        return nil
    }

    public func sendRequest(command: UInt16, flags: UInt16 = 0, cookie: UInt64, offset: UInt64, length: UInt32) -> Bool
    {
        send(
            Self.be(UInt32(0x2560_9513)) + Self.be(flags) + Self.be(command) + Self.be(cookie) + Self.be(offset)
                + Self.be(length))
    }

    /// A structured reply's chunks up to the DONE one: (type, payload) each; nil on a broken stream.
    public func receiveStructuredReply(cookie: UInt64) -> [(type: UInt16, payload: [UInt8])]? {
        var chunks: [(UInt16, [UInt8])] = []
        while true {
            guard let header = receive(20), Self.load(UInt32.self, header, at: 0) == 0x668E_33EF,
                Self.load(UInt64.self, header, at: 8) == cookie
            else { return nil }
            let length = Int(Self.load(UInt32.self, header, at: 16))
            guard length <= 64 << 20, let payload = receive(length) else { return nil }
            chunks.append((Self.load(UInt16.self, header, at: 6), payload))
            if Self.load(UInt16.self, header, at: 4) & 1 != 0 { return chunks }
        }
    }

    /// A simple reply's error value; nil on a broken stream.
    public func receiveSimpleReply(cookie: UInt64) -> UInt32? {
        guard let header = receive(16), Self.load(UInt32.self, header, at: 0) == 0x6744_6698,
            Self.load(UInt64.self, header, at: 8) == cookie
        else { return nil }
        return Self.load(UInt32.self, header, at: 4)
    }

    /// READ with structured replies: the error (0 for success) and the data.
    public func read(offset: UInt64, length: UInt32, cookie: UInt64 = 1) -> (error: UInt32, data: [UInt8])? {
        guard sendRequest(command: 0, cookie: cookie, offset: offset, length: length),
            let chunks = receiveStructuredReply(cookie: cookie)
        else { return nil }
        var data: [UInt8] = []
        for chunk in chunks {
            if chunk.type & 0x8000 != 0 { return (Self.load(UInt32.self, chunk.payload, at: 0), []) }
            if chunk.type == 1 { data += chunk.payload[8...] }
        }
        return (0, data)
    }
}
