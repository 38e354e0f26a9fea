import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// The config is kept twice and checksummed: one damaged byte costs a warning, not the
/// repository; every config error is worded for a person (issue 18, defect 4).
@Suite struct ConfigDamageTests {
    let dir = TemporaryDirectory()
    var repo: String { dir.file("repo") }
    var config: String { "\(repo)/config" }
    var copy: String { "\(repo)/config.copy" }
    var image: String { dir.file("disk.img") }

    init() throws {
        var gen = TestImage(seed: 12)
        try gen.makeImage(at: image, size: 2 << 20)
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "16K"]).status == 0)
        #expect(CairnProcess.run(["backup", "--repo", repo, "--group", "vm", image]).status == 0)
    }

    func restoreWorks(_ name: String) throws -> CairnProcess.Outcome {
        let out = dir.file(name)
        let outcome = CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", out])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
        return outcome
    }

    @Test func checksumIsWhatFormatSays() throws {
        let text = try String(contentsOfFile: config, encoding: .utf8)
        #expect(text.contains("\"checksum\" : \"sha256:"))
        // Recomputed by sha256sum from the documented rule, the checksum is unchanged.
        #expect(Fixture.sealedConfig(text) == text)
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == Data(contentsOf: URL(fileURLWithPath: config)))
    }

    @Test func everyFlippedByteOfTheConfigIsSurvived() throws {
        let size = Fixture.fileSize(config)
        var gen = TestImage(seed: 3)
        for _ in 0..<12 {
            let position = gen.next() % size
            let mask = UInt8(1 + gen.next() % 255)
            try Fixture.flip(config, at: position, mask: mask)
            let list = CairnProcess.run(["list", "--repo", repo])
            try Fixture.flip(config, at: position, mask: mask)
            #expect(list.status == 0, "byte \(position) ^ \(mask): \(list.stderr)")
            #expect(list.stderr.contains("config.copy"), "byte \(position) ^ \(mask): \(list.stderr)")
        }
        try Fixture.flip(config, at: size / 2, mask: 0x20)
        let restore = try restoreWorks("a.img")
        #expect(restore.stderr.contains("cairn repair"))
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 7)
        #expect(verify.stderr.contains("repository config") && verify.stderr.contains("damaged"))

        let repair = CairnProcess.run(["repair", "--repo", repo])
        #expect(repair.status == 0)
        #expect(repair.stdout.contains("from config.copy"))
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == Data(contentsOf: URL(fileURLWithPath: config)))
        #expect(CairnProcess.run(["repair", "--repo", repo]).stdout.contains("nothing to repair"))
    }

    @Test func damagedOrMissingCopyIsReportedAndRepaired() throws {
        try Fixture.flip(copy, at: 30, mask: 0x01)
        let verify = CairnProcess.run(["verify", "--repo", repo])
        #expect(verify.status == 7)
        #expect(verify.stderr.contains("config.copy"))
        #expect(CairnProcess.run(["repair", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        try FileManager.default.removeItem(atPath: copy)
        #expect(CairnProcess.run(["verify", "--repo", repo]).stderr.contains("missing"))
        #expect(CairnProcess.run(["repair", "--repo", repo]).status == 0)
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0)
        // And a lost config comes back from its copy.
        try FileManager.default.removeItem(atPath: config)
        _ = try restoreWorks("b.img")
        #expect(CairnProcess.run(["repair", "--repo", repo]).status == 0)
        #expect(FileManager.default.fileExists(atPath: config))
    }

    @Test func bothDamagedIsOneHumanLine() throws {
        try Fixture.flip(config, at: 40, mask: 0x02)
        try Fixture.flip(copy, at: 50, mask: 0x02)
        let restore = CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", dir.file("c.img")])
        #expect(restore.status == 7)
        #expect(restore.stderr.split(separator: "\n").count == 1)
        #expect(restore.stderr.contains("config") && restore.stderr.contains("copy is damaged too"))
        #expect(!restore.stderr.contains("DecodingError") && !restore.stderr.contains("CodingKeys"))
    }

    /// Configs written before checksums existed: still read, values checked, errors in words.
    @Test(arguments: [
        ("\"blockSize\" : 16384", "\"blockSize\" : 4095", "block size 4095"),
        ("\"blockSize\" : 16384,", "", "field \"blockSize\" is missing"),
        ("\"blockSize\" : 16384", "\"blockSize\" : \"big\"", "field \"blockSize\" is not"),
        ("{", "[", "not a JSON object"),
    ])
    func olderConfigErrorsAreWorded(edit: (String, String, String)) throws {
        try FileManager.default.removeItem(atPath: copy)
        var text = try String(contentsOfFile: config, encoding: .utf8)
        text = text.replacingOccurrences(
            of: #"\s*"checksum" : "sha256:[0-9a-f]{64}","#, with: "", options: .regularExpression)
        #expect(!text.contains("checksum"))
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        let list = CairnProcess.run(["list", "--repo", repo])
        #expect(list.status == 0)
        #expect(list.stderr.contains("no checksum and no copy"))
        #expect(CairnProcess.run(["verify", "--repo", repo]).status == 0, "an older config is not damage")

        try text.replacingOccurrences(of: edit.0, with: edit.1).write(toFile: config, atomically: true, encoding: .utf8)
        let broken = CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", dir.file("d.img")])
        #expect(broken.status == 7, "\(broken.stderr)")
        #expect(broken.stderr.contains(edit.2), "\(broken.stderr)")
        #expect(broken.stderr.split(separator: "\n").count == 1)
        #expect(!broken.stderr.contains("DecodingError") && !broken.stderr.contains("CodingKeys"))

        try text.write(toFile: config, atomically: true, encoding: .utf8)
        let repair = CairnProcess.run(["repair", "--repo", repo])
        #expect(repair.stdout.contains("checksum and a copy"))
        #expect(CairnProcess.run(["list", "--repo", repo]).stderr.isEmpty)
        #expect(
            Fixture.sealedConfig(try String(contentsOfFile: config, encoding: .utf8))
                == (try String(contentsOfFile: config, encoding: .utf8)))
    }
}
