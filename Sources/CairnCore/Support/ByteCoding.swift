/// Builds a byte string of fixed-width integers, for Cairn's binary formats (little-endian)
/// and qcow2's (big-endian).
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func le<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func be<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func append(_ other: [UInt8]) { bytes.append(contentsOf: other) }

    public mutating func append(_ digest: ChunkDigest) { bytes.append(contentsOf: digest.bytes) }

    public mutating func zeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }

    public var count: Int { bytes.count }

    /// Empties the buffer, keeping its storage for the next bytes.
    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }
}

/// Reads fixed-width integers from a byte string, failing instead of reading past its end.
public struct ByteReader {
    public let bytes: [UInt8]
    public private(set) var position: Int
    /// What to call the bytes in an error ("pack trailer of packs/ab/…").
    public let context: String

    public init(_ bytes: [UInt8], context: String, position: Int = 0) {
        self.bytes = bytes
        self.position = position
        self.context = context
    }

    public var remaining: Int { bytes.count - position }

    private mutating func take(_ n: Int) throws(CairnError) -> Int {
        guard n >= 0, n <= remaining else {
            throw CairnError(
                .damaged, "\(context) is truncated: needs \(n) bytes at offset \(position), has \(remaining)")
        }
        defer { position += n }
        return position
    }

    public mutating func le<T: FixedWidthInteger>(_: T.Type = T.self) throws(CairnError) -> T {
        let at = try take(MemoryLayout<T>.size)
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
    }

    public mutating func be<T: FixedWidthInteger>(_: T.Type = T.self) throws(CairnError) -> T {
        let at = try take(MemoryLayout<T>.size)
        return bytes.withUnsafeBytes { T(bigEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
    }

    public mutating func digest() throws(CairnError) -> ChunkDigest {
        let at = try take(32)
        return bytes.withUnsafeBytes { ChunkDigest(loadingFrom: $0, at: at) }
    }

    public mutating func bytes(_ n: Int) throws(CairnError) -> [UInt8] {
        let at = try take(n)
        return Array(bytes[at..<at + n])
    }

    public mutating func skip(_ n: Int) throws(CairnError) { _ = try take(n) }
}

extension UnsafeRawBufferPointer {
    /// True when every byte is zero. Compares eight bytes at a time; the compiler vectorises it.
    @inlinable
    public var isAllZero: Bool {
        guard let base = baseAddress else { return true }
        let words = count / 8
        var acc: UInt64 = 0
        var i = 0
        // Check in 4 KiB strides so a block with data early on stops early.
        while i < words {
            let end = Swift.min(words, i + 512)
            while i < end {
                acc |= base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
                i += 1
            }
            if acc != 0 { return false }
        }
        var j = words * 8
        while j < count {
            if base.load(fromByteOffset: j, as: UInt8.self) != 0 { return false }
            j += 1
        }
        return true
    }
}
