public import Foundation

/// A server process a test starts (`qemu-nbd`, `nbdkit`, `qemu-storage-daemon`) and always stops:
/// it runs in the foreground of a `Process`, is waited for until its socket exists, and is
/// terminated (SIGTERM, then SIGKILL) when the object goes away.
public final class BackgroundServer: @unchecked Sendable {
    public let process: Process
    public let socket: String
    private let stderrPipe = Pipe()
    private let stdinPipe = Pipe()
    private let stdoutPipe = Pipe()

    /// Starts `program arguments` and waits up to 10 s for `socket` to appear.
    public init(_ program: String, _ arguments: [String], socket: String, waitForSocket: Bool = true) throws {
        self.socket = socket
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [program] + arguments
        process.standardError = stderrPipe
        process.standardOutput = stdoutPipe
        process.standardInput = stdinPipe
        try process.run()
        guard waitForSocket else { return }
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) {
            guard process.isRunning, Date() < deadline else {
                stop()
                let err = String(decoding: stderrPipe.fileHandleForReading.availableData, as: UTF8.self)
                throw QemuToolError(message: "\(program) did not create \(socket): \(err)")
            }
            usleep(10_000)
        }
    }

    /// `nbd+unix:///EXPORT?socket=…` for this server's socket.
    public func uri(export: String = "") -> String { "nbd+unix:///\(export)?socket=\(socket)" }

    /// The server's standard input and output, for a QMP monitor on stdio.
    public var input: FileHandle { stdinPipe.fileHandleForWriting }
    public var output: FileHandle { stdoutPipe.fileHandleForReading }

    /// Kills the server now (SIGKILL), as a crash would.
    public func kill() {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Terminates the server and waits for it.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(2)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        kill()
    }

    deinit { stop() }
}

/// A QMP session over a `qemu-storage-daemon`'s stdio monitor (`--chardev stdio,id=m --monitor
/// chardev=m`), as QEMU's iotests drive it.
public final class QMPSession: @unchecked Sendable {
    private let server: BackgroundServer
    private var buffer = Data()

    /// Reads the greeting and negotiates capabilities.
    public init(_ server: BackgroundServer) throws {
        self.server = server
        _ = try readLine()
        _ = try execute(#"{"execute":"qmp_capabilities"}"#)
    }

    /// Sends one command and returns its `return` line; throws on an `error` reply.
    @discardableResult
    public func execute(_ command: String) throws -> String {
        server.input.write(Data((command + "\n").utf8))
        while true {
            let line = try readLine()
            if line.contains(#""event""#) { continue }
            if line.contains(#""error""#) { throw QemuToolError(message: "QMP \(command) failed: \(line)") }
            if line.contains(#""return""#) { return line }
        }
    }

    private func readLine() throws -> String {
        let deadline = Date().addingTimeInterval(20)
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                return line
            }
            let chunk = server.output.availableData
            if chunk.isEmpty {
                guard server.process.isRunning, Date() < deadline else {
                    throw QemuToolError(message: "qemu-storage-daemon's QMP monitor closed")
                }
                usleep(10_000)
            }
            buffer.append(chunk)
        }
    }
}
