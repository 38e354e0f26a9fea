import CairnCore
import Foundation

/// Runs qemu-img and qemu-io for tests that check Cairn against QEMU itself.
public enum QemuTools {
    public struct Output: Sendable {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String
    }

    /// Runs `tool` (looked up in PATH) with `arguments`, optionally in `directory`; waits for it.
    @discardableResult
    public static func run(_ tool: String, _ arguments: [String], in directory: String? = nil) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus, standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }

    /// Runs `tool` and throws with its error output unless it exits 0.
    @discardableResult
    public static func check(_ tool: String, _ arguments: [String], in directory: String? = nil) throws -> String {
        let output = try run(tool, arguments, in: directory)
        guard output.status == 0 else {
            throw QemuToolError(message: "\(tool) \(arguments.joined(separator: " ")) failed (\(output.status)): \(output.standardError)")
        }
        return output.standardOutput
    }

    /// SHA-256 (hex) of `qemu-img convert -O raw` of `image`, run in `directory` (QEMU resolves
    /// external data file names against its working directory).
    public static func rawDigest(of image: String, options: [String] = [], in directory: String? = nil) throws -> String {
        let temporary = try QemuTemporaryDirectory()
        let raw = temporary.path + "/guest.raw"
        try check("qemu-img", ["convert"] + options + ["-O", "raw", image, raw], in: directory)
        return try fileDigest(raw)
    }

    /// SHA-256 (hex) of a whole file.
    public static func fileDigest(_ path: String) throws -> String {
        let file = try File.open(path, .readOnly)
        let hasher = SHA256Hasher()
        hasher.start()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: UInt64 = 0
        while true {
            let n = try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += UInt64(n)
        }
        return hasher.finish().hex
    }
}

public struct QemuToolError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}

/// A fresh directory under /tmp, removed with its contents when the value is released.
public final class QemuTemporaryDirectory {
    public let path: String

    public init() throws {
        var template = Array("/tmp/cairn-qcow2-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw QemuToolError(message: "cannot create a temporary directory under /tmp")
        }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Copies `source` (a file or folder) into this directory under `name`.
    public func copy(_ source: String, as name: String) throws -> String {
        let target = path + "/" + name
        try FileManager.default.copyItem(atPath: source, toPath: target)
        return target
    }
}
