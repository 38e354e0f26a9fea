import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// VMDK through the `cairn` binary: what is backed up is what QEMU reads (`qemu-img compare`
/// against the restored raw disk), except where QEMU is lax and the expected bytes are written here.
@Suite("vmdk backups", .timeLimit(.minutes(2)))
struct VMDKBackupTests {
    struct Kind: Sendable, CustomStringConvertible {
        var subformat: String
        var zeroedGrain: Bool
        var description: String { subformat + (zeroedGrain ? "+zeroed_grain" : "") }
    }

    static let kinds: [Kind] = [
        Kind(subformat: "monolithicSparse", zeroedGrain: false), Kind(subformat: "monolithicSparse", zeroedGrain: true),
        Kind(subformat: "twoGbMaxExtentSparse", zeroedGrain: false),
        Kind(subformat: "twoGbMaxExtentSparse", zeroedGrain: true),
        Kind(subformat: "monolithicFlat", zeroedGrain: false),
        Kind(subformat: "twoGbMaxExtentFlat", zeroedGrain: false),
    ]
    /// Crosses the 2 GiB split and is not a multiple of the 64 KiB block size (sparse, so cheap).
    static let size: UInt64 = (2 << 30) + (1 << 20) + 3 * 512

    /// Backs `image` up (in `directory`), restores it raw and as qcow2, and returns the raw path.
    static func backupAndRestore(_ image: String, in dir: TemporaryDirectory) throws -> String {
        let repo = dir.file("repo")
        if !FileManager.default.fileExists(atPath: repo) {
            #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        }
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "v", dir.file(image)])
        #expect(backup.status == 0, "\(backup.stderr)")
        let raw = dir.file("restored.raw")
        try? FileManager.default.removeItem(atPath: raw)
        let restored = CairnProcess.run(["restore", "--repo", repo, "v@latest", "--to", raw])
        #expect(restored.status == 0, "\(restored.stderr)")
        try restoreAsVMDK("v@latest", repo: repo, matching: raw, in: dir)
        return raw
    }

    /// Restores `id` as a monolithicSparse and as a streamOptimized VMDK and has QEMU judge both:
    /// `qemu-img check` clean, `qemu-img compare` identical to `expected` (a raw image).
    static func restoreAsVMDK(_ id: String, repo: String, matching expected: String, in dir: TemporaryDirectory)
        throws
    {
        for subformat in VMDKSubformat.allCases {
            let out = dir.file("restored-\(subformat.rawValue).vmdk")
            let restored = CairnProcess.run([
                "restore", "--repo", repo, id, "--to", out, "--format", "vmdk", "--subformat", subformat.rawValue,
                "--force",
            ])
            #expect(restored.status == 0, "\(subformat): \(restored.stderr)")
            try VMDKFixtures.sh(
                "qemu-img check -q -f vmdk '\(out)' && qemu-img compare -q -f raw -F vmdk '\(expected)' '\(out)'",
                in: dir.path)
            let info = try VMDKFixtures.sh("qemu-img info --output=json '\(out)'", in: dir.path)
            #expect(info.contains("\"create-type\": \"\(subformat.rawValue)\""), "\(info)")
        }
    }

    @Test(arguments: kinds)
    func readsWhatQemuReads(kind: Kind) throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        try VMDKFixtures.make(
            "disk.vmdk", subformat: kind.subformat, zeroedGrain: kind.zeroedGrain, size: Self.size, in: dir.path)
        let raw = try Self.backupAndRestore("disk.vmdk", in: dir)
        try VMDKFixtures.sh("qemu-img compare -q -f vmdk -F raw disk.vmdk '\(raw)'", in: dir.path)
        let show = CairnProcess.run(["show", "--repo", dir.file("repo"), "v@latest", "--json"])
        #expect(show.stdout.contains("\"format\" : \"vmdk\""), "\(show.stdout)")
        #expect(show.stdout.contains("\"vmdkCreateType\" : \"\(kind.subformat)\""), "\(show.stdout)")
        #expect(show.stdout.contains("\"virtualSize\" : \(Self.size)"), "\(show.stdout)")
    }

    @Test func streamOptimizedFromQemuImgConvert() throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        var generator = TestImage(seed: 16)
        try generator.makeImage(at: dir.file("source.raw"), size: 5 << 20 + 512, extent: 96 << 10, stride: 700 << 10)
        try VMDKFixtures.sh(
            "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized source.raw stream.vmdk", in: dir.path)
        let raw = try Self.backupAndRestore("stream.vmdk", in: dir)
        #expect(try TestImage.sha256(of: raw) == TestImage.sha256(of: dir.file("source.raw")))

        // The same grains in VMware's layout: footer, GT/GD markers, end-of-stream marker.
        try VMDKFixtures.toVMwareStreamLayout(dir.file("stream.vmdk"), dir.file("vmware.vmdk"))
        try VMDKFixtures.sh("qemu-img compare -q -f vmdk -F raw vmware.vmdk source.raw", in: dir.path)
        let again = try Self.backupAndRestore("vmware.vmdk", in: dir)
        #expect(try TestImage.sha256(of: again) == TestImage.sha256(of: dir.file("source.raw")))

        // A vmdk backup restores as a qcow2 that QEMU finds clean and identical.
        let qcow = dir.file("out.qcow2")
        let asQcow = CairnProcess.run([
            "restore", "--repo", dir.file("repo"), "v@latest", "--to", qcow, "--format", "qcow2",
        ])
        #expect(asQcow.status == 0, "\(asQcow.stderr)")
        try VMDKFixtures.sh("qemu-img check -q '\(qcow)' && qemu-img compare -q stream.vmdk '\(qcow)'", in: dir.path)
    }

    @Test func sparseChainIsReadThroughItsParent() throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        try VMDKFixtures.make("base.vmdk", subformat: "monolithicSparse", size: 3 << 20, in: dir.path)
        try VMDKFixtures.sh("qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk", in: dir.path)
        try VMDKFixtures.sh(
            "qemu-io -f vmdk -c 'write -P 0x99 32k 64k' -c 'write -P 0x98 2m 4k' child.vmdk >/dev/null", in: dir.path)
        try VMDKFixtures.sh("qemu-img create -q -f vmdk -b child.vmdk -F vmdk top.vmdk", in: dir.path)
        try VMDKFixtures.sh("qemu-io -f vmdk -c 'write -P 0x97 100k 8k' top.vmdk >/dev/null", in: dir.path)
        let raw = try Self.backupAndRestore("top.vmdk", in: dir)
        try VMDKFixtures.sh("qemu-img compare -q -f vmdk -F raw top.vmdk '\(raw)'", in: dir.path)
        let show = CairnProcess.run(["show", "--repo", dir.file("repo"), "v@latest", "--json"])
        #expect(show.stdout.contains("child.vmdk") && show.stdout.contains("base.vmdk"), "\(show.stdout)")
    }

    @Test func esxiVmfsDescriptorOverAFlatFile() throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        try VMDKFixtures.make("disk.vmdk", subformat: "monolithicFlat", size: 4 << 20, in: dir.path)
        // ESXi writes createType "vmfs" and a VMFS extent with no offset.
        try VMDKFixtures.editDescriptor(dir.file("disk.vmdk")) { text in
            text.replacingOccurrences(of: "createType=\"monolithicFlat\"", with: "createType=\"vmfs\"")
                .replacingOccurrences(of: " FLAT \"disk-flat.vmdk\" 0", with: " VMFS \"disk-flat.vmdk\"")
        }
        let raw = try Self.backupAndRestore("disk.vmdk", in: dir)
        try VMDKFixtures.sh("qemu-img compare -q -f vmdk -F raw disk.vmdk '\(raw)'", in: dir.path)
    }

    /// QEMU skips ZERO and RDONLY extent lines (and maps later extents at the wrong offset), so
    /// the expected disk is written here by hand.
    @Test func zeroAndReadOnlyExtentsAreMappedInOrder() throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        var generator = TestImage(seed: 7)
        let data = generator.randomBytes(3 << 20)
        try Data(data).write(to: URL(fileURLWithPath: dir.file("d-flat.vmdk")))
        let descriptor = """
            # Disk DescriptorFile
            version=1
            CID=0a0b0c0d
            parentCID=ffffffff
            createType="monolithicFlat"

            # Extent description
            RDONLY 2048 FLAT "d-flat.vmdk" 0
            RW 1025 ZERO
            RW 2048 FLAT "d-flat.vmdk" 4096

            #DDB
            ddb.adapterType = "lsilogic"
            """
        try Data(descriptor.utf8).write(to: URL(fileURLWithPath: dir.file("d.vmdk")))
        let raw = try Self.backupAndRestore("d.vmdk", in: dir)
        let expected = Array(data[0..<(1 << 20)]) + [UInt8](repeating: 0, count: 1025 * 512) + Array(data[(2 << 20)...])
        let restored = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
        #expect(restored.count == expected.count)
        #expect(restored == expected)
    }

    @Test func formatVmdkIsForcedAndOtherFormatsAreNamed() throws {
        let dir = TemporaryDirectory("cairn-vmdk")
        try VMDKFixtures.make("disk.vmdk", subformat: "monolithicSparse", size: 2 << 20, in: dir.path)
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let forced = CairnProcess.run([
            "backup", "--repo", repo, "--group", "v", "--format", "vmdk", dir.file("disk.vmdk"),
        ])
        #expect(forced.status == 0, "\(forced.stderr)")
        let notVmdk = dir.file("plain.raw")
        try Data(count: 4096).write(to: URL(fileURLWithPath: notVmdk))
        let refused = CairnProcess.run(["backup", "--repo", repo, "--group", "v", "--format", "vmdk", notVmdk])
        #expect(refused.status == 6)
        #expect(refused.stderr.contains("neither KDMV nor"), "\(refused.stderr)")
    }
}
