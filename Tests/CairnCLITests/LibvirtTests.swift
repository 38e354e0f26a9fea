import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `cairn backup --domain` against a real libvirtd and QEMU: pull-mode backup jobs, checkpoints,
/// the domain XML as a settings file, restores compared byte for byte (`qemu-img compare`) with
/// copies taken while the domain was paused, and the job ended whatever happens to cairn.
///
/// Each test starts libvirtd (`Tests/libvirt/libvirtd-ctl`) and stops it again with its domains
/// undefined; where libvirtd cannot run (no packages, not root) the test says why and asserts nothing.
@Suite(.serialized) struct LibvirtTests {
    /// Runs `body` with a libvirtd and a test directory that QEMU (user libvirt-qemu) can reach.
    static func withHost(_ body: (LibvirtHost, TemporaryDirectory) throws -> Void) throws {
        guard let host = LibvirtHost.start() else { return }
        defer { host.close() }
        let dir = TemporaryDirectory("cairn-lvtest")
        chmod(dir.path, 0o755)
        let made = CairnProcess.run(["init", "--repo", dir.file("repo")])
        try #require(made.status == 0, "\(made.stderr)")
        try body(host, dir)
    }

    static func domainName(_ label: String) -> String { "cairn-test-\(getpid())-\(label)" }

    /// A sparse 64 MiB disk with a few MiB of data at known places.
    static func makeDisk(_ path: String, format: String = "qcow2", size: String = "64M", pattern: UInt8) throws {
        try QemuTools.check("qemu-img", ["create", "-q", "-f", format, path, size])
        try QemuTools.check(
            "qemu-io",
            [
                "-f", format, "-c", "write -P 0x\(String(pattern, radix: 16)) 0 2M", "-c",
                "write -P 0x\(String(pattern &+ 1, radix: 16)) 40M 1M", path,
            ])
    }

    static func cairn(_ arguments: [String], repo: String) -> CairnProcess.Outcome {
        CairnProcess.run(arguments + ["--repo", repo])
    }

