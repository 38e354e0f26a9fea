#if canImport(Glibc)
    import Glibc
#endif

/// Cairn's metrics in Prometheus's text exposition format, for node_exporter's textfile
/// collector (`--collector.textfile.directory`, Debian: /var/lib/prometheus/node-exporter).
///
/// Each run merges its own series into the file and keeps every other series (other groups,
/// commands, repositories), so one file serves every timer. The file is replaced atomically
/// (temporary file, fsync, rename): the collector never reads half a file. Concurrent runs take
/// an flock on a hidden lock file beside it, so neither loses the other's series.
///
/// After a failed run the series keeps the last success's time and byte counts: an alert on
/// `time() - cairn_last_success_timestamp_seconds` fires however the nights fail.
public struct MetricsFile: Sendable {
    /// One series' values, by metric name (without the `cairn_` prefix).
    public typealias Values = [String: Double]

    public var series: [RunMetrics.Key: Values] = [:]

    /// The metrics Cairn writes, in the order they are written, with their help text.
    public static let metrics: [(name: String, help: String)] = [
        ("last_run_timestamp_seconds", "When the last run of the command ended, successful or not (Unix time)."),
        ("last_success_timestamp_seconds", "When the last successful run of the command ended (Unix time)."),
        ("last_duration_seconds", "How long the last run took."),
        ("last_exit_code", "The exit status of the last run (0 success; README lists the others)."),
        ("last_bytes_read", "Bytes the last successful run read (backup: from the sources; verify: checked)."),
        ("last_bytes_new", "Bytes of blocks new to the repository in the last successful backup."),
        ("last_bytes_stored", "Bytes the last successful backup added to the repository, compressed."),
        ("last_bytes_freed", "Bytes the last successful gc gave back."),
    ]

    static let prefix = "cairn_"
    /// The most a metrics file may hold before Cairn refuses to read it as its own.
    static let maxFileSize = 4 << 20

    public init() {}

    /// Adds or updates the series of one run.
    public mutating func record(_ run: RunMetrics) {
        var values = series[run.key] ?? [:]
        values["last_run_timestamp_seconds"] = run.endTime
        values["last_duration_seconds"] = run.seconds
        values["last_exit_code"] = Double(run.exitCode)
        if run.succeeded {
            values["last_success_timestamp_seconds"] = run.endTime
            let counts: [(String, UInt64?)] = [
                ("last_bytes_read", run.bytesRead), ("last_bytes_new", run.bytesNew),
                ("last_bytes_stored", run.bytesStored), ("last_bytes_freed", run.bytesFreed),
            ]
            for (name, value) in counts {
                if let value { values[name] = Double(value) }
            }
        }
        series[run.key] = values
    }

    /// The file's text: a HELP and TYPE line per metric, then its samples, sorted by key.
    public func render() -> String {
        var text = ""
        let keys = series.keys.sorted()
        for metric in Self.metrics {
            let samples = keys.compactMap { key in series[key]?[metric.name].map { (key, $0) } }
            guard !samples.isEmpty else { continue }
            text += "# HELP \(Self.prefix)\(metric.name) \(metric.help)\n"
            text += "# TYPE \(Self.prefix)\(metric.name) gauge\n"
            for (key, value) in samples {
                text += "\(Self.prefix)\(metric.name){\(Self.labels(key))} \(Self.format(value))\n"
            }
        }
        return text
    }

    static func labels(_ key: RunMetrics.Key) -> String {
        "command=\"\(escape(key.command))\",group=\"\(escape(key.group))\",repository=\"\(escape(key.repository))\""
    }

    /// Label values escape backslash, double quote and line feed (the exposition format's rules).
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    /// Whole numbers print without a fraction (byte counts, exit codes); times keep milliseconds.
    static func format(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return Units.formatDecimal(value, places: 3)
    }

    // MARK: The file on disk

    /// Merges `run` into the file at `path`, creating it (mode 0644, so node_exporter's user can read
    /// it) if needed. A file that cannot be parsed as Cairn's is replaced.
    public static func update(_ path: String, with run: RunMetrics, lockWait: Double = 30) throws(CairnError) {
        let lock = try lockFile(for: path, wait: lockWait)
        defer { lock.unlock() }
        var file = MetricsFile()
        if FileSystem.exists(path) {
            let bytes = try FileSystem.readAll(path, limit: maxFileSize)
            file = MetricsFile(parsing: String(decoding: bytes, as: UTF8.self))
        }
        file.record(run)
        try writeReadable(Array(file.render().utf8), to: path)
    }

    private static func lockFile(for path: String, wait: Double) throws(CairnError) -> File {
        let lockPath = "\(FileSystem.directoryName(path))/.\(FileSystem.baseName(path)).lock"
        let file: File
        if let existing = try? File.open(lockPath, .readWrite) {
            file = existing
        } else if let created = try? File.open(lockPath, .createNew) {
            file = created
        } else {
            file = try File.open(lockPath, .readWrite)
        }
        let clock = Stopwatch()
        while try !file.tryLock(.exclusive) {
            guard clock.elapsed < wait else {
                throw CairnError(.busy, "\(lockPath) stayed locked by another cairn for \(Int(wait)) s")
            }
            usleep(50_000)
        }
        return file
    }

    /// `FileSystem.writeAtomically`, with the file made world-readable before it is renamed into
    /// place (Cairn's files are otherwise owner and group only, and systemd units run with umask 077).
    private static func writeReadable(_ bytes: [UInt8], to path: String) throws(CairnError) {
        let temporary = FileSystem.temporaryName(for: path)
        do {
            let file = try File.open(temporary, .createOrTruncate)
            try file.write(bytes, at: 0)
            try file.setPermissions(0o644)
            try file.sync()
        } catch {
            try? FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.rename(temporary, to: path)
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }
}
