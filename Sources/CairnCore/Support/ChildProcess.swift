#if canImport(Glibc)
    import Glibc
#endif

/// Runs a helper program (`qemu-img`, `virsh`) to its end and collects what it printed.
///
/// Foundation's `Process` waits for a child by polling its run loop, which costs about 50 ms a
/// run whatever the child does: a `--cbt` night that adds and drops a bitmap spent half its time
/// there. This spawns with `posix_spawn`, reads both pipes with `poll` (neither can fill and
/// stall the child) and reaps with `waitpid`, so a run costs what the child costs.
public enum ChildProcess {
    public struct Outcome: Sendable {
        /// The exit status, or 128 + the signal that killed the child.
        public var status: Int32
        /// The signal that ended the child, if one did (a timeout's SIGTERM or SIGKILL included).
        public var signal: Int32?
        /// The child's stdout and stderr, each at most `maxOutput` bytes (the rest was drained).
        public var output: [UInt8]
        public var errorOutput: [UInt8]
        /// Whether the child was stopped because it ran past the timeout.
        public var timedOut: Bool
    }

    /// Runs `program` (a path, or a name looked up on PATH) with `arguments`, stdin from
    /// /dev/null, the environment inherited with `environment` set on top. After `timeout`
    /// seconds the child gets SIGTERM, and SIGKILL a second later if it still runs.
    public static func run(
        _ program: String, _ arguments: [String], environment: [String: String] = [:], timeout: Double? = nil,
        maxOutput: Int = 1 << 20
    ) throws(CairnError) -> Outcome {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard makePipe(&outPipe) else { throw spawnError(program, errno) }
        guard makePipe(&errPipe) else {
            let code = errno
            close(outPipe[0])
            close(outPipe[1])
            throw spawnError(program, code)
        }
        let pid: pid_t
        do throws(CairnError) {
            pid = try spawn(program, arguments, environment: environment, stdout: outPipe[1], stderr: errPipe[1])
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])
        defer {
            close(outPipe[0])
            close(errPipe[0])
        }

        var output: [UInt8] = []
        var errorOutput: [UInt8] = []
        var open = [outPipe[0], errPipe[0]]
        let start = Stopwatch.monotonic()
        var termSentAt: Double?
        var timedOut = false
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while !open.isEmpty {
            var waitMs: Int32 = -1
            if let timeout {
                let now = Stopwatch.monotonic()
                if let sent = termSentAt {
                    if now - sent >= 1 { kill(pid, SIGKILL) }
                    waitMs = 100
                } else if now - start >= timeout {
                    timedOut = true
                    kill(pid, SIGTERM)
                    termSentAt = now
                    waitMs = 100
                } else {
                    waitMs = Int32(min(max((timeout - (now - start)) * 1000, 1), 60_000))
                }
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), waitMs)
            if ready < 0 && errno != EINTR { break }
            for entry in fds where entry.revents != 0 {
                let n = chunk.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    let keep = entry.fd == outPipe[0] ? maxOutput - output.count : maxOutput - errorOutput.count
                    if keep > 0 {
                        if entry.fd == outPipe[0] {
                            output += chunk[0..<min(n, keep)]
                        } else {
                            errorOutput += chunk[0..<min(n, keep)]
                        }
                    }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    open.removeAll { $0 == entry.fd }
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // The wait status: low 7 bits the signal (0 = exited), bits 8-15 the exit code.
        let signal = status & 0x7f
        if signal != 0 {
            return Outcome(
                status: 128 + signal, signal: signal, output: output, errorOutput: errorOutput, timedOut: timedOut)
        }
        return Outcome(
            status: (status >> 8) & 0xff, signal: nil, output: output, errorOutput: errorOutput, timedOut: timedOut)
    }

    /// A pipe whose ends other children do not inherit (close-on-exec).
    private static func makePipe(_ ends: inout [Int32]) -> Bool {
        guard pipe(&ends) == 0 else { return false }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return true
    }

    private static func spawn(
        _ program: String, _ arguments: [String], environment: [String: String], stdout: Int32, stderr: Int32
    ) throws(CairnError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)

        // The child starts with default signal handling and nothing blocked, whatever this
        // process set up for its own SIGINT/SIGTERM handling.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var merged: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let pair = String(cString: pointer)
            if let equals = pair.firstIndex(of: "=") {
                merged[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
            entry += 1
        }
        for (key, value) in environment { merged[key] = value }

        let argv = ([program] + arguments).map { strdup($0) }
        let envp = merged.map { strdup("\($0.key)=\($0.value)") }
        defer {
            for pointer in argv + envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, program, &actions, &attributes, argv + [nil], envp + [nil])
        guard result == 0 else { throw spawnError(program, result) }
        return pid
    }

    private static func spawnError(_ program: String, _ code: Int32) -> CairnError {
        let hint = code == ENOENT ? " (is it installed?)" : ""
        return CairnError(.io, "cannot run \(program)\(hint)", cause: String(cString: strerror(code)))
    }
}
