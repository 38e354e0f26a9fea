import CairnCore
import FuzzSupport
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// The NBD client's parsing of what a server sends: the greeting, option replies
/// (`STRUCTURED_REPLY`, `SET_META_CONTEXT`, `GO` with its `NBD_REP_INFO`s, the `EXPORT_NAME`
/// fallback), then simple and structured replies to BLOCK_STATUS and READ.
///
/// Input: one options byte, then the server's byte stream. Options: bit 0 asks for simple
/// replies only (no `STRUCTURED_REPLY`), bit 1 also asks for `qemu:dirty-bitmap:fuzz`. The
/// stream is written into one end of a socketpair, whose sending side is then shut, and
/// `NBDClient` runs on the other end as it would against a server: the handshake, block status
/// in every context the "server" selected (the first 1 MiB), a read of the first 256 KiB and
/// an unaligned read. A client request past the input meets the end of the stream.
@main
enum NBDClientTarget {
    static func main() {
        let uri = try! NBDURI(parsing: "nbd+unix:///fuzz?socket=/nonexistent/fuzz.sock")
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 16)
        FuzzDriver.run { raw in
            var input = FuzzInput(raw)
            let options = input.byte()
            // What the client sends goes unread into the other end; the stream stays below the
            // socket buffer so that writing it all first never blocks.
            let stream = input.rest().prefix(160 << 10)
            var fds: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
                fatalError("socketpair failed: errno \(errno) (a descriptor leak?)")
            }
            var sendBuffer: Int32 = 512 << 10
            setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))
            defer { close(fds[1]) }
            let written = Array(stream).withUnsafeBytes { bytes -> Bool in
                var done = 0
                while done < bytes.count {
                    let n = send(
                        fds[1], bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                    if n <= 0 { return false }
                    done += n
                }
                return true
            }
            shutdown(fds[1], Int32(SHUT_WR))
            guard written else {
                close(fds[0])
                return
            }
            var metaContexts = [NBDMetaContext.baseAllocation]
            if options & 2 != 0 { metaContexts.append(NBDMetaContext.qemuDirtyBitmapPrefix + "fuzz") }
            let configuration = NBDClient.Configuration(
                metaContexts: metaContexts, timeout: 5, structuredReplies: options & 1 == 0)
            guard
                let client = try? NBDClient(
                    uri: uri, connectedSocket: FileDescriptor(rawValue: fds[0]), configuration: configuration)
            else { return }
            let size = client.size
            guard size > 0 else { return }
            for context in client.contexts.keys.sorted() {
                _ = try? client.blockStatus(context: context, offset: 0, length: min(size, 1 << 20))
            }
            let count = Int(min(size, UInt64(buffer.count)))
            try? client.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: 0)
            if size > 1000 {
                try? client.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<300]), at: 700)
            }
            client.disconnect()
        }
    }
}
