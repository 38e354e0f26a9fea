import CairnCore
import CairnServe
import FuzzSupport

#if canImport(Glibc)
    import Glibc
#endif

/// `cairn serve`'s parsing of what a client sends: the client flags, options (lengths, names,
/// info requests, metadata context queries, STARTTLS without TLS, EXPORT_NAME), then
/// transmission requests (READ, BLOCK_STATUS with and without REQ_ONE, refused writes with
/// their payloads skipped, DISC).
///
/// Input: the client's byte stream, whole. A real `NBDServer` (swift-nio) runs in the process
/// on a unix socket over one restore point of a 256 KiB disk (data and zero blocks, 4 KiB
/// blocks; export `vm1@latest/disk.raw`, or the empty name); each input is one connection
/// that sends the stream (reading what comes back meanwhile), shuts its sending side and
/// reads until the server closes. A server that holds the connection open 10 s after the
/// client's end of stream is a finding (a hang), as is any trap in its event loop.
@main
enum NBDServerTarget {
    static func main() {
        let scratch = Scratch("nbd-server")
        let repository = FuzzRepository(in: scratch)
        var disk = [UInt8](repeating: 0, count: 256 << 10)
        for i in 0..<(64 << 10) { disk[i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
        for i in (192 << 10)..<(200 << 10) { disk[i] = 0x5A }
        scratch.write(disk, to: "disk.raw")
        let socket = "\(scratch.path)/serve.sock"
        let server: NBDServer
        do {
            let repo = try repository.open()
            let result = try BackupJob(
                repository: repo, group: "vm1", sources: [BackupSource(path: "\(scratch.path)/disk.raw")]
            ).run()
            let cache = RecordCache(capacity: 8 << 20)
            let exports = try result.manifest.disks.map { disk throws(CairnError) in
                NBDExport(reader: try DiskReader(repository: repo, id: result.id, disk: disk, cache: cache))
            }
            var limits = NBDServerLimits()
            limits.handshakeTimeout = 20
            server = try NBDServer.start(
                exports: NBDExportList(exports), address: .unix(path: socket), limits: limits, readThreads: 1,
                log: { _ in })
        } catch {
            fatalError("cannot set up the fuzz server: \(error)")
        }
        FuzzDriver.run { raw in
            exchange(Array(raw), socket: socket)
        }
        _ = server
    }

    /// One connection: sends `stream`, reading (and dropping) replies as they come so neither
    /// side blocks, then reads to the end.
    static func exchange(_ stream: [UInt8], socket path: String) {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { fatalError("socket failed: errno \(errno) (a descriptor leak?)") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { fatalError("cannot connect to the fuzz server: errno \(errno)") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var sent = 0
        var sendOpen = true
        var sink = [UInt8](repeating: 0, count: 1 << 20)
        var deadline = now() + 10
        while true {
            if sendOpen && sent == stream.count {
                shutdown(fd, Int32(SHUT_WR))
                sendOpen = false
                deadline = now() + 10
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN) | (sendOpen ? Int16(POLLOUT) : 0), revents: 0)
            let ready = poll(&poller, 1, 1000)
            if ready < 0 && errno != EINTR { fatalError("poll failed: errno \(errno)") }
            if ready <= 0 {
                if now() > deadline { fatalError("the server kept the connection open 10 s after the input ended") }
                continue
            }
            if poller.revents & Int16(POLLOUT) != 0 && sendOpen {
                let n = stream.withUnsafeBytes {
                    send(fd, $0.baseAddress! + sent, stream.count - sent, Int32(MSG_NOSIGNAL))
                }
                if n > 0 {
                    sent += n
                } else if n < 0 && errno != EAGAIN && errno != EINTR {
                    sendOpen = false  // the server hung up; read what it sent before
                }
            }
            if poller.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let n = sink.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                if n == 0 { return }
                if n < 0 && errno != EAGAIN && errno != EINTR { return }
            }
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
