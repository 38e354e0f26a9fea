#if canImport(Glibc)
    import Glibc
#endif

/// What one run of a command tells the monitoring: when it ran, how long, how it ended, and how
/// many bytes it moved. One run is one series in the metrics file (`MetricsFile`), keyed by
/// repository, command and group.
public struct RunMetrics: Sendable, Equatable {
    /// The series a run belongs to. `group` is empty for a command over the whole repository
    /// (verify, gc, prune without one `--group`).
    public struct Key: Hashable, Sendable, Comparable {
        public var repository: String
        public var command: String
        public var group: String

        public init(repository: String, command: String, group: String) {
            self.repository = repository
            self.command = command
            self.group = group
        }

        public static func < (a: Key, b: Key) -> Bool {
            (a.repository, a.command, a.group) < (b.repository, b.command, b.group)
        }
    }

    public var key: Key
    /// When the run ended, in seconds since 1970 (UTC).
    public var endTime: Double
    public var seconds: Double
    /// The process exit status the run ends with (README, "Exit codes").
    public var exitCode: Int32
    /// Bytes read from the sources (backup) or checked (verify).
    public var bytesRead: UInt64?
    /// Bytes of blocks new to the repository (backup).
    public var bytesNew: UInt64?
    /// Bytes added to the repository (backup), after compression.
    public var bytesStored: UInt64?
    /// Bytes given back (gc).
    public var bytesFreed: UInt64?

    public init(key: Key, endTime: Double, seconds: Double, exitCode: Int32) {
        self.key = key
        self.endTime = endTime
        self.seconds = seconds
        self.exitCode = exitCode
    }

    public var succeeded: Bool { exitCode == 0 }

    /// The wall clock in seconds since 1970, with its fraction (Prometheus's timestamps).
    public static func wallClock() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
