import CairnCore

/// Reads a fuzz input front to back: a few control bytes, then the body.
///
/// Targets take their first byte as options (bit 0: repair checksums) so that libFuzzer's
/// mutations reach past CRC and SHA-256 checks into the fields behind them, while inputs with
/// the bit clear still test the checks themselves.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var position = 0

    public init(_ buffer: UnsafeRawBufferPointer) {
        bytes = Array(buffer)
    }

    public var isEmpty: Bool { position >= bytes.count }

    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    /// What is left, consumed.
    public mutating func rest() -> [UInt8] {
        defer { position = bytes.count }
        return position < bytes.count ? Array(bytes[position...]) : []
    }
}

/// Little-endian field access on byte arrays, bounds-checked, for the harnesses' checksum repairs.
extension Array where Element == UInt8 {
    public func le32(at offset: Int) -> UInt32? {
        guard offset >= 0, offset <= count - 4 else { return nil }
        return (0..<4).reduce(UInt32(0)) { $0 | UInt32(self[offset + $1]) << (8 * UInt32($1)) }
    }

    public func le64(at offset: Int) -> UInt64? {
        guard offset >= 0, offset <= count - 8 else { return nil }
        return (0..<8).reduce(UInt64(0)) { $0 | UInt64(self[offset + $1]) << (8 * UInt64($1)) }
    }

    public mutating func setLE32(_ value: UInt32, at offset: Int) {
        guard offset >= 0, offset <= count - 4 else { return }
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    public mutating func setLE64(_ value: UInt64, at offset: Int) {
        guard offset >= 0, offset <= count - 8 else { return }
        for i in 0..<8 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    /// CRC-32 of `range`, clamped to the array.
    public func crc32(_ range: Range<Int>) -> UInt32 {
        let lower = Swift.max(0, Swift.min(range.lowerBound, count))
        let upper = Swift.max(lower, Swift.min(range.upperBound, count))
        return self[lower..<upper].withUnsafeBytes { CRC32.checksum($0) }
    }
}
