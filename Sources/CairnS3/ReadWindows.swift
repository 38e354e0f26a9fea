public import CairnCore
import Synchronization

/// The read-ahead of one S3 repository: a few windows of recently fetched object bytes, shared
/// by every object opened through the storage and every thread reading them, least recently used
/// replaced first.
///
/// Why shared and why several: restore and verify read a pack's records in order, one worker per
/// stretch of the disk, and each record is a frame of a few hundred KiB. Fetched one by one,
/// every record costs a round trip to the gateway; a window of several records costs one. Each
/// worker reads its own pack, so one window per object (or one per storage) would be taken from
/// under a worker by the next; a handful of slots keeps each worker's window alive. Memory is
/// bounded by `slots × windowBytes` whatever the repository's size.
public final class ReadWindows: Sendable {
    /// Bytes fetched at least by a read that misses; 0 turns read-ahead off (every read is exact).
    public let windowBytes: Int
    /// Windows kept at once.
    public let slots: Int

    private struct Window {
        var key: String
        var start: UInt64
        var bytes: [UInt8]
        var lastUse: UInt64
        func covers(_ key: String, _ range: Range<UInt64>) -> Bool {
            key == self.key && range.lowerBound >= start && range.upperBound <= start + UInt64(bytes.count)
        }
    }

    private struct State {
        var windows: [Window] = []
        var clock: UInt64 = 0
        var hits = 0
        var fetches = 0
    }

    private let state = Mutex(State())

    public init(windowBytes: Int = 2 << 20, slots: Int = 16) {
        self.windowBytes = max(0, windowBytes)
        self.slots = max(1, slots)
    }

    /// Reads which a kept window answered, and fetches made: for tests and `-v`.
    public var counts: (hits: Int, fetches: Int) { state.withLock { ($0.hits, $0.fetches) } }

    /// Fills `buffer` with the bytes of object `key` (of `size` bytes) at `offset`, from a kept
    /// window or by `fetch`ing a new one; returns how many bytes were read (short only at the
    /// object's end). `fetch` must return exactly the bytes of the range it is given.
    public func read(
        _ key: String, size: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
        fetch: (Range<UInt64>) throws(CairnError) -> [UInt8]
    ) throws(CairnError) -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let wanted = offset..<min(size, offset + UInt64(buffer.count))
        if copyFromWindow(key, wanted, into: buffer) { return wanted.count }
        // A read as large as a window is fetched exactly and not kept: it would only push out
        // windows that other readers are in the middle of.
        guard wanted.count < windowBytes else {
            let bytes = try fetch(wanted)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            state.withLock { $0.fetches += 1 }
            return bytes.count
        }
        let fetched = wanted.lowerBound..<min(size, wanted.lowerBound + UInt64(windowBytes))
        let bytes = try fetch(fetched)
        bytes.withUnsafeBytes { all in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[0..<wanted.count]))
        }
        keep(Window(key: key, start: fetched.lowerBound, bytes: bytes, lastUse: 0))
        return wanted.count
    }

    private func copyFromWindow(
        _ key: String, _ wanted: Range<UInt64>, into buffer: UnsafeMutableRawBufferPointer
    ) -> Bool {
        state.withLock { state in
            guard let slot = state.windows.firstIndex(where: { $0.covers(key, wanted) }) else { return false }
            state.clock += 1
            state.hits += 1
            state.windows[slot].lastUse = state.clock
            let start = Int(wanted.lowerBound - state.windows[slot].start)
            state.windows[slot].bytes.withUnsafeBytes { all in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[start..<start + wanted.count]))
            }
            return true
        }
    }

    private func keep(_ window: Window) {
        state.withLock { state in
            state.clock += 1
            state.fetches += 1
            var window = window
            window.lastUse = state.clock
            if state.windows.count < slots {
                state.windows.append(window)
            } else if let oldest = state.windows.indices.min(by: {
                state.windows[$0].lastUse < state.windows[$1].lastUse
            }) {
                state.windows[oldest] = window
            }
        }
    }

    /// Forgets every window of `key` (an object deleted or replaced through this storage).
    public func forget(_ key: String) {
        state.withLock { state in state.windows.removeAll { $0.key == key } }
    }
}