    /// `cairn backup --domain` held right after `backup-begin` until `hold` exists.
    static func startHeldBackup(
        _ domain: String, dir: TemporaryDirectory, hold: String, extra: [String] = []
    ) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CairnProcess.executable)
        process.arguments =
            ["backup", "--repo", dir.file("repo"), "--domain", domain, "--scratch-dir", dir.path, "--json"] + extra
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_TEST_HOLD_AFTER_BACKUP_BEGIN"] = hold
        process.environment = environment
        _ = FileManager.default.createFile(atPath: hold + ".out", contents: nil)
        _ = FileManager.default.createFile(atPath: hold + ".err", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: hold + ".out")
        process.standardError = FileHandle(forWritingAtPath: hold + ".err")
        try process.run()
        let begun = InterruptionTests.wait(timeout: 60) {
            FileManager.default.fileExists(atPath: hold + ".begun") || !process.isRunning
        }
        try #require(begun && process.isRunning, "the backup did not reach backup-begin: \(Self.read(hold + ".err"))")
        return process
    }

    static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    static func backup(_ domain: String, dir: TemporaryDirectory, extra: [String] = []) throws -> [String: Any] {
        try backupOutcome(domain, dir: dir, extra: extra).summary
    }

    /// A backup's `--json` summary and its standard error (the warnings).
    static func backupOutcome(
        _ domain: String, dir: TemporaryDirectory, extra: [String] = []
    ) throws -> (summary: [String: Any], stderr: String) {
        let outcome = cairn(
            ["backup", "--domain", domain, "--scratch-dir", dir.path, "--json"] + extra, repo: dir.file("repo"))
        try #require(outcome.status == 0, "\(outcome.stderr)")
        return (Fixture.json(outcome.stdout), outcome.stderr)
    }

    /// The summary's domain object.
    static func domainRecord(_ summary: [String: Any]) -> [String: Any] { summary["domain"] as? [String: Any] ?? [:] }

    /// The summary's entry for disk `name`.
    static func disk(_ summary: [String: Any], _ name: String) -> [String: Any] {
        (summary["disks"] as? [[String: Any]])?.first { $0["name"] as? String == name } ?? [:]
    }

    /// The `cbt` object of disk `name`.
    static func cbt(_ summary: [String: Any], _ name: String) -> [String: Any] {
        disk(summary, name)["cbt"] as? [String: Any] ?? [:]
    }

    /// Restores `id` as a domain into `into` and returns the restored image of `target`.
    static func restore(_ id: String, dir: TemporaryDirectory, into: String, extra: [String] = []) throws -> [String:
        String]
    {
        let outcome = cairn(
            ["restore", "--domain", id, "--to-dir", into, "--json"] + extra, repo: dir.file("repo"))
        try #require(outcome.status == 0, "\(outcome.stderr)")
        let json = Fixture.json(outcome.stdout)
        var paths: [String: String] = [:]
        for disk in json["disks"] as? [[String: Any]] ?? [] {
            paths[disk["name"] as? String ?? ""] = disk["to"] as? String
        }
        paths["xml"] = json["xml"] as? String
        return paths
    }

    static func identical(_ a: String, _ b: String) throws -> Bool {
        try QemuTools.run("qemu-img", ["compare", "-q", a, b]).status == 0
    }

    static func workDirectories(_ dir: TemporaryDirectory) -> [String] {
        InterruptionTests.files(in: dir.path).filter { $0.hasPrefix("cairn-libvirt-") }
    }

    /// Three nights of a running domain: a full read, then two incremental ones from the previous
    /// night's checkpoint (only the dirty blocks read, the rest taken from the previous restore
    /// point). Each restore equals the paused copy taken at its backup's moment; a guest write
    /// made while night 1's job runs is not in night 1 and is read as dirty by night 2. One
    /// checkpoint is kept (the newest, recorded with its XML); no job, no scratch left. Night 1
    /// asks for `--quiesce`: the test domain has no guest agent, so it says crash-consistent.
    @Test func threeNightsFullThenIncremental() throws {
        try Self.withHost { host, dir in
            let domain = Self.domainName("nights")
            let disk = dir.file("vda.qcow2")
            try Self.makeDisk(disk, pattern: 0x11)
            try host.defineAndStart(
                name: domain, disks: [.init(target: "vda", path: disk, format: "qcow2")], in: dir.path)

            // Night 1 is taken while paused (so the copy is its moment); the guest writes during the job.
            try host.checkVirsh(["suspend", domain])
            try QemuTools.check("qemu-img", ["convert", "-U", "-O", "raw", disk, dir.file("night1.raw")])
            let hold = dir.file("hold1")
            let night1 = try Self.startHeldBackup(domain, dir: dir, hold: hold, extra: ["--quiesce"])
            try host.checkVirsh(["resume", domain])
            #expect(host.jobType(domain) != "None")
            try host.guestWrite(domain, disk: 0, pattern: 0x77, offset: "48M", length: "1M")
            _ = FileManager.default.createFile(atPath: hold, contents: nil)
            night1.waitUntilExit()
            try #require(night1.terminationStatus == 0, "\(Self.read(hold + ".err"))")
            #expect(Self.read(hold + ".err").contains("crash-consistent"), "\(Self.read(hold + ".err"))")
            let summary1 = Fixture.json(Self.read(hold + ".out"))
            let id1 = try #require(summary1["id"] as? String)
            let record1 = Self.domainRecord(summary1)
            #expect(record1["mode"] as? String == "pull")
            #expect(record1["quiesced"] as? Bool == false)
            #expect(record1["incremental"] == nil)
            #expect((record1["fullReason"] as? String)?.contains("no previous restore point") == true, "\(record1)")
            let checkpoint1 = try #require(record1["checkpoint"] as? String)
            #expect((record1["checkpointXML"] as? String)?.contains("<name>\(checkpoint1)</name>") == true)
            #expect((record1["disks"] as? [[String: Any]])?.first?["format"] as? String == "qcow2")
            #expect(Self.cbt(summary1, "vda")["started"] as? String == checkpoint1)
            #expect(Self.cbt(summary1, "vda")["used"] as? Bool == false)
            #expect(host.jobType(domain) == "None")
            #expect(Self.workDirectories(dir).isEmpty)

            // Night 2: incremental; exactly the write made during night 1 and one made since are read.
            try host.guestWrite(domain, disk: 0, pattern: 0x78, offset: "56M", length: "512K")
            try host.pausedCopy(domain, image: disk, to: dir.file("night2.raw"))
            try host.checkVirsh(["suspend", domain])
            let summary2 = try Self.backup(domain, dir: dir, extra: ["--cbt-sample", "0"])
            try host.checkVirsh(["resume", domain])
            let id2 = try #require(summary2["id"] as? String)
            let record2 = Self.domainRecord(summary2)
            let checkpoint2 = try #require(record2["checkpoint"] as? String)
            #expect(checkpoint2 != checkpoint1)
            #expect(record2["incremental"] as? String == checkpoint1, "\(record2)")
            #expect(record2["fullReason"] == nil)
            #expect(Self.cbt(summary2, "vda")["used"] as? Bool == true, "\(summary2)")
            #expect(Self.cbt(summary2, "vda")["bitmap"] as? String == checkpoint1)
            #expect(Self.disk(summary2, "vda")["bytesRead"] as? Int == (1 << 20) + (512 << 10), "\(summary2)")
            #expect(host.checkpoints(domain) == [checkpoint2])

            // Night 3: incremental from night 2's checkpoint, clean blocks sampled as by default.
            try host.guestWrite(domain, disk: 0, pattern: 0x79, offset: "1M", length: "256K")
            try host.pausedCopy(domain, image: disk, to: dir.file("night3.raw"))
            try host.checkVirsh(["suspend", domain])
            let summary3 = try Self.backup(domain, dir: dir)
            try host.checkVirsh(["resume", domain])
            let id3 = try #require(summary3["id"] as? String)
            let record3 = Self.domainRecord(summary3)
            let checkpoint3 = try #require(record3["checkpoint"] as? String)
            #expect(record3["incremental"] as? String == checkpoint2, "\(record3)")
            #expect(Self.cbt(summary3, "vda")["used"] as? Bool == true, "\(summary3)")
            #expect(Self.cbt(summary3, "vda")["nightsSinceFullRead"] as? Int == 2)
            #expect((Self.disk(summary3, "vda")["bytesSkipped"] as? Int ?? 0) > 0, "\(summary3)")
            #expect(host.checkpoints(domain) == [checkpoint3])
            #expect(host.jobType(domain) == "None")
            #expect(Self.workDirectories(dir).isEmpty)

            for (night, id) in [id1, id2, id3].enumerated() {
                let restored = try Self.restore(id, dir: dir, into: dir.file("r\(night + 1)"))
                let image = try #require(restored["vda"])
                #expect(image.hasSuffix(".qcow2"))
                #expect(try Self.identical(dir.file("night\(night + 1).raw"), image), "night \(night + 1)")
            }
            #expect(try !Self.identical(dir.file("night1.raw"), dir.file("night2.raw")))
            #expect(try !Self.identical(dir.file("night2.raw"), dir.file("night3.raw")))
            let listed = Self.cairn(["list", "--domain", domain, "--json"], repo: dir.file("repo"))
            #expect(Fixture.jsonArray(listed.stdout).compactMap { $0["id"] as? String } == [id1, id2, id3])
        }
    }

    /// Checkpoints lost behind Cairn's back never fail a night, and every night restores correctly:
    /// libvirt's metadata gone but QEMU's bitmap kept (a re-installed host) is redefined from the
    /// XML the restore point keeps and read incrementally; a checkpoint deleted outright cannot be
    /// redefined and costs a full read; a checkpoint whose bitmap QEMU lost is refused by libvirt
    /// and costs a full read too, and is removed as metadata. The night after is incremental again.
    @Test func lostCheckpointsAreRedefinedOrReadInFull() throws {
        try Self.withHost { host, dir in
            let domain = Self.domainName("lost")
            let disk = dir.file("vda.qcow2")
            try Self.makeDisk(disk, pattern: 0x61)
            try host.defineAndStart(
                name: domain, disks: [.init(target: "vda", path: disk, format: "qcow2")], in: dir.path)
            var ids: [String] = []
            /// A guest write, a paused copy, and a night whose summary is returned.
            func night(_ n: Int, pattern: UInt8) throws -> (summary: [String: Any], stderr: String) {
                try host.guestWrite(domain, disk: 0, pattern: pattern, offset: "\(n * 4)M", length: "1M")
                try host.pausedCopy(domain, image: disk, to: dir.file("lost\(n).raw"))
                try host.checkVirsh(["suspend", domain])
                defer { host.virsh(["resume", domain]) }
                let outcome = try Self.backupOutcome(domain, dir: dir)
                ids.append(try #require(outcome.summary["id"] as? String))
                return outcome
            }
            let first = try night(1, pattern: 0x62)
            let checkpoint1 = try #require(Self.domainRecord(first.summary)["checkpoint"] as? String)

            // libvirt forgets the checkpoint; QEMU still has its bitmap.
            try host.checkVirsh(["checkpoint-delete", domain, checkpoint1, "--metadata"])
            #expect(host.checkpoints(domain).isEmpty)
            let second = try night(2, pattern: 0x63)
            #expect(second.stderr.contains("redefined checkpoint \(checkpoint1)"), "\(second.stderr)")
            #expect(Self.domainRecord(second.summary)["incremental"] as? String == checkpoint1)
            #expect(Self.cbt(second.summary, "vda")["used"] as? Bool == true, "\(second.summary)")
            let checkpoint2 = try #require(Self.domainRecord(second.summary)["checkpoint"] as? String)
            #expect(host.checkpoints(domain) == [checkpoint2])

            // Deleted outright (bitmap too): redefining fails, the night is read in full.
            try host.checkVirsh(["checkpoint-delete", domain, checkpoint2])
            let third = try night(3, pattern: 0x64)
            let record3 = Self.domainRecord(third.summary)
            #expect(record3["incremental"] == nil)
            #expect((record3["fullReason"] as? String)?.contains("redefining it failed") == true, "\(record3)")
            #expect(Self.cbt(third.summary, "vda")["used"] as? Bool == false)
            let checkpoint3 = try #require(record3["checkpoint"] as? String)

            // The bitmap vanishes inside QEMU while libvirt still lists the checkpoint.
            try host.removeBitmapBehindLibvirt(domain, disk: 0, bitmap: checkpoint3)
            let fourth = try night(4, pattern: 0x65)
            let record4 = Self.domainRecord(fourth.summary)
            #expect(record4["incremental"] == nil)
            #expect((record4["fullReason"] as? String)?.contains("libvirt refused") == true, "\(record4)")
            let checkpoint4 = try #require(record4["checkpoint"] as? String)
            #expect(host.checkpoints(domain) == [checkpoint4], "the broken checkpoint is removed")

            let fifth = try night(5, pattern: 0x66)
            #expect(Self.domainRecord(fifth.summary)["incremental"] as? String == checkpoint4)
            #expect(Self.cbt(fifth.summary, "vda")["used"] as? Bool == true)
            #expect(host.jobType(domain) == "None")
            #expect(Self.workDirectories(dir).isEmpty)

            for (index, id) in ids.enumerated() {
                let restored = try Self.restore(id, dir: dir, into: dir.file("lr\(index + 1)"))
                #expect(
                    try Self.identical(dir.file("lost\(index + 1).raw"), try #require(restored["vda"])),
                    "night \(index + 1)")
            }
        }
    }

    /// A domain with a qcow2 and a raw disk whose settings change between nights: `cairn diff`
    /// shows the disk and XML change, each restore brings its own settings back, and
    /// `restore --define` makes a copy (new UUID and MAC) that starts beside the original.
    @Test func twoDisksSettingsChangeAndDefine() throws {
        try Self.withHost { host, dir in
            let domain = Self.domainName("two")
            let vda = dir.file("vda.qcow2")
            let vdb = dir.file("vdb.raw")
            try Self.makeDisk(vda, pattern: 0x21)
            try Self.makeDisk(vdb, format: "raw", pattern: 0x31)
            try host.defineAndStart(
                name: domain,
                disks: [
                    .init(target: "vda", path: vda, format: "qcow2"), .init(target: "vdb", path: vdb, format: "raw"),
                ],
                in: dir.path)
            try host.pausedCopy(domain, image: vdb, to: dir.file("vdb-night1.raw"))
            try host.checkVirsh(["suspend", domain])
            let id1 = try #require(try Self.backup(domain, dir: dir)["id"] as? String)
            try host.checkVirsh(["resume", domain])

            try host.checkVirsh(["setmaxmem", domain, "96M", "--config"])
            try host.guestWrite(domain, disk: 1, pattern: 0x99, offset: "8M", length: "512K")
            try host.pausedCopy(domain, image: vdb, to: dir.file("vdb-night2.raw"))
            try host.pausedCopy(domain, image: vda, to: dir.file("vda-night2.raw"))
            try host.checkVirsh(["suspend", domain])
            let night2 = try Self.backup(domain, dir: dir)
            let id2 = try #require(night2["id"] as? String)
            try host.checkVirsh(["resume", domain])
            // The qcow2 disk is read incrementally, the raw one (no bitmap) in full, saying why.
            #expect(Self.cbt(night2, "vda")["used"] as? Bool == true, "\(night2)")
            #expect(Self.cbt(night2, "vdb")["used"] as? Bool == false)
            #expect((Self.cbt(night2, "vdb")["reason"] as? String)?.contains("raw") == true, "\(night2)")

            let diff = Self.cairn(["diff", id1, id2, "--json"], repo: dir.file("repo"))
            try #require(diff.status == 0, "\(diff.stderr)")
            let text = Self.cairn(["diff", id1, id2], repo: dir.file("repo")).stdout
            #expect(text.contains("-  <memory unit='KiB'>65536</memory>"), "\(text)")
            #expect(text.contains("+  <memory unit='KiB'>98304</memory>"), "\(text)")
            let disks = Fixture.json(diff.stdout)["disks"] as? [[String: Any]] ?? []
            let changed = Dictionary(
                uniqueKeysWithValues: disks.map { ($0["name"] as? String ?? "", $0["bytesDiffering"] as? Int ?? -1) })
            #expect(changed["vda"] == 0, "\(diff.stdout)")
            #expect((changed["vdb"] ?? 0) > 0, "\(diff.stdout)")

            let old = try Self.restore(id1, dir: dir, into: dir.file("old"))
            #expect(Self.read(try #require(old["xml"])).contains("<memory unit=\"KiB\">65536</memory>"))
            let vdbOld = try #require(old["vdb"])
            #expect(vdbOld.hasSuffix(".raw"))
            #expect(try Self.identical(dir.file("vdb-night1.raw"), vdbOld))

            let copy = Self.domainName("copy")
            host.track(copy)
            let new = try Self.restore(id2, dir: dir, into: dir.file("new"), extra: ["--define", copy])
            #expect(try Self.identical(dir.file("vdb-night2.raw"), try #require(new["vdb"])))
            #expect(try Self.identical(dir.file("vda-night2.raw"), try #require(new["vda"])))
            let copyXML = try host.checkVirsh(["dumpxml", copy])
            #expect(copyXML.contains("<memory unit='KiB'>98304</memory>"))
            #expect(copyXML.contains(try #require(new["vda"])))
            try host.checkVirsh(["start", copy])
            #expect(try host.checkVirsh(["domstate", copy]).hasPrefix("running"))
            let uuid = { (name: String) in try host.checkVirsh(["domuuid", name]) }
            #expect(try uuid(copy) != uuid(domain))
            let mac = { (name: String) in
                try host.checkVirsh(["domiflist", name]).split(separator: " ").last { $0.contains(":") }
                    .map(String.init)
            }
            #expect(try mac(copy) != nil && mac(copy) != mac(domain))
            let restoredCheck = Self.cairn(
                ["restore", "--domain", id1, "--to-dir", dir.file("old")], repo: dir.file("repo"))
            #expect(restoredCheck.status == 8, "an existing restore is not overwritten without --force")
        }
    }

    /// SIGTERM during an incremental backup ends libvirt's job, removes the scratch files and
    /// the new checkpoint (exit 143); a `kill -9` leaves the job and a checkpoint, which the next
    /// night recognises as a dead cairn's and ends and removes. That night is incremental from the
    /// last committed checkpoint and correct, and a shut-off domain is read from its disk files.
    @Test func killedBackupLeavesNoJob() throws {
        try Self.withHost { host, dir in
            let domain = Self.domainName("kill")
            let disk = dir.file("vda.qcow2")
            try Self.makeDisk(disk, pattern: 0x41)
            try host.defineAndStart(
                name: domain, disks: [.init(target: "vda", path: disk, format: "qcow2")], in: dir.path)
            let checkpoint1 = try #require(
                Self.domainRecord(try Self.backup(domain, dir: dir))["checkpoint"] as? String)

            let hold = dir.file("hold-term")
            let stopped = try Self.startHeldBackup(domain, dir: dir, hold: hold)
            #expect(host.jobType(domain) != "None")
            #expect(!Self.workDirectories(dir).isEmpty)
            #expect(host.checkpoints(domain).count == 2)
            kill(stopped.processIdentifier, SIGTERM)
            stopped.waitUntilExit()
            #expect(stopped.terminationStatus == 143, "\(Self.read(hold + ".err"))")
            #expect(host.jobType(domain) == "None")
            #expect(Self.workDirectories(dir).isEmpty)
            #expect(host.checkpoints(domain) == [checkpoint1], "a checkpoint no restore point records is removed")

            let killedHold = dir.file("hold-kill")
            let killed = try Self.startHeldBackup(domain, dir: dir, hold: killedHold)
            kill(killed.processIdentifier, SIGKILL)
            killed.waitUntilExit()
            #expect(host.jobType(domain) != "None", "kill -9 gives cairn no chance to end the job")
            #expect(host.checkpoints(domain).count == 2)

            try host.guestWrite(domain, disk: 0, pattern: 0x55, offset: "32M", length: "1M")
            try host.checkVirsh(["suspend", domain])
            try QemuTools.check("qemu-img", ["convert", "-U", "-O", "raw", disk, dir.file("after.raw")])
            let outcome = Self.cairn(
                ["backup", "--domain", domain, "--scratch-dir", dir.path, "--json"], repo: dir.file("repo"))
            try host.checkVirsh(["resume", domain])
            try #require(outcome.status == 0, "\(outcome.stderr)")
            #expect(outcome.stderr.contains("left by cairn process \(killed.processIdentifier)"), "\(outcome.stderr)")
            #expect(host.jobType(domain) == "None")
            #expect(Self.workDirectories(dir).isEmpty)
            let summary = Fixture.json(outcome.stdout)
            #expect(Self.domainRecord(summary)["incremental"] as? String == checkpoint1, "\(summary)")
            #expect(Self.cbt(summary, "vda")["used"] as? Bool == true)
            #expect(host.checkpoints(domain) == [try #require(Self.domainRecord(summary)["checkpoint"] as? String)])
            let id = try #require(summary["id"] as? String)
            let restored = try Self.restore(id, dir: dir, into: dir.file("r"))
            #expect(try Self.identical(dir.file("after.raw"), try #require(restored["vda"])))

            // Shut off: the disk file itself.
            try host.checkVirsh(["destroy", domain])
            let offline = try Self.backup(domain, dir: dir)
            #expect((offline["domain"] as? [String: Any])?["mode"] as? String == "files")
            let offlineRestored = try Self.restore(
                try #require(offline["id"] as? String), dir: dir, into: dir.file("off"))
            #expect(try Self.identical(disk, try #require(offlineRestored["vda"])))
        }
    }
}
