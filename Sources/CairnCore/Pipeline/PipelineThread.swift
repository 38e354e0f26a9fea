import Foundation

/// Runs `body` on a new thread (1 MiB of stack); `join()` waits for it to return.
final class PipelineThread: Sendable {
    private let done = DispatchSemaphore(value: 0)

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread { [done] in
            body()
            done.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits for the thread's body to return; a second call returns at once.
    func join() {
        done.wait()
        done.signal()
    }
}

/// Worker threads for the parallel stages: one per core (`CAIRN_THREADS` overrides it, up to 64).
enum Parallelism {
    static var workers: Int {
        if let raw = ProcessInfo.processInfo.environment["CAIRN_THREADS"], let n = Int(raw), n > 0 { return min(n, 64) }
        return max(1, min(ProcessInfo.processInfo.activeProcessorCount, 64))
    }

    /// Workers for a pipeline whose workers wait on their own reads and writes about as long as
    /// they compute (restore: a record read, then a direct write of up to 2 MiB): two per core up to 16
    /// extra, so that one computes while the other waits. On the benchmark's 2-core machine a
    /// restore took 1.80-1.92 s with 2 workers and 1.29-1.32 s with 4 (Benchmarks/README.md).
    static var overlappedWorkers: Int {
        let n = workers
        return n + min(n, 16)
    }
}

/// A buffer one worker owns for its whole life (scratch space, a block of zeros), freed with it.
final class WorkerBuffer {
    let bytes: UnsafeMutableRawBufferPointer

    init(byteCount: Int, alignment: Int = 64, zeroed: Bool = false) {
        bytes = .allocate(byteCount: byteCount, alignment: alignment)
        if zeroed { bytes.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    deinit { bytes.deallocate() }
}
