import ArgumentParser
import CairnCore
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

@main
struct Cairn: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "Backups and restore points for virtual machine disks (raw and qcow2).",
        discussion: """
            Exit codes: 0 success, 1 unexpected failure, 3 repository missing or unusable, 4 not found,
            5 locked by another cairn process, 6 bad source image, 7 damaged data found, 8 output exists,
            9 I/O error (e.g. disk full), 10 bad archive, 11 libvirt refused or failed, 12 restore --allow-damaged
            wrote zeros, 13 `status`: a group is older than --max-age, 14 the passphrase opens none of the keys,
            64 command-line usage error, 130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM.
            """,
        version: "0.1.0",
        subcommands: [
            InitCommand.self, BackupCommand.self, ListCommand.self, ShowCommand.self, RestoreCommand.self,
            VerifyCommand.self, PruneCommand.self, ProtectCommand.self, UnprotectCommand.self, ForgetCommand.self,
            GCCommand.self, RebuildIndexCommand.self, RepairCommand.self, DiffCommand.self, ArchiveCommand.self,
            ServeCommand.self, StatusCommand.self, KeyCommand.self, DemoCommand.self,
        ]
    )
}

/// Options every repository command shares.
struct RepositoryOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "Repository directory, or s3://BUCKET[/PREFIX] (default: $CAIRN_REPO, else ./cairn-repo).",
        completion: Completions.directories)
    var repo: String?

    @Option(
        name: .long, help: "The S3 store of an s3:// repository, e.g. http://rgw1:7480 (default: $CAIRN_S3_ENDPOINT).")
    var endpoint: String?

    @Option(name: .long, help: "The S3 region an s3:// repository's requests are signed for.")
    var region = "us-east-1"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Where this host keeps copies of an s3:// repository's index segments.",
            discussion: "Default: $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn, else ~/.cache/cairn."),
        completion: Completions.directories)
    var cacheDir: String?

    @Option(
        name: .long, help: "Wait this long for a lock held by another cairn (e.g. 30s, 10m) instead of failing at once."
    )
    var lockWait: String?

    @Flag(name: .shortAndLong, help: "Log what cairn does to stderr.")
    var verbose = false

    /// Where an encrypted repository's passphrase comes from (`--password-command`, else
    /// `$CAIRN_PASSWORD_FILE`, else a prompt); hidden while encryption is (issue 14).
    @OptionGroup var passphraseSource: PassphraseOptions

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Open an encrypted repository with this host key (made by `cairn key add --new-host-key`; else $CAIRN_HOST_KEY).",
            valueName: "FILE"))
    var hostKey: String?

    /// What opens an encrypted repository: `--host-key`, else `--password-command`, else
    /// `$CAIRN_HOST_KEY`, else the passphrase's other sources. Unattended runs use a host key:
    /// it costs no scrypt (`HostKey`).
    func secret() throws(CairnError) -> KeySecret {
        if let hostKey { return .hostKey(try HostKey.read(hostKey)) }
        if passphraseSource.passwordCommand == nil, let file = Passphrase.environment("CAIRN_HOST_KEY") {
            return .hostKey(try HostKey.read(file))
        }
        return .passphrase(try passphraseSource.passphrase())
    }

    static let defaultRepository = "cairn-repo"

    var path: String {
        if let repo { return repo }
        if let env = getenv("CAIRN_REPO"), !String(cString: env).isEmpty { return String(cString: env) }
        return Self.defaultRepository
    }

    func lockWaitSeconds() throws(CairnError) -> Double? {
        guard let lockWait else { return nil }
        guard let seconds = Units.parseDuration(lockWait) else {
            throw CairnError(.usage, "--lock-wait \(lockWait) is not a duration (use e.g. 30s, 10m, 1h)")
        }
        return seconds
    }

    /// Opens the repository; damaged index segments are named on stderr (the command goes on:
    /// it fails only if it needs a chunk that only they name). Verify reports them itself. An
    /// encrypted repository's passphrase comes from `passphraseSource`, asked only for one.
    /// Where `--repo` points, parsed once (`RepositoryLocation`).
    func location() throws(CairnError) -> RepositoryLocation { try RepositoryLocation(parsing: path) }

    /// The storage of an object-store repository, or nil for a local directory (opened by path,
    /// with the checks a directory needs).
    func objectStorage() throws(CairnError) -> (any RepositoryStorage)? {
        guard case .objectStore(let bucket, let prefix) = try location() else { return nil }
        return try ObjectStoreAccess(endpoint: endpoint, region: region, cacheDirectory: cacheDir).storage(
            bucket: bucket, prefix: prefix)
    }

    /// The keys of the repository, for `cairn key` (no chunk store opened).
    func openKeys() throws(CairnError) -> RepositoryKeys {
        if let storage = try objectStorage() { return try RepositoryKeys(storage: storage) }
        return try RepositoryKeys(path: path)
    }

    func open(warnAboutDamage: Bool = true, loadIndex: Bool = true) throws(CairnError) -> Repository {
        Log.setUp(verbose: verbose)
        let secret = { () throws(CairnError) in try self.secret() }
        let repository: Repository
        if let storage = try objectStorage() {
            repository = try Repository(
                storage: storage, loadIndex: loadIndex, onLockWait: Terminal.lockWaitNotice, secret: secret)
        } else {
            repository = try Repository(
                path: path, loadIndex: loadIndex, onLockWait: Terminal.lockWaitNotice, secret: secret)
        }
        CairnLog.logger.info(
            "repository opened: \(repository.path), block size \(Units.formatBytes(UInt64(repository.config.blockSize)))"
        )
        if warnAboutDamage {
            if let warning = repository.configHealth.warning { Terminal.printError("cairn: warning: \(warning)") }
            for segment in repository.store.damagedSegments {
                Terminal.printError("cairn: warning: \(segment.warning)")
            }
            for line in seenPoints(repository)?.rolledBack() ?? [] { Terminal.printError("cairn: warning: \(line)") }
        }
        return repository
    }

    /// What this host has seen of an encrypted repository (nil for an unencrypted one), kept in
    /// the state directory `$CAIRN_STATE_DIR` names, else the XDG one.
    func seenPoints(_ repository: Repository) -> SeenRestorePoints? {
        SeenRestorePoints(repository: repository, directory: SeenRestorePoints.defaultDirectory())
    }
}

