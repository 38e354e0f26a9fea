import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// Memory flat in repository size (docs/ARCHITECTURE.md, "Memory"): a repository whose index
/// names ten million chunks costs a backup no more heap than an empty one. The index is one
/// synthetic segment of 10,000,000 entries (52 bytes each on disk, the same in a host's cache of
/// an object-store repository), written through the one segment encoder; a backup's peak RSS is
/// compared with the same backup into a repository without it.
@Suite struct IndexScaleTests {
    static let entries = 10_000_000

    /// Writes a segment of `count` entries whose digests are spread evenly over the digest
    /// space (so sorted by construction, and never a real block's), all in one absent pack.
    static func writeSyntheticSegment(count: Int, into repository: String) throws -> String {
        let storage = LocalDirectoryStorage(root: repository)
        let step = UInt64.max / UInt64(count)
        func digest(_ i: Int) -> ChunkDigest {
            let w = UInt64(i) &* step
            return ChunkDigest(w0: w.bigEndian, w1: 0x5a5a, w2: UInt64(i), w3: 0xfeed)
        }
        var counts = [Int](repeating: 0, count: 256)
        for i in 0..<count { counts[Int((UInt64(i) &* step) >> 56)] += 1 }
        let pack = PackID(high: 0xdead, low: 0xbeef)
        let key = ChunkStore.newSegmentKey()
        let object = try storage.stage(key)
        var encoder = try IndexSegmentEncoder(packs: [pack], fanoutCounts: counts, into: object)
        for i in 0..<count {
            let location = ChunkLocation(
                pack: pack, offset: UInt64(i % 1_000_000) * 4096, storedLength: 4096, rawLength: 65536)
            try encoder.append(digest(i), location)
        }
        try encoder.finish()
        try storage.commit([object])
        return "\(repository)/\(key)"
    }

    /// Peak anonymous memory (heap, stacks; KiB) of `cairn ARGS`, sampled every 5 ms from
    /// `/proc/PID/status` by a python3 that runs nothing else, and the kernel's peak RSS. Peak RSS
    /// also counts the segment's file pages mapped by lookups (the kernel maps up to 64 KiB of
    /// cached neighbours per fault): page cache, shared and reclaimable, not memory per chunk.
    static func peakMemory(_ arguments: [String]) throws -> (anon: Int, rss: Int) {
        let script = """
            import resource, subprocess, sys, time
            p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            peak = 0
            while p.poll() is None:
                try:
                    for line in open(f"/proc/{p.pid}/status"):
                        if line.startswith("RssAnon:"):
                            peak = max(peak, int(line.split()[1]))
                except OSError:
                    pass
                time.sleep(0.005)
            if p.returncode != 0:
                sys.exit(p.stderr.read().decode())
            print(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            """
        let outcome = Subprocess.run("python3", ["-c", script, CairnProcess.executable] + arguments)
        #expect(outcome.status == 0, "\(arguments): \(outcome.stderr)")
        let numbers = outcome.stdout.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        try #require(numbers.count == 2, "\(outcome.stdout)")
        return (numbers[0], numbers[1])
    }

    @Test func tenMillionIndexedChunksCostABackupNoHeap() throws {
        let dir = TemporaryDirectory()
        var gen = TestImage(seed: 10)
        let image = dir.file("disk.raw")
        try gen.makeImage(at: image, size: 8 << 20, extent: 1 << 20, stride: 1 << 20)
        var peaks: [(anon: Int, rss: Int)] = []
        for (name, synthetic) in [("small", false), ("large", true)] {
            let repo = dir.file(name)
            #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
            if synthetic {
                let segment = try Self.writeSyntheticSegment(count: Self.entries, into: repo)
                let size = try File.open(segment, .readOnly).size()
                #expect(size == UInt64(32 + 16 + 1024 + 52 * Self.entries + 16), "52 bytes per chunk")
            }
            peaks.append(try Self.peakMemory(["backup", "--repo", repo, "--group", "vm", image]))
            #expect(
                CairnProcess.run(["restore", "--repo", repo, "vm@latest", "--to", dir.file("\(name).raw")]).status == 0)
            #expect(try TestImage.sha256(of: dir.file("\(name).raw")) == TestImage.sha256(of: image))
        }
        // The segment is 496 MiB; a backup maps it and touches only the pages its lookups read.
        let anon = peaks[1].anon - peaks[0].anon
        #expect(anon < 16 << 10, "a backup beside 10 million indexed chunks used \(anon) KiB more heap (\(peaks))")
        #expect(peaks[1].rss < 496 << 9, "it mapped less than half of the segment (\(peaks))")
        print(
            "IndexScaleTests: peak anonymous memory \(peaks[0].anon) KiB with an empty index, \(peaks[1].anon) KiB beside 10,000,000 chunks; peak RSS \(peaks[0].rss) and \(peaks[1].rss) KiB"
        )
    }
}
