import Synchronization

/// A counter shared between threads.
final class AtomicCounter: Sendable {
    private let value = Atomic<Int>(0)

    init() {}

    /// Adds one and returns the new value.
    @discardableResult
    func increment(by n: Int = 1) -> Int {
        value.wrappingAdd(n, ordering: .relaxed).newValue
    }

    var current: Int { value.load(ordering: .relaxed) }
}
