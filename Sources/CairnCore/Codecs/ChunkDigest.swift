/// The SHA-256 of a chunk's uncompressed bytes: the chunk's name everywhere in Cairn.
///
/// Held as four words in the digest's byte order, so it hashes, compares and copies cheaply and
/// loads straight from a page of an index without decoding.
public struct ChunkDigest: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var w0: UInt64
    public var w1: UInt64
    public var w2: UInt64
    public var w3: UInt64

    public static let byteCount = 32

    public init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        self.w0 = w0
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
    }

    /// Loads a digest from 32 bytes at `offset` in `buffer`.
    public init(loadingFrom buffer: UnsafeRawBufferPointer, at offset: Int = 0) {
        w0 = buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        w1 = buffer.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
        w2 = buffer.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
        w3 = buffer.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        self = bytes.withUnsafeBytes { ChunkDigest(loadingFrom: $0) }
    }

    public init?(hex: String) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in 0..<32 {
            guard let hi = Self.nibble(utf8[2 * i]), let lo = Self.nibble(utf8[2 * i + 1]) else { return nil }
            bytes[i] = hi << 4 | lo
        }
        self.init(bytes: bytes)
    }

    public func store(to buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0) {
        buffer.storeBytes(of: w0, toByteOffset: offset, as: UInt64.self)
        buffer.storeBytes(of: w1, toByteOffset: offset + 8, as: UInt64.self)
        buffer.storeBytes(of: w2, toByteOffset: offset + 16, as: UInt64.self)
        buffer.storeBytes(of: w3, toByteOffset: offset + 24, as: UInt64.self)
    }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBytes { store(to: $0) }
        return out
    }

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }

    /// The first eight bytes as a big-endian number: for sorting and for fan-out tables.
    public var prefix: UInt64 { w0.bigEndian }

    public static func < (a: ChunkDigest, b: ChunkDigest) -> Bool {
        if a.w0 != b.w0 { return a.w0.bigEndian < b.w0.bigEndian }
        if a.w1 != b.w1 { return a.w1.bigEndian < b.w1.bigEndian }
        if a.w2 != b.w2 { return a.w2.bigEndian < b.w2.bigEndian }
        return a.w3.bigEndian < b.w3.bigEndian
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
