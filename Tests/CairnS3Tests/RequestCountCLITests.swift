import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// Requests per backup, as `cairn -v` counts them, against docs/research/object-store.md §4's
/// estimate for Cairn: one PUT per pack, about one index segment, one manifest, two or three
/// lease writes and two or three LISTs.
extension ObjectStoreCLITests {
    /// The counts of the "s3 requests:" line of a `-v` run's stderr.
    func requestCounts(_ stderr: String) -> [String: Int] {
        guard let line = stderr.split(separator: "\n").last(where: { $0.contains("s3 requests: ") }),
            let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")")
        else { return [:] }
        var counts: [String: Int] = [:]
        for part in line[line.index(after: open)..<close].split(separator: ",") {
            let fields = part.split(separator: " ")
            if fields.count == 2, let n = Int(fields[1]) { counts[String(fields[0])] = n }
        }
        return counts
    }

    @Test func aNightOneBackupSendsAFewRequestsBeyondItsPacks() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 61)
        try gen.makeImage(at: image, size: 64 << 20, extent: 2 << 20, stride: 4 << 20)
        let night0 = cairn(["backup", "-v", "--repo", url, "--group", "vm", image])
        #expect(night0.status == 0, "\(night0.stderr)")
        _ = try gen.scatterWrites(at: image, count: 16)
        let packsBefore = try storage.list(prefix: "packs/").count
        let night1 = cairn(["backup", "-v", "--repo", url, "--group", "vm", image])
        #expect(night1.status == 0, "\(night1.stderr)")
        let packs = try storage.list(prefix: "packs/").count - packsBefore
        let counts = requestCounts(night1.stderr)
        let total = counts.values.reduce(0, +)
        print("night-1 requests: \(counts) for \(packs) new pack(s)")
        #expect(total > 0, "no request count in \(night1.stderr)")
        #expect((counts["PUT"] ?? 0) >= packs + 2, "a pack, a segment and a manifest at least: \(counts)")
        // Beyond one PUT per pack: the research's "~8 other requests", with room for the
        // clock check, the config, key and condemned-list reads of a fresh cache.
        #expect(total - packs <= 26, "\(counts) for \(packs) packs")
    }

    /// A restore reads each pack through the shared read-ahead windows (`ReadWindows`, 2 MiB):
    /// about one GET per window of pack bytes, not one per record.
    @Test func aRestoreFetchesPacksByTheWindowNotByTheRecord() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 62)
        try gen.makeImage(at: image, size: 64 << 20, extent: 4 << 20, stride: 4 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        var packBytes: UInt64 = 0
        let packs = try storage.list(prefix: "packs/")
        for key in packs { packBytes += try storage.open(key).size }
        let out = dir.file("restored.raw")
        let restore = cairn(["restore", "-v", "--repo", url, "vm@latest", "--to", out])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: image, andPath: out))
        let gets = requestCounts(restore.stderr)["GET"] ?? 0
        let windows = Int(packBytes >> 21) + packs.count
        print("restore GETs: \(gets) for \(packs.count) packs of \(packBytes) bytes")
        #expect(gets > 0, "no request count in \(restore.stderr)")
        // Each pack's windows, its table, and the few catalog and index reads.
        #expect(gets <= windows + 2 * packs.count + 20, "\(gets) GETs for \(packs.count) packs of \(packBytes) bytes")
    }

    /// The previous restore point's index pages come from this host's cache (`TreePageCache`,
    /// written by the night before): a night-1 backup with them makes fewer GETs than the same
    /// backup after the pages are deleted, and both back up the same disk.
    @Test func aNightOneBackupReadsThePreviousTreeFromTheHostsCache() throws {
        #expect(cairn(["init", "--repo", url]).status == 0)
        let image = dir.file("disk.raw")
        var gen = TestImage(seed: 63)
        try gen.makeImage(at: image, size: 64 << 20, extent: 2 << 20, stride: 4 << 20)
        #expect(cairn(["backup", "--repo", url, "--group", "vm", image]).status == 0)
        let cacheRoot = dir.file("cache")
        let hosts = try FileManager.default.contentsOfDirectory(atPath: cacheRoot)
        let pages = "\(cacheRoot)/\(try #require(hosts.first))/pages"
        #expect(try !FileManager.default.contentsOfDirectory(atPath: pages).isEmpty, "night 0 kept its pages")

        let cached = cairn(["backup", "-v", "--repo", url, "--group", "vm", image])
        #expect(cached.status == 0, "\(cached.stderr)")
        try FileManager.default.removeItem(atPath: pages)
        let uncached = cairn(["backup", "-v", "--repo", url, "--group", "vm", image])
        #expect(uncached.status == 0, "\(uncached.stderr)")
        let with = requestCounts(cached.stderr)["GET"] ?? 0
        let without = requestCounts(uncached.stderr)["GET"] ?? 0
        print("night-1 GETs: \(with) with the tree pages cached, \(without) without")
        #expect(with < without, "\(with) GETs with the pages cached, \(without) without")
        let out = dir.file("out.raw")
        #expect(cairn(["restore", "--repo", url, "vm@latest", "--to", out]).status == 0)
        #expect(try TestImage.sha256(of: out) == TestImage.sha256(of: image))
    }
}
