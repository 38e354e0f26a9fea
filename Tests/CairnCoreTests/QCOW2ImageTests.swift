import CairnCore
import CairnTestSupport
import Foundation
import Testing

@Suite("qcow2 reader against QEMU")
struct QCOW2ImageTests {
    @Test func manifestIsPresent() {
        #expect(QCOW2Fixtures.manifest.count >= 20)
    }

    @Test("guest view equals MANIFEST and a fresh qemu-img convert", arguments: QCOW2Fixtures.manifest)
    func guestViewMatchesQEMU(_ entry: QCOW2Fixtures.Entry) throws {
        let path = QCOW2Fixtures.path(entry.name)
        let image = try DiskImageOpener.open(path, snapshot: entry.snapshot)
        #expect(image.virtualSize == entry.virtualSize)
        #expect(image.info.format == .qcow2)
        #expect(image.info.snapshot == entry.snapshot)
        let digest = try QCOW2Fixtures.guestDigest(image)
        #expect(digest == entry.digest)

        // Compare with QEMU as installed now, not only with the committed MANIFEST.
        let qemuDigest: String
        if let snapshot = entry.snapshot {
            let temporary = TemporaryDirectory("cairn-qcow2")
            let copy = try temporary.copy(path, as: "snapshot.qcow2")
            try QemuTools.check("qemu-img", ["snapshot", "-a", snapshot, copy])
            qemuDigest = try QemuTools.rawDigest(of: copy)
        } else {
            qemuDigest = try QemuTools.rawDigest(of: entry.name, in: QCOW2Fixtures.directory)
        }
        #expect(digest == qemuDigest)

        let zeros = try QCOW2Fixtures.checkZeroExtents(image)
        #expect(zeros.wrong.isEmpty, "extents reported zero but holding data at \(zeros.wrong)")
        // Preallocated images (and raw data files, which QEMU preallocates) map every cluster.
        let preallocated = entry.name.hasPrefix("prealloc") || entry.name == "extraw.qcow2"
        #expect(preallocated || zeros.zeroBytes > 0, "unwritten ranges must be reported as zero extents")
    }

    @Test func extentsFollowTheL2Tables() throws {
        // c64k: 64 KiB written at 0 and 1 KiB at 3 MiB, in a 4 MiB disk.
        let image = try DiskImageOpener.open(QCOW2Fixtures.path("c64k.qcow2"))
        #expect(try image.extent(at: 0, maxLength: 1 << 30) == ImageExtent(length: 65536, isZero: false))
        #expect(try image.extent(at: 65536, maxLength: 1 << 30) == ImageExtent(length: 3 << 20 - 65536, isZero: true))
        #expect(try image.extent(at: 3 << 20, maxLength: 1 << 30) == ImageExtent(length: 65536, isZero: false))
        #expect(try image.extent(at: 100, maxLength: 10) == ImageExtent(length: 10, isZero: false))
    }

    @Test func infoDescribesTheChain() throws {
        let image = try DiskImageOpener.open(QCOW2Fixtures.path("sub/top.qcow2"))
        let info = image.info
        #expect(info.virtualSize == 2560 << 10)
        #expect(info.clusterSize == 4096)
        #expect(info.qcow2Version == 3)
        #expect(info.backingChain?.count == 2)
        #expect(info.backingChain?.first?.hasSuffix("sub/mid.qcow2") == true)
        #expect(info.backingChain?.last?.hasSuffix("base.qcow2") == true)
        let v2 = try DiskImageOpener.open(QCOW2Fixtures.path("v2.qcow2"))
        #expect(v2.info.qcow2Version == 2 && v2.info.backingChain == [])
    }

    /// The dirty bit only says refcounts may be stale; the mapping is valid, so the image reads.
    @Test func dirtyImagesRead() throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let path = try temporary.copy(QCOW2Fixtures.path("c64k.qcow2"), as: "dirty.qcow2")
        try QCOW2Patch.u64(path, at: 72, 1)
        let entry = try #require(QCOW2Fixtures.manifest.first { $0.name == "c64k.qcow2" })
        #expect(try QCOW2Fixtures.guestDigest(DiskImageOpener.open(path)) == entry.digest)
    }

    /// A 1 TiB image is walked by its L1/L2 tables alone: few extents, no data read.
    @Test(.timeLimit(.minutes(1))) func hugeSparseImageIsWalkedByItsTables() throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let path = temporary.path + "/huge.qcow2"
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", path, "1T"])
        try QemuTools.check("qemu-io", ["-f", "qcow2", "-c", "write -P 0x42 900G 64k", path])
        let image = try DiskImageOpener.open(path)
        var offset: UInt64 = 0
        var extents: [ImageExtent] = []
        while offset < image.virtualSize {
            let extent = try image.extent(at: offset, maxLength: 1 << 40)
            extents.append(extent)
            offset += extent.length
        }
        #expect(
            extents == [
                ImageExtent(length: 900 << 30, isZero: true), ImageExtent(length: 65536, isZero: false),
                ImageExtent(length: 124 << 30 - 65536, isZero: true),
            ])
    }

    @Test func snapshotByIdReadsTheSnapshot() throws {
        let image = try DiskImageOpener.open(QCOW2Fixtures.path("snap.qcow2"), snapshot: "1")
        #expect(image.virtualSize == 1 << 20)
        #expect(image.info.snapshot == "s1")
    }

    @Test func unknownSnapshotListsTheOthers() throws {
        let error = try #require(throws: CairnError.self) {
            try DiskImageOpener.open(QCOW2Fixtures.path("snap.qcow2"), snapshot: "nope")
        }
        #expect(error.code == .usage)
        #expect(
            error.message.contains("nope") && error.message.contains("\"s1\"") && error.message.contains("snap.qcow2"))
    }

    /// Images too big to commit (2 MiB clusters: ~14 MiB each) are made here and compared with QEMU.
    @Test(arguments: ["cluster_size=2M", "cluster_size=2M,extended_l2=on", "cluster_size=2M,compression_type=zstd"])
    func twoMegabyteClusters(_ options: String) throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let path = temporary.path + "/c2m.qcow2"
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", "-o", options, path, "6M"])
        let compressed = options.contains("zstd") ? "-c " : ""
        try QemuTools.check(
            "qemu-io",
            [
                "-f", "qcow2", "-c", "write -P 0x5a 64k 64k", "-c", "write -z 128k 4k",
                "-c", "write \(compressed)-P 0x77 4M 2M",
            ] + (options.contains("extended") ? ["-c", "write -z 2M 64k"] : []) + [path])
        let image = try DiskImageOpener.open(path)
        #expect(try QCOW2Fixtures.guestDigest(image) == QemuTools.rawDigest(of: path))
        #expect(try QCOW2Fixtures.checkZeroExtents(image).wrong.isEmpty)
    }

    @Test(arguments: ["aes", "luks"])
    func encryptedImagesNeedAKey(_ format: String) throws {
        let temporary = TemporaryDirectory("cairn-qcow2")
        let path = temporary.path + "/\(format).qcow2"
        let made = QemuTools.makeEncryptedImage(format: format, at: path)
        try #require(made, "qemu-img could not create a \(format) image")
        let error = try #require(throws: CairnError.self) { try DiskImageOpener.open(path) }
        #expect(error.code == .badImage)
        #expect(error.message.contains("encrypted") && error.message.contains("key"))
    }
}
