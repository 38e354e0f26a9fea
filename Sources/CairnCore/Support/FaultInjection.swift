#if canImport(Glibc)
    import Glibc
#endif

/// A test-only hook that kills the process after a set number of durable writes.
///
/// Crash-safety tests set `CAIRN_FAULT_AFTER_WRITES=N` to stop Cairn at the N-th write or fsync,
/// deterministically, as `kill -9` would: no cleanup, no unwinding. Unset, it costs one load.
enum FaultInjection {
    private static let limit: Int? = {
        guard let raw = getenv("CAIRN_FAULT_AFTER_WRITES") else { return nil }
        return Int(String(cString: raw))
    }()
    private static let counter = AtomicCounter()

    static func countWrite(_ path: String) throws(CairnError) {
        guard let limit else { return }
        if counter.increment() >= limit {
            _exit(137)
        }
    }
}
