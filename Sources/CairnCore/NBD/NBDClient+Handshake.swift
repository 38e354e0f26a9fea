/// The handshake: fixed newstyle only, then `STRUCTURED_REPLY`, `SET_META_CONTEXT` and `GO`
/// (falling back to `EXPORT_NAME` on a server that lacks `GO`). Spec "Handshake".
extension NBDClient {
    /// The largest option reply accepted: names and messages are at most 4096 bytes in the spec.
    static let maxOptionReply = 64 * 1024

    func negotiate(_ configuration: Configuration) throws(CairnError) {
        let hello = try receive(18, while: "waiting for the server's greeting")
        var reader = ByteReader(hello, context: "NBD greeting")
        let magic = try reader.be(UInt64.self)
        guard magic == NBDProtocol.initMagic else {
            throw fail(.badImage, "the peer is not an NBD server (its greeting starts with 0x\(nbdHex(magic)))")
        }
        let style = try reader.be(UInt64.self)
        if style == NBDProtocol.oldstyleMagic {
            throw fail(
                .badImage,
                "the server speaks the oldstyle handshake, which the NBD protocol retired; Cairn needs the fixed newstyle handshake (qemu-nbd, qemu-storage-daemon and nbdkit without --oldstyle speak it)"
            )
        }
        guard style == NBDProtocol.optionMagic else {
            throw fail(.badImage, "the server's greeting has an unknown handshake magic 0x\(nbdHex(style))")
        }
        let flags = NBDHandshakeFlags(rawValue: try reader.be(UInt16.self))
        guard flags.contains(.fixedNewstyle) else {
            throw fail(
                .badImage,
                "the server offers only the plain newstyle handshake; Cairn needs the fixed newstyle handshake (NBD_FLAG_FIXED_NEWSTYLE)"
            )
        }
        let noZeroes = flags.contains(.noZeroes)
        var clientFlags: NBDClientFlags = .fixedNewstyle
        if noZeroes { clientFlags.insert(.noZeroes) }
        var writer = ByteWriter(capacity: 4)
        writer.be(clientFlags.rawValue)
        try send(writer.bytes, while: "answering the server's greeting")

        if configuration.structuredReplies {
            let (type, data) = try option(.structuredReply, [])
            if type == .ack {
                structuredReplies = true
            } else if type != .errUnsupported && type != .errPolicy {
                throw optionRefused(.structuredReply, type, data)
            }
        }
        if structuredReplies && !configuration.metaContexts.isEmpty {
            try selectContexts(configuration.metaContexts)
        }
        try go(noZeroes: noZeroes)
    }

    /// `NBD_OPT_SET_META_CONTEXT`: records the ids the server gives the contexts it selects.
    private func selectContexts(_ names: [String]) throws(CairnError) {
        var data = ByteWriter()
        let export = Array(exportName.utf8)
        data.be(UInt32(export.count))
        data.append(export)
        data.be(UInt32(names.count))
        for name in names {
            let bytes = Array(name.utf8)
            data.be(UInt32(bytes.count))
            data.append(bytes)
        }
        try sendOption(.setMetaContext, data.bytes)
        while true {
            let (type, reply) = try receiveOptionReply(.setMetaContext)
            switch type {
            case .metaContext:
                var reader = ByteReader(reply, context: "NBD_REP_META_CONTEXT")
                guard reply.count > 4, let id = try? reader.be(UInt32.self) else {
                    throw fail(.badImage, "the server sent a malformed NBD_REP_META_CONTEXT (\(reply.count) bytes)")
                }
                let name = String(decoding: reply[4...], as: UTF8.self)
                guard names.contains(name) else {
                    throw fail(
                        .badImage, "the server selected the metadata context \"\(name)\", which was not asked for")
                }
                contexts[name] = id
            case .ack:
                return
            default:
                // A server that cannot select contexts still serves reads: the image is read in full.
                contexts = [:]
                if type.isError { return }
                throw fail(.badImage, "the server answered NBD_OPT_SET_META_CONTEXT with \(type)")
            }
        }
    }

    /// `NBD_OPT_GO` asking for `NBD_INFO_BLOCK_SIZE`; `NBD_OPT_EXPORT_NAME` if the server lacks GO.
    private func go(noZeroes: Bool) throws(CairnError) {
        var data = ByteWriter()
        let export = Array(exportName.utf8)
        data.be(UInt32(export.count))
        data.append(export)
        data.be(UInt16(1))
        data.be(NBDInfoType.blockSize.rawValue)
        try sendOption(.go, data.bytes)
        var haveExport = false
        while true {
            let (type, reply) = try receiveOptionReply(.go)
            switch type {
            case .info:
                try takeInfo(reply)
                if reply.count >= 2 && reply[0] == 0 && reply[1] == 0 { haveExport = true }
            case .ack:
                guard haveExport else {
                    throw fail(.badImage, "the server finished NBD_OPT_GO without sending NBD_INFO_EXPORT")
                }
                return
            case .errUnsupported:
                try exportNameFallback(noZeroes: noZeroes)
                return
            case .errUnknown:
                throw CairnError(
                    .notFound, "\(subject): the server has no such export (\(errorText(reply)))")
            case .errTLSRequired:
                throw fail(.badImage, "the server requires TLS, which Cairn does not support yet")
            default:
                throw optionRefused(.go, type, reply)
            }
        }
    }

