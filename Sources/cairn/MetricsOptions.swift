import ArgumentParser
import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

/// `--metrics-file`: the commands a timer runs (backup, verify, prune, gc) record how they ended.
struct MetricsOptions: ParsableArguments {
    @Option(
        name: .customLong("metrics-file"),
        help: ArgumentHelp(
            "After the run, merge its metrics into this Prometheus textfile-collector file (default: $CAIRN_METRICS_FILE).",
            valueName: "path"))
    var metricsFile: String?

    static let environmentVariable = "CAIRN_METRICS_FILE"

    var path: String? {
        if let metricsFile { return metricsFile }
        if let env = getenv(Self.environmentVariable), !String(cString: env).isEmpty { return String(cString: env) }
        return nil
    }
}

/// Runs a command body as `runReportingErrors` does and, when a metrics file is asked for, merges
/// the run's outcome into it afterwards, whether it succeeded or failed. `body` fills in the byte
/// counts it knows. A metrics file that cannot be written costs a warning, not the run's exit status.
func runRecordingMetrics(
    _ options: MetricsOptions, command: String, repository: String, group: String = "",
    _ body: (inout RunMetrics) throws(CairnError) -> Void
) throws {
    let clock = Stopwatch()
    let key = RunMetrics.Key(
        repository: FileSystem.realPath(repository) ?? repository, command: command, group: group)
    var run = RunMetrics(key: key, endTime: 0, seconds: 0, exitCode: 0)
    var exit: ExitCode?
    do {
        try runReportingErrors { () throws(CairnError) in try body(&run) }
    } catch let code as ExitCode {
        exit = code
    }
    if let path = options.path {
        run.exitCode = exit?.rawValue ?? 0
        run.seconds = clock.elapsed
        run.endTime = RunMetrics.wallClock()
        do throws(CairnError) {
            try MetricsFile.update(path, with: run)
        } catch {
            Terminal.printError("cairn: warning: the metrics file was not updated: \(error.description)")
        }
    }
    if let exit { throw exit }
}
