public import Logging
import Synchronization

/// The core's one swift-log logger: what `cairn -v` prints to stderr.
///
/// It logs the steps an administrator follows a run by (repository opened, lock taken, each disk
/// started and finished, packs committed), never per block. Until the CLI sets a level (once,
/// before the command runs and before any thread reads it) only warnings pass, so library users
/// and tests are not flooded.
public enum CairnLog {
    public static var logger: Logger {
        get { shared.withLock { $0 } }
        set { shared.withLock { $0 = newValue } }
    }

    private static let shared = Mutex<Logger>(
        {
            var logger = Logger(label: "cairn")
            logger.logLevel = .warning
            return logger
        }())
}
