import CairnCore
import Testing

/// The pool behind `cairn serve`'s frame and reply buffers: warm buffers come back, and what it
/// keeps stays within its bound.
@Suite struct BufferPoolTests {
    @Test func aGivenBufferIsTakenAgainAndSizesRoundToTheGranularity() {
        let pool = BufferPool(capacity: 8 << 20)
        let first = pool.take(2 << 20)
        #expect(first.count == 2 << 20)
        let address = first.baseAddress
        pool.give(first)
        #expect(pool.parkedBytes == 2 << 20)
        // 2 MiB minus a little rounds to the same size: the parked buffer comes back.
        let second = pool.take((2 << 20) - 100)
        #expect(second.baseAddress == address && second.count == 2 << 20)
        #expect(pool.parkedBytes == 0)
        #expect(BufferPool.rounded(1) == BufferPool.granularity)
        #expect(BufferPool.rounded(BufferPool.granularity + 1) == 2 * BufferPool.granularity)
        pool.give(second)
    }

    /// Direct writes need page-aligned memory, fresh or parked.
    @Test func buffersStartAtTheAlignmentAskedFor() {
        let pool = BufferPool(capacity: 8 << 20, alignment: 4096)
        let first = pool.take(2 << 20)
        pool.give(first)
        let buffers = [pool.take(2 << 20), pool.take(2 << 20), pool.take(100)]
        for buffer in buffers {
            #expect(UInt(bitPattern: buffer.baseAddress) % 4096 == 0)
            pool.give(buffer)
        }
    }

    @Test func parkedBytesNeverExceedTheCapacity() {
        let pool = BufferPool(capacity: 3 << 20)
        let buffers = (0..<4).map { _ in pool.take(1 << 20) }
        for buffer in buffers { pool.give(buffer) }
        #expect(pool.parkedBytes == 3 << 20)
        let other = pool.take(1 << 20)
        #expect(pool.parkedBytes == 2 << 20)
        pool.give(other)
    }
}
