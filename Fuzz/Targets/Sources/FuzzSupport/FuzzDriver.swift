import CLibFuzzer

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a fuzz target under libFuzzer: hands every input to `body`, which must return normally
/// for every input (errors thrown by the parser are the expected outcome; a trap, an ASan report,
/// a hang past `-timeout` or memory past `-rss_limit_mb`/`-malloc_limit_mb` is a finding).
public enum FuzzDriver {
    /// The target's body. libFuzzer calls a C function pointer, which cannot capture context, so
    /// the body waits here; it is set once, before libFuzzer starts, and libFuzzer calls it from
    /// one thread.
    nonisolated(unsafe) private static var body: ((UnsafeRawBufferPointer) -> Void)?

    public static func run(_ body: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
        Self.body = body
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        let status = LLVMFuzzerRunDriver(&argc, &argv) { data, count in
            FuzzDriver.body?(UnsafeRawBufferPointer(start: data, count: count))
            return 0
        }
        exit(status)
    }
}
