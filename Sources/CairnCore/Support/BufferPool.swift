import Synchronization

/// Large buffers kept for reuse instead of freed, within a bound on the bytes parked.
///
/// A buffer of a few MiB freed to the C heap is unmapped (or left as a gap in an arena), and the
/// next one is fresh memory: the kernel zeroes each of its pages on first touch. Serving a disk
/// over NBD allocates a 2 MiB frame per cache miss and a reply buffer per READ; measured under
/// `qemu-img convert`, page clearing and faults were a third of the server's CPU. Buffers handed
/// back here are reused while they are warm, and what is parked never exceeds `capacity`.
///
/// Sizes are rounded up to a multiple of `granularity`, so buffers of nearby sizes are shared.
public final class BufferPool: Sendable {
    /// The rounding of sizes: buffers are reused among requests that round to the same size.
    public static let granularity = 64 << 10

    /// The bound on the bytes of parked (free, kept) buffers.
    public let capacity: Int
    /// Where buffers start: 64 bytes (a cache line), or a page for direct I/O.
    public let alignment: Int

    private struct State {
        /// Free buffers by rounded size, as addresses (kept as integers: they belong to no one).
        var free: [Int: [UInt]] = [:]
        var parkedBytes = 0
    }

    private let state = Mutex(State())

    public init(capacity: Int, alignment: Int = 64) {
        self.capacity = capacity
        self.alignment = alignment
    }

    /// `bytes` rounded up to the pool's granularity: the size of a buffer `take` returns.
    public static func rounded(_ bytes: Int) -> Int {
        (max(bytes, 1) + granularity - 1) / granularity * granularity
    }

    /// A buffer of `rounded(bytes)` bytes, aligned to `alignment`: a parked one if there is one.
    public func take(_ bytes: Int) -> UnsafeMutableRawBufferPointer {
        let size = Self.rounded(bytes)
        let parked = state.withLock { state -> UInt? in
            guard let address = state.free[size]?.popLast() else { return nil }
            state.parkedBytes -= size
            return address
        }
        if let parked, let pointer = UnsafeMutableRawPointer(bitPattern: parked) {
            return UnsafeMutableRawBufferPointer(start: pointer, count: size)
        }
        return .allocate(byteCount: size, alignment: alignment)
    }

    /// Takes back a buffer from `take` (its whole count): parked, or freed if the pool is full.
    public func give(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        let size = buffer.count
        let parked = state.withLock { state -> Bool in
            guard state.parkedBytes + size <= capacity else { return false }
            state.free[size, default: []].append(UInt(bitPattern: base))
            state.parkedBytes += size
            return true
        }
        if !parked { buffer.deallocate() }
    }

    /// Bytes parked now (for tests and the log).
    public var parkedBytes: Int { state.withLock { $0.parkedBytes } }

    deinit {
        state.withLock { state in
            for (size, addresses) in state.free {
                for address in addresses {
                    UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: size)
                        .deallocate()
                }
            }
        }
    }
}
