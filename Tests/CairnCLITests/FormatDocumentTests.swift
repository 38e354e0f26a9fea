import CairnTestSupport
import Foundation
import Testing

/// docs/FORMAT.md's worked example is a real run: this test runs its commands again and checks
/// that the hexdumps in the document are the bytes the `cairn` binary writes now, so the
/// document cannot go stale silently (issue 13, item 11). Only the random bytes are skipped: the
/// pack id and the segment CRC that covers it.
@Suite struct FormatDocumentTests {
    static let document = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs/FORMAT.md")

    /// The bytes of the `xxd` dump after `<!-- hexdump: NAME -->`, by offset.
    static func dump(_ name: String) throws -> [Int: UInt8] {
        let text = try String(contentsOf: document, encoding: .utf8)
        let marker = try #require(text.range(of: "<!-- hexdump: \(name) -->\n```text\n"), "no \(name) dump")
        let end = try #require(text.range(of: "\n```", range: marker.upperBound..<text.endIndex))
        var bytes: [Int: UInt8] = [:]
        for line in text[marker.upperBound..<end.lowerBound].split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            let offset = try #require(Int(parts[0], radix: 16), "\(line)")
            // xxd: 8 groups of 4 hex digits in the 40 columns after ": ", then the text.
            let hex = parts[1].dropFirst().prefix(40).filter { $0 != " " }
            var at = hex.startIndex
            var i = 0
            while at < hex.endIndex {
                let next = hex.index(at, offsetBy: 2)
                bytes[offset + i] = try #require(UInt8(hex[at..<next], radix: 16), "\(line)")
                at = next
                i += 1
            }
        }
        return bytes
    }

    /// `dump` laid over `actual`: every byte the dump shows must be there, outside `skipping`.
    static func expectMatches(_ dump: [Int: UInt8], _ actual: [UInt8], skipping: [Range<Int>], _ what: String) {
        for (offset, byte) in dump.sorted(by: { $0.key < $1.key })
        where !skipping.contains(where: { $0.contains(offset) }) {
            guard offset < actual.count, actual[offset] == byte else {
                Issue.record(
                    "\(what): byte 0x\(String(offset, radix: 16)) is \(offset < actual.count ? String(actual[offset], radix: 16) : "past the end"), the document says \(String(byte, radix: 16))"
                )
                return
            }
        }
    }

    @Test func theWorkedExampleIsWhatCairnWrites() throws {
        let dir = TemporaryDirectory()
        var image: [UInt8] = []
        for (text, count) in [("block zero\n", 4096), ("block one\n", 4096)] {
            image += Array(String(repeating: text, count: count / text.utf8.count + 1).utf8.prefix(count))
        }
        image += [UInt8](repeating: 0, count: 4096)
        try Data(image).write(to: URL(fileURLWithPath: dir.file("tiny.img")))
        let repo = dir.file("r")
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "4K"]).status == 0)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "ex", dir.file("tiny.img")])
        #expect(backup.status == 0, "\(backup.stderr)")
        let files = FileManager.default
        let shard = try #require(try files.contentsOfDirectory(atPath: "\(repo)/packs").first)
        let packName = try #require(try files.contentsOfDirectory(atPath: "\(repo)/packs/\(shard)").first)
        let segmentName = try #require(try files.contentsOfDirectory(atPath: "\(repo)/index").first)
        let pack = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(repo)/packs/\(shard)/\(packName)")))
        let segment = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(repo)/index/\(segmentName)")))

        let packDump = try Self.dump("pack")
        #expect(packDump.count == pack.count, "the document shows the whole pack")
        Self.expectMatches(packDump, pack, skipping: [8..<24, (pack.count - 24)..<(pack.count - 8)], "pack")
        let head = try Self.dump("segment-head")
        let tail = try Self.dump("segment-tail")
        #expect(head.count == 48 && tail.keys.max() == segment.count - 1, "the document shows the segment's ends")
        Self.expectMatches(head, segment, skipping: [32..<48], "segment")
        Self.expectMatches(tail, segment, skipping: [(segment.count - 16)..<(segment.count - 12)], "segment")
    }
}
