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
            throw QemuToolError(
                message:
                    "\(tool) \(arguments.joined(separator: " ")) failed (\(output.status)): \(output.standardError)")
        }
        return output.standardOutput
    }

    /// SHA-256 (hex) of `qemu-img convert -O raw` of `image`, run in `directory` (QEMU resolves
    /// external data file names against its working directory).
    public static func rawDigest(of image: String, options: [String] = [], in directory: String? = nil) throws -> String
    {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let raw = temporary.path + "/guest.raw"
        try check("qemu-img", ["convert"] + options + ["-O", "raw", image, raw], in: directory)
        return try fileDigest(raw)
    }

    /// Creates an encrypted qcow2 (`aes` or `luks`) at `path`; true on success.
    ///
    /// qemu-img benchmarks LUKS key derivation and fails at random on a loaded machine
    /// ("Unable to get accurate CPU usage"), so this tries several times with several iter-times.
    public static func makeEncryptedImage(format: String, at path: String, size: String = "1M") -> Bool {
        for iterTime in [10, 50, 100, 10, 50, 200, 20, 500] {
            try? FileManager.default.removeItem(atPath: path)
            let options =
                "encrypt.format=\(format),encrypt.key-secret=s0"
                + (format == "luks" ? ",encrypt.iter-time=\(iterTime)" : "")
            let output = try? run(
                "qemu-img",
                ["create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=cairn-test", "-o", options, path, size])
            if output?.status == 0 { return true }
        }
        return false
    }

    /// SHA-256 (hex) of a whole file.
    public static func fileDigest(_ path: String) throws -> String {
        try SHA256Hasher.digest(ofFile: path).hex
    }
}

public struct QemuToolError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
