import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberately broken HTTP server on 127.0.0.1, for the replies no real S3 store can be made
/// to send: garbage XML, oversize bodies, 500s, stalls.
///
/// One thread serves one connection at a time, one request per connection (every reply closes
/// it), and asks `reply` what to send for the n-th request (counting from 0).
final class HostileHTTPServer: @unchecked Sendable {
    enum Answer: Sendable {
        /// These bytes, then close.
        case raw([UInt8])
        /// Nothing for `seconds`, then close.
        case stall(seconds: Int)
        /// The request as it came (with `Connection: close`) to 127.0.0.1:`port`, and whatever
        /// that answers back: a proxy to a real store that fails only chosen requests.
        case forward(port: UInt16)
    }

    let port: UInt16
    /// What the serving thread uses; it outlives the server until the thread sees `stopping`.
    private let core: Core

    /// How many requests arrived so far.
    var requests: Int { core.served.load(ordering: .relaxed) }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    init(reply: @escaping @Sendable (_ index: Int, _ head: String) -> Answer) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard fd >= 0, bound == 0, named == 0, listen(fd, 16) == 0 else {
            throw HostileServerError(message: "cannot listen on 127.0.0.1")
        }
        port = UInt16(bigEndian: address.sin_port)
        let core = Core(listener: fd)
        self.core = core
        Thread { core.serve(reply) }.start()
    }

    deinit {
        core.stopping.store(true, ordering: .relaxed)
        shutdown(core.listener, Int32(SHUT_RDWR))
    }
}

extension HostileHTTPServer {
    final class Core: Sendable {
        let listener: Int32
        let served = Atomic<Int>(0)
        let stopping = Atomic<Bool>(false)

        init(listener: Int32) { self.listener = listener }
        deinit { close(listener) }

        func serve(_ reply: @Sendable (Int, String) -> Answer) {
            while !stopping.load(ordering: .relaxed) {
                let conn = accept(listener, nil, nil)
                guard conn >= 0 else { return }
                defer { close(conn) }
                guard let (head, request) = readRequest(conn) else { continue }
                let index = served.wrappingAdd(1, ordering: .relaxed).oldValue
                switch reply(index, head) {
                case .forward(let port):
                    Self.forward(request, head: head, to: port, replyingOn: conn)
                case .raw(let bytes):
                    var sent = 0
                    while sent < bytes.count {
                        let n = bytes[sent...].withUnsafeBytes {
                            send(conn, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                        }
                        if n <= 0 { break }
                        sent += n
                    }
                case .stall(let seconds):
                    // Until the time is up or the client hangs up (so its next try is served).
                    var waited = 0
                    while waited < seconds * 10, !stopping.load(ordering: .relaxed) {
                        var event = pollfd(fd: conn, events: Int16(POLLIN), revents: 0)
                        if poll(&event, 1, 100) > 0 {
                            var byte: UInt8 = 0
                            if recv(conn, &byte, 1, 0) <= 0 { break }
                        }
                        waited += 1
                    }
                }
            }
        }

        /// Sends `request` to 127.0.0.1:`port` with its Connection header replaced by `close`
        /// (not a signed header), and relays the reply until that side closes.
        static func forward(_ request: [UInt8], head: String, to port: UInt16, replyingOn conn: Int32) {
            let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
                .filter { !$0.lowercased().hasPrefix("connection:") }
            let newHead = Array((lines.joined(separator: "\r\n") + "\r\nConnection: close\r\n\r\n").utf8)
            let body = request[(Array(head.utf8).count + 4)...]
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard upstream >= 0 else { return }
            defer { close(upstream) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0, sendAll(newHead + body, on: upstream) else { return }
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(upstream, $0.baseAddress, $0.count, 0) }
                if n <= 0 || !sendAll(Array(chunk[0..<n]), on: conn) { return }
            }
        }

        static func sendAll(_ bytes: [UInt8], on fd: Int32) -> Bool {
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return false }
                sent += n
            }
            return true
        }

        /// Reads a request's head and its body (by Content-Length), and returns the head and
        /// every byte read; nil when the client went away.
        func readRequest(_ conn: Int32) -> (String, [UInt8])? {
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            var headEnd: Int?
            var needed = Int.max
            while bytes.count < needed {
                let n = chunk.withUnsafeMutableBytes { recv(conn, $0.baseAddress, $0.count, 0) }
                if n <= 0 {
                    guard let headEnd else { return nil }
                    return (String(decoding: bytes[..<headEnd], as: UTF8.self), bytes)
                }
                bytes += chunk[0..<n]
                if headEnd == nil, let end = Self.find([13, 10, 13, 10], in: bytes) {
                    headEnd = end
                    let head = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
                    var length = 0
                    for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                        length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                    needed = end + 4 + length
                }
            }
            return (String(decoding: bytes[..<headEnd!], as: UTF8.self), bytes)
        }

        static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
            guard haystack.count >= needle.count else { return nil }
            for i in 0...(haystack.count - needle.count) where Array(haystack[i..<(i + needle.count)]) == needle {
                return i
            }
            return nil
        }

    }

    /// An HTTP/1.1 reply with a body and `Connection: close`.
    static func reply(_ status: Int, _ body: String, headers: [String] = []) -> Answer {
        .raw(reply(status, Array(body.utf8), headers: headers))
    }

    static func reply(_ status: Int, _ body: [UInt8], headers: [String] = []) -> [UInt8] {
        var head = "HTTP/1.1 \(status) Status\r\nContent-Length: \(body.count)\r\nConnection: close\r\n"
        for header in headers { head += header + "\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }
}

struct HostileServerError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
