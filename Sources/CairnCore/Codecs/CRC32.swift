import CZlib

/// CRC-32 (the zlib/ISO-HDLC polynomial) of stored bytes: catches a flipped bit in a pack record
/// or an archive block without decompressing or re-hashing.
public enum CRC32 {
    public static func checksum(_ buffer: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return seed }
        return UInt32(crc32_z(UInt(seed), base.assumingMemoryBound(to: UInt8.self), buffer.count))
    }

    public static func checksum(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }
}
