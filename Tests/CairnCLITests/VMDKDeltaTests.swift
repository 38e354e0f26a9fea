import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// ESXi VMs with snapshots: a `vmfs` base and vmfsSparse (COWD) or seSparse deltas named by
/// `parentFileNameHint`, written by hand (qemu-img reads both formats but cannot make them). What
/// is backed up is the disk "as now": `qemu-img convert -O raw` of the top delta, and the same
/// bytes worked out here from the base and the grains each delta holds.
@Suite("vmdk ESXi snapshot deltas", .timeLimit(.minutes(2)))
struct VMDKDeltaTests {
    /// Crosses an SEsparse grain table (16 MiB) and several COWD ones (2 MiB); not a multiple of
    /// an SEsparse grain, so its last grain is partial.
    static let size: UInt64 = (40 << 20) + 1536
    static var sectors: UInt64 { size / 512 }

    /// A grain of `byte`s, `count` bytes of it (the rest zeros).
    static func filled(_ byte: UInt8, _ count: Int) -> VMDKDeltaGrain { .data([UInt8](repeating: byte, count: count)) }

    /// What the first delta holds: runs of adjacent grains, grains at table boundaries, grains
    /// over the base's data and holes, the disk's last (partial) grain; SEsparse zero and
    /// unmapped grains over the base's data.
    static func firstDelta(_ format: VMDKDeltaFormat) -> [UInt64: VMDKDeltaGrain] {
        let grain = format.grainBytes
        let last = (sectors * 512 - 1) / UInt64(grain)
        var generator = TestImage(seed: 23)
        var grains: [UInt64: VMDKDeltaGrain] = [
            0: filled(0xA1, grain), 1: filled(0xA2, grain), 2: .data(generator.randomBytes(grain)),
            4095: filled(0xA3, grain), 4096: filled(0xA4, grain), 4097: filled(0xA5, grain / 2),
            last: filled(0xA6, grain),
        ]
        let megabyte = UInt64(1 << 20) / UInt64(grain)  // the base's 0x7c pattern starts at 1 MiB
        for index in 0..<8 { grains[megabyte + 40 + UInt64(index)] = .data(generator.randomBytes(grain)) }
        grains[(33 << 20) / UInt64(grain)] = filled(0xA7, grain)  // past the base's data, over a hole
        if format == .seSparse {
            grains[megabyte + 3] = .zero
            grains[megabyte + 4] = .zero
            grains[megabyte + 10] = .unmapped
            grains[5000] = .zero  // over a hole: still a zero grain
        }
        return grains
    }

    /// The second delta, over the first: some grains again, some new.
    static func secondDelta(_ format: VMDKDeltaFormat) -> [UInt64: VMDKDeltaGrain] {
        let grain = format.grainBytes
        var grains: [UInt64: VMDKDeltaGrain] = [1: filled(0xB1, grain), 3: filled(0xB2, grain), 4096: filled(0xB3, 7)]
        if format == .seSparse {
            grains[0] = .unmapped  // over the first delta's data
            grains[2] = .zero
        }
        return grains
    }

    /// `base` with `grains` laid over it, as a reader must see the delta.
    static func apply(_ grains: [UInt64: VMDKDeltaGrain], grainBytes: Int, to base: inout [UInt8]) {
        for (index, content) in grains {
            let start = Int(index) * grainBytes
            let end = min(start + grainBytes, base.count)
            var bytes = [UInt8](repeating: 0, count: grainBytes)
            if case .data(let data) = content { bytes.replaceSubrange(0..<data.count, with: data) }
            base.replaceSubrange(start..<end, with: bytes[0..<(end - start)])
        }
    }

    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test(arguments: VMDKDeltaFormat.allCases)
    func snapshotChainReadsAsNow(format: VMDKDeltaFormat) throws {
        let dir = TemporaryDirectory("cairn-vmdk-delta")
        try VMDKFixtures.makeVMFSBase("web", size: Self.size, in: dir.path)
        try VMDKFixtures.writeDelta(
            format, named: "web-000001", sectors: Self.sectors, grains: Self.firstDelta(format), parent: "web.vmdk",
            in: dir.path)
        try VMDKFixtures.writeDelta(
            format, named: "web-000002", sectors: Self.sectors, grains: Self.secondDelta(format),
            parent: "web-000001.vmdk", in: dir.path)

        // The oracle: QEMU's view of the top delta, and the same bytes worked out by hand.
        try VMDKFixtures.sh("qemu-img convert -f vmdk -O raw web-000002.vmdk oracle.raw", in: dir.path)
        try VMDKFixtures.sh("qemu-img convert -f vmdk -O raw web.vmdk base.raw", in: dir.path)
        var expected = try Self.bytes(dir.file("base.raw"))
        Self.apply(Self.firstDelta(format), grainBytes: format.grainBytes, to: &expected)
        Self.apply(Self.secondDelta(format), grainBytes: format.grainBytes, to: &expected)
        let oracle = try Self.bytes(dir.file("oracle.raw"))
        #expect(oracle.count == expected.count)
        #expect(oracle == expected, "qemu-img reads the hand-made \(format) chain as the grains say")

        // Backup, restore raw (byte-identical) and as monolithicSparse and streamOptimized VMDKs
        // that `qemu-img check` finds clean and `qemu-img compare` identical.
        let raw = try VMDKBackupTests.backupAndRestore("web-000002.vmdk", in: dir)
        #expect(try Self.bytes(raw) == oracle)

        let show = CairnProcess.run(["show", "--repo", dir.file("repo"), "v@latest", "--json"])
        #expect(show.stdout.contains("\"vmdkCreateType\" : \"\(format.rawValue)\""), "\(show.stdout)")
        #expect(show.stdout.contains("web-000001.vmdk") && show.stdout.contains("web.vmdk"), "\(show.stdout)")
        #expect(show.stdout.contains("\"virtualSize\" : \(Self.size)"), "\(show.stdout)")
    }

    /// A delta whose parent changed after the snapshot was taken (its CID is not the delta's
    /// parentCID) is refused, as QEMU refuses it.
    @Test(arguments: VMDKDeltaFormat.allCases)
    func parentChangedAfterTheSnapshotIsRefused(format: VMDKDeltaFormat) throws {
        let dir = TemporaryDirectory("cairn-vmdk-delta")
        try VMDKFixtures.makeVMFSBase("db", size: 4 << 20, in: dir.path)
        try VMDKFixtures.writeDelta(
            format, named: "db-000001", sectors: 8192, grains: [3: Self.filled(0x5C, 512)], parent: "db.vmdk",
            in: dir.path)
        try VMDKFixtures.editDescriptor(dir.file("db.vmdk")) {
            $0.replacingOccurrences(of: #"\nCID=[0-9a-f]+"#, with: "\nCID=0badc0de", options: .regularExpression)
        }
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "db", dir.file("db-000001.vmdk")])
        #expect(backup.status == 6, "\(backup.stderr)")
        #expect(backup.stderr.contains("the parent changed after this snapshot was taken"), "\(backup.stderr)")
        #expect(throws: (any Error).self) {
            try VMDKFixtures.sh("qemu-img convert -f vmdk -O raw db-000001.vmdk out.raw", in: dir.path)
        }
    }
}
