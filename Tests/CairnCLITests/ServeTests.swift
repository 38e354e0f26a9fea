import CairnCore
import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `cairn serve` judged by real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy) and a raw
/// socket client for what real clients never send. Each test starts the server as a process
/// on a socket in its own temporary directory and stops it with SIGTERM (exit 0 expected).
@Suite struct ServeTests {
    let dir = TemporaryDirectory("cairn-serve")
    var repo: String { dir.file("repo") }
    var image: String { dir.file("disk.raw") }

    /// A 24 MiB raw disk backed up as `vm1`: patterns at known offsets (one unaligned), text and
    /// random data, and long zero runs; returns the restore point's id.
    func makeDisk(blockSize: String = "64K", extra: [String] = []) throws -> String {
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", blockSize]).status == 0)
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "raw", image, "24M"])
        try QemuTools.check(
            "qemu-io",
            [
                "-f", "raw", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 4M 512k", "-c",
                "write -P 0x33 12345678 70000",
                "-c", "write -P 0x44 23M 1M",
            ] + extra + [image])
        let file = try File.open(image, .readWrite)
        var gen = TestImage(seed: 7)
        try file.write(gen.textBytes(700_000), at: 6 << 20)
        try file.write(gen.randomBytes(900_000), at: 16 << 20)
        let backup = CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--json", image])
        #expect(backup.status == 0, "\(backup.stderr)")
        return Fixture.json(backup.stdout)["id"] as? String ?? ""
    }

    /// Runs `tool` with LIBNBD_DEBUG=1 and returns its output; records an issue for any libnbd
    /// complaint. nbdinfo itself calls two functions in the wrong state on its way out
    /// (`nbd_opt_abort`, `nbd_shutdown`: "invalid state"); qemu-nbd gets the same lines.
    @discardableResult
    func libnbd(_ tool: String, _ arguments: [String]) throws -> String {
        let output = Subprocess.run(tool, arguments, environment: ["LIBNBD_DEBUG": "1"])
        #expect(output.status == 0, "\(tool) \(arguments): \(output.stderr.suffix(2000))")
        let complaints = output.stderr.split(separator: "\n").filter { line in
            let lower = line.lowercased()
            guard lower.contains("error") || lower.contains("warn") || lower.contains("broken") else { return false }
            return !(line.contains("leave: error=") && line.contains("invalid state:"))
        }
        #expect(complaints.isEmpty, "\(tool): \(complaints.prefix(5))")
        return output.stdout
    }

    @Test func realClientsReadTheExport() throws {
        let id = try makeDisk()
        let server = try ServeProcess(repo: repo, directory: dir.path)
        let uri = server.uri
        let name = "\(id)/disk.raw"
        #expect(server.exports.first?["name"] as? String == name)
        #expect(uri == "nbd+unix:///\(name)?socket=\(server.socket)")
        #expect(server.exports.first?["size"] as? Int == 24 << 20)
        let mode = try FileManager.default.attributesOfItem(atPath: server.socket)[.posixPermissions] as? Int
        #expect(mode == 0o600, "the socket is owner-only")

        // qemu-img convert, judged by qemu-img compare.
        let copy = dir.file("copy.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, copy])
        #expect(try QemuTools.run("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, copy]).status == 0)
        #expect(TestImage.allocatedBytes(of: copy) < 8 << 20, "zero blocks stayed holes")

        // qemu-img map (REQ_ONE block status): zeros and data exactly where Cairn's blocks are.
        let map = try QemuTools.check("qemu-img", ["map", "--output=json", "-f", "raw", uri])
        let extents = (try JSONSerialization.jsonObject(with: Data(map.utf8))) as? [[String: Any]] ?? []
        let localMap = try QemuTools.check("qemu-img", ["map", "--output=json", "-f", "raw", image])
        _ = localMap
        var covered = 0
        for extent in extents {
            #expect(extent["start"] as? Int == covered)
            covered += extent["length"] as? Int ?? 0
        }
        #expect(covered == 24 << 20)
        let dataBytes = extents.filter { $0["data"] as? Bool == true }.reduce(0) { $0 + ($1["length"] as! Int) }
        #expect(dataBytes > 3 << 20 && dataBytes < 8 << 20, "\(extents)")
        #expect(extents.contains { $0["start"] as? Int == 1 << 20 && $0["zero"] as? Bool == true })

        // qemu-io reads with patterns at offsets, unaligned ones included.
        let io = try QemuTools.run(
            "qemu-io",
            [
                "-r", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c", "read -P 0x22 4M 512k", "-c",
                "read -P 0x33 12345678 70000",
                "-c", "read -P 0x44 23M 1M", "-c", "read -P 0 2M 4k", "-c", "read -P 0x11 1000 3", uri,
            ])
        #expect(io.status == 0 && !io.standardOutput.contains("fail") && !io.standardOutput.contains("error"))
        #expect(io.standardOutput.components(separatedBy: "read ").count - 1 == 6, "\(io.standardOutput)")

        // nbdinfo --list: the export and its description.
        let list = try libnbd("nbdinfo", ["--list", "nbd+unix:///?socket=\(server.socket)"])
        #expect(list.contains("export=\"\(name)\""))
        #expect(list.contains("group vm1, time \(id.split(separator: "@")[1]), disk disk.raw, 25165824 bytes"))
        #expect(list.contains("is_read_only: true") && list.contains("can_multi_conn: true"))

        // nbdinfo --map: zero ranges are hole and zero.
        let info = try libnbd("nbdinfo", ["--map", uri])
        let rows = info.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(rows.contains { $0.count >= 3 && $0[0] == "1048576" && $0[2] == "3" }, "\(info)")
        #expect(rows.contains { $0.count >= 3 && $0[0] == "0" && $0[1] == "1048576" && $0[2] == "0" }, "\(info)")
        let totals = try libnbd("nbdinfo", ["--map", "--totals", uri])
        #expect(totals.contains("hole,zero"))

        // nbdcopy over four connections.
        let copied = dir.file("nbdcopy.raw")
        try libnbd("nbdcopy", ["--connections=4", "--requests=8", uri, copied])
        #expect(try TestImage.sha256(of: copied) == TestImage.sha256(of: image))

        // The aliases: GROUP@latest/DISK and, with one export, the empty name.
        let latest = dir.file("latest.raw")
        try libnbd("nbdcopy", ["nbd+unix:///vm1@latest/disk.raw?socket=\(server.socket)", latest])
        #expect(try TestImage.sha256(of: latest) == TestImage.sha256(of: image))
        let plain = try QemuTools.run(
            "qemu-io", ["-r", "-f", "raw", "-c", "read -P 0x44 23M 1M", "nbd+unix:///?socket=\(server.socket)"])
        #expect(plain.status == 0 && !plain.standardOutput.contains("fail"))

        // Writes are refused: QEMU opens the read-only export read-only, and a forced write fails.
        let write = try QemuTools.run("qemu-io", ["-f", "raw", "-c", "write -P 0x99 0 64k", uri])
        #expect(
            write.status != 0 || write.standardOutput.contains("failed") || write.standardError.contains("ermission"))
        #expect(try TestImage.sha256(of: image) == TestImage.sha256(of: copy))

        #expect(server.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: server.socket), "the socket is removed on exit")
        let log = server.standardError
        #expect(log.contains("connection 1 from unix socket"))
        #expect(log.contains("export \(name)"))
    }

    @Test func eightClientsAtOnceAndEveryRestorePoint() throws {
        let first = try makeDisk()
        sleep(1)
        try QemuTools.check("qemu-io", ["-f", "raw", "-c", "write -P 0x55 8M 2M", image])
        let second =
            Fixture.json(CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--json", image]).stdout)["id"]
            as? String ?? ""
        let server = try ServeProcess(repo: repo, arguments: ["--cache-size", "4M"], directory: dir.path)
        #expect(Set(server.exports.map { $0["name"] as? String ?? "" }) == ["\(first)/disk.raw", "\(second)/disk.raw"])
        let expected = try TestImage.sha256(of: image)
        let uri = "nbd+unix:///\(second)/disk.raw?socket=\(server.socket)"
        let results = NSLockBoxForTests<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let out = dir.file("client\(i).raw")
            let tool =
                i % 2 == 0 ? ["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out] : ["nbdcopy", uri, out]
            let run = Subprocess.run(tool[0], Array(tool.dropFirst()))
            let digest = (try? TestImage.sha256(of: out)) ?? "missing: \(run.stderr)"
            results.append(digest)
        }
        #expect(results.value.count == 8)
        #expect(results.value.allSatisfy { $0 == expected }, "\(results.value)")
        #expect(server.stop() == 0)
        #expect(server.standardError.components(separatedBy: "cairn serve: connection ").count - 1 >= 8)
    }

    @Test func hostilePeersAreAnsweredOrDropped() throws {
        let id = try makeDisk()
        let server = try ServeProcess(repo: repo, directory: dir.path)
        let name = "\(id)/disk.raw"

        // Garbage instead of the client flags: dropped.
        let garbage = try RawNBDClient(socket: server.socket)
        #expect(garbage.receive(18) != nil)
        garbage.send(Array(repeating: 0xFF, count: 64))
        #expect(garbage.isClosedByServer())

        // An option without the magic: dropped.
        let badMagic = try RawNBDClient(socket: server.socket)
        #expect(badMagic.greet())
        badMagic.send(Array(repeating: 0x41, count: 32))
        #expect(badMagic.isClosedByServer())

        // Unknown options are ERR_UNSUP and the handshake goes on; an oversized one is
        // ERR_TOO_BIG with its data discarded unread; then GO still works.
        let client = try RawNBDClient(socket: server.socket)
        #expect(client.greet())
        #expect(client.sendOption(0x4242, [1, 2, 3]))
        let unsup = client.receiveOptionReply()
        #expect(unsup?.option == 0x4242 && unsup?.type == 0x8000_0001)
        let huge = [UInt8](repeating: 7, count: 1 << 20)
        #expect(client.sendOption(6, huge))
        #expect(client.receiveOptionReply()?.type == 0x8000_0009)
        #expect(client.sendOption(6, RawNBDClient.be(UInt32(1000)) + [1, 2]), "a name longer than its data")
        #expect(client.receiveOptionReply()?.type == 0x8000_0003)
        let missing = Array("vm9@2026-01-01T00:00:00Z/x".utf8)
        #expect(client.sendOption(7, RawNBDClient.be(UInt32(missing.count)) + missing + RawNBDClient.be(UInt16(0))))
        #expect(client.receiveOptionReply()?.type == 0x8000_0006, "unknown export")
        #expect(client.sendOption(3, []))
        var listed: [String] = []
        while let reply = client.receiveOptionReply(), reply.type == 2 {
            let length = Int(RawNBDClient.load(UInt32.self, reply.data, at: 0))
            listed.append(String(decoding: reply.data[4..<4 + length], as: UTF8.self))
        }
        #expect(listed == [name])
        #expect(client.sendOption(5, []))
        #expect(client.receiveOptionReply()?.type == 0x8000_0001, "STARTTLS is not offered on a unix socket")
        #expect(client.sendOption(2, []))
        #expect(client.receiveOptionReply()?.type == 1, "ABORT is acknowledged")
        #expect(client.isClosedByServer())

        // Transmission: reads, refusals and REQ_ONE.
        let peer = try RawNBDClient(socket: server.socket)
        #expect(peer.open(name) == 24 << 20)
        let read = peer.read(offset: 4 << 20, length: 4096)
        #expect(read?.error == 0 && read?.data == [UInt8](repeating: 0x22, count: 4096))
        #expect(peer.read(offset: (24 << 20) - 100, length: 4096)?.error == 22, "EINVAL past the end")
        #expect(peer.read(offset: .max - 10, length: 4096)?.error == 22, "EINVAL, no overflow")
        #expect(peer.read(offset: 0, length: 64 << 20)?.error == 22, "EINVAL over the maximum payload")
        for (command, label) in [(UInt16(1), "write"), (4, "trim"), (6, "write zeroes")] {
            #expect(peer.sendRequest(command: command, cookie: 9, offset: 0, length: command == 1 ? 512 : 4096))
            if command == 1 { peer.send([UInt8](repeating: 0x99, count: 512)) }
            #expect(peer.receiveSimpleReply(cookie: 9) == 1, "\(label) is EPERM")
        }
        #expect(peer.sendRequest(command: 7, flags: 8, cookie: 3, offset: 0, length: 24 << 20))
        let status = peer.receiveStructuredReply(cookie: 3) ?? []
        #expect(status.count == 1 && status[0].type == 5 && status[0].payload.count == 12, "REQ_ONE: one extent")
        if status.count == 1, status[0].payload.count == 12 {
            #expect(RawNBDClient.load(UInt32.self, status[0].payload, at: 4) == 1 << 20)
            #expect(RawNBDClient.load(UInt32.self, status[0].payload, at: 8) == 0)
        }
        #expect(peer.sendRequest(command: 7, cookie: 4, offset: 1 << 20, length: 8 << 20))
        let many = peer.receiveStructuredReply(cookie: 4) ?? []
        #expect(
            many.count == 1 && many[0].payload.count > 12 && RawNBDClient.load(UInt32.self, many[0].payload, at: 8) == 3
        )
        // Pipelined requests are all answered.
        for cookie in UInt64(100)..<UInt64(120) {
            #expect(peer.sendRequest(command: 0, cookie: cookie, offset: cookie * 65536, length: 65536))
        }
        var answered = Set<UInt64>()
        for _ in 0..<20 {
            guard let header = peer.receive(20) else { break }
            let length = Int(RawNBDClient.load(UInt32.self, header, at: 16))
            _ = peer.receive(length)
            answered.insert(RawNBDClient.load(UInt64.self, header, at: 8))
        }
        #expect(answered == Set(100..<120))
        #expect(peer.sendRequest(command: 2, cookie: 5, offset: 0, length: 0))
        #expect(peer.isClosedByServer(), "DISC closes")

        // A client that asks for 32 MiB and hangs up at once, and one that never reads its replies.
        for _ in 0..<4 {
            let rude = try RawNBDClient(socket: server.socket)
            #expect(rude.open(name) != nil)
            _ = rude.sendRequest(command: 0, cookie: 1, offset: 0, length: 24 << 20)
            _ = rude.receive(100)
            rude.close()
        }
        let stalled = try RawNBDClient(socket: server.socket)
        #expect(stalled.open(name) != nil)
        for cookie in UInt64(0)..<UInt64(200) {
            guard stalled.sendRequest(command: 0, cookie: cookie, offset: 0, length: 8 << 20) else { break }
        }
        // Others are served meanwhile.
        let copy = dir.file("copy.raw")
        try QemuTools.check("qemu-img", ["convert", "-f", "raw", "-O", "raw", server.uri, copy])
        #expect(try TestImage.sha256(of: copy) == TestImage.sha256(of: image))

        #expect(server.stop() == 0, "SIGTERM with a stalled client still exits 0")
        _ = stalled
    }

    @Test func damagedChunkIsEIOOnItsRangeOnly() throws {
        // Random data does not compress: frames are stored as they are, so one flipped byte
        // damages exactly one block.
        #expect(CairnProcess.run(["init", "--repo", repo, "--block-size", "64K"]).status == 0)
        var gen = TestImage(seed: 99)
        FileManager.default.createFile(atPath: image, contents: Data(gen.randomBytes(4 << 20)))
        let id =
            Fixture.json(CairnProcess.run(["backup", "--repo", repo, "--group", "vm1", "--json", image]).stdout)["id"]
            as? String ?? ""
        let pack = Fixture.files(under: "\(repo)/packs", suffix: ".pack")[0]
        let size = Fixture.fileSize(pack)
        try Fixture.flip(pack, at: size / 3, mask: 0x10)
        // The oracle: restore --allow-damaged names the ranges whose bytes do not prove.
        let restored = CairnProcess.run([
            "restore", "--repo", repo, id, "--to", dir.file("r.raw"), "--allow-damaged", "--json",
        ])
        let ranges = (Fixture.json(restored.stdout)["damaged"] as? [[String: Any]] ?? []).map {
            ($0["offset"] as! Int, $0["length"] as! Int)
        }
        #expect(!ranges.isEmpty && ranges.count < 64, "\(restored.stderr)")

        let server = try ServeProcess(repo: repo, directory: dir.path)
        let client = try RawNBDClient(socket: server.socket)
        #expect(client.open("\(id)/disk.raw") == 4 << 20)
        let original = try File.open(image, .readOnly)
        for block in 0..<64 {
            let offset = block * 65536
            let damaged = ranges.contains { $0.0 <= offset && offset < $0.0 + $0.1 }
            let reply = client.read(offset: UInt64(offset), length: 65536, cookie: UInt64(block))
            if damaged {
                #expect(reply?.error == 5, "block \(block) is EIO")
            } else {
                let expected = try original.readBytes(count: 65536, at: UInt64(offset))
                #expect(reply?.error == 0 && reply?.data == expected, "block \(block) is served")
            }
        }
        // A read that spans a damaged block and its neighbours fails whole; qemu-io sees EIO.
        let bad = ranges[0].0
        #expect(client.read(offset: UInt64(max(0, bad - 4096)), length: 3 * 65536)?.error == 5)
        let io = try QemuTools.run("qemu-io", ["-r", "-f", "raw", "-c", "read \(bad + 100) 10", server.uri])
        #expect(
            io.standardOutput.contains("Input/output error") || io.standardError.contains("Input/output error"), "\(io)"
        )
        #expect(server.stop() == 0)
        #expect(
            server.standardError.contains("damaged: restore point \(id)/disk.raw offset \(bad) (65536 bytes)"),
            "\(server.standardError)")
    }

    @Test func gcWaitsForTheServerAndRunsAfterIt() throws {
        _ = try makeDisk()
        let server = try ServeProcess(repo: repo, directory: dir.path)
        let gc = CairnProcess.run(["gc", "--repo", repo])
        #expect(gc.status == 5, "\(gc.stderr)")
        #expect(gc.stderr.contains("serve"))
        let waited = CairnProcess.run(["gc", "--repo", repo, "--lock-wait", "1s"])
        #expect(waited.status == 5)
        #expect(server.stop(signal: SIGINT) == 0, "SIGINT stops it too")
        #expect(CairnProcess.run(["gc", "--repo", repo]).status == 0)
    }

    @Test func bootThroughAnOverlayLeavesTheRepositoryUntouched() throws {
        _ = try makeDisk()
        let before = TestImage.snapshotTree(repo)
        let server = try ServeProcess(repo: repo, directory: dir.path)
        let overlay = dir.file("overlay.qcow2")
        try QemuTools.check("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", server.uri, overlay])
        try QemuTools.check(
            "qemu-io", ["-f", "qcow2", "-c", "write -P 0x99 0 64k", "-c", "write -P 0x98 4M 4k", overlay])
        let io = try QemuTools.run(
            "qemu-io",
            [
                "-r", "-f", "qcow2", "-c", "read -P 0x99 0 64k", "-c", "read -P 0x11 64k 960k", "-c",
                "read -P 0x98 4M 4k",
                "-c", "read -P 0x22 4100k 508k", "-c", "read -P 0x44 23M 1M", overlay,
            ])
        #expect(io.status == 0 && !io.standardOutput.contains("fail"), "\(io.standardOutput)")
        #expect(server.stop() == 0)
        #expect(TestImage.snapshotTree(repo) == before, "the repository is untouched")
    }

    /// Scripts/cairn-live-restore: the disk is usable at once through qemu-storage-daemon's
    /// export, a write made meanwhile stays, and when the stream ends the image stands alone:
    /// equal to the original plus that write, with cairn serve stopped.
    @Test func liveRestoreStreamsTheDiskWhileInUse() throws {
        _ = try makeDisk()
        let server = try ServeProcess(repo: repo, directory: dir.path)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/cairn-live-restore").path
        let target = dir.file("live.qcow2")
        let exportSocket = dir.file("live.sock")
        let live = Process()
        live.executableURL = URL(fileURLWithPath: script)
        live.arguments = [
            "--uri", server.uri, "--to", target, "--export-socket", exportSocket, "--speed", "\(8 << 20)",
        ]
        let output = Pipe()
        live.standardOutput = output
        live.standardError = output
        try live.run()
        for _ in 0..<1000 where !FileManager.default.fileExists(atPath: exportSocket) && live.isRunning {
            usleep(10_000)
        }
        let disk = "nbd+unix:///disk?socket=\(exportSocket)"
        try QemuTools.check("qemu-io", ["-f", "raw", "-c", "write -P 0x77 5M 64k", disk])
        let during = try QemuTools.run("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0x44 23M 1M", disk])
        #expect(during.status == 0 && !during.standardOutput.contains("fail"), "reads during the stream")
        let log = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        live.waitUntilExit()
        #expect(live.terminationStatus == 0, "\(log)")
        #expect(log.contains("stands alone"))
        #expect(server.stop() == 0)
        let info = try QemuTools.check("qemu-img", ["info", "--output=json", target])
        #expect(!info.contains("backing-filename"), "\(info)")
        let expected = dir.file("expected.raw")
        try FileManager.default.copyItem(atPath: image, toPath: expected)
        try QemuTools.check("qemu-io", ["-f", "raw", "-c", "write -P 0x77 5M 64k", expected])
        #expect(try QemuTools.run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", target, expected]).status == 0)
    }
}

/// A value behind a lock, for collecting results from concurrent test work.
final class NSLockBoxForTests<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
    func append<E>(_ element: E) where Value == [E] {
        lock.lock()
        stored.append(element)
        lock.unlock()
    }
}
