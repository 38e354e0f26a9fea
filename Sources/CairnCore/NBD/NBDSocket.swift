import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A connected stream socket to an NBD server (unix or TCP), with blocking whole-buffer sends and
/// receives bounded by a timeout.
///
/// The only file that talks to the kernel about sockets. The timeout is the kernel's
/// `SO_RCVTIMEO`/`SO_SNDTIMEO`, so a server that stops answering surfaces as `.timedOut` from the
/// call that waited, without a watchdog thread.
final class NBDSocket {
    /// Why a socket call failed; the client turns it into a message naming the export and offset.
    enum Failure: Error, Equatable {
        /// The peer closed the connection (end of stream, `ECONNRESET`, `EPIPE`).
        case closed
        /// Nothing moved for the whole timeout.
        case timedOut
        case system(Errno)

        var text: String {
            switch self {
            case .closed: return "the server closed the connection"
            case .timedOut: return "timed out"
            case .system(let errno): return errno.description
            }
        }
    }

    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { _ = Glibc.close(fd) }

    /// Takes over `fd`, a stream socket already connected to the server (closed with this).
    convenience init(adopting fd: Int32, timeout: Double) throws(Failure) {
        self.init(fd: fd)
        try setTimeout(timeout)
    }

    /// Connects to the unix socket at `path`.
    static func connect(unixPath path: String, timeout: Double) throws(Failure) -> NBDSocket {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < capacity else { throw .system(.fileNameTooLong) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(Errno(rawValue: errno)) }
        let sock = NBDSocket(fd: fd)
        try sock.setTimeout(timeout)
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        guard rc == 0 else { throw .system(Errno(rawValue: errno)) }
        return sock
    }

    /// Connects to `host:port` over TCP, trying each address the resolver returns.
    static func connect(host: String, port: UInt16, timeout: Double) throws(Failure) -> NBDSocket {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw .system(rc == EAI_SYSTEM ? Errno(rawValue: errno) : .noSuchFileOrDirectory)
        }
        defer { freeaddrinfo(first) }
        var lastError = Errno.connectionRefused
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                lastError = Errno(rawValue: errno)
                continue
            }
            let sock = NBDSocket(fd: fd)
            try sock.setTimeout(timeout)
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                // The spec: both ends SHOULD set TCP_NODELAY (requests are small and pipelined).
                var one: Int32 = 1
                _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                return sock
            }
            lastError = Errno(rawValue: errno)
        }
        throw .system(lastError)
    }

    private func setTimeout(_ seconds: Double) throws(Failure) {
        guard seconds > 0 else { return }
        let whole = seconds.rounded(.down)
        var tv = timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            guard setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
                throw .system(Errno(rawValue: errno))
            }
        }
    }

    /// Sends every byte of `buffer`.
    func send(_ buffer: UnsafeRawBufferPointer) throws(Failure) {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let n = Glibc.send(fd, base + done, buffer.count - done, Int32(MSG_NOSIGNAL))
            if n > 0 {
                done += n
                continue
            }
            try failure(errno)
        }
    }

    /// Sends every byte of `bytes`.
    func send(_ bytes: [UInt8]) throws(Failure) {
        var failure: Failure?
        bytes.withUnsafeBytes { raw in
            do throws(Failure) { try send(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Fills `buffer` completely from the stream.
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(Failure) {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let n = recv(fd, base + done, buffer.count - done, Int32(MSG_WAITALL))
            if n > 0 {
                done += n
                continue
            }
            if n == 0 { throw .closed }
            try failure(errno)
        }
    }

    /// Receives exactly `count` bytes into a new array (handshake replies; small and bounded).
    func receive(count: Int) throws(Failure) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: Failure?
        bytes.withUnsafeMutableBytes { raw in
            do throws(Failure) { try receive(into: raw) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Receives and drops `count` bytes, through a small stack of reads.
    func discard(_ count: Int) throws(Failure) {
        var left = count
        var scratch = [UInt8](repeating: 0, count: min(count, 65536))
        var failure: Failure?
        while left > 0 && failure == nil {
            let n = min(left, scratch.count)
            scratch.withUnsafeMutableBytes { raw in
                do throws(Failure) { try receive(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])) } catch {
                    failure = error
                }
            }
            left -= n
        }
        if let failure { throw failure }
    }

    /// Classifies a failed call's errno; returns (to retry) only for `EINTR`.
    private func failure(_ code: Int32) throws(Failure) {
        switch code {
        case EINTR: return
        case EAGAIN, EWOULDBLOCK: throw .timedOut
        case ECONNRESET, EPIPE, ENOTCONN: throw .closed
        default: throw .system(Errno(rawValue: code))
        }
    }
}
