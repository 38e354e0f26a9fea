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
        #expect(image.info.format == "vmdk")
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
}
