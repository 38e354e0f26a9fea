import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The writer's images must pass `qemu-img check` and equal the data written (`qemu-img compare`
/// against a raw file holding the same bytes), and read back the same through `QCOW2Image`.
@Suite("qcow2 writer", .timeLimit(.minutes(1)))
struct QCOW2WriterTests {
    struct Shape: Sendable, CustomStringConvertible {
        var virtualSize: UInt64
        var clusterSize: UInt64
        /// Which guest clusters hold data.
        var isSet: @Sendable (_ cluster: UInt64, _ count: UInt64) -> Bool
        var label: String
        var description: String { "\(label): \(virtualSize) B, \(clusterSize) B clusters" }
    }

    static let shapes: [Shape] = [
        Shape(virtualSize: 1 << 20, clusterSize: 65536, isSet: { c, _ in c % 3 == 0 }, label: "every third"),
        Shape(
            virtualSize: 1_000_448, clusterSize: 65536, isSet: { c, n in c == n - 1 || c == 2 },
            label: "partial last cluster"),
        Shape(
            virtualSize: 1_000_001, clusterSize: 65536, isSet: { c, n in c == n - 1 },
            label: "size not a multiple of 512"),
        Shape(
            virtualSize: 3 << 20 + 512, clusterSize: 4096, isSet: { c, _ in (c * 7919) % 5 < 2 },
            label: "scattered 4 KiB"),
        Shape(virtualSize: 5 << 20, clusterSize: 2 << 20, isSet: { c, _ in c == 1 }, label: "2 MiB clusters"),
        Shape(
            virtualSize: 300 << 10, clusterSize: 512, isSet: { c, _ in c % 17 != 5 },
            label: "512 B clusters, many refcount blocks"),
        Shape(
            virtualSize: 10 << 20, clusterSize: 512, isSet: { c, _ in c % 1000 != 1 },
            label: "two refcount table clusters"),
        Shape(virtualSize: 1 << 20, clusterSize: 65536, isSet: { _, _ in false }, label: "empty"),
        Shape(virtualSize: 0, clusterSize: 65536, isSet: { _, _ in false }, label: "zero size"),
        Shape(
            virtualSize: 600 << 30, clusterSize: 65536,
            isSet: { c, n in c == 0 || c == (4 << 30) / 65536 + 1 || c == (300 << 30) / 65536 || c == n - 1 },
            label: "600 GiB sparse"),
    ]

