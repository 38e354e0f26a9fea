import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The config and the archive label name the format features a reader must understand; a
/// Cairn that meets one it lacks refuses by name, touching nothing, and a repository from
/// before the list gets it on its first write (issue 13, item 10).
@Suite struct FormatFeatureTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var config: String { "\(repo)/config" }
    var copy: String { "\(repo)/config.copy" }
    var image: String { dir.file("disk.img") }

    init() throws {
        var gen = TestImage(seed: 13)
        try gen.makeImage(at: image, size: 1 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "16K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
    }

    func configText() throws -> String { try String(contentsOfFile: config, encoding: .utf8) }

    /// Writes `text`, its checksum made again, as both `config` and `config.copy`.
    func replaceConfig(_ text: String) throws {
        let sealed = Fixture.sealedConfig(text)
        try sealed.write(toFile: config, atomically: true, encoding: .utf8)
        try sealed.write(toFile: copy, atomically: true, encoding: .utf8)
    }

    @Test func aNewRepositoryAndArchiveNameFrames() throws {
        let text = try configText()
        #expect(text.contains("\"features\" : [\n    \"frames\"\n  ]"), "\(text)")
        #expect(Fixture.sealedConfig(text) == text)
        let write = CairnProcess.run(["archive", "write", "--repo", repo, "vm@latest", "--to", dir.file("arc")])
        #expect(write.status == 0, "\(write.stderr)")
        let label = try Data(contentsOf: URL(fileURLWithPath: dir.file("arc.001"))).prefix(4096)
        #expect(String(decoding: label, as: UTF8.self).contains("\"features\":[\"frames\"]"))
    }

    @Test(arguments: ["encryption", "zz-made-up"])
    func aRepositoryWithAnUnknownFeatureIsRefusedUntouched(feature: String) throws {
        try replaceConfig(
            try configText().replacingOccurrences(of: "\"frames\"\n", with: "\"frames\",\n    \"\(feature)\"\n"))
        let before = TestImage.snapshotTree(repo)
        for arguments in [
            ["list"], ["backup", "--group", "vm", image], ["verify"], ["gc"], ["repair"], ["rebuild-index"],
            ["restore", "vm@latest", "--to", dir.file("out.img")],
        ] {
            let outcome = CairnProcess.run([arguments[0], "--repo", repo] + arguments.dropFirst())
            #expect(outcome.status == 3, "\(arguments): \(outcome.stderr)")
            let message = outcome.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(message.contains("'\(feature)'") && !message.contains("\n"), "\(arguments): \(outcome.stderr)")
        }
        #expect(TestImage.snapshotTree(repo) == before)
        #expect(!FileManager.default.fileExists(atPath: dir.file("out.img")))
    }

    @Test func aRepositoryFromBeforeTheListOpensAndIsMarkedOnItsFirstWrite() throws {
        let old = try configText().replacingOccurrences(
            of: #"  "features" : \[\n    "frames"\n  \],\n"#, with: "", options: .regularExpression)
        #expect(!old.contains("features"))
        try replaceConfig(old)
        let unmarked = try configText()
        // Reading writes nothing.
        #expect(CairnProcess.run(["list", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        let restore = CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", dir.file("a.img")])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try configText() == unmarked)
        // The first backup marks it, sealed, with the copy the same bytes.
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image])
        #expect(backup.status == 0, "\(backup.stderr)")
        #expect(backup.stderr.isEmpty, "\(backup.stderr)")
        let marked = try configText()
        #expect(marked.contains("\"features\" : [\n    \"frames\"\n  ]"), "\(marked)")
        #expect(Fixture.sealedConfig(marked) == marked)
        #expect(try String(contentsOfFile: copy, encoding: .utf8) == marked)
        // Everything else is as it was.
        #expect(
            marked.replacingOccurrences(
                of: #"  "features" : \[\n    "frames"\n  \],\n"#, with: "", options: .regularExpression
            )
            .replacingOccurrences(of: #"sha256:[0-9a-f]{64}"#, with: "", options: .regularExpression)
                == unmarked.replacingOccurrences(of: #"sha256:[0-9a-f]{64}"#, with: "", options: .regularExpression))
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 0 && verify.stderr.isEmpty, "\(verify.stderr)")
    }

    @Test func anUnsealedOldConfigIsMarkedByRepair() throws {
        // A config from before checksums and copies: the upgrade leaves it to `cairn repair`.
        var old = try configText().replacingOccurrences(
            of: #"  "features" : \[\n    "frames"\n  \],\n"#, with: "", options: .regularExpression)
        old = old.replacingOccurrences(
            of: #"  "checksum" : "sha256:[0-9a-f]{64}",\n"#, with: "", options: .regularExpression)
        #expect(!old.contains("checksum"))
        try old.write(toFile: config, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: copy)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
        #expect(try configText() == old)
        #expect(CairnProcess.run(["repair", "--repo", repo]).status == 0)
        let repaired = try configText()
        #expect(repaired.contains("\"features\" : [\n    \"frames\"\n  ]"), "\(repaired)")
        #expect(Fixture.sealedConfig(repaired) == repaired)
        #expect(try String(contentsOfFile: copy, encoding: .utf8) == repaired)
    }

    @Test func anArchiveWithAnUnknownFeatureIsRefusedByName() throws {
        #expect(
            CairnProcess.run(["archive", "write", "--repo", repo, "vm@latest", "--to", dir.file("arc")]).status == 0)
        let volume = dir.file("arc.001")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: volume)))
        // The label is the first block's payload: name a feature of the same length, then seal
        // the block again (payload CRC at 56, header CRC at 60).
        let label = Array("\"features\":[\"frames\"]".utf8)
        let forged = Array("\"features\":[\"zframe\"]".utf8)
        let length = Int(
            UInt32(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 48, as: UInt32.self) }))
        let payload = 64..<(64 + length)
        let at = try #require(
            (payload.lowerBound...(payload.upperBound - label.count)).first {
                Array(bytes[$0..<($0 + label.count)]) == label
            })
        bytes.replaceSubrange(at..<(at + label.count), with: forged)
        let payloadCRC = CRC32.checksum(Array(bytes[payload]))
        withUnsafeBytes(of: payloadCRC.littleEndian) { bytes.replaceSubrange(56..<60, with: $0) }
        let headerCRC = CRC32.checksum(Array(bytes[0..<60]))
        withUnsafeBytes(of: headerCRC.littleEndian) { bytes.replaceSubrange(60..<64, with: $0) }
        try Data(bytes).write(to: URL(fileURLWithPath: volume))
        for arguments in [["verify", volume], ["list", volume], ["import", "--repo", repo, volume]] {
            let outcome = CairnProcess.run(["archive"] + arguments)
            #expect(outcome.status == 10, "\(arguments): \(outcome.stderr)")
            let message = outcome.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(message.contains("'zframe'") && !message.contains("\n"), "\(arguments): \(outcome.stderr)")
        }
    }
}
