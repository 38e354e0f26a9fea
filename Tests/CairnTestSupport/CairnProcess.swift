public import Foundation

/// Runs the `cairn` binary built beside the tests, as an administrator's shell would.
public enum CairnProcess {
    public struct Outcome: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String

        public init(status: Int32, stdout: String, stderr: String) {
            self.status = status
            self.stdout = stdout
            self.stderr = stderr
        }
    }

    /// The `cairn` executable in the same build folder as the running test bundle.
    public static let executable: String = {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("cairn").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return "cairn"
    }()

    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String] = [:], stdin: Data? = nil) -> Outcome {
        Subprocess.run(executable, arguments, environment: environment, stdin: stdin)
    }
}

/// Runs any program and collects its output.
public enum Subprocess {
    public static func run(
        _ program: String, _ arguments: [String], environment: [String: String] = [:], stdin: Data? = nil
    ) -> CairnProcess.Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program.hasPrefix("/") ? program : "/usr/bin/env")
        process.arguments = program.hasPrefix("/") ? arguments : [program] + arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "CAIRN_REPO")
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = input
        do {
            try process.run()
        } catch {
            return .init(status: -1, stdout: "", stderr: "cannot run \(program): \(error)")
        }
        if let stdin {
            input.fileHandleForWriting.write(stdin)
        }
        try? input.fileHandleForWriting.close()
        // Read both pipes concurrently so neither fills up.
        let errData = LockedData()
        let reader = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
        reader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errData.done { usleep(1000) }
        return .init(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData.data, as: UTF8.self))
    }

    /// Runs a shell command line; for test set-up with standard tools (qemu-img, dd, cmp).
    @discardableResult
    public static func shell(_ command: String) -> CairnProcess.Outcome {
        run("/bin/bash", ["-c", command])
    }
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = Data()
    private var finished = false

    func set(_ data: Data) {
        lock.lock()
        stored = data
        finished = true
        lock.unlock()
    }

    var done: Bool {
        lock.lock()
        defer { lock.unlock() }
        return finished
    }

    var data: Data {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}