    /// The byte the test writes at guest offset `offset` of a set cluster: never zero.
    static func pattern(_ offset: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: offset / 512 * 31 + offset % 251) | 1 }

    @Test(arguments: shapes)
    func imageIsCleanAndIdentical(_ shape: Shape) throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let qcow2 = temporary.path + "/restored.qcow2"
        let raw = temporary.path + "/expected.raw"
        let clusters = (shape.virtualSize + shape.clusterSize - 1) / shape.clusterSize
        var bitmap = ClusterBitmap(clusterCount: clusters)
        var set: [UInt64] = []
        for c in 0..<clusters where shape.isSet(c, clusters) {
            bitmap.set(c)
            set.append(c)
        }
        #expect(bitmap.setCount == UInt64(set.count))
        let writer = try QCOW2Writer(
            path: qcow2, virtualSize: shape.virtualSize, clusterSize: shape.clusterSize, allocated: bitmap, force: false
        )
        let expected = try File.open(raw, .createNew)
        try expected.truncate(to: shape.virtualSize)

        // Write clusters in reverse order, and runs of neighbours in one call, to show order does not matter.
        var buffer = [UInt8](repeating: 0, count: Int(shape.clusterSize) * 4)
        var index = set.count
        while index > 0 {
            var first = index - 1
            while first > 0 && set[first - 1] == set[first] - 1 && index - first < 4 { first -= 1 }
            let start = set[first] * shape.clusterSize
            let end = min((set[index - 1] + 1) * shape.clusterSize, shape.virtualSize)
            let count = Int(end - start)
            for i in 0..<count { buffer[i] = Self.pattern(start + UInt64(i)) }
            try buffer.withUnsafeBytes { raw in
                let part = UnsafeRawBufferPointer(rebasing: raw[0..<count])
                try writer.write(part, atGuestOffset: start)
                try expected.write(part, at: start)
            }
            index = first
        }
        try writer.finish()

        let check = try QemuTools.run("qemu-img", ["check", "-f", "qcow2", qcow2])
        #expect(check.status == 0, "qemu-img check: \(check.standardOutput) \(check.standardError)")
        #expect(check.standardOutput.contains("No errors"), "\(check.standardOutput)")
        if shape.virtualSize % 512 == 0 {
            let compare = try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, qcow2])
            #expect(compare.status == 0, "qemu-img compare: \(compare.standardOutput) \(compare.standardError)")
        }

        // Cairn reads back what was written, and sees unset clusters as zero extents.
        let image = try DiskImageOpener.open(qcow2)
        #expect(image.virtualSize == (shape.virtualSize + 511) / 512 * 512)
        for c in Set([0, clusters / 2, clusters &- 1]) where c < clusters {
            let start = c * shape.clusterSize
            let length = min(shape.clusterSize, shape.virtualSize - start)
            let extent = try image.extent(at: start, maxLength: length)
            #expect(extent.isZero == !bitmap.contains(c))
            var read = [UInt8](repeating: 0xEE, count: Int(length))
            try read.withUnsafeMutableBytes { try image.read(into: $0, at: start) }
            let want = (0..<length).map { bitmap.contains(c) ? Self.pattern(start + $0) : 0 }
            #expect(read == want, "guest cluster \(c)")
        }
    }

    @Test func refusesAnExistingFileWithoutForce() throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let path = temporary.path + "/exists.qcow2"
        try FileSystem.writeAtomically([1], to: path)
        let bitmap = ClusterBitmap(clusterCount: 1)
        let error = try #require(throws: CairnError.self) {
            try QCOW2Writer(path: path, virtualSize: 65536, clusterSize: 65536, allocated: bitmap, force: false)
        }
        #expect(error.code == .exists)
        let writer = try QCOW2Writer(path: path, virtualSize: 65536, clusterSize: 65536, allocated: bitmap, force: true)
        try writer.finish()
        #expect(try QemuTools.run("qemu-img", ["check", path]).status == 0)
    }

    @Test func refusesWritesToUnreservedClusters() throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        var bitmap = ClusterBitmap(clusterCount: 4)
        bitmap.set(1)
        let writer = try QCOW2Writer(
            path: temporary.path + "/w.qcow2", virtualSize: 4 * 4096, clusterSize: 4096, allocated: bitmap, force: false
        )
        let bytes = [UInt8](repeating: 7, count: 8192)
        let error = try #require(throws: CairnError.self) {
            try bytes.withUnsafeBytes { try writer.write($0, atGuestOffset: 4096) }
        }
        #expect(error.message.contains("cluster 2"))
        try writer.finish()
    }

    @Test func concurrentWritesLandInPlace() throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let path = temporary.path + "/c.qcow2"
        let clusters: UInt64 = 256
        var bitmap = ClusterBitmap(clusterCount: clusters)
        for c in 0..<clusters where c % 2 == 0 { bitmap.set(c) }
        let writer = try QCOW2Writer(
            path: path, virtualSize: clusters * 4096, clusterSize: 4096, allocated: bitmap, force: false)
        DispatchQueue.concurrentPerform(iterations: Int(clusters / 2)) { i in
            let c = UInt64(i) * 2
            let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: i) | 1, count: 4096)
            try! bytes.withUnsafeBytes { try writer.write($0, atGuestOffset: c * 4096) }
        }
        try writer.finish()
        #expect(try QemuTools.run("qemu-img", ["check", path]).status == 0)
        let image = try DiskImageOpener.open(path)
        var read = [UInt8](repeating: 0, count: 4096)
        try read.withUnsafeMutableBytes { try image.read(into: $0, at: 200 * 4096) }
        #expect(read == [UInt8](repeating: 100 | 1, count: 4096))
    }
}
