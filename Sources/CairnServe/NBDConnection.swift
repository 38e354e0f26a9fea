import CairnCore
import NIOCore
import NIOPosix

/// One client connection: the fixed newstyle handshake, then read-only transmission.
///
/// When the server requires TLS, the handshake allows only `NBD_OPT_STARTTLS` and
/// `NBD_OPT_ABORT` until TLS is up (everything else is `NBD_REP_ERR_TLS_REQD`, spec "TLS
/// support", FORCEDTLS); on STARTTLS the connection acknowledges in plain text, then puts a
/// TLS handler (`NBDTLSUpgrade`) ahead of itself in the pipeline and starts the negotiation afresh.
///
/// Everything runs on the channel's event loop except repository reads, which go to the
/// server's thread pool and come back as ready-made reply buffers. Input is parsed from one
/// cumulation buffer whose size is bounded (an option at most `maxOptionLength`, a request
/// header 28 bytes; WRITE payloads are skipped, never held). Reading the socket stops while
/// the connection has too many bytes or requests in flight, so a slow or stalled client holds
/// a bounded amount of memory and never delays another connection.
final class NBDConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        /// Waiting for the client's 4 flag bytes.
        case greeting
        case options
        case transmission(NBDExport, allocation: Bool)
        /// ABORT, DISC, a protocol error or a stop: no more input is parsed.
        case closing
    }

    let server: NBDServerContext
    let number: Int
    private var phase = Phase.greeting
    private var inbound: ByteBuffer?
    /// Input bytes still to discard (an oversized option, a refused WRITE's payload).
    private var skipping: UInt64 = 0
    private var noZeroes = false
    /// True once TLS is up on this connection (after `NBD_OPT_STARTTLS`).
    private var tlsActive = false
    /// Set by STARTTLS: the TLS handler goes in once the option's input is consumed.
    private var startingTLS = false
    private var structured = false
    /// The export name the last SET_META_CONTEXT selected `base:allocation` for.
    private var allocationFor: String?
    private var optionsSeen = 0
    private var bytesInFlight = 0
    private var requestsInFlight = 0
    private var readHeldBack = false
    private var draining = false
    private var handshakeTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    // For the connection's log line.
    private let started = NIODeadline.now()
    private var peer = "unix socket"
    private var exportName: String?
    private var requests = 0
    private var bytesRead: UInt64 = 0
    private var failures = 0
    private var closeReason: String?

    static let contextID: UInt32 = 1

    init(server: NBDServerContext, number: Int) {
        self.server = server
        self.number = number
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        if let address = context.remoteAddress, address.protocol != .unix {
            let host = address.ipAddress ?? "\(address)"
            peer = "\(host.contains(":") ? "[\(host)]" : host):\(address.port ?? 0)"
        }
        var greeting = context.channel.allocator.buffer(capacity: 18)
        greeting.writeInteger(NBDProtocol.initMagic)
        greeting.writeInteger(NBDProtocol.optionMagic)
        greeting.writeInteger(NBDHandshakeFlags([.fixedNewstyle, .noZeroes]).rawValue)
        context.writeAndFlush(wrapOutboundOut(greeting), promise: nil)
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(
            in: .seconds(server.limits.handshakeTimeout)
        ) { [self] in
            hangUp("no export chosen within \(server.limits.handshakeTimeout) s")
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        server.remove(context.channel)
        let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var line =
            "connection \(number) from \(peer)\(exportName.map { ", export \($0)" } ?? ", no export"): \(requests) requests, \(bytesRead) bytes read"
        if failures > 0 { line += ", \(failures) failed" }
        line += ", \(String(format: "%.2f", seconds)) s"
        if let closeReason { line += " (\(closeReason))" }
        server.log(line)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if inbound == nil {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        process()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A TLS client that hangs up without close_notify has still just gone away.
        switch server.tls?.classify(error) {
        case .peerLeft: hangUp(nil)
        case .failed: hangUp("TLS: \(error)")
        case nil: hangUp("\(error)")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is NBDDrainEvent {
            draining = true
            if case .transmission = phase, requestsInFlight > 0 { return }  // closes when they finish
            hangUp(nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Holds reads back while the connection is at its in-flight bound (backpressure).
    func read(context: ChannelHandlerContext) {
        if paused {
            readHeldBack = true
        } else {
            context.read()
        }
    }

    private var paused: Bool {
        draining || bytesInFlight >= server.limits.maxBytesInFlight
            || requestsInFlight >= server.limits.maxRequestsInFlight
    }

    /// Closes the connection at once; `reason` (if any) goes in its log line.
    private func hangUp(_ reason: String?) {
        if let reason, closeReason == nil { closeReason = reason }
        phase = .closing
        inbound = nil
        context?.close(promise: nil)
    }

    // MARK: Parsing

    /// Parses and handles as much buffered input as the phase and the in-flight bounds allow.
    private func process() {
        guard var input = inbound else { return }
        inbound = nil
        defer {
            if case .closing = phase {
            } else {
                if input.readableBytes == 0 {
                    input.clear()
                } else if input.readerIndex > 64 << 10 {
                    input.discardReadBytes()
                }
                inbound = input
            }
        }
        while !paused {
            if skipping > 0 {
                let n = Int(min(skipping, UInt64(input.readableBytes)))
                input.moveReaderIndex(forwardBy: n)
                skipping -= UInt64(n)
                if skipping > 0 { return }
                continue
            }
            switch phase {
            case .closing:
                return
            case .greeting:
                guard let raw = input.readInteger(as: UInt32.self) else { return }
                let flags = NBDClientFlags(rawValue: raw)
                guard flags.subtracting([.fixedNewstyle, .noZeroes]).isEmpty else {
                    return hangUp("client flags \(raw) hold bits the protocol does not define")
                }
                guard flags.contains(.fixedNewstyle) else {
                    return hangUp("the client does not speak fixed newstyle")
                }
                noZeroes = flags.contains(.noZeroes)
                phase = .options
            case .options:
                guard input.readableBytes >= NBDProtocol.optionHeaderSize else { return }
                let start = input.readerIndex
                guard input.getInteger(at: start, as: UInt64.self) == NBDProtocol.optionMagic,
                    let raw = input.getInteger(at: start + 8, as: UInt32.self),
                    let length = input.getInteger(at: start + 12, as: UInt32.self)
                else {
                    return hangUp("an option without the IHAVEOPT magic")
                }
                let option = NBDOption(rawValue: raw)
                optionsSeen += 1
                guard optionsSeen <= server.limits.maxOptions else {
                    return hangUp("more than \(server.limits.maxOptions) options")
                }
                if Int(length) > server.limits.maxOptionLength {
                    input.moveReaderIndex(forwardBy: NBDProtocol.optionHeaderSize)
                    skipping = UInt64(length)
                    if option == .exportName { return hangUp("an export name of \(length) bytes") }
                    optionError(
                        option, .errTooBig, "option data of \(length) bytes is over \(server.limits.maxOptionLength)")
                    continue
                }
                guard input.readableBytes >= NBDProtocol.optionHeaderSize + Int(length) else { return }
                input.moveReaderIndex(forwardBy: NBDProtocol.optionHeaderSize)
                let data = input.readSlice(length: Int(length))!
                handleOption(option, data)
                if startingTLS {
                    startingTLS = false
                    // The client waits for the ACK before its TLS hello: anything after the
                    // option was sent in plain text out of turn.
                    guard input.readableBytes == 0 else {
                        return hangUp("plain-text bytes after NBD_OPT_STARTTLS, before the TLS handshake")
                    }
                    startTLS()
                    return
                }
            case .transmission(let export, let allocation):
                guard input.readableBytes >= NBDProtocol.requestHeaderSize else { return }
                let header = input.withUnsafeReadableBytes { NBDRequestHeader(decoding: $0) }
                guard let header else { return hangUp("a request without the request magic") }
                input.moveReaderIndex(forwardBy: NBDProtocol.requestHeaderSize)
                if header.command == .write { skipping = UInt64(header.length) }
                handleRequest(header, export: export, allocation: allocation)
            }
        }
    }

    // MARK: Handshake

    private func optionReply(_ option: NBDOption, _ type: NBDOptionReplyType, _ body: (inout ByteBuffer) -> Void) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: NBDProtocol.optionReplyHeaderSize + 64)
        buffer.writeInteger(NBDProtocol.optionReplyMagic)
        buffer.writeInteger(option.rawValue)
        buffer.writeInteger(type.rawValue)
        let lengthAt = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        body(&buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - lengthAt - 4), at: lengthAt)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func optionError(_ option: NBDOption, _ type: NBDOptionReplyType, _ message: String) {
        optionReply(option, type) { $0.writeString(String(message.prefix(1000))) }
    }

    private func ack(_ option: NBDOption) {
        optionReply(option, .ack) { _ in }
    }

    private func handleOption(_ option: NBDOption, _ data: ByteBuffer) {
        var data = data
        if server.tls != nil, !tlsActive, option != .startTLS, option != .abort {
            // EXPORT_NAME has no way to report an error: the spec has the server hang up.
            if option == .exportName { return hangUp("NBD_OPT_EXPORT_NAME before STARTTLS (TLS is required)") }
            return optionError(
                option, .errTLSRequired,
                "this server requires TLS with a client certificate: send NBD_OPT_STARTTLS first (an nbds:// URI)")
        }
        switch option {
        case .exportName:
            let name = data.readString(length: data.readableBytes) ?? ""
            guard name.utf8.count <= NBDProtocol.maxStringLength, let export = server.exports.find(name) else {
                // EXPORT_NAME cannot report an error: the spec has the server hang up.
                return hangUp("no export named \"\(name.prefix(200))\"")
            }
            guard let context else { return }
            var reply = context.channel.allocator.buffer(capacity: 134)
            reply.writeInteger(export.size)
            reply.writeInteger(Self.transmissionFlags.rawValue)
            if !noZeroes { reply.writeRepeatingByte(0, count: NBDProtocol.exportNameReplyPadding) }
            context.write(wrapOutboundOut(reply), promise: nil)
            enterTransmission(export, requestedName: name)
        case .abort:
            ack(option)
            context?.flush()
            hangUp(nil)
        case .list:
            guard data.readableBytes == 0 else { return optionError(option, .errInvalid, "LIST takes no data") }
            for export in server.exports.exports {
                optionReply(option, .server) { buffer in
                    buffer.writeInteger(UInt32(export.name.utf8.count))
                    buffer.writeString(export.name)
                    buffer.writeString(export.description)
                }
            }
            ack(option)
        case .info, .go:
            guard let nameLength = data.readInteger(as: UInt32.self), nameLength <= NBDProtocol.maxStringLength,
                let name = data.readString(length: Int(nameLength)), let count = data.readInteger(as: UInt16.self),
                data.readableBytes == Int(count) * 2
            else {
                return optionError(option, .errInvalid, "malformed \(option) data")
            }
            var wanted: [NBDInfoType] = []
            for _ in 0..<count { wanted.append(NBDInfoType(rawValue: data.readInteger(as: UInt16.self)!)) }
            guard let export = server.exports.find(name) else {
                return optionError(
                    option, .errUnknown, "no export named \"\(name.prefix(200))\" (NBD_OPT_LIST lists them)")
            }
            optionReply(option, .info) { buffer in
                buffer.writeInteger(NBDInfoType.export.rawValue)
                buffer.writeInteger(export.size)
                buffer.writeInteger(Self.transmissionFlags.rawValue)
            }
            if wanted.contains(.name) {
                optionReply(option, .info) { buffer in
                    buffer.writeInteger(NBDInfoType.name.rawValue)
                    buffer.writeString(export.name)
                }
            }
            if wanted.contains(.description) {
                optionReply(option, .info) { buffer in
                    buffer.writeInteger(NBDInfoType.description.rawValue)
                    buffer.writeString(export.description)
                }
            }
            optionReply(option, .info) { buffer in
                buffer.writeInteger(NBDInfoType.blockSize.rawValue)
                buffer.writeInteger(UInt32(1))
                buffer.writeInteger(UInt32(min(max(export.reader.blockSize, 4096), 1 << 20)))
                buffer.writeInteger(UInt32(server.limits.maxReadLength))
            }
            ack(option)
            if option == .go { enterTransmission(export, requestedName: name) }
        case .startTLS:
            guard server.tls != nil else {
                return optionError(
                    option, .errUnsupported, "this server does not offer TLS (it was started without --tls-cert)")
            }
            guard !tlsActive else { return optionError(option, .errInvalid, "TLS is already on") }
            guard data.readableBytes == 0 else {
                return optionError(option, .errInvalid, "STARTTLS takes no data")
            }
            ack(option)
            context?.flush()
            startingTLS = true
        case .structuredReply:
            guard data.readableBytes == 0 else {
                return optionError(option, .errInvalid, "STRUCTURED_REPLY takes no data")
            }
            structured = true
            ack(option)
        case .listMetaContext, .setMetaContext:
            let isSet = option == .setMetaContext
            if isSet { allocationFor = nil }  // SET replaces the selection, even when it fails
            guard let nameLength = data.readInteger(as: UInt32.self), nameLength <= NBDProtocol.maxStringLength,
                let name = data.readString(length: Int(nameLength)), let count = data.readInteger(as: UInt32.self)
            else {
                return optionError(option, .errInvalid, "malformed \(option) data")
            }
            var queries: [String] = []
            for _ in 0..<count {
                guard let length = data.readInteger(as: UInt32.self), length <= NBDProtocol.maxStringLength,
                    let query = data.readString(length: Int(length))
                else {
                    return optionError(option, .errInvalid, "malformed \(option) query")
                }
                queries.append(query)
            }
            guard data.readableBytes == 0 else { return optionError(option, .errInvalid, "\(option) data is too long") }
            if isSet && !structured {
                return optionError(option, .errInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first")
            }
            guard server.exports.find(name) != nil else {
                return optionError(option, .errUnknown, "no export named \"\(name.prefix(200))\"")
            }
            let matches =
                queries.isEmpty
                ? !isSet
                : queries.contains { $0 == NBDMetaContext.baseAllocation || (!isSet && $0 == "base:") }
            if matches {
                optionReply(option, .metaContext) { buffer in
                    buffer.writeInteger(Self.contextID)
                    buffer.writeString(NBDMetaContext.baseAllocation)
                }
                if isSet { allocationFor = name }
            }
            ack(option)
        default:
            optionError(option, .errUnsupported, "\(option) is not supported by this server")
        }
    }

    /// Puts TLS ahead of this handler; the negotiation starts over inside it (the spec: STARTTLS
    /// resets every earlier option's effect). A failed TLS handshake (no client certificate,
    /// one the CA did not sign) arrives as an error and closes the connection.
    private func startTLS() {
        guard let context, let tls = server.tls else { return }
        do {
            try tls.addServerHandler(to: context.pipeline.syncOperations, before: self)
        } catch {
            return hangUp("cannot start TLS: \(error)")
        }
        tlsActive = true
        structured = false
        allocationFor = nil
        peer += ", TLS"
    }

    /// Read-only, coherent across connections (nothing changes), one data chunk per READ.
    static let transmissionFlags: NBDTransmissionFlags = [.hasFlags, .readOnly, .sendDF, .canMultiConn, .sendCache]

    private func enterTransmission(_ export: NBDExport, requestedName: String) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        exportName = export.name
        phase = .transmission(export, allocation: allocationFor == requestedName)
    }

    // MARK: Transmission

    private func handleRequest(_ header: NBDRequestHeader, export: NBDExport, allocation: Bool) {
        requests += 1
        switch header.command {
        case .read:
            let length = UInt64(header.length)
            guard length <= UInt64(server.limits.maxReadLength) else {
                return refuse(
                    header, .invalid, "a read of \(length) bytes is over the \(server.limits.maxReadLength) maximum")
            }
            guard header.offset <= export.size, length <= export.size - header.offset else {
                return refuse(header, .invalid, "a read past the end of the disk (\(export.size) bytes)")
            }
            startRead(header, export: export)
        case .blockStatus:
            guard allocation else {
                return refuse(header, .invalid, "no metadata context was negotiated for this export")
            }
            let length = UInt64(header.length)
            guard length > 0, header.offset < export.size, length <= export.size - header.offset else {
                return refuse(header, .invalid, "a block status request outside the disk (\(export.size) bytes)")
            }
            startBlockStatus(header, export: export)
        case .disconnect:
            phase = .closing
            inbound = nil
            if requestsInFlight == 0 { hangUp(nil) }
        case .write, .trim, .writeZeroes, .resize:
            refuse(header, .permission, "the export is read-only")
        case .flush, .cache:
            simpleReply(header.cookie, .success)
        default:
            refuse(header, .invalid, "\(header.command) is not supported")
        }
    }

    private func simpleReply(_ cookie: UInt64, _ error: NBDErrorCode) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: NBDProtocol.simpleReplyHeaderSize)
        buffer.writeInteger(NBDProtocol.simpleReplyMagic)
        buffer.writeInteger(error.rawValue)
        buffer.writeInteger(cookie)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    /// Answers a request with an error: an error chunk where structured replies were agreed
    /// (READ and BLOCK_STATUS), a simple reply otherwise.
    private func refuse(_ header: NBDRequestHeader, _ error: NBDErrorCode, _ message: String) {
        failures += 1
        guard structured, header.command == .read || header.command == .blockStatus, let context else {
            return simpleReply(header.cookie, error)
        }
        context.write(
            wrapOutboundOut(
                Self.errorChunk(
                    allocator: context.channel.allocator, cookie: header.cookie, error: error, message: message,
                    offset: nil)), promise: nil)
    }

    static func errorChunk(
        allocator: ByteBufferAllocator, cookie: UInt64, error: NBDErrorCode, message: String, offset: UInt64?
    ) -> ByteBuffer {
        let text = String(message.utf8.prefix(400)) ?? "error"
        let textLength = text.utf8.count
        let payload = 6 + textLength + (offset == nil ? 0 : 8)
        var buffer = allocator.buffer(capacity: NBDProtocol.structuredReplyHeaderSize + payload)
        buffer.writeInteger(NBDProtocol.structuredReplyMagic)
        buffer.writeInteger(NBDReplyFlags.done.rawValue)
        buffer.writeInteger((offset == nil ? NBDReplyType.error : NBDReplyType.errorOffset).rawValue)
        buffer.writeInteger(cookie)
        buffer.writeInteger(UInt32(payload))
        buffer.writeInteger(error.rawValue)
        buffer.writeInteger(UInt16(textLength))
        buffer.writeString(text)
        if let offset { buffer.writeInteger(offset) }
        return buffer
    }

    /// What a repository read on the thread pool comes back with.
    enum Outcome: Sendable {
        case reply(ByteBuffer, bytes: UInt64)
        case damaged(ByteBuffer, DiskReadError)
    }

    private func startRead(_ header: NBDRequestHeader, export: NBDExport) {
        guard context != nil else { return }
        let allocator = ReplyBuffers.allocator
        let structured = self.structured
        let reader = export.reader
        let cost = Int(header.length) + NBDProtocol.structuredReplyHeaderSize + 8
        dispatch(cost: cost) { () -> Outcome in
            let length = Int(header.length)
            let headerSize =
                structured ? NBDProtocol.structuredReplyHeaderSize + 8 : NBDProtocol.simpleReplyHeaderSize
            var buffer = allocator.buffer(capacity: headerSize + length)
            if structured {
                buffer.writeInteger(NBDProtocol.structuredReplyMagic)
                buffer.writeInteger(NBDReplyFlags.done.rawValue)
                buffer.writeInteger(length == 0 ? NBDReplyType.none.rawValue : NBDReplyType.offsetData.rawValue)
                buffer.writeInteger(header.cookie)
                if length == 0 {
                    buffer.writeInteger(UInt32(0))
                    return .reply(buffer, bytes: 0)
                }
                buffer.writeInteger(UInt32(8 + length))
                buffer.writeInteger(header.offset)
            } else {
                buffer.writeInteger(NBDProtocol.simpleReplyMagic)
                buffer.writeInteger(NBDErrorCode.success.rawValue)
                buffer.writeInteger(header.cookie)
            }
            var failure: DiskReadError?
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
                do throws(DiskReadError) {
                    try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<length]), at: header.offset)
                } catch {
                    failure = error
                }
                return length
            }
            guard let failure else { return .reply(buffer, bytes: UInt64(length)) }
            // Never send what was read: answer EIO for the whole request.
            buffer.clear()
            let message = "damaged data at disk offset \(failure.offset): \(failure.error.message)"
            if structured {
                return .damaged(
                    Self.errorChunk(
                        allocator: allocator, cookie: header.cookie, error: .io, message: message,
                        offset: max(failure.offset, header.offset)), failure)
            }
            buffer.writeInteger(NBDProtocol.simpleReplyMagic)
            buffer.writeInteger(NBDErrorCode.io.rawValue)
            buffer.writeInteger(header.cookie)
            return .damaged(buffer, failure)
        }
    }

    private func startBlockStatus(_ header: NBDRequestHeader, export: NBDExport) {
        guard let context else { return }
        let allocator = context.channel.allocator
        let reader = export.reader
        let maxExtents = header.flags.contains(.requestOne) ? 1 : server.limits.maxExtents
        dispatch(cost: NBDProtocol.structuredReplyHeaderSize + 4 + 8 * min(maxExtents, 64)) { () -> Outcome in
            var buffer = allocator.buffer(
                capacity: NBDProtocol.structuredReplyHeaderSize + 4 + 8 * min(maxExtents, 512))
            buffer.writeInteger(NBDProtocol.structuredReplyMagic)
            buffer.writeInteger(NBDReplyFlags.done.rawValue)
            buffer.writeInteger(NBDReplyType.blockStatus.rawValue)
            buffer.writeInteger(header.cookie)
            let lengthAt = buffer.writerIndex
            buffer.writeInteger(UInt32(0))
            buffer.writeInteger(Self.contextID)
            do throws(DiskReadError) {
                try reader.extents(at: header.offset, length: UInt64(header.length), maxExtents: maxExtents) {
                    length, zero in
                    buffer.writeInteger(UInt32(length))
                    buffer.writeInteger(zero ? NBDAllocationState([.hole, .zero]).rawValue : 0)
                }
            } catch {
                return .damaged(
                    Self.errorChunk(
                        allocator: allocator, cookie: header.cookie, error: .io,
                        message: "damaged index at disk offset \(error.offset): \(error.error.message)",
                        offset: nil), error)
            }
            buffer.setInteger(UInt32(buffer.writerIndex - lengthAt - 4), at: lengthAt)
            return .reply(buffer, bytes: 0)
        }
    }

    /// Runs `work` on the thread pool and sends what it returns, counting it in flight until
    /// the reply is written out.
    private func dispatch(cost: Int, _ work: @escaping @Sendable () -> Outcome) {
        guard let context else { return }
        bytesInFlight += cost
        requestsInFlight += 1
        let loop = context.eventLoop
        server.threadPool.runIfActive(eventLoop: loop, work).assumeIsolated().whenComplete { [self] result in
            guard case .success(let outcome) = result else {
                return finished(cost: cost)  // the pool is stopping: the connection closes
            }
            let buffer: ByteBuffer
            switch outcome {
            case .reply(let reply, let bytes):
                buffer = reply
                bytesRead += bytes
            case .damaged(let reply, let failure):
                buffer = reply
                failures += 1
                server.log(
                    "damaged: restore point \(exportName ?? "?") offset \(failure.offset) (\(failure.length) bytes): \(failure.error.message); answered EIO"
                )
            }
            guard let context = self.context, context.channel.isActive else { return finished(cost: cost) }
            context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { [self] _ in
                finished(cost: cost)
            }
        }
    }

    /// A reply left (or could not): resume reading, or close if the connection is ending.
    private func finished(cost: Int) {
        bytesInFlight -= cost
        requestsInFlight -= 1
        if requestsInFlight == 0, draining || isClosing {
            hangUp(nil)
            return
        }
        if !paused {
            process()
            if readHeldBack, !paused {
                readHeldBack = false
                context?.read()
            }
        }
    }

    private var isClosing: Bool {
        if case .closing = phase { return true }
        return false
    }
}
