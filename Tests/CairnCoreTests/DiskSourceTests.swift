import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// The source seam: how a named source is recorded and matched, and extents with the third state.
@Suite(.timeLimit(.minutes(2)))
struct DiskSourceTests {
    @Test func aFileIsRecordedByItsAbsolutePath() {
        let cwd = FileManager.default.currentDirectoryPath
        let source = DiskSources.source(for: "./images/vm1.qcow2")
        #expect(source is FileDiskSource)
        #expect(source.location == "\(cwd)/images/vm1.qcow2")
        #expect(source.defaultDiskName == "vm1.qcow2")
        #expect(BackupSource(path: "images/vm1.qcow2").path == "\(cwd)/images/vm1.qcow2")
        let recorded = SourceImageInfo(format: .qcow2, path: "\(cwd)/images/vm1.qcow2", virtualSize: 1)
        #expect(source.isSameDisk(as: recorded))
        #expect(!source.isSameDisk(as: SourceImageInfo(format: .qcow2, path: "/elsewhere/vm1.qcow2", virtualSize: 1)))
    }

    @Test func anNBDExportIsTheSameDiskWhateverItsSocket() {
        let source = DiskSources.source(for: "nbd+unix:///vda?socket=/run/new.sock")
        #expect(source is NBDDiskSource)
        #expect(source.location == "nbd+unix:///vda?socket=/run/new.sock")
        #expect(source.defaultDiskName == "vda")
        #expect(DiskSources.source(for: "nbd://h/").defaultDiskName == "nbd")
        let before = SourceImageInfo(
            format: .raw, path: "nbd+unix:///vda?socket=/run/old.sock", virtualSize: 1, kind: .nbd)
        #expect(source.isSameDisk(as: before))
        #expect(!source.isSameDisk(as: SourceImageInfo(format: .raw, path: "/var/vda.img", virtualSize: 1)))
    }

    @Test func aMalformedURIFailsWhenOpened() {
        let source = DiskSources.source(for: "nbd://host:notaport/e")
        #expect(throws: CairnError.self) { try source.open(DiskOpenOptions()) }
    }

    /// A qcow2 image with data, a bitmap added, then writes: through the bitmap its data is
    /// `.unchanged` where QEMU recorded no write, `.data` where it did, and holes stay `.zero`.
    @Test func extentsThroughABitmapSayWhatIsUnchanged() throws {
        let dir = TemporaryDirectory("cairn-source")
        let path = dir.file("d.qcow2")
        _ = try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", path, "16M"])
        _ = try QemuTools.check("qemu-io", ["-c", "write -P 0x11 0 8M", path])
        _ = try QemuTools.check("qemu-img", ["bitmap", "--add", "-g", "64K", path, "b0"])
        _ = try QemuTools.check("qemu-io", ["-c", "write -P 0x22 1M 64k", "-c", "write -P 0x33 12M 64k", path])
        let image = try #require(try DiskImageOpener.open(path) as? QCOW2Image)
        let tracked = ChangeTrackedImage(image, changes: try image.dirtyBitmap(named: "b0"))
        var runs: [(UInt64, UInt64, ImageExtent.State)] = []
        var position: UInt64 = 0
        while position < tracked.virtualSize {
            let extent = try tracked.extent(at: position, maxLength: tracked.virtualSize - position)
            if let last = runs.last, last.2 == extent.state, last.0 + last.1 == position {
                runs[runs.count - 1].1 += extent.length
            } else {
                runs.append((position, extent.length, extent.state))
            }
            position += extent.length
        }
        let mib: UInt64 = 1 << 20
        let expected: [(UInt64, UInt64, ImageExtent.State)] = [
            (0, mib, .unchanged), (mib, 64 << 10, .data), (mib + (64 << 10), 7 * mib - (64 << 10), .unchanged),
            (8 * mib, 4 * mib, .zero), (12 * mib, 64 << 10, .data),
            (12 * mib + (64 << 10), 4 * mib - (64 << 10), .zero),
        ]
        #expect(
            runs.map { [$0.0, $0.1, UInt64($0.2.rawValue)] } == expected.map { [$0.0, $0.1, UInt64($0.2.rawValue)] })
        #expect(tracked.takeMapFailure() == nil)
    }
}
