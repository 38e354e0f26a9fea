import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The Prometheus textfile Cairn writes: merged per repository, command and group, atomically,
/// readable by node_exporter's user, and accepted by Prometheus's own `promtool check metrics`.
@Suite struct MetricsFileTests {
    let dir = TemporaryDirectory()

    func run(_ command: String, group: String, exit: Int32, at time: Double, read: UInt64? = nil) -> RunMetrics {
        var run = RunMetrics(
            key: .init(repository: "/srv/cairn", command: command, group: group), endTime: time, seconds: 1.25,
            exitCode: exit)
        run.bytesRead = read
        run.bytesNew = read.map { $0 / 2 }
        run.bytesStored = read.map { $0 / 4 }
        return run
    }

    @Test func runsOfOtherGroupsAndCommandsAreKept() throws {
        let path = dir.file("cairn.prom")
        try MetricsFile.update(path, with: run("backup", group: "vm1", exit: 0, at: 1_764_550_000, read: 4096))
        try MetricsFile.update(path, with: run("backup", group: "vm2", exit: 0, at: 1_764_550_100, read: 8192))
        try MetricsFile.update(path, with: run("verify", group: "", exit: 0, at: 1_764_550_200))
        let file = MetricsFile(parsing: try String(contentsOfFile: path, encoding: .utf8))
        #expect(file.series.count == 3)
        let vm1 = file.series[.init(repository: "/srv/cairn", command: "backup", group: "vm1")]
        #expect(vm1?["last_bytes_read"] == 4096)
        #expect(vm1?["last_success_timestamp_seconds"] == 1_764_550_000)
        #expect(file.series[.init(repository: "/srv/cairn", command: "verify", group: "")]?["last_exit_code"] == 0)
    }

    /// A failed night moves the run time and exit code, never the last success or its byte counts:
    /// an alert on the success time fires however the nights fail.
    @Test func aFailureKeepsTheLastSuccess() throws {
        let path = dir.file("cairn.prom")
        try MetricsFile.update(path, with: run("backup", group: "vm1", exit: 0, at: 1_764_550_000, read: 4096))
        try MetricsFile.update(path, with: run("backup", group: "vm1", exit: 9, at: 1_764_636_400))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let values = MetricsFile(parsing: text).series[.init(repository: "/srv/cairn", command: "backup", group: "vm1")]
        #expect(values?["last_exit_code"] == 9)
        #expect(values?["last_run_timestamp_seconds"] == 1_764_636_400)
        #expect(values?["last_success_timestamp_seconds"] == 1_764_550_000)
        #expect(values?["last_bytes_read"] == 4096)
        #expect(text.contains("cairn_last_exit_code{command=\"backup\",group=\"vm1\",repository=\"/srv/cairn\"} 9\n"))
    }

    /// node_exporter runs as its own user: the file is world-readable whatever the umask, and no
    /// temporary file is left beside it.
    @Test func theFileIsReadableAndReplacedWhole() throws {
        let path = dir.file("cairn.prom")
        let old = umask(0o077)
        defer { umask(old) }
        try MetricsFile.update(path, with: run("gc", group: "", exit: 0, at: 1_764_550_000))
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o644)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(names.filter { $0.contains(".tmp-") }.isEmpty, "\(names)")
    }

    /// Label values with quotes, backslashes and newlines survive a write and a read, and lines
    /// that are not Cairn's (another tool's, a damaged one) are dropped rather than trusted.
    @Test func labelsRoundTripAndForeignLinesAreDropped() {
        var file = MetricsFile()
        let key = RunMetrics.Key(repository: "/srv/a \"b\"\\c\nd", command: "backup", group: "vm1")
        file.record(RunMetrics(key: key, endTime: 1_764_550_000.5, seconds: 2, exitCode: 0))
        let text =
            file.render() + "node_load1 0.5\ncairn_last_exit_code{command=\"backup\",group=\"x\" 3\n"
            + "cairn_last_exit_code{command=\"backup\",group=\"y\",repository=\"/r\"} NaN\n"
        let back = MetricsFile(parsing: text)
        #expect(back.series.count == 1)
        #expect(back.series[key]?["last_run_timestamp_seconds"] == 1_764_550_000.5)
    }

    /// The real judge: Prometheus's promtool lints the file (HELP, TYPE, names, label syntax).
    @Test func promtoolAcceptsTheFile() throws {
        let path = dir.file("cairn.prom")
        try MetricsFile.update(path, with: run("backup", group: "vm1", exit: 0, at: 1_764_550_000.123, read: 1 << 40))
        try MetricsFile.update(path, with: run("backup", group: "vm1", exit: 5, at: 1_764_550_100))
        try MetricsFile.update(path, with: run("prune", group: "", exit: 64, at: 1_764_550_200))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let check = Subprocess.run("promtool", ["check", "metrics"], stdin: Data(text.utf8))
        #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)\n\(text)")
        // And it can fail: a sample without its TYPE line's family is reported.
        let bad = Subprocess.run("promtool", ["check", "metrics"], stdin: Data("cairn_x{a=\"1\" 1\n".utf8))
        #expect(bad.status != 0)
    }
}
