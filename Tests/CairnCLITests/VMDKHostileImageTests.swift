import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Hostile and malformed VMDK images, made by patching real qemu-img images (and hand-made ESXi
/// deltas) at test time. Each must be refused by `cairn backup` with exit 6 and one line naming
/// the field, quickly.
@Suite("vmdk reader refuses hostile images", .timeLimit(.minutes(2)))
struct VMDKHostileImageTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        /// The fixture opened: `sparse.vmdk` (monolithicSparse, zeroed grains), `flat.vmdk`
        /// (monolithicFlat), `split.vmdk` (twoGbMaxExtentSparse), `stream.vmdk`, `child.vmdk` (over `base.vmdk`).
        var image: String
        /// What the error line must contain.
        var expected: String
        var patch: @Sendable (_ directory: String) throws -> Void
    }

    typealias F = VMDKFixtures

    static func text(_ directory: String, _ name: String, _ edit: @escaping (String) -> String) throws {
        try F.editDescriptor(directory + "/" + name, edit)
    }

    static func replace(_ old: String, _ new: String) -> (String) -> String {
        { $0.replacingOccurrences(of: old, with: new) }
    }

    static let cases: [Case] = [
        // Sparse header fields.
        Case(description: "sparse version 4", image: "sparse.vmdk", expected: "version at offset 4") {
            try F.patchU32($0 + "/sparse.vmdk", at: 4, 4)
        },
        Case(description: "unknown header flag", image: "sparse.vmdk", expected: "flags at offset 8") {
            try F.patchU32($0 + "/sparse.vmdk", at: 8, F.readU32($0 + "/sparse.vmdk", at: 8) | 1 << 5)
        },
        Case(description: "grain not a power of two", image: "sparse.vmdk", expected: "grainSize at offset 20") {
            try F.patchU64($0 + "/sparse.vmdk", at: 20, 96)
        },
        Case(description: "grain of zero sectors", image: "sparse.vmdk", expected: "grainSize at offset 20") {
            try F.patchU64($0 + "/sparse.vmdk", at: 20, 0)
        },
        Case(description: "numGTEsPerGT 1024", image: "sparse.vmdk", expected: "numGTEsPerGT") {
            try F.patchU32($0 + "/sparse.vmdk", at: 44, 1024)
        },
        Case(description: "huge capacity", image: "sparse.vmdk", expected: "capacity at offset 12") {
            try F.patchU64($0 + "/sparse.vmdk", at: 12, 1 << 62)
        },
        Case(description: "capacity is not the extent size", image: "sparse.vmdk", expected: "capacity is not") {
            try F.patchU64($0 + "/sparse.vmdk", at: 12, F.readU64($0 + "/sparse.vmdk", at: 12) + 128)
        },
        Case(description: "mangled newline test", image: "sparse.vmdk", expected: "newline test") {
            try F.patch($0 + "/sparse.vmdk", at: 73, [0x0A, 0x20, 0x0A, 0x0A])
        },
        Case(description: "truncated file", image: "sparse.vmdk", expected: "truncated") {
            try File.open($0 + "/sparse.vmdk", .readWrite).truncate(to: 20_000)
        },
        Case(description: "truncated header", image: "sparse.vmdk", expected: "truncated") {
            try File.open($0 + "/sparse.vmdk", .readWrite).truncate(to: 100)
        },
        Case(description: "grain directory beyond EOF", image: "sparse.vmdk", expected: "gdOffset at offset 56") {
            try F.patchU64($0 + "/sparse.vmdk", at: 56, 1 << 30)
        },
        Case(description: "grain table beyond EOF", image: "sparse.vmdk", expected: "grain table at sector") {
            let image = $0 + "/sparse.vmdk"
            let directory = try F.readU64(image, at: 56) * 512
            try F.patchU32(image, at: directory, 0x00FF_FFFF)
            try F.patchU32(image, at: try F.readU64(image, at: 48) * 512, 0x00FF_FFFF)
        },
        Case(description: "grain beyond EOF", image: "sparse.vmdk", expected: "beyond the end of the file") {
            let image = $0 + "/sparse.vmdk"
            try F.patchU32(image, at: F.firstGrainTable(image), 0x00FF_FFFF)
            try F.patchU32(image, at: F.firstGrainTable(image, redundant: true), 0x00FF_FFFF)
        },
        Case(description: "grain inside the metadata", image: "sparse.vmdk", expected: "inside the metadata") {
            let image = $0 + "/sparse.vmdk"
            try F.patchU32(image, at: F.firstGrainTable(image), 5)
            try F.patchU32(image, at: F.firstGrainTable(image, redundant: true), 5)
        },
        Case(description: "redundant directory disagrees", image: "sparse.vmdk", expected: "directories disagree") {
            try F.patchU32($0 + "/sparse.vmdk", at: try F.readU64($0 + "/sparse.vmdk", at: 48) * 512, 0)
        },
        Case(description: "redundant grain table differs", image: "sparse.vmdk", expected: "redundant copy") {
            try F.patchU32($0 + "/sparse.vmdk", at: F.firstGrainTable($0 + "/sparse.vmdk", redundant: true) + 40, 77)
        },
        // Embedded descriptor text.
        Case(description: "device createType", image: "sparse.vmdk", expected: "createType is \"fullDevice\"") {
            try text($0, "sparse.vmdk", replace("monolithicSparse\"", "fullDevice\""))
        },
        Case(description: "descriptor version 4", image: "sparse.vmdk", expected: "version is \"4\"") {
            try text($0, "sparse.vmdk", replace("version=1", "version=4"))
        },
        Case(description: "unknown descriptor key", image: "sparse.vmdk", expected: "unknown key frobnicate") {
            try text($0, "sparse.vmdk", replace("version=1", "version=1\nfrobnicate=1"))
        },
        Case(description: "repeated CID", image: "sparse.vmdk", expected: "repeats CID") {
            try text($0, "sparse.vmdk", replace("parentCID=ffffffff", "parentCID=ffffffff\nCID=12345678"))
        },
        Case(description: "CID not hex", image: "sparse.vmdk", expected: "CID is \"xyz\"") {
            try text($0, "sparse.vmdk") {
                $0.replacingOccurrences(of: #"\nCID=[0-9a-f]+"#, with: "\nCID=xyz", options: .regularExpression)
            }
        },
        // Descriptor files and extents.
        Case(description: "raw-device extent", image: "flat.vmdk", expected: "raw-device") {
            try text($0, "flat.vmdk", replace(" FLAT \"flat-flat.vmdk\" 0", " VMFSRDM \"flat-flat.vmdk\""))
        },
        Case(description: "NOACCESS extent", image: "flat.vmdk", expected: "NOACCESS") {
            try text($0, "flat.vmdk", replace("RW ", "NOACCESS "))
        },
        Case(description: "unknown extent type", image: "flat.vmdk", expected: "unknown extent type FOO") {
            try text($0, "flat.vmdk", replace(" FLAT ", " FOO "))
        },
        Case(description: "absolute extent path", image: "flat.vmdk", expected: "absolute or climbs out") {
            try text($0, "flat.vmdk", replace("\"flat-flat.vmdk\"", "\"/etc/passwd\""))
        },
        Case(description: "extent path climbing out", image: "flat.vmdk", expected: "absolute or climbs out") {
            try text($0, "flat.vmdk", replace("\"flat-flat.vmdk\"", "\"../flat-flat.vmdk\""))
        },
        Case(description: "missing extent file", image: "flat.vmdk", expected: "does not exist") {
            try FileManager.default.removeItem(atPath: $0 + "/flat-flat.vmdk")
        },
        Case(description: "flat offset beyond its file", image: "flat.vmdk", expected: "beyond the end of its file") {
            try text($0, "flat.vmdk", replace("\"flat-flat.vmdk\" 0", "\"flat-flat.vmdk\" 4000"))
        },
        Case(description: "descriptor over 1 MiB", image: "flat.vmdk", expected: "more than the 1048576") {
            try text($0, "flat.vmdk") { $0 + String(repeating: "# padding\n", count: 110_000) }
        },
        Case(description: "extent sum is not the capacity", image: "split.vmdk", expected: "capacity is not") {
            try text($0, "split.vmdk") { $0.replacingOccurrences(of: "RW 6144 SPARSE", with: "RW 6016 SPARSE") }
        },
        Case(description: "sparse extent in a flat createType", image: "split.vmdk", expected: "cannot hold") {
            try text($0, "split.vmdk", replace("twoGbMaxExtentSparse\"", "twoGbMaxExtentFlat\""))
        },
        // streamOptimized.
        Case(description: "unknown compression", image: "stream.vmdk", expected: "compressAlgorithm at offset 77") {
            try F.patch($0 + "/stream.vmdk", at: 77, [2, 0])
        },
        Case(description: "marker LBA mismatch", image: "stream.vmdk", expected: "marker LBA") {
            let image = $0 + "/stream.vmdk"
            try F.patchU64(image, at: UInt64(F.readU32(image, at: F.firstGrainTable(image))) * 512, 128)
        },
        Case(description: "compressed size 0", image: "stream.vmdk", expected: "compressed size 0") {
            let image = $0 + "/stream.vmdk"
            try F.patchU32(image, at: UInt64(F.readU32(image, at: F.firstGrainTable(image))) * 512 + 8, 0)
        },
        Case(description: "compressed size over two grains", image: "stream.vmdk", expected: "compressed size") {
            let image = $0 + "/stream.vmdk"
            try F.patchU32(image, at: UInt64(F.readU32(image, at: F.firstGrainTable(image))) * 512 + 8, 1 << 30)
        },
        Case(description: "corrupt deflate data", image: "stream.vmdk", expected: "does not inflate") {
            let image = $0 + "/stream.vmdk"
            let grain = UInt64(try F.readU32(image, at: F.firstGrainTable(image))) * 512
            try F.patch(image, at: grain + 12, [0x78, 0x9C, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        },
        Case(description: "garbage footer", image: "vmware.vmdk", expected: "footer") {
            let image = $0 + "/vmware.vmdk"
            try F.patch(image, at: Fixture.fileSize(image) - 1024, Array("XXXX".utf8))
        },
        Case(description: "no end-of-stream marker", image: "vmware.vmdk", expected: "end-of-stream") {
            let image = $0 + "/vmware.vmdk"
            try F.patch(image, at: Fixture.fileSize(image) - 100, [1])
        },
        // Chains.
        Case(description: "parent CID mismatch", image: "child.vmdk", expected: "parentCID is") {
            try text($0, "base.vmdk") {
                $0.replacingOccurrences(of: #"\nCID=[0-9a-f]+"#, with: "\nCID=badc0de", options: .regularExpression)
            }
        },
        Case(description: "chain loop", image: "child.vmdk", expected: "makes a loop") {
            try text($0, "child.vmdk", replace("parentFileNameHint=\"base.vmdk\"", "parentFileNameHint=\"child.vmdk\""))
        },
        Case(description: "missing parent", image: "child.vmdk", expected: "does not exist") {
            try FileManager.default.removeItem(atPath: $0 + "/base.vmdk")
        },
        Case(description: "chain deeper than 16", image: "deep17.vmdk", expected: "deeper than 16") { directory in
            for level in 1...17 {
                let below = level == 1 ? "base.vmdk" : "deep\(level - 1).vmdk"
                try F.sh("qemu-img create -q -f vmdk -b \(below) -F vmdk deep\(level).vmdk", in: directory)
            }
        },
    ]

    /// Byte offset of the first grain table of `cowd-delta.vmdk` (which holds grains 8 and 9).
    static func cowdTable(_ directory: String) throws -> UInt64 {
        let image = directory + "/cowd-delta.vmdk"
        return UInt64(try F.readU32(image, at: UInt64(try F.readU32(image, at: 20)) * 512)) * 512
    }

    /// vmfsSparse (COWD) deltas: `cowd.vmdk` over the vmfs disk `esxi.vmdk`.
    static let cowdCases: [Case] = [
        Case(description: "COWD truncated header", image: "cowd.vmdk", expected: "header is truncated") {
            try File.open($0 + "/cowd-delta.vmdk", .readWrite).truncate(to: 1000)
        },
        Case(description: "COWD bad magic", image: "cowd.vmdk", expected: "does not start with COWD") {
            try F.patch($0 + "/cowd-delta.vmdk", at: 0, Array("CAWD".utf8))
        },
        Case(description: "COWD version 2", image: "cowd.vmdk", expected: "version at offset 4 is 2") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 4, 2)
        },
        Case(description: "COWD unknown flag", image: "cowd.vmdk", expected: "flags at offset 8 are 0x13") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 8, 0x13)
        },
        Case(description: "COWD marked inconsistent", image: "cowd.vmdk", expected: "inconsistent") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 8, 7)
        },
        Case(description: "COWD grain of 3 sectors", image: "cowd.vmdk", expected: "granularity at offset 16") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 16, 3)
        },
        Case(description: "COWD capacity is not the extent size", image: "cowd.vmdk", expected: "capacity is not") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 12, F.readU32($0 + "/cowd-delta.vmdk", at: 12) - 1)
        },
        Case(description: "COWD grain directory beyond EOF", image: "cowd.vmdk", expected: "rootOffset at offset 20") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 20, 0x7FFF_FFFF)
        },
        Case(description: "COWD grain directory in the header", image: "cowd.vmdk", expected: "rootOffset at offset 20")
        {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 20, 1)
        },
        Case(description: "COWD directory too short", image: "cowd.vmdk", expected: "numRootEntries at offset 24") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 24, 0)
        },
        Case(description: "COWD directory too long", image: "cowd.vmdk", expected: "numRootEntries at offset 24") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: 24, 0xFFFF_FFFF)
        },
        Case(
            description: "COWD grain table beyond EOF", image: "cowd.vmdk",
            expected: "grain table at sector 16777215, beyond"
        ) {
            let image = $0 + "/cowd-delta.vmdk"
            try F.patchU32(image, at: UInt64(try F.readU32(image, at: 20)) * 512, 0x00FF_FFFF)
        },
        Case(description: "COWD grain table in the header", image: "cowd.vmdk", expected: "inside the header") {
            let image = $0 + "/cowd-delta.vmdk"
            try F.patchU32(image, at: UInt64(try F.readU32(image, at: 20)) * 512, 2)
        },
        Case(description: "COWD grain beyond EOF", image: "cowd.vmdk", expected: "grain at sector 16777215, beyond") {
            try F.patchU32($0 + "/cowd-delta.vmdk", at: try cowdTable($0) + 8 * 4, 0x00FF_FFFF)
        },
        Case(
            description: "COWD grain over the directory", image: "cowd.vmdk",
            expected: "inside the header or the grain directory"
        ) {
            let image = $0 + "/cowd-delta.vmdk"
            try F.patchU32(image, at: try cowdTable($0) + 9 * 4, try F.readU32(image, at: 20))
        },
        Case(description: "COWD grains cut off", image: "cowd.vmdk", expected: "the file is truncated") {
            let image = $0 + "/cowd-delta.vmdk"
            try File.open(image, .readWrite).truncate(to: try cowdTable($0) + 16384)
        },
        Case(description: "COWD chain loop", image: "cowd.vmdk", expected: "makes a loop") {
            try text($0, "cowd.vmdk", replace("parentFileNameHint=\"esxi.vmdk\"", "parentFileNameHint=\"cowd.vmdk\""))
        },
        Case(description: "COWD delta in a vmfs createType", image: "cowd.vmdk", expected: "cannot hold") {
            try text($0, "cowd.vmdk", replace("createType=\"vmfsSparse\"", "createType=\"vmfs\""))
        },
        Case(description: "COWD extent alone", image: "cowd-delta.vmdk", expected: "back up the descriptor") { _ in },
    ]

    /// Byte offset of the grain table of `se-sesparse.vmdk` (which holds grain 2 and zero grain 3).
    static func seTable(_ directory: String) throws -> UInt64 {
        let image = directory + "/se-sesparse.vmdk"
        let entry = try F.readU64(image, at: try F.readU64(image, at: 128) * 512)
        return (try F.readU64(image, at: 144) + (entry & 0xFFFF_FFFF) * 64) * 512
    }

    /// SEsparse deltas: `se.vmdk` over the vmfs disk `esxi.vmdk`.
    static let seSparseCases: [Case] = [
        Case(description: "SEsparse truncated header", image: "se.vmdk", expected: "const header is truncated") {
            try File.open($0 + "/se-sesparse.vmdk", .readWrite).truncate(to: 100)
        },
        Case(description: "SEsparse bad magic", image: "se.vmdk", expected: "does not start with the SEsparse magic") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 0, 0xCAFE_D00D)
        },
        Case(description: "SEsparse version", image: "se.vmdk", expected: "version at offset 8 is 0x300000001") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 8, 0x3_0000_0001)
        },
        Case(description: "SEsparse huge capacity", image: "se.vmdk", expected: "capacity at offset 16") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 16, 1 << 38)
        },
        Case(description: "SEsparse capacity is not the extent size", image: "se.vmdk", expected: "capacity is not") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 16, F.readU64($0 + "/se-sesparse.vmdk", at: 16) + 8)
        },
        Case(description: "SEsparse 8 KiB grains", image: "se.vmdk", expected: "grainSize at offset 24") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 24, 16)
        },
        Case(
            description: "SEsparse grain tables of 128 sectors", image: "se.vmdk",
            expected: "grainTableSize at offset 32"
        ) {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 32, 128)
        },
        Case(description: "SEsparse flags", image: "se.vmdk", expected: "flags at offset 40") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 40, 1)
        },
        Case(description: "SEsparse reserved field", image: "se.vmdk", expected: "reserved field at offset 56") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 56, 1)
        },
        Case(description: "SEsparse header padding", image: "se.vmdk", expected: "padding from offset 208") {
            try F.patch($0 + "/se-sesparse.vmdk", at: 300, [1])
        },
        Case(
            description: "SEsparse region offset beyond any file", image: "se.vmdk",
            expected: "grains region at offsets 192"
        ) {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 192, 1 << 50)
        },
        Case(description: "SEsparse regions overlap", image: "se.vmdk", expected: "overlaps the grainDirectory region")
        {
            let image = $0 + "/se-sesparse.vmdk"
            try F.patchU64(image, at: 144, try F.readU64(image, at: 128))
        },
        Case(description: "SEsparse region in the const header", image: "se.vmdk", expected: "after the const header") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 128, 0)
        },
        Case(description: "SEsparse directory too short", image: "se.vmdk", expected: "entries are needed") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 16, 1 << 32)
            try text($0, "se.vmdk") {
                $0.replacingOccurrences(
                    of: #"RW [0-9]+ SESPARSE"#, with: "RW 4294967296 SESPARSE", options: .regularExpression)
            }
        },
        Case(description: "SEsparse grain directory beyond EOF", image: "se.vmdk", expected: "grainDirectory at sector")
        {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 128, 1 << 39)
        },
        Case(
            description: "SEsparse volatile header magic", image: "se.vmdk",
            expected: "volatile header at sector 1 magic"
        ) {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 512, 0)
        },
        Case(description: "SEsparse dirty journal", image: "se.vmdk", expected: "journal must be replayed") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: 512 + 24, 1)
        },
        Case(description: "SEsparse directory entry type", image: "se.vmdk", expected: "top 32 bits") {
            let image = $0 + "/se-sesparse.vmdk"
            try F.patchU64(image, at: try F.readU64(image, at: 128) * 512, 0x2000_0000_0000_0000)
        },
        Case(
            description: "SEsparse table beyond its region", image: "se.vmdk", expected: "beyond the grain table region"
        ) {
            let image = $0 + "/se-sesparse.vmdk"
            try F.patchU64(image, at: try F.readU64(image, at: 128) * 512, 0x1000_0000_00FF_FFFF)
        },
        Case(description: "SEsparse grain table entry type 5", image: "se.vmdk", expected: "has type 5") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: try seTable($0) + 2 * 8, 0x5000_0000_0000_0000)
        },
        Case(description: "SEsparse unallocated entry with bits", image: "se.vmdk", expected: "other bits set") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: try seTable($0) + 10 * 8, 7)
        },
        Case(description: "SEsparse grain beyond its region", image: "se.vmdk", expected: "beyond the grain region") {
            try F.patchU64($0 + "/se-sesparse.vmdk", at: try seTable($0) + 2 * 8, 0x3000_0000_00FF_FFFF)
        },
        Case(description: "SEsparse grains cut off", image: "se.vmdk", expected: "the file is truncated") {
            let image = $0 + "/se-sesparse.vmdk"
            try File.open(image, .readWrite).truncate(to: try seTable($0) + 32768)
        },
        Case(description: "SEsparse extent alone", image: "se-sesparse.vmdk", expected: "back up the descriptor") { _ in
        },
    ]

    /// Every case: the hosted formats' and the ESXi deltas'.
    static let allCases = cases + cowdCases + seSparseCases

    /// Makes the good image `image` (and what it needs) that a case starts from; small, so cheap.
    static func makeFixture(_ image: String, in directory: String) throws {
        switch image {
        case "sparse.vmdk":
            try F.make("sparse.vmdk", subformat: "monolithicSparse", zeroedGrain: true, size: 3 << 20, in: directory)
        case "flat.vmdk": try F.make("flat.vmdk", subformat: "monolithicFlat", size: 2 << 20, in: directory)
        case "split.vmdk": try F.make("split.vmdk", subformat: "twoGbMaxExtentSparse", size: 3 << 20, in: directory)
        case "stream.vmdk", "vmware.vmdk":
            try makeFixture("sparse.vmdk", in: directory)
            try F.sh("qemu-img convert -O vmdk -o subformat=streamOptimized sparse.vmdk stream.vmdk", in: directory)
            try F.toVMwareStreamLayout(directory + "/stream.vmdk", directory + "/vmware.vmdk")
        case "cowd.vmdk", "cowd-delta.vmdk", "se.vmdk", "se-sesparse.vmdk":
            try VMDKFixtures.makeVMFSBase("esxi", size: 2 << 20, in: directory)
            let grain = [UInt8](repeating: 0xD5, count: 512)
            try VMDKFixtures.writeDelta(
                .vmfsSparse, named: "cowd", sectors: 4096, grains: [8: .data(grain), 9: .data(grain)],
                parent: "esxi.vmdk", in: directory)
            try VMDKFixtures.writeDelta(
                .seSparse, named: "se", sectors: 4096, grains: [2: .data(grain), 3: .zero], parent: "esxi.vmdk",
                in: directory)
        default:  // child.vmdk over base.vmdk; deep17.vmdk is built on base.vmdk by its case
            try F.make("base.vmdk", subformat: "monolithicSparse", size: 2 << 20, in: directory)
            try F.sh("qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk", in: directory)
        }
    }

    @Test func fixturesAreAcceptedUnpatched() throws {
        let dir = TemporaryDirectory("cairn-vmdk-bad")
        for image in ["sparse.vmdk", "flat.vmdk", "split.vmdk", "vmware.vmdk", "child.vmdk", "cowd.vmdk"] {
            try Self.makeFixture(image, in: dir.path)
        }
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        for image in [
            "sparse.vmdk", "flat.vmdk", "split.vmdk", "stream.vmdk", "vmware.vmdk", "child.vmdk", "cowd.vmdk",
            "se.vmdk",
        ] {
            let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "g", dir.file(image)])
            #expect(backup.status == 0, "\(image): \(backup.stderr)")
        }
    }

    @Test(arguments: allCases)
    func isRefusedWithOneLine(_ hostile: Case) throws {
        let dir = TemporaryDirectory("cairn-vmdk-bad")
        try Self.makeFixture(hostile.image, in: dir.path)
        try hostile.patch(dir.path)
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "g", dir.file(hostile.image)])
        #expect(backup.status == 6, "exit \(backup.status): \(backup.stderr)")
        let lines = backup.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(backup.stderr)")
        #expect(backup.stderr.contains(hostile.expected), "\(backup.stderr)")
    }
}
