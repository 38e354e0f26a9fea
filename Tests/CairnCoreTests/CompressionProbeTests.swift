import CairnCore
import Testing

/// The probe that spares zstd a frame it cannot shrink; a wrong "incompressible" would only cost
/// space, so it must say so only for data that truly does not compress.
@Suite struct CompressionProbeTests {
    static func bytes(_ count: Int, _ make: (Int, inout SplitMix) -> UInt8) -> [UInt8] {
        var rng = SplitMix(seed: 19)
        return (0..<count).map { make($0, &rng) }
    }

    @Test func randomDataIsNotWorthCompressingButTextAndMixedDataAre() {
        let compressor = ZstdCompressor(level: 2)
        let random = Self.bytes(2 << 20) { _, rng in UInt8(truncatingIfNeeded: rng.next()) }
        let text = Self.bytes(2 << 20) { i, rng in
            i % 64 == 0 ? 10 : UInt8(97 + rng.next() % 16)
        }
        // Half random, half text, in 64 KiB stripes: samples land on both.
        let mixed = (0..<(2 << 20)).map { i in (i >> 16) % 2 == 0 ? random[i] : text[i] }
        random.withUnsafeBytes { #expect(!compressor.worthCompressing($0)) }
        text.withUnsafeBytes { #expect(compressor.worthCompressing($0)) }
        mixed.withUnsafeBytes { #expect(compressor.worthCompressing($0)) }
        // Below the probe's minimum nothing is judged: zstd tries.
        Array(random.prefix(ZstdCompressor.probeMinimum - 1)).withUnsafeBytes {
            #expect(compressor.worthCompressing($0))
        }
        // What the probe calls incompressible, zstd indeed cannot shrink.
        var out = [UInt8](repeating: 0, count: ZstdCompressor.bound(random.count))
        let n = random.withUnsafeBytes { source in out.withUnsafeMutableBytes { compressor.compress(source, into: $0) }
        }
        #expect(n == nil)
    }
}

/// A small deterministic generator (SplitMix64).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
