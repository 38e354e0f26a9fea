import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What killed archive commands leave, and who cleans it: volumes are written under temporary
/// names, so a killed `archive write` never leaves a partial volume under a final name, and the
/// next run removes the unfinished one; scratch files of dead processes are swept.
@Suite struct LeftoverTests {
    static func names(in dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    /// A PID that no process has: a child that has already been reaped.
    static func deadPID() -> Int32 {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try? child.run()
        child.waitUntilExit()
        return child.processIdentifier
    }

    @Test func archiveWriteKilledLeavesOnlyWholeVolumes() throws {
        let f = try ArchiveCLIFixture()
        let base = f.dir.file("arc")
        let arguments = [
            "archive", "write", "--repo", f.repo, f.first, f.second, "--to", base, "--volume-size", "1M",
            "--block-size", "64K", "--force",
        ]
        var kills = 0
        // Stop at writes inside the first, second and third volumes (16 blocks each, and a sync,
        // a rename and a directory sync between volumes).
        for n in [6, 27, 45] {
            let run = CairnProcess.run(arguments, environment: ["CAIRN_FAULT_AFTER_WRITES": "\(n)"])
            guard run.status != 0 else { break }
            #expect(run.status == 137, "write \(n): \(run.stderr)")
            kills += 1
            let names = Self.names(in: f.dir.path)
            #expect(names.contains { $0.hasPrefix(".arc.") && $0.contains(".tmp-") }, "write \(n): \(names)")
            for name in names where name.hasPrefix("arc.") {
                // Every volume under its final name is whole: exactly the volume size.
                #expect(Fixture.fileSize(f.dir.file(name)) == 1 << 20, "write \(n): \(name) is partial")
            }
        }
        #expect(kills == 3)
        // The next write removes the dead one's unfinished volume and writes a good archive.
        let write = CairnProcess.run(arguments)
        #expect(write.status == 0, "\(write.stderr)")
        let names = Self.names(in: f.dir.path)
        #expect(!names.contains { $0.contains(".tmp-") }, "\(names)")
        let volumes = names.filter { $0.hasPrefix("arc.") }.map { f.dir.file($0) }
        let verify = CairnProcess.run(["archive", "verify"] + volumes)
        #expect(verify.status == 0, "\(verify.stderr)")
    }

    /// Archive restore's and the digest map's sorted runs only spill to files beyond a million
    /// blocks (gigabytes of disk), too much for a test to make; so the files a killed run would
    /// leave are planted, one of a dead PID and one of a live one (this test's), which must stay.
    @Test func scratchFilesOfDeadProcessesAreSwept() throws {
        let f = try ArchiveCLIFixture()
        let volumes = f.write("arc")
        let scratch = f.dir.file("scratch")
        let outDir = f.dir.file("out")
        for d in [scratch, outDir] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: false)
        }
        let dead = Self.deadPID()
        let live = getpid()
        let planted = [
            "\(outDir)/.cairn-restore-\(dead)-0-12345.tmp", "\(outDir)/.cairn-restore-\(live)-0-12345.tmp",
            "\(scratch)/.cairn-digests-\(dead)-1-777.tmp", "\(scratch)/.cairn-digests-\(live)-1-777.tmp",
        ]
        for path in planted { FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3])) }

        let restore = CairnProcess.run(
            ["archive", "restore"] + volumes + [f.first, "--to", "\(outDir)/a.img"], environment: ["TMPDIR": scratch])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(Self.names(in: outDir) == [".cairn-restore-\(live)-0-12345.tmp", "a.img"])
        #expect(Self.names(in: scratch) == [".cairn-digests-\(live)-1-777.tmp"])

        // archive verify and write sweep the scratch directory too.
        FileManager.default.createFile(atPath: planted[2], contents: Data([1]))
        #expect(CairnProcess.run(["archive", "verify"] + volumes, environment: ["TMPDIR": scratch]).status == 0)
        #expect(Self.names(in: scratch) == [".cairn-digests-\(live)-1-777.tmp"])
        FileManager.default.createFile(atPath: planted[2], contents: Data([1]))
        let write = CairnProcess.run(
            ["archive", "write", "--repo", f.repo, f.first, "--to", f.dir.file("again")],
            environment: ["TMPDIR": scratch])
        #expect(write.status == 0, "\(write.stderr)")
        #expect(Self.names(in: scratch) == [".cairn-digests-\(live)-1-777.tmp"])
    }
}
