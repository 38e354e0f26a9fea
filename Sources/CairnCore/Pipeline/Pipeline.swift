import DequeModule
import Dispatch
import Synchronization

/// The one parallel stage of every data path: items submitted in order by one thread are worked
/// on by `workers` threads (one per core) and handed back in submission order, or recycled.
///
/// ```
/// acquire ──► fill ──► submit ──► workers (any order) ──► next() in order ──► consume ──► recycle ─┐
///    ▲                                                  (or straight back to the pool)           │
///    └───────────────────────────────────────────────────────────────────────────────────────────┘
/// ```
///
/// Bounded: at most `capacity` items are submitted and not yet handed back, so a pipeline over
/// reusable buffers (the backup's `BlockBatch`es) holds a fixed amount of memory whatever the
/// disk's size, and `submit` waits when the workers or the consumer fall behind.
///
/// Stopping: the first error of any stage (`stop(_:)`, or a worker's throw), or SIGINT/SIGTERM
/// (checked by `acquire`, `submit` and `next`, which then throw `.interrupted` saying
/// `interruptedMessage`), wakes every wait: `acquire`, `submit` and `next` throw that first error,
/// the workers leave after their current item, and `finish()` joins the threads and throws it.
/// Items in flight are dropped (a class item's buffers are freed with its last reference).
///
/// Waiting uses semaphores as wake-up hints over one `Mutex`-guarded state: every change that can
/// unblock a waiter signals once, every waiter checks the state before it waits again, and a
/// waiter that leaves because the pipeline ended signals once more, so the next waiter leaves too.
final class Pipeline<Item: Sendable>: Sendable {
    /// Where a worker's finished item goes.
    enum Delivery: Sendable {
        /// To `next()`, in submission order (backup: the writer indexes blocks in disk order).
        case inOrder
        /// Straight back to the pool for `acquire()` (restore and archives: the workers write).
        case recycle
        /// Nowhere (verify: the items are plain values and the workers record what they find).
        case discard
    }

    /// What one worker does with each item. Made on the worker's own thread, so it may own state
    /// that is not `Sendable` (a hasher, a compressor, a chunk reader, scratch buffers); it is
    /// released when the worker ends.
    typealias Work = (inout Item) throws(CairnError) -> Void

    private struct State: Sendable {
        /// Submitted, not yet taken by a worker.
        var input = Deque<(sequence: Int, item: Item)>()
        /// `.inOrder`: slot k holds sequence `delivered + k` once a worker finished it.
        var done = Deque<Item?>()
        /// Items ready for `acquire()`.
        var pool = Deque<Item>()
        var submitted = 0
        var delivered = 0
        var inputEnded = false
        var error: CairnError?
        var threads: [PipelineThread] = []
    }

    let delivery: Delivery
    let capacity: Int
    /// What an interruption leaves, for its message ("nothing committed", "restore incomplete").
    let interruptedMessage: String
    private let state: Mutex<State>
    /// Room for one more item in flight (`capacity` in all).
    private let slots = DispatchSemaphore(value: 0)
    /// An item for the workers, or the end.
    private let inputs = DispatchSemaphore(value: 0)
    /// A finished item for `next()`, or the end.
    private let results = DispatchSemaphore(value: 0)
    /// An item in the pool.
    private let pooled = DispatchSemaphore(value: 0)

    /// Starts `workers` threads named `name-0`, `name-1`, …; each calls `makeWork` once, on its
    /// own thread, for the closure it runs on every item. `pool` holds the reusable items
    /// `acquire()` hands out; `capacity` defaults to their number (at least 1).
    init(
        name: String, workers: Int = Parallelism.workers, delivery: Delivery, pool: [Item] = [],
        capacity: Int? = nil, interruptedMessage: String = "nothing committed",
        makeWork: @escaping @Sendable (_ worker: Int) -> Work
    ) {
        self.delivery = delivery
        self.capacity = max(1, capacity ?? pool.count)
        self.interruptedMessage = interruptedMessage
        state = Mutex(State(pool: Deque(pool)))
        // Semaphores start at zero and are raised here: libdispatch traps when one is freed below
        // its initial value, which a stopped pipeline may leave.
        for _ in 0..<self.capacity { slots.signal() }
        for _ in pool { pooled.signal() }
        let threads = (0..<max(1, workers)).map { worker in
            PipelineThread(name: "\(name)-\(worker)") { [self] in
                runWorker(makeWork(worker))
            }
        }
        state.withLock { $0.threads += threads }
    }

    /// Runs `body` on a thread of its own (the source: a reader or a walker that submits items).
    /// Its return ends the input; its throw stops the pipeline. `finish()` joins it.
    func startSource(name: String, _ body: @escaping @Sendable (Pipeline) throws(CairnError) -> Void) {
        let thread = PipelineThread(name: name) { [self] in
            do throws(CairnError) {
                try body(self)
                endInput()
            } catch {
                stop(error)
            }
        }
        state.withLock { $0.threads.append(thread) }
    }

