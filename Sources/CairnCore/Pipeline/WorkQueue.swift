import Foundation

/// A bounded hand-off between pipeline stages; closing it wakes every waiter.
///
/// The pipelines move a fixed set of reusable batches around a ring of these queues, so the
/// number of blocks in flight (and the memory they use) never grows with the disk.
final class WorkQueue<Element>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element] = []
    private var closed = false

    init() {}

    func push(_ item: Element) {
        condition.lock()
        items.append(item)
        condition.signal()
        condition.unlock()
    }

    /// The oldest item, waiting for one; nil once the queue is closed.
    func pop() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty && !closed { condition.wait() }
        if closed { return nil }
        return items.removeFirst()
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Hands batches to the writer in sequence order, whichever worker finished them first.
final class OrderedQueue<Element>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Int: Element] = [:]
    private var closed = false

    init() {}

    func push(_ item: Element, sequence: Int) {
        condition.lock()
        items[sequence] = item
        condition.broadcast()
        condition.unlock()
    }

    func pop(sequence: Int) -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while items[sequence] == nil && !closed { condition.wait() }
        if closed { return nil }
        return items.removeValue(forKey: sequence)
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// The first error any stage hit; later ones are consequences and are dropped.
final class PipelineFailure: @unchecked Sendable {
    private let lock = NSLock()
    private var error: CairnError?

    func record(_ error: CairnError) {
        lock.lock()
        if self.error == nil { self.error = error }
        lock.unlock()
    }

    var first: CairnError? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }
}

/// Runs `body` on a new thread; `join()` waits for it.
final class PipelineThread: @unchecked Sendable {
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

    func join() { done.wait() }
}

/// Worker threads for the parallel stages: one per core.
enum Parallelism {
    static var workers: Int {
        if let raw = ProcessInfo.processInfo.environment["CAIRN_THREADS"], let n = Int(raw), n > 0 { return min(n, 64) }
        return max(1, min(ProcessInfo.processInfo.activeProcessorCount, 64))
    }
}
