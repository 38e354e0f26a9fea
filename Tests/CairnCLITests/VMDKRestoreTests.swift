import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn restore --format vmdk` from sources that are not VMDK, and what surrounds the writers:
/// QEMU judges every output (`qemu-img check` clean, `qemu-img compare` identical to the source),
/// and Cairn's own reader reads it back.
@Suite("vmdk restores", .timeLimit(.minutes(3)))
struct VMDKRestoreTests {
    static func run(_ arguments: [String]) -> CairnProcess.Outcome {
        let outcome = CairnProcess.run(arguments)
        #expect(outcome.status == 0, "cairn \(arguments.joined(separator: " ")): \(outcome.stderr)")
        return outcome
    }

    /// Backs `image` up into a fresh repository in `dir` and restores it as both VMDK kinds,
    /// judged against `image` itself.
    static func roundTrip(_ image: String, format: String, in dir: TemporaryDirectory) throws {
        let repo = dir.file("repo")
        _ = run(["init", "--repo", repo])
        _ = run(["backup", "--repo", repo, "--group", "d", image])
        for subformat in VMDKSubformat.allCases {
            let out = dir.file("out-\(subformat.rawValue).vmdk")
            _ = run([
                "restore", "--repo", repo, "d@latest", "--to", out, "--format", "vmdk", "--subformat",
                subformat.rawValue,
            ])
            try VMDKFixtures.sh(
                "qemu-img check -q -f vmdk '\(out)' && qemu-img compare -q -f \(format) -F vmdk '\(image)' '\(out)'",
                in: dir.path)
        }
    }

    @Test func qcow2Source() throws {
        let dir = TemporaryDirectory("cairn-vmdk-restore")
        let image = dir.file("disk.qcow2")
        try VMDKFixtures.sh(
            "qemu-img create -q -f qcow2 disk.qcow2 40M && qemu-io -f qcow2 -c 'write -P 0x21 0 1m' "
                + "-c 'write -P 0x22 33m 70k' -c 'write -z 100k 8k' -c 'write -P 0x23 40894464 8k' disk.qcow2 >/dev/null",
            in: dir.path)
        try Self.roundTrip(image, format: "qcow2", in: dir)
    }

    /// A raw disk whose size is neither a multiple of the 64 KiB grain nor of a sector: the last
    /// grain is partial and the VMDK's capacity is rounded up to a sector, as QEMU rounds raw files.
    @Test func rawSourceOfAnOddSize() throws {
        let dir = TemporaryDirectory("cairn-vmdk-restore")
        let image = dir.file("disk.raw")
        var generator = TestImage(seed: 61)
        try generator.makeImage(at: image, size: (3 << 20) + (64 << 10) + 1000, extent: 80 << 10, stride: 600 << 10)
        try Self.roundTrip(image, format: "raw", in: dir)
        // What Cairn writes, Cairn reads: the restored VMDKs back up to the same bytes.
        for subformat in VMDKSubformat.allCases {
            _ = Self.run(["backup", "--repo", dir.file("repo"), "--group", "back", dir.file("out-\(subformat).vmdk")])
            let raw = dir.file("back-\(subformat).raw")
            _ = Self.run(["restore", "--repo", dir.file("repo"), "back@latest", "--to", raw])
            let restored = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
            let source = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
            #expect(restored.count == (source.count + 511) / 512 * 512)
            #expect(Array(restored.prefix(source.count)) == source)
            #expect(restored.dropFirst(source.count).allSatisfy { $0 == 0 })
        }
    }

    /// Several GiB, almost all holes: only the allocated grains are written, in both kinds.
    @Test func sparseDiskOfSeveralGiB() throws {
        let dir = TemporaryDirectory("cairn-vmdk-restore")
        let size: UInt64 = (6 << 30) + (3 << 20) + 4096
        try VMDKFixtures.sh(
            "truncate -s \(size) big.raw && qemu-io -f raw -c 'write -P 0x31 0 128k' -c 'write -P 0x32 3g 1m' "
                + "-c 'write -P 0x33 \((4 << 30) - 30000) 60000' -c 'write -P 0x34 \(size - 4096) 4096' big.raw >/dev/null",
            in: dir.path)
        try Self.roundTrip(dir.file("big.raw"), format: "raw", in: dir)
        let sparse = TestImage.allocatedBytes(of: dir.file("out-monolithicSparse.vmdk"))
        let stream =
            try FileManager.default.attributesOfItem(atPath: dir.file("out-streamOptimized.vmdk"))[.size]
            as! UInt64
        #expect(sparse < 4 << 20, "monolithicSparse allocates \(sparse) bytes")
        #expect(stream < 1 << 20, "streamOptimized is \(stream) bytes")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// An archive's chunks arrive in archive order, not disk order: both writers take them so.
    @Test func archiveRestoreToVMDK() throws {
        let dir = TemporaryDirectory("cairn-vmdk-restore")
        let image = dir.file("disk.raw")
        var generator = TestImage(seed: 62)
        try generator.makeImage(at: image, size: (6 << 20) + 512, extent: 100 << 10, stride: 500 << 10)
        let repo = dir.file("repo")
        _ = Self.run(["init", "--repo", repo])
        _ = Self.run(["backup", "--repo", repo, "--group", "d", image])
        _ = Self.run(["archive", "write", "--repo", repo, "d@latest", "--to", dir.file("arc")])
        for subformat in VMDKSubformat.allCases {
            let out = dir.file("arc-\(subformat).vmdk")
            _ = Self.run([
                "archive", "restore", dir.file("arc.001"), "d@latest", "--to", out, "--format", "vmdk",
                "--subformat", subformat.rawValue,
            ])
            try VMDKFixtures.sh(
                "qemu-img check -q -f vmdk '\(out)' && qemu-img compare -q -f raw -F vmdk '\(image)' '\(out)'",
                in: dir.path)
        }
    }

    @Test func subformatNeedsFormatVmdkAndOutputsAreNotOverwritten() throws {
        let dir = TemporaryDirectory("cairn-vmdk-restore")
        let image = dir.file("disk.raw")
        try Data(repeating: 0x41, count: 100_000).write(to: URL(fileURLWithPath: image))
        let repo = dir.file("repo")
        _ = Self.run(["init", "--repo", repo])
        _ = Self.run(["backup", "--repo", repo, "--group", "d", image])
        let out = dir.file("out.vmdk")
        // A raw output (its name says so) has no subformat; `out.vmdk` would be a VMDK by its name.
        let alone = CairnProcess.run([
            "restore", "--repo", repo, "d@latest", "--to", dir.file("out.raw"), "--subformat", "streamOptimized",
        ])
        #expect(alone.status == 64 && alone.stderr.contains("--subformat goes with --format vmdk"), "\(alone.stderr)")
        let unknown = CairnProcess.run([
            "restore", "--repo", repo, "d@latest", "--to", out, "--format", "vmdk", "--subformat", "vmfsSparse",
        ])
        #expect(unknown.status == 64 && unknown.stderr.contains("is not monolithicSparse"), "\(unknown.stderr)")
        _ = Self.run(["restore", "--repo", repo, "d@latest", "--to", out, "--format", "vmdk"])
        let again = CairnProcess.run(["restore", "--repo", repo, "d@latest", "--to", out, "--format", "vmdk"])
        #expect(again.status == 8, "\(again.stderr)")
        let info = try VMDKFixtures.sh("qemu-img info --output=json out.vmdk", in: dir.path)
        #expect(info.contains("\"create-type\": \"monolithicSparse\""), "\(info)")
    }

    /// An ESXi guest as a ghettoVCB copy leaves it: the disk and its `.vmx`, kept with the
    /// restore point (`--config`), shown, and restored byte for byte beside the VMDK.
    @Test func vmxIsKeptShownAndRestoredWithTheDisk() throws {
        let dir = TemporaryDirectory("cairn-vmdk-restore")
        try VMDKFixtures.make("web01.vmdk", subformat: "monolithicSparse", size: 4 << 20, in: dir.path)
        let vmx = dir.file("web01.vmx")
        let settings = """
            .encoding = "UTF-8"
            config.version = "8"
            virtualHW.version = "19"
            displayName = "web01"
            guestOS = "debian12-64"
            memSize = "4096"
            numvcpus = "2"
            scsi0.present = "TRUE"
            scsi0.virtualDev = "pvscsi"
            scsi0:0.present = "TRUE"
            scsi0:0.fileName = "web01.vmdk"
            ethernet0.present = "TRUE"
            ethernet0.virtualDev = "vmxnet3"
            ethernet0.networkName = "VM Network"
            ethernet0.addressType = "generated"
            uuid.bios = "56 4d 8a 1e 2b 3c 4d 5e-6f 70 81 92 a3 b4 c5 d6"
            tools.syncTime = "FALSE"

            """
        try settings.write(toFile: vmx, atomically: true, encoding: .utf8)
        let repo = dir.file("repo")
        _ = Self.run(["init", "--repo", repo])
        _ = Self.run(["backup", "--repo", repo, "--group", "web01", "--config", vmx, dir.file("web01.vmdk")])
        let show = Self.run(["show", "--repo", repo, "web01@latest"])
        #expect(show.stdout.contains("settings file web01.vmx"), "\(show.stdout)")
        let restoreDir = dir.file("restore")
        try FileManager.default.createDirectory(atPath: restoreDir, withIntermediateDirectories: false)
        let out = restoreDir + "/web01.vmdk"
        _ = Self.run([
            "restore", "--repo", repo, "web01@latest", "--format", "vmdk", "--to", out, "--config-to", restoreDir,
        ])
        #expect(FileManager.default.contentsEqual(atPath: restoreDir + "/web01.vmx", andPath: vmx))
        try VMDKFixtures.sh(
            "qemu-img check -q '\(out)' && qemu-img compare -q -f vmdk -F vmdk web01.vmdk '\(out)'", in: dir.path)
    }
}