    private func takeInfo(_ reply: [UInt8]) throws(CairnError) {
        var reader = ByteReader(reply, context: "NBD_REP_INFO")
        guard let raw = try? reader.be(UInt16.self) else {
            throw fail(.badImage, "the server sent an empty NBD_REP_INFO")
        }
        switch NBDInfoType(rawValue: raw) {
        case .export:
            guard reply.count == 2 + NBDProtocol.infoExportBodySize else {
                throw fail(.badImage, "the server sent NBD_INFO_EXPORT of \(reply.count) bytes, not 12")
            }
            try setExport(size: try reader.be(UInt64.self), flags: try reader.be(UInt16.self))
        case .blockSize:
            guard reply.count == 2 + NBDProtocol.infoBlockSizeBodySize else {
                throw fail(.badImage, "the server sent NBD_INFO_BLOCK_SIZE of \(reply.count) bytes, not 14")
            }
            let sizes = NBDBlockSize(
                minimum: try reader.be(UInt32.self), preferred: try reader.be(UInt32.self),
                maximum: try reader.be(UInt32.self))
            if let violation = sizes.violation {
                throw fail(.badImage, "the server's NBD_INFO_BLOCK_SIZE breaks the protocol: \(violation)")
            }
            blockSize = sizes
        default:
            break  // name, description, or a type from a later spec: nothing Cairn needs
        }
    }

    private func setExport(size: UInt64, flags: UInt16) throws(CairnError) {
        guard size <= UInt64(Int64.max) else {
            throw fail(.badImage, "the server reports an export size of \(size) bytes, beyond 2^63")
        }
        self.size = size
        transmissionFlags = NBDTransmissionFlags(rawValue: flags)
    }

    /// The legacy entry into transmission: no option reply, only size and flags (or a hang-up).
    private func exportNameFallback(noZeroes: Bool) throws(CairnError) {
        try sendOption(.exportName, Array(exportName.utf8))
        let count = NBDProtocol.exportNameReplySize + (noZeroes ? 0 : NBDProtocol.exportNameReplyPadding)
        let reply: [UInt8]
        do {
            reply = try socket.receive(count: count)
        } catch .closed {
            throw CairnError(.notFound, "\(subject): the server has no such export (it hung up on NBD_OPT_EXPORT_NAME)")
        } catch {
            throw fail(error, while: "waiting for the answer to NBD_OPT_EXPORT_NAME")
        }
        var reader = ByteReader(reply, context: "NBD_OPT_EXPORT_NAME reply")
        try setExport(size: try reader.be(UInt64.self), flags: try reader.be(UInt16.self))
    }

    // MARK: Option plumbing

    /// Sends one option and returns its single final reply (for options that have only one).
    private func option(_ option: NBDOption, _ data: [UInt8]) throws(CairnError) -> (NBDOptionReplyType, [UInt8]) {
        try sendOption(option, data)
        return try receiveOptionReply(option)
    }

    private func sendOption(_ option: NBDOption, _ data: [UInt8]) throws(CairnError) {
        var writer = ByteWriter(capacity: NBDProtocol.optionHeaderSize + data.count)
        writer.be(NBDProtocol.optionMagic)
        writer.be(option.rawValue)
        writer.be(UInt32(data.count))
        writer.append(data)
        try send(writer.bytes, while: "sending \(option)")
    }

    private func receiveOptionReply(_ option: NBDOption) throws(CairnError) -> (NBDOptionReplyType, [UInt8]) {
        let header = try receive(NBDProtocol.optionReplyHeaderSize, while: "waiting for the answer to \(option)")
        var reader = ByteReader(header, context: "NBD option reply")
        let magic = try reader.be(UInt64.self)
        let echoed = NBDOption(rawValue: try reader.be(UInt32.self))
        let type = NBDOptionReplyType(rawValue: try reader.be(UInt32.self))
        let length = try reader.be(UInt32.self)
        guard magic == NBDProtocol.optionReplyMagic else {
            throw fail(.badImage, "the answer to \(option) has a bad magic 0x\(nbdHex(magic))")
        }
        guard echoed == option else {
            throw fail(.badImage, "the server answered \(echoed) when \(option) was asked")
        }
        guard length <= Self.maxOptionReply else {
            throw fail(
                .badImage, "the server's answer to \(option) is \(length) bytes long, beyond the 64 KiB Cairn accepts")
        }
        let data = try receive(Int(length), while: "reading the answer to \(option)")
        return (type, data)
    }

    private func optionRefused(_ option: NBDOption, _ type: NBDOptionReplyType, _ data: [UInt8]) -> CairnError {
        if type.isError {
            return fail(
                .io, "the server refused \(option) with \(type)", cause: errorText(data).isEmpty ? nil : errorText(data)
            )
        }
        return fail(.badImage, "the server answered \(option) with an unexpected \(type)")
    }

    /// The human text of an error reply, made printable and cut to one short line.
    func errorText(_ data: [UInt8]) -> String {
        let text = String(decoding: data.prefix(200), as: UTF8.self)
        return String(text.map { $0.isNewline || $0 == "\t" ? " " : $0 })
    }

    private func receive(_ count: Int, while what: String) throws(CairnError) -> [UInt8] {
        do {
            return try socket.receive(count: count)
        } catch {
            throw fail(error, while: what)
        }
    }

    private func send(_ bytes: [UInt8], while what: String) throws(CairnError) {
        do {
            try socket.send(bytes)
        } catch {
            throw fail(error, while: what)
        }
    }
}

func nbdHex<T: BinaryInteger>(_ value: T) -> String { String(value, radix: 16) }