    // MARK: Producer side

    /// A reusable item from the pool, waiting for one.
    func acquire() throws(CairnError) -> Item {
        while true {
            try checkSignal()
            let next: Outcome = state.withLock { s in
                if let error = s.error { return .failed(error) }
                if let item = s.pool.popFirst() { return .item(item) }
                return .wait
            }
            switch next {
            case .item(let item): return item
            case .failed(let error):
                pooled.signal()
                throw error
            case .end, .wait: pooled.wait()
            }
        }
    }

    /// Gives an item back to the pool (after `next()` handed it out and it was consumed, or one
    /// acquired that needs no work).
    func recycle(_ item: Item) {
        state.withLock { $0.pool.append(item) }
        pooled.signal()
    }

    /// Hands `item` to the workers, waiting while `capacity` items are in flight.
    func submit(_ item: Item) throws(CairnError) {
        try checkSignal()
        slots.wait()
        let error = state.withLock { s -> CairnError? in
            if let error = s.error { return error }
            precondition(!s.inputEnded, "an item was submitted after the end of the input")
            s.input.append((s.submitted, item))
            s.submitted += 1
            return nil
        }
        if let error {
            slots.signal()
            throw error
        }
        inputs.signal()
    }

    /// No more items: the workers leave once the submitted ones are done, `next()` returns nil
    /// once it has handed them all out.
    func endInput() {
        state.withLock { $0.inputEnded = true }
        inputs.signal()
        results.signal()
    }

    // MARK: Consumer side

    /// The next finished item in submission order (`.inOrder` only), waiting for it; nil once the
    /// input ended and every item was handed out.
    func next() throws(CairnError) -> Item? {
        precondition(delivery == .inOrder, "next() hands out items only in a pipeline that delivers them in order")
        while true {
            try checkSignal()
            let next: Outcome = state.withLock { s in
                if let error = s.error { return .failed(error) }
                if let first = s.done.first, let item = first {
                    s.done.removeFirst()
                    s.delivered += 1
                    return .item(item)
                }
                if s.inputEnded && s.delivered == s.submitted { return .end }
                return .wait
            }
            switch next {
            case .item(let item):
                slots.signal()
                return item
            case .end:
                results.signal()
                return nil
            case .failed(let error):
                results.signal()
                throw error
            case .wait: results.wait()
            }
        }
    }

    // MARK: Stopping

    /// Stops the pipeline with `error` unless it already stopped; returns whether `error` is the
    /// one it stopped with (the first).
    @discardableResult
    func stop(_ error: CairnError) -> Bool {
        let first = state.withLock { s -> Bool in
            guard s.error == nil else { return false }
            s.error = error
            return true
        }
        if first {
            slots.signal()
            inputs.signal()
            results.signal()
            pooled.signal()
        }
        return first
    }

    /// The error the pipeline stopped with, if it did.
    var error: CairnError? { state.withLock { $0.error } }

    /// Ends the input, waits for every thread (the workers finish what was submitted, unless the
    /// pipeline stopped) and throws the first error. Call it on every path, once the producer
    /// and consumer are done (or failed: `stop` first).
    func finish() throws(CairnError) {
        endInput()
        let threads = state.withLock { s -> [PipelineThread] in
            defer { s.threads = [] }
            return s.threads
        }
        for thread in threads { thread.join() }
        if let error { throw error }
    }

    // MARK: Inside

    private enum Outcome: Sendable {
        case item(Item)
        case failed(CairnError)
        case end
        case wait
    }

    /// Turns a pending SIGINT/SIGTERM into a stop, so every stage sees the same error.
    @inline(__always)
    private func checkSignal() throws(CairnError) {
        guard Cancellation.isRequested else { return }
        stop(Cancellation.interrupted(interruptedMessage))
        if let error { throw error }
    }

    private enum Assignment: Sendable {
        case item(sequence: Int, Item)
        case leave
        case wait
    }

    private func runWorker(_ work: Work) {
        while true {
            let task: Assignment = state.withLock { s in
                if s.error != nil { return .leave }
                if let (sequence, item) = s.input.popFirst() { return .item(sequence: sequence, item) }
                return s.inputEnded ? .leave : .wait
            }
            guard case .item(let sequence, var item) = task else {
                if case .wait = task {
                    inputs.wait()
                    continue
                }
                inputs.signal()
                return
            }
            do throws(CairnError) {
                try work(&item)
            } catch {
                stop(error)
                return
            }
            switch delivery {
            case .inOrder:
                state.withLock { s in
                    let slot = sequence - s.delivered
                    while s.done.count <= slot { s.done.append(nil) }
                    s.done[slot] = item
                }
                results.signal()
            case .recycle:
                recycle(item)
                slots.signal()
            case .discard:
                slots.signal()
            }
        }
    }
}
