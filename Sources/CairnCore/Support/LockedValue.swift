import Foundation

/// A value shared between threads behind a lock.
///
/// `@unchecked Sendable`: the value is reached only inside `withLock`, under the lock, so it may be
/// a value that is not `Sendable` (a pool of per-thread readers) as long as `body` does not keep it.
final class NSLockBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value

    init(_ value: Value) { stored = value }

    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&stored)
    }

    var value: Value { withLock { $0 } }
}
