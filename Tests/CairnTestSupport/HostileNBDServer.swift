import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberately broken NBD server on a unix socket, for the misbehaviour no real server here
/// can be made to show (lengths of 4 GiB, unknown cookies, data outside the request).
///
/// It speaks a correct fixed newstyle handshake (structured replies, `base:allocation` as context
/// id 7, an export of `size` bytes) and then answers each request with whatever `reply` writes.
/// One connection; the thread ends when the client hangs up.
public final class HostileNBDServer: @unchecked Sendable {
    public let socket: String
    private let listener: Int32
    private let thread: Thread

    /// What the server sends for a request: (command type, cookie, offset, length) → bytes.
    public typealias Reply = @Sendable (_ type: UInt16, _ cookie: UInt64, _ offset: UInt64, _ length: UInt32) -> [UInt8]

    public init(socket: String, size: UInt64 = 1 << 20, optionReplyLength: UInt32? = nil, reply: @escaping Reply)
        throws
    {
        self.socket = socket
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        listener = fd
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(socket.utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, bound == 0, listen(fd, 1) == 0 else {
            throw QemuToolError(message: "cannot listen on \(socket)")
        }
        thread = Thread {
            let conn = accept(fd, nil, nil)
            guard conn >= 0 else { return }
            defer { close(conn) }
            Self.serve(conn, size: size, optionReplyLength: optionReplyLength, reply: reply)
        }
        thread.start()
    }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        unlink(socket)
    }

    public var uri: String { "nbd+unix:///?socket=\(socket)" }

    private static func serve(_ conn: Int32, size: UInt64, optionReplyLength: UInt32?, reply: Reply) {
        func send(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { Glibc.send(conn, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        func receive(_ count: Int) -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = bytes.withUnsafeMutableBytes { recv(conn, $0.baseAddress! + done, count - done, 0) }
                if n <= 0 { return nil }
                done += n
            }
            return bytes
        }
        func be<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
        func load<T: FixedWidthInteger>(_ bytes: [UInt8], _ at: Int, _: T.Type) -> T {
            bytes[at..<at + MemoryLayout<T>.size].reduce(T(0)) { $0 << 8 | T($1) }
        }
        func optionReply(_ option: UInt32, _ type: UInt32, _ data: [UInt8]) {
            send(be(UInt64(0x0003_E889_0455_65A9)) + be(option) + be(type) + be(UInt32(data.count)) + data)
        }
        send(be(UInt64(0x4E42_444D_4147_4943)) + be(UInt64(0x4948_4156_454F_5054)) + be(UInt16(3)))
        guard receive(4) != nil else { return }
        while true {
            guard let header = receive(16) else { return }
            let option = load(header, 8, UInt32.self)
            guard receive(Int(load(header, 12, UInt32.self))) != nil else { return }
            if let optionReplyLength {
                send(be(UInt64(0x0003_E889_0455_65A9)) + be(option) + be(UInt32(1)) + be(optionReplyLength))
                _ = receive(1)
                return
            }
            switch option {
            case 8: optionReply(option, 1, [])
            case 10:
                optionReply(option, 4, be(UInt32(7)) + Array("base:allocation".utf8))
                optionReply(option, 1, [])
            case 7:
                optionReply(option, 3, be(UInt16(0)) + be(size) + be(UInt16(1)))
                optionReply(option, 1, [])
                while let request = receive(28) {
                    let type = load(request, 6, UInt16.self)
                    if type == 2 { return }
                    send(
                        reply(
                            type, load(request, 8, UInt64.self), load(request, 16, UInt64.self),
                            load(request, 24, UInt32.self)))
                }
                return
            default: optionReply(option, 0x8000_0001, [])
            }
        }
    }

    /// A structured reply chunk header followed by `payload`, as the server's reply closures write it.
    public static func chunk(flags: UInt16, type: UInt16, cookie: UInt64, length: UInt32, payload: [UInt8] = [])
        -> [UInt8]
    {
        func be<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
        return be(UInt32(0x668E_33EF)) + be(flags) + be(type) + be(cookie) + be(length) + payload
    }
}
