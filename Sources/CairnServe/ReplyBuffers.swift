import CairnCore
@_spi(CustomByteBufferAllocator) import NIOCore

/// The allocator of READ reply buffers: large ones come from a `BufferPool` and go back to it
/// when NIO has written them, so a stream of 2 MiB replies reuses warm memory instead of
/// mapping, faulting in and zeroing fresh pages for each (a fifth of the server's CPU under
/// `qemu-img convert` before this).
///
/// NIO calls these through C function pointers with no context, so the pool is a global and
/// each block carries its size in a header just before the bytes NIO sees.
enum ReplyBuffers {
    /// Parked reply buffers at most: enough for several connections' replies in flight to
    /// cycle through warm buffers, small beside the record cache.
    static let pool = BufferPool(capacity: 16 << 20)

    /// Bytes before the pointer NIO gets: the block's size (0: a plain malloc'd small block).
    static let header = 64

    static let allocator = ByteBufferAllocator(
        allocate: { size in ReplyBuffers.allocate(size) },
        reallocate: { pointer, oldSize, newSize in ReplyBuffers.reallocate(pointer, oldSize, newSize) },
        deallocate: { pointer in ReplyBuffers.deallocate(pointer) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )

    static func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        let block: UnsafeMutableRawBufferPointer
        if size + header >= BufferPool.granularity {
            block = pool.take(size + header)
        } else {
            block = .allocate(byteCount: size + header, alignment: header)
        }
        let recorded = block.count >= BufferPool.granularity ? block.count : 0
        block.baseAddress!.storeBytes(of: recorded, as: Int.self)
        return block.baseAddress! + header
    }

    static func reallocate(_ pointer: UnsafeMutableRawPointer?, _ oldSize: Int, _ newSize: Int)
        -> UnsafeMutableRawPointer?
    {
        guard let pointer else { return allocate(newSize) }
        let grown = allocate(newSize)
        grown?.copyMemory(from: pointer, byteCount: min(oldSize, newSize))
        deallocate(pointer)
        return grown
    }

    static func deallocate(_ pointer: UnsafeMutableRawPointer) {
        let base = pointer - header
        let size = base.load(as: Int.self)
        if size == 0 {
            base.deallocate()
        } else {
            pool.give(UnsafeMutableRawBufferPointer(start: base, count: size))
        }
    }
}
