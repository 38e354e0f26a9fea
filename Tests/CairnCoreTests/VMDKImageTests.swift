import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The VMDK reader in-process: holes and zero grains are reported as zero extents (so the backup
/// skips them without reading), in agreement with `qemu-img map`.
@Suite("vmdk reader", .timeLimit(.minutes(1)))
struct VMDKImageTests {
    /// (start, length) of the ranges `qemu-img map` says hold data (not zero, not holes).
    static func qemuDataRanges(_ image: String, in directory: String) throws -> [Range<UInt64>] {
        let json = try VMDKFixtures.sh("qemu-img map -f vmdk --output=json \(image)", in: directory)
        var ranges: [Range<UInt64>] = []
        for entry in Fixture.jsonArray(json) {
            guard let start = entry["start"] as? Int, let length = entry["length"] as? Int,
                entry["data"] as? Bool == true, entry["zero"] as? Bool == false
            else { continue }
            let range = UInt64(start)..<UInt64(start + length)
            if let last = ranges.last, last.upperBound == range.lowerBound {
                ranges[ranges.count - 1] = last.lowerBound..<range.upperBound
            } else {
                ranges.append(range)
            }
        }
        return ranges
    }

    @Test(arguments: [false, true])
    func zeroExtentsMatchQemuMap(zeroedGrain: Bool) throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        let size: UInt64 = (2 << 30) + (1 << 20) + 1536
        try VMDKFixtures.make(
            "d.vmdk", subformat: "twoGbMaxExtentSparse", zeroedGrain: zeroedGrain, size: size, in: dir.path)
        let image = try DiskImageOpener.open(dir.file("d.vmdk"))
        #expect(image.info.format == .vmdk)
        #expect(image.virtualSize == size)
        var ranges: [Range<UInt64>] = []
        var offset: UInt64 = 0
        var calls = 0
        while offset < image.virtualSize {
            let extent = try image.extent(at: offset, maxLength: 1 << 40)
            #expect(extent.length > 0)
            if !extent.isZero { ranges.append(offset..<offset + extent.length) }
            offset += extent.length
            calls += 1
        }
        // Cairn reports whole grains; qemu-img map reports the same allocated grains. With
        // zeroed grains the `write -z` grain is a zero extent for both.
        #expect(ranges == (try Self.qemuDataRanges("d.vmdk", in: dir.path)))
        #expect(ranges.count >= 4)
        #expect(calls < 40, "a 2 GiB sparse disk is walked by its tables, not byte by byte")
    }

    /// An ESXi delta without a parent: its unallocated grains and SEsparse zero and unmapped
    /// grains are zero extents (skipped without reading); runs of adjacent grains are one extent,
    /// and a 1-sector-grain COWD disk is walked by its tables, not grain by grain.
    @Test(arguments: VMDKDeltaFormat.allCases)
    func deltaExtentsAreItsAllocatedGrains(format: VMDKDeltaFormat) throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        let grain = UInt64(format.grainBytes)
        let sectors: UInt64 = 64 << 11  // 64 MiB
        var grains: [UInt64: VMDKDeltaGrain] = [:]
        for index: UInt64 in [7, 8, 9, 10, 4095, 4096, 9000] {
            grains[index] = .data([UInt8](repeating: 0x3C, count: 100))
        }
        if format == .seSparse {
            grains[11] = .zero
            grains[12] = .unmapped
        }
        try VMDKFixtures.writeDelta(format, named: "solo", sectors: sectors, grains: grains, in: dir.path)
        let image = try DiskImageOpener.open(dir.file("solo.vmdk"))
        #expect(image.virtualSize == sectors * 512)
        #expect(image.info.vmdkCreateType == format.rawValue)
        #expect(image.info.clusterSize == nil)

        var ranges: [Range<UInt64>] = []
        var offset: UInt64 = 0
        var calls = 0
        while offset < image.virtualSize {
            let extent = try image.extent(at: offset, maxLength: 1 << 40)
            #expect(extent.length > 0)
            if !extent.isZero { ranges.append(offset..<offset + extent.length) }
            offset += extent.length
            calls += 1
        }
        #expect(ranges == [7 * grain..<11 * grain, 4095 * grain..<4097 * grain, 9000 * grain..<9001 * grain])
        #expect(calls < 80, "a 64 MiB delta is walked by its tables: \(calls) calls")

        // The bytes: each grain's 100 bytes of 0x3c, zeros elsewhere, through one read.
        var buffer = [UInt8](repeating: 0xFF, count: Int(4 * grain))
        try buffer.withUnsafeMutableBytes { try image.read(into: $0, at: 8 * grain) }
        var expected = [UInt8](repeating: 0, count: Int(4 * grain))
        for index in 0..<3 {
            expected.replaceSubrange(
                index * Int(grain)..<index * Int(grain) + 100, with: [UInt8](repeating: 0x3C, count: 100))
        }
        #expect(buffer == expected)
    }
}
