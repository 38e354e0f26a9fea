import CairnCore
import CairnTestSupport
import Foundation
import Testing

/// `cairn backup` reading NBD exports served by the real servers (`qemu-nbd`, `nbdkit`,
/// `qemu-storage-daemon`), judged by oracles Cairn did not write: `qemu-img convert` for the
/// bytes, `nbdinfo --map` for what is allocated.
@Suite struct NBDBackupTests {
    /// A 64 MiB guest with 4 MiB + 64 KiB + 1 MiB of data, a zeroed range and holes.
    static func makeGuest(in dir: TemporaryDirectory, format: String) throws -> String {
        let qcow = dir.file("guest.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", qcow, "64M"])
        try QemuTools.check(
            "qemu-io",
            [
                "-f", "qcow2", "-c", "write -P 0x11 0 4M", "-c", "write -z 8M 1M", "-c", "write -P 0x22 20M 64k",
                "-c", "write -P 0x33 40M 1M", qcow,
            ])
        guard format == "raw" else { return qcow }
        let raw = dir.file("guest.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", "-S", "4k", qcow, raw])
        return raw
    }

    /// Bytes `nbdinfo --map` reports as not reading zeros (type bit 1 clear).
    static func dataBytes(_ uri: String) throws -> UInt64 {
        let json = try QemuTools.check("nbdinfo", ["--map", "--json", uri])
        let extents = (try JSONSerialization.jsonObject(with: Data(json.utf8))) as? [[String: Any]] ?? []
        #expect(!extents.isEmpty)
        return extents.reduce(0) { sum, e in
            let type = (e["type"] as? Int) ?? 0
            return sum + (type & 2 == 0 ? UInt64((e["length"] as? Int) ?? 0) : 0)
        }
    }

    static func initRepository(_ dir: TemporaryDirectory) -> String {
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        return repo
    }

    static func pointCount(_ repo: String, group: String) -> Int {
        let list = CairnProcess.run(["list", "--repo", repo, "--group", group, "--json"])
        return Fixture.jsonArray(list.stdout).count
    }

    /// Restores `id` to a raw file and returns its SHA-256.
    static func restoredDigest(_ repo: String, _ id: String, in dir: TemporaryDirectory, disk: String? = nil) throws
        -> String
    {
        let out = dir.file("restored-\(UUID().uuidString).raw")
        var arguments = ["restore", "--repo", repo, id, "--to", out]
        if let disk { arguments += ["--disk", disk] }
        let restore = CairnProcess.run(arguments)
        #expect(restore.status == 0, "\(restore.stderr)")
        defer { try? FileManager.default.removeItem(atPath: out) }
        return try QemuTools.fileDigest(out)
    }

    @Test(arguments: ["raw", "qcow2"])
    func qemuNBDExportRestoresBitIdentical(format: String) throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: format)
        let socket = dir.file("nbd.sock")
        let server = try BackgroundServer(
            "qemu-nbd", ["-r", "-t", "-f", format, "-x", "vda", "-A", "-k", socket, image], socket: socket)
        defer { server.stop() }
        let uri = server.uri(export: "vda")
        let repo = Self.initRepository(dir)

        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", uri])
        #expect(backup.status == 0, "\(backup.stderr)")
        let summary = Fixture.json(backup.stdout)
        let disks = summary["disks"] as? [[String: Any]] ?? []
        #expect(disks.first?["name"] as? String == "vda")
        // Zero extents are not read: exactly the data nbdinfo sees (all writes are 64 KiB-aligned).
        let data = try Self.dataBytes(uri)
        #expect(data == (4 << 20) + (64 << 10) + (1 << 20))
        #expect((summary["bytesRead"] as? UInt64) == data)

        let expected = try QemuTools.rawDigest(of: image, options: ["-f", format])
        #expect(try Self.restoredDigest(repo, "vm@latest", in: dir) == expected)
        let show = CairnProcess.run(["show", "--repo", repo, "vm@latest", "--json"])
        let shown = (Fixture.json(show.stdout)["disks"] as? [[String: Any]])?.first?["source"] as? [String: Any]
        #expect(shown?["kind"] as? String == "nbd", "\(show.stdout)")
        #expect(shown?["path"] as? String == uri)
    }

    @Test func sparseDiskHolesAreNotRead() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = dir.file("big.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", image, "4G"])
        try QemuTools.check("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 3G 512k", image])
        let socket = dir.file("nbd.sock")
        let server = try BackgroundServer("qemu-nbd", ["-r", "-t", "-f", "qcow2", "-k", socket, image], socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "big", "--json", "d0=\(server.uri())"])
        #expect(backup.status == 0, "\(backup.stderr)")
        let summary = Fixture.json(backup.stdout)
        #expect((summary["bytesRead"] as? UInt64) == 512 << 10)
        #expect((summary["disks"] as? [[String: Any]])?.first?["name"] as? String == "d0")
    }

    /// A server that allows several connections (NBD_FLAG_CAN_MULTI_CONN) is read over several at
    /// once, as nbdkit's log filter shows; one that does not (qemu-nbd's default, above) over one.
    @Test func multiConnServerIsReadOverSeveralConnections() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let qcow = dir.file("guest.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", qcow, "64M"])
        try QemuTools.check("qemu-io", ["-f", "qcow2", "-c", "write -P 0x41 0 48M", qcow])
        let image = dir.file("guest.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", qcow, image])
        let socket = dir.file("nbdkit.sock")
        let log = dir.file("nbdkit.log")
        let server = try BackgroundServer(
            "nbdkit", ["-f", "-U", socket, "--filter=log", "file", image, "logfile=\(log)"], socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "m", "--json", "d=\(server.uri())"])
        #expect(backup.status == 0, "\(backup.stderr)")
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let reading = Set(
            lines.filter { $0.contains(" Read id=") }.compactMap { line in
                line.split(separator: " ").first { $0.hasPrefix("connection=") }
            })
        #expect(reading.count >= 2, "reads came over \(reading.sorted())")
        #expect(try Self.restoredDigest(repo, "m@latest", in: dir) == QemuTools.fileDigest(image))
    }

    /// nbdkit with features taken away: the backup still restores bit-identical.
    @Test(arguments: [
        (["--no-sr"], [String](), true),
        (["--filter=noextents"], [], true),
        (
            ["--filter=blocksize-policy"],
            [
                "blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=65536",
                "blocksize-error-policy=error",
            ], false
        ),
        ([], [], false),
    ])
    func degradedNBDKitServers(before: [String], after: [String], readsEverything: Bool) throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "raw")
        let socket = dir.file("nbdkit.sock")
        let server = try BackgroundServer(
            "nbdkit", ["-f", "-U", socket] + before + ["file", image] + after, socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "--json", "disk=\(server.uri())"])
        #expect(backup.status == 0, "\(backup.stderr)")
        let bytesRead = Fixture.json(backup.stdout)["bytesRead"] as? UInt64
        #expect(bytesRead == (readsEverything ? 64 << 20 : (4 << 20) + (64 << 10) + (1 << 20)))
        let expected = try QemuTools.fileDigest(image)
        #expect(try Self.restoredDigest(repo, "k@latest", in: dir) == expected)
    }

    @Test(arguments: [["--oldstyle"], ["--mask-handshake=0"]])
    func handshakesOtherThanFixedNewstyleAreRefused(flags: [String]) throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let socket = dir.file("nbdkit.sock")
        let server = try BackgroundServer("nbdkit", ["-f", "-U", socket] + flags + ["memory", "1M"], socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "d=\(server.uri())"])
        #expect(backup.status == 6)
        #expect(backup.stderr.contains("fixed newstyle handshake"), "\(backup.stderr)")
        #expect(backup.stderr.split(separator: "\n").count == 1, "\(backup.stderr)")
        #expect(Self.pointCount(repo, group: "k") == 0)
    }

    @Test func readErrorsFailTheBackupNamingTheOffset() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "raw")
        let socket = dir.file("nbdkit.sock")
        let server = try BackgroundServer(
            "nbdkit",
            [
                "-f", "-U", socket, "--filter=error", "file", image, "error-pread-rate=1", "error=EIO",
                "error-file=\(dir.file("fail"))",
            ],
            socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        // The first night works; then reads start failing.
        let first = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "d=\(server.uri())"])
        #expect(first.status == 0, "\(first.stderr)")
        FileManager.default.createFile(atPath: dir.file("fail"), contents: Data())
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "d=\(server.uri())"])
        #expect(backup.status == 9)
        // Reads go over several connections at once (nbdkit allows it): the first to fail is named.
        #expect(backup.stderr.contains("NBD_EIO") && backup.stderr.contains("at offset "), "\(backup.stderr)")
        #expect(Self.pointCount(repo, group: "k") == 1)
    }

    @Test func serverKilledMidBackupCommitsNothing() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "raw")
        let socket = dir.file("nbdkit.sock")
        let server = try BackgroundServer(
            "nbdkit", ["-f", "-U", socket, "--filter=delay", "file", image, "delay-read=2"], socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        // Every read takes 2 s, so the kill lands while the first reads (over several connections
        // at once) are in flight, however fast the rest of the backup is.
        let killer = Thread {
            usleep(700_000)
            server.kill()
        }
        killer.start()
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "d=\(server.uri())"])
        #expect(backup.status == 9, "\(backup.stderr)")
        #expect(
            backup.stderr.contains("closed the connection") && backup.stderr.contains("at offset"), "\(backup.stderr)")
        #expect(backup.stderr.split(separator: "\n").count == 1, "\(backup.stderr)")
        #expect(Self.pointCount(repo, group: "k") == 0)
    }

    @Test func stalledServerTimesOut() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "raw")
        let socket = dir.file("nbdkit.sock")
        let server = try BackgroundServer(
            "nbdkit", ["-f", "-U", socket, "--filter=delay", "file", image, "delay-read=20"], socket: socket)
        defer { server.kill() }  // it would finish its 20 s read before honouring SIGTERM
        let repo = Self.initRepository(dir)
        let started = Date()
        let backup = CairnProcess.run([
            "backup", "--repo", repo, "--group", "k", "--nbd-timeout", "1", "d=\(server.uri())",
        ])
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(backup.status == 9, "\(backup.stderr)")
        // nbdkit allows several connections, so the workers read at once: whichever read stalls
        // first is named, at its offset, in one line.
        #expect(
            backup.stderr.contains("stopped answering") && backup.stderr.contains("at offset "), "\(backup.stderr)")
        #expect(backup.stderr.split(separator: "\n").count == 1, "\(backup.stderr)")
        #expect(Self.pointCount(repo, group: "k") == 0)
    }

    @Test func missingExportAndTLSAreClear() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "raw")
        let socket = dir.file("nbd.sock")
        let server = try BackgroundServer(
            "qemu-nbd", ["-r", "-t", "-f", "raw", "-x", "vda", "-k", socket, image], socket: socket)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        let missing = CairnProcess.run(["backup", "--repo", repo, "--group", "k", server.uri(export: "vdb")])
        #expect(missing.status == 4, "\(missing.stderr)")
        #expect(missing.stderr.contains("no such export"), "\(missing.stderr)")
        let tls = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "nbds+unix:///vda?socket=\(socket)"])
        #expect(tls.status == 64)
        #expect(tls.stderr.contains("TLS"), "\(tls.stderr)")
        let noServer = CairnProcess.run(["backup", "--repo", repo, "--group", "k", "nbd://127.0.0.1:1/x"])
        #expect(noServer.status == 9)
        #expect(noServer.stderr.contains("cannot connect"), "\(noServer.stderr)")
    }

    @Test func nbdOverTCPLoopback() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "qcow2")
        let port = 20000 + Int.random(in: 0..<20000)
        let pidFile = dir.file("pid")
        let server = try BackgroundServer(
            "qemu-nbd",
            ["-r", "-t", "-f", "qcow2", "-x", "vda", "-b", "127.0.0.1", "-p", "\(port)", "--pid-file", pidFile, image],
            socket: pidFile)
        defer { server.stop() }
        let repo = Self.initRepository(dir)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "t", "nbd://127.0.0.1:\(port)/vda"])
        #expect(backup.status == 0, "\(backup.stderr)")
        let expected = try QemuTools.rawDigest(of: image, options: ["-f", "qcow2"])
        #expect(try Self.restoredDigest(repo, "t@latest", in: dir) == expected)
    }

    @Test func namedSourcesAndPathsWithEquals() throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: "raw")
        let odd = dir.file("a=b.raw")
        try FileManager.default.copyItem(atPath: image, toPath: odd)
        let repo = Self.initRepository(dir)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "n", "--json", odd, "sys=\(image)"])
        #expect(backup.status == 0, "\(backup.stderr)")
        let names = (Fixture.json(backup.stdout)["disks"] as? [[String: Any]] ?? []).compactMap {
            $0["name"] as? String
        }
        #expect(names == ["a=b.raw", "sys"])
    }

    // MARK: Live images

    /// A writable qemu-nbd holds QEMU's write lock (byte 101): refused, unless --allow-live.
    /// A read-only one (`-r`) does not, and is not refused.
    @Test(arguments: ["raw", "qcow2"])
    func imagesARunningQEMUWritesAreRefused(format: String) throws {
        let dir = TemporaryDirectory("cairn-nbd")
        let image = try Self.makeGuest(in: dir, format: format)
        let repo = Self.initRepository(dir)
        let socket = dir.file("nbd.sock")
        do {
            let writer = try BackgroundServer("qemu-nbd", ["-t", "-f", format, "-k", socket, image], socket: socket)
            defer { writer.stop() }
            let refused = CairnProcess.run(["backup", "--repo", repo, "--group", "live", image])
            #expect(refused.status == 6, "\(refused.stderr)")
            #expect(
                refused.stderr.contains("backup-begin") && refused.stderr.contains("external snapshot")
                    && refused.stderr.contains("--allow-live"), "\(refused.stderr)")
            #expect(Self.pointCount(repo, group: "live") == 0)
            let allowed = CairnProcess.run(["backup", "--repo", repo, "--group", "live", "--allow-live", image])
            #expect(allowed.status == 0, "\(allowed.stderr)")
        }
        try? FileManager.default.removeItem(atPath: socket)
        let reader = try BackgroundServer("qemu-nbd", ["-r", "-t", "-f", format, "-k", socket, image], socket: socket)
        defer { reader.stop() }
        let shared = CairnProcess.run(["backup", "--repo", repo, "--group", "live", image])
        #expect(shared.status == 0, "\(shared.stderr)")
    }

    /// libvirt's pull mode without a VM (research notes §2.3, §6.4 T4): the guest writes through a
    /// writable export; one transaction adds a bitmap and starts `blockdev-backup sync=none` into
    /// a scratch overlay, exported read-only. Writes after the transaction are not in the restore
    /// point; the next night's restore point has them, exactly.
    @Test func pullModeBackupIsFrozenAtTheTransaction() throws {
        let dir = TemporaryDirectory("cairn-pull")
        let disk = dir.file("vda.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"])
        try QemuTools.check(
            "qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x12 32M 2M", disk])
        let before = try QemuTools.rawDigest(of: disk, options: ["-f", "qcow2"])
        let socket = dir.file("qsd.sock")
        let qsd = try BackgroundServer(
            "qemu-storage-daemon",
            [
                "--chardev", "stdio,id=m", "--monitor", "chardev=m",
                "--blockdev", "file,node-name=file0,filename=\(disk)",
                "--blockdev", "qcow2,node-name=vda,file=file0",
                "--nbd-server", "addr.type=unix,addr.path=\(socket)",
                "--export", "type=nbd,id=guest,node-name=vda,name=guest,writable=on",
            ], socket: socket)
        defer { qsd.stop() }
        let qmp = try QMPSession(qsd)
        let repo = Self.initRepository(dir)

        func night(_ n: Int) throws -> String {
            let scratch = dir.file("scratch\(n).qcow2")
            try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, scratch, "64M"])
            try qmp.execute(
                #"{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"scratch\#(n)","file":{"driver":"file","filename":"\#(scratch)"},"backing":"vda"}}"#
            )
            try qmp.execute(
                #"{"execute":"transaction","arguments":{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"vda","name":"night\#(n)","persistent":true}},{"type":"blockdev-backup","data":{"device":"vda","target":"scratch\#(n)","sync":"none","job-id":"fleece\#(n)"}}]}}"#
            )
            try qmp.execute(
                #"{"execute":"block-export-add","arguments":{"type":"nbd","id":"backup\#(n)","node-name":"scratch\#(n)","name":"vda","writable":false}}"#
            )
            return scratch
        }
        func endNight(_ n: Int) throws {
            try qmp.execute(#"{"execute":"block-export-del","arguments":{"id":"backup\#(n)"}}"#)
            try qmp.execute(#"{"execute":"block-job-cancel","arguments":{"device":"fleece\#(n)","force":true}}"#)
            // Wait for the job to go and the export to close before removing the node.
            for _ in 0..<200 {
                let jobs = try qmp.execute(#"{"execute":"query-block-jobs"}"#)
                let exports = try qmp.execute(#"{"execute":"query-block-exports"}"#)
                if !jobs.contains("fleece\(n)") && !exports.contains("backup\(n)") { break }
                usleep(20_000)
            }
            try qmp.execute(#"{"execute":"blockdev-del","arguments":{"node-name":"scratch\#(n)"}}"#)
        }
        let guestURI = qsd.uri(export: "guest")
        let backupURI = qsd.uri(export: "vda")

        _ = try night(1)
        // Guest writes after the point in time: one before Cairn starts, one while it reads.
        try QemuTools.check("qemu-io", ["-f", "raw", "-c", "write -P 0xee 1M 1M", guestURI])
        let writer = Thread {
            _ = try? QemuTools.check(
                "qemu-io", ["-f", "raw", "-c", "write -P 0xef 33M 64k", "-c", "write -P 0xf0 50M 1M", guestURI])
        }
        writer.start()
        let first = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", backupURI])
        #expect(first.status == 0, "\(first.stderr)")
        while !writer.isFinished { usleep(10_000) }
        try endNight(1)
        #expect(try Self.restoredDigest(repo, "vm@latest", in: dir) == before)

        _ = try night(2)
        let second = CairnProcess.run(["backup", "--repo", repo, "--group", "vm", "--json", backupURI])
        #expect(second.status == 0, "\(second.stderr)")
        try endNight(2)
        // The guest as it is now, read through its own export: the oracle for night 2.
        let now = dir.file("now.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "raw", "-O", "raw", guestURI, now])
        let points = CairnProcess.run(["list", "--repo", repo, "--group", "vm", "--json"])
        let ids = Fixture.jsonArray(points.stdout).compactMap { $0["id"] as? String }
        #expect(ids.count == 2)
        #expect(try Self.restoredDigest(repo, ids.last ?? "", in: dir) == QemuTools.fileDigest(now))
        #expect(try QemuTools.fileDigest(now) != before)
    }
}

/// Servers that lie about lengths or cookies: one clear line, exit 6, no crash, no huge allocation.
@Suite struct HostileNBDServerTests {
    static func be<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }

    static let cases: [(String, String, HostileNBDServer.Reply)] = [
        (
            "a 4 GiB block status chunk", "not 4 + 8",
            { _, cookie, _, _ in HostileNBDServer.chunk(flags: 1, type: 5, cookie: cookie, length: 0xFFFF_FFF4) }
        ),
        (
            "an unknown cookie", "not in flight",
            { _, cookie, _, _ in HostileNBDServer.chunk(flags: 1, type: 0, cookie: cookie &+ 99, length: 0) }
        ),
        (
            "data beyond the request", "outside the request",
            { type, cookie, offset, length in
                if type == 7 {
                    return HostileNBDServer.chunk(
                        flags: 1, type: 5, cookie: cookie, length: 12,
                        payload: be(UInt32(7)) + be(length) + be(UInt32(0)))
                }
                return HostileNBDServer.chunk(
                    flags: 1, type: 1, cookie: cookie, length: 8 + 16,
                    payload: be(offset + UInt64(length)) + [UInt8](repeating: 1, count: 16))
            }
        ),
        (
            "a reply that covers half the read", "bytes answered",
            { type, cookie, offset, length in
                if type == 7 {
                    return HostileNBDServer.chunk(
                        flags: 1, type: 5, cookie: cookie, length: 12,
                        payload: be(UInt32(7)) + be(length) + be(UInt32(0)))
                }
                return HostileNBDServer.chunk(
                    flags: 1, type: 2, cookie: cookie, length: 12, payload: be(offset) + be(length / 2))
            }
        ),
        (
            "an unknown chunk type", "type the protocol does not define",
            { _, cookie, _, _ in HostileNBDServer.chunk(flags: 1, type: 77, cookie: cookie, length: 0) }
        ),
    ]

    @Test(arguments: 0..<cases.count)
    func lyingServersAreRefused(index: Int) throws {
        let (label, expected, reply) = Self.cases[index]
        let dir = TemporaryDirectory("cairn-hostile")
        let server = try HostileNBDServer(socket: dir.file("h.sock"), reply: reply)
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run([
            "backup", "--repo", repo, "--group", "h", "--nbd-timeout", "5", "d=\(server.uri)",
        ])
        #expect(backup.status == 6, "\(label): \(backup.stderr)")
        #expect(backup.stderr.contains(expected), "\(label): \(backup.stderr)")
        #expect(backup.stderr.split(separator: "\n").count == 1, "\(label): \(backup.stderr)")
    }

    @Test func hugeOptionReplyIsRefused() throws {
        let dir = TemporaryDirectory("cairn-hostile")
        let server = try HostileNBDServer(socket: dir.file("h.sock"), optionReplyLength: 0xFFFF_FFFF) { _, _, _, _ in []
        }
        let repo = dir.file("repo")
        #expect(CairnProcess.run(["init", "--repo", repo]).status == 0)
        let backup = CairnProcess.run([
            "backup", "--repo", repo, "--group", "h", "--nbd-timeout", "5", "d=\(server.uri)",
        ])
        #expect(backup.status == 6, "\(backup.stderr)")
        #expect(backup.stderr.contains("beyond the 64 KiB"), "\(backup.stderr)")
    }
}
