import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A clean stop on SIGINT (Ctrl-C) and SIGTERM: the signal only raises a flag, and the long
/// loops (the backup, restore and archive pipelines, gc's and verify's pack loops, a lock wait)
/// check it between batches and throw `CairnError(.interrupted)`, so each command removes its
/// temporary files and says what it kept before the process exits with 128 + the signal's number.
///
/// A signal handler that only stores into an atomic is async-signal-safe and works whichever
/// thread the kernel picks, so the pipelines' worker threads need no signal masks. A second
/// signal while the first is being honoured ends the process at once (`_exit`): the process can
/// never hang on a stop, and whatever it leaves is cleaned by the next run (docs/INTEGRITY.md).
public enum Cancellation {
    private static let received = Atomic<Int32>(0)

    /// Installs the handlers for SIGINT and SIGTERM (once per process; the CLI calls it).
    public static func installSignalHandlers() {
        _ = received.load(ordering: .relaxed)  // initialise the global before a handler can touch it
        for signal in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                let (exchanged, _) = Cancellation.received.compareExchange(
                    expected: 0, desired: signal, ordering: .relaxed)
                if !exchanged { _exit(128 + signal) }
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = 0
            var previous = sigaction()
            sigaction(signal, &action, &previous)
            // A signal the parent chose to ignore (`cairn backup … &` in a script ignores
            // SIGINT) stays ignored, as the shell intends.
            let ignored = unsafeBitCast(SIG_IGN, to: Int.self)
            if unsafeBitCast(previous.__sigaction_handler.sa_handler, to: Int.self) == ignored {
                sigaction(signal, &previous, nil)
            }
        }
        // A blocked signal would stay pending for ever, and the mask is inherited through exec
        // (some launchers block these): unblock them here, before the pipelines start threads,
        // which inherit this thread's mask.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// The signal that asked the process to stop, if one did.
    public static var signal: Int32? {
        let value = received.load(ordering: .relaxed)
        return value == 0 ? nil : value
    }

    public static var isRequested: Bool { received.load(ordering: .relaxed) != 0 }

    /// `SIGINT` or `SIGTERM`, for messages.
    public static var signalName: String {
        switch signal {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case let other?: return "signal \(other)"
        case nil: return "a signal"
        }
    }

    /// Throws `.interrupted` once a stop was asked for; `what` says what the stop leaves
    /// ("nothing committed"). Cheap: one relaxed load.
    @inline(__always)
    static func check(_ what: @autoclosure () -> String = "nothing committed") throws(CairnError) {
        if isRequested { throw interrupted(what()) }
    }

    static func interrupted(_ what: String) -> CairnError {
        CairnError(.interrupted, "interrupted by \(signalName), \(what)")
    }
}