/// swift-log, set up once per process: `-v` logs what cairn does (CairnLog's points in the core:
/// repository opened, locks taken, disks started and finished, packs committed) to stderr.
enum Log {
    private static let isSetUp = Atomic<Bool>(false)

    static func setUp(verbose: Bool) {
        // LoggingSystem.bootstrap may run only once; a command may open several repositories.
        guard !isSetUp.exchange(true, ordering: .relaxed) else { return }
        let level: Logger.Level = verbose ? .debug : .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        CairnLog.logger.logLevel = level
    }
}

/// Runs a command body, turning a `CairnError` into one line on stderr and its exit code.
func runReportingErrors(_ body: () throws(CairnError) -> Void) throws {
    Cancellation.installSignalHandlers()
    do {
        try body()
    } catch {
        Terminal.clearProgress()
        Terminal.printError("cairn: \(error.description)\(hint(for: error))")
        throw ExitCode(error.exitCode)
    }
}

/// The command-line way out of an error, which the library names only as a `Remedy`.
func hint(for error: CairnError) -> String {
    switch error.remedy {
    case nil: return ""
    case .waitForLock: return "; wait for it to finish or pass --lock-wait DURATION"
    case .overwrite: return "; pass --force to overwrite it"
    case .nameDisk: return ": name one with --disk"
    case .readAsRaw: return "; pass --format raw"
    case .readAsQCOW2OrRaw: return "; pass --format qcow2 or --format raw"
    case .allowLive: return "; or pass --allow-live to accept a crash-inconsistent copy"
    case .createRepository: return " (create it with `cairn init`)"
    case .largerVolume: return ": use a larger --volume-size"
    }
}

enum Terminal {
    /// Whether standard output is a terminal: only then are times shown in local time.
    static let outputIsInteractive = isatty(1) == 1

    /// A stored UTC time (`2026-12-01T14:33:50Z`) as a person at a terminal reads it: in local
    /// time per `TZ`, with its offset. Piped output, ids and `--json` stay UTC.
    static func humanTime(_ text: String) -> String {
        guard let time = Timestamp(parsing: text) else { return text }
        return humanTime(time)
    }

    static func humanTime(_ time: Timestamp) -> String {
        outputIsInteractive ? time.localDescription : time.description
    }
    /// Says once, on stderr, that a command waits for another process's lock (`--lock-wait`).
    static let lockWaitNotice: LockWaitObserver = { line in
        clearProgress()
        printError("cairn: \(line)")
    }

    static let isInteractive = isatty(2) == 1
    /// Whether the last thing on stderr is a progress line (progress comes from worker threads).
    private static let progressShown = Atomic<Bool>(false)
    private static let quietFlag = Atomic<Bool>(false)
    /// `--quiet`: no progress line even on a terminal (set once, before the command runs).
    static var quiet: Bool {
        get { quietFlag.load(ordering: .relaxed) }
        set { quietFlag.store(newValue, ordering: .relaxed) }
    }

    /// Whether a progress line is shown: backup asks for progress (and walks a file image's
    /// extents to count its allocated data) only then.
    static var showsProgress: Bool { isInteractive && !quiet }

    static func printError(_ line: String) {
        var text = line
        if !text.hasSuffix("\n") { text += "\n" }
        writeStandardError(text)
    }

    private static func writeStandardError(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(2, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { if errno == EINTR { continue } else { return } }
                done += n
            }
        }
    }

    /// Rewrites the progress line on a terminal; prints nothing under cron.
    static func progress(_ line: String) {
        guard isInteractive, !quiet else { return }
        writeStandardError("\r\u{1B}[K\(line)")
        progressShown.store(true, ordering: .relaxed)
    }

    static func clearProgress() {
        guard progressShown.exchange(false, ordering: .relaxed) else { return }
        writeStandardError("\r\u{1B}[K")
    }
}

func parseSize(_ text: String, option: String) throws(CairnError) -> UInt64 {
    guard let value = Units.parseSize(text) else {
        throw CairnError(.usage, "\(option) \(text) is not a size (use e.g. 64K, 1M, 4MiB)")
    }
    return value
}

func rate(_ bytes: UInt64, _ seconds: Double) -> String {
    guard seconds > 0 else { return "-" }
    return "\(Units.formatDecimal(Double(bytes) / seconds / 1e6, places: 0)) MB/s"
}

/// "1 restore point", "2 restore points": a count with its noun in the right number.
func counted(_ count: Int, _ singular: String, plural: String? = nil) -> String {
    "\(count) \(count == 1 ? singular : plural ?? singular + "s")"
}
