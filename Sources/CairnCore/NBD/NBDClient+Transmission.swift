/// The transmission phase: pipelined READs, BLOCK_STATUS, and the reply parser for simple and
/// structured replies (spec "Transmission", "Structured reply chunk message types").
extension NBDClient {
    /// A request sent and not yet fully answered.
    struct PendingRequest {
        var cookie: UInt64
        var command: NBDCommand
        var offset: UInt64
        var length: UInt32
        /// Where a READ's bytes go (`length` bytes); nil for other commands.
        var destination: UnsafeMutableRawPointer?
        /// Bytes of a READ answered so far (data and holes); they must add up to `length`.
        var covered: UInt64 = 0
        var error: CairnError?
    }

    /// The longest error message an error chunk may carry (spec: 4096).
    static let maxErrorMessage = NBDProtocol.maxStringLength
    /// The largest BLOCK_STATUS chunk accepted: the spec's 2^20 extents.
    static let maxStatusPayload = 4 + 8 * NBDProtocol.maxExtentsPerChunk

    // MARK: Reading

    /// Reads `buffer.count` bytes of the export at `offset`, with up to `maxInFlight` requests in
    /// flight, each within the server's block size limits. Unaligned edges go through one
    /// minimum-size block.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        try checkUsable()
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw CairnError(
                .usage, "\(subject): read of \(buffer.count) bytes at offset \(offset) passes the end (\(size))")
        }
        guard buffer.count > 0 else { return }
        let minimum = UInt64(blockSize.minimum)
        let end = offset + UInt64(buffer.count)
        if minimum == 1 || (offset % minimum == 0 && (end % minimum == 0 || end == size)) {
            return try readAligned(buffer, at: offset)
        }
        // Head, middle, tail: the edges through a bounce block.
        var position = offset
        while position < end {
            let blockStart = position / minimum * minimum
            let blockEnd = min(blockStart + minimum, size)
            if position == blockStart && (blockEnd <= end) {
                // Aligned run: as many whole blocks as fit.
                let runEnd = max(blockEnd, end / minimum * minimum)
                let slice = UnsafeMutableRawBufferPointer(
                    rebasing: buffer[Int(position - offset)..<Int(runEnd - offset)])
                try readAligned(slice, at: position)
                position = runEnd
                continue
            }
            let bounce = bounceBuffer(Int(minimum))
            let block = UnsafeMutableRawBufferPointer(rebasing: bounce[0..<Int(blockEnd - blockStart)])
            try readAligned(block, at: blockStart)
            let take = min(blockEnd, end) - position
            let from = Int(position - blockStart)
            let to = Int(position - offset)
            UnsafeMutableRawBufferPointer(rebasing: buffer[to..<to + Int(take)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: block[from..<from + Int(take)]))
            position += take
        }
    }

    private func bounceBuffer(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if payload.count < count {
            payload.deallocate()
            payload = .allocate(byteCount: count, alignment: 16)
        }
        return payload
    }

    private func readAligned(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        guard let base = buffer.baseAddress else { return }
        var next = 0
        var failure: CairnError?
        while (next < buffer.count && failure == nil) || !pending.isEmpty {
            while next < buffer.count && failure == nil && pending.count < maxInFlight {
                let n = min(requestSize, buffer.count - next)
                try sendRequest(.read, offset: offset + UInt64(next), length: UInt32(n), destination: base + next)
                next += n
            }
            if let error = try receiveReply(), failure == nil { failure = error }
        }
        if let failure { throw failure }
    }

    // MARK: Block status

    /// The extents of metadata context `context` from `offset`, as the server reports them.
    ///
    /// At least one extent, consecutive from `offset`; the server may cover less than `length`
    /// (ask again from where the answer ends) and the last extent may run past it (it is cut at
    /// the export's end). The context must be one the server selected (see `contexts`), such as
    /// `base:allocation` or `qemu:dirty-bitmap:NAME`.
    public func blockStatus(context: String, offset: UInt64, length: UInt64) throws(CairnError) -> [NBDExtent] {
        try checkUsable()
        guard let id = contexts[context] else {
            throw CairnError(
                .usage,
                "\(subject): the server did not select the metadata context \"\(context)\" (selected: \(contexts.keys.sorted().joined(separator: ", ")))"
            )
        }
        guard transmissionFlags.contains(.hasFlags), offset < size, length > 0 else {
            throw CairnError(
                .usage, "\(subject): block status at offset \(offset) is outside the export (\(size) bytes)")
        }
        let minimum = UInt64(blockSize.minimum)
        let start = offset / minimum * minimum
        // A 32-bit length: the largest aligned piece below 4 GiB (nbdinfo's rule).
        let largest = (UInt64(UInt32.max) - minimum + 1) / minimum * minimum
        var wanted = min(length, size - offset) + (offset - start)
        wanted = min(largest, (wanted + minimum - 1) / minimum * minimum, size - start)
        statusExtents.removeAll(keepingCapacity: true)
        statusContextID = id
        statusSeen = false
        try sendRequest(.blockStatus, offset: start, length: UInt32(wanted), destination: nil)
        var failure: CairnError?
        while !pending.isEmpty {
            if let error = try receiveReply(), failure == nil { failure = error }
        }
        if let failure { throw failure }
        // Cut the alignment head and anything past the export's end.
        var skip = offset - start
        var result: [NBDExtent] = []
        result.reserveCapacity(statusExtents.count)
        var position = start
        for var extent in statusExtents {
            guard position < size else { break }
            extent.length = min(extent.length, size - position)
            position += extent.length
            if skip >= extent.length {
                skip -= extent.length
                continue
            }
            extent.length -= skip
            skip = 0
            result.append(extent)
        }
        guard !result.isEmpty else {
            throw fail(
                .badImage, "the server's block status for \(context) at offset \(offset) does not reach that offset")
        }
        return result
    }

    // MARK: Requests and replies

    private func sendRequest(
        _ command: NBDCommand, offset: UInt64, length: UInt32, destination: UnsafeMutableRawPointer?
    ) throws(CairnError) {
        let cookie = nextCookie
        nextCookie &+= 1
        NBDRequestHeader(command: command, cookie: cookie, offset: offset, length: length).encode(into: scratch)
        do {
            try socket.send(UnsafeRawBufferPointer(rebasing: scratch[0..<NBDProtocol.requestHeaderSize]))
        } catch {
            throw fail(error, while: "sending \(command) for \(length) bytes at offset \(offset)")
        }
        pending.append(
            PendingRequest(cookie: cookie, command: command, offset: offset, length: length, destination: destination))
    }

    /// What the oldest request in flight was doing, for a message about a dead connection.
    private var activity: String {
        guard let first = pending.first else { return "waiting for a reply" }
        let verb = first.command == .read ? "reading" : "asking block status for"
        return "\(verb) \(first.length) bytes at offset \(first.offset)"
    }

    private func receive(into buffer: UnsafeMutableRawBufferPointer) throws(CairnError) {
        do {
            try socket.receive(into: buffer)
        } catch {
            throw fail(error, while: activity)
        }
    }

    private func receiveBytes(_ range: Range<Int>) throws(CairnError) -> UnsafeRawBufferPointer {
        let slice = UnsafeMutableRawBufferPointer(rebasing: scratch[range])
        try receive(into: slice)
        return UnsafeRawBufferPointer(slice)
    }

    /// Receives one reply (simple) or one chunk (structured). Returns the server's error for a
    /// request that has completed with one; throws only when the connection is unusable.
    private func receiveReply() throws(CairnError) -> CairnError? {
        let head = try receiveBytes(0..<NBDProtocol.simpleReplyHeaderSize)
        let magic = NBDWire.load(UInt32.self, at: 0, in: head)
        if magic == NBDProtocol.simpleReplyMagic {
            return try takeSimpleReply(NBDSimpleReplyHeader(decoding: head))
        }
        guard magic == NBDProtocol.structuredReplyMagic, structuredReplies else {
            throw fail(.badImage, "the server sent a reply with an unknown magic 0x\(nbdHex(magic)) while \(activity)")
        }
        _ = try receiveBytes(NBDProtocol.simpleReplyHeaderSize..<NBDProtocol.structuredReplyHeaderSize)
        let header = NBDStructuredReplyHeader(
            decoding: UnsafeRawBufferPointer(rebasing: scratch[0..<NBDProtocol.structuredReplyHeaderSize]))
        return try takeChunk(header)
    }

    private func index(of cookie: UInt64) throws(CairnError) -> Int {
        guard let i = pending.firstIndex(where: { $0.cookie == cookie }) else {
            throw fail(.badImage, "the server answered cookie \(cookie), which is not in flight, while \(activity)")
        }
        return i
    }

    private func takeSimpleReply(_ header: NBDSimpleReplyHeader) throws(CairnError) -> CairnError? {
        let i = try index(of: header.cookie)
        let request = pending[i]
        if header.error != .success {
            pending.remove(at: i)
            return requestError(request, header.error, message: nil, at: nil)
        }
        switch request.command {
        case .read:
            if let destination = request.destination {
                try receive(into: UnsafeMutableRawBufferPointer(start: destination, count: Int(request.length)))
            }
        default:
            throw fail(.badImage, "the server answered \(request.command) with a simple reply that carries no status")
        }
        pending.remove(at: i)
        return nil
    }

    private func takeChunk(_ header: NBDStructuredReplyHeader) throws(CairnError) -> CairnError? {
        let i = try index(of: header.cookie)
        let request = pending[i]
        let length = Int(header.length)
        func violation(_ what: String) -> CairnError {
            fail(
                .badImage,
                "the server's \(header.type) chunk for \(request.command) at offset \(request.offset) \(what)")
        }
        switch header.type {
        case .offsetData:
            guard request.command == .read, let destination = request.destination else {
                throw violation("answers a request that is not a READ")
            }
            guard length > 8 else { throw violation("is \(length) bytes long: it carries no data") }
            let at = NBDWire.load(UInt64.self, at: 0, in: try receiveBytes(0..<8))
            let count = UInt64(length - 8)
            guard at >= request.offset, at - request.offset <= UInt64(request.length),
                count <= UInt64(request.length) - (at - request.offset),
                pending[i].covered + count <= UInt64(request.length)
            else { throw violation("puts \(count) bytes at offset \(at), outside the request or overlapping") }
            try receive(
                into: UnsafeMutableRawBufferPointer(start: destination + Int(at - request.offset), count: Int(count)))
            pending[i].covered += count
        case .offsetHole:
            guard request.command == .read, let destination = request.destination else {
                throw violation("answers a request that is not a READ")
            }
            guard length == 12 else { throw violation("is \(length) bytes long, not 12") }
            let body = try receiveBytes(0..<12)
            let at = NBDWire.load(UInt64.self, at: 0, in: body)
            let count = UInt64(NBDWire.load(UInt32.self, at: 8, in: body))
            guard count > 0, at >= request.offset, at - request.offset <= UInt64(request.length),
                count <= UInt64(request.length) - (at - request.offset),
                pending[i].covered + count <= UInt64(request.length)
            else { throw violation("puts a \(count)-byte hole at offset \(at), outside the request or overlapping") }
            UnsafeMutableRawBufferPointer(start: destination + Int(at - request.offset), count: Int(count))
                .initializeMemory(as: UInt8.self, repeating: 0)
            pending[i].covered += count
        case .blockStatus:
            guard request.command == .blockStatus else { throw violation("answers a request that is not BLOCK_STATUS") }
            guard length >= 12, (length - 4) % 8 == 0, length <= Self.maxStatusPayload else {
                throw violation("is \(length) bytes long, not 4 + 8 × extents (at most 2^20 extents)")
            }
            try takeStatus(length: length, violation: violation)
        case .none:
            guard length == 0, header.flags.contains(.done) else {
                throw violation("is \(length) bytes long or lacks the DONE flag")
            }
        case .error, .errorOffset:
            let extra = header.type == .errorOffset ? 8 : 0
            guard length >= 6 + extra, length <= 6 + extra + Self.maxErrorMessage else {
                throw violation("is \(length) bytes long, outside 6…4110")
            }
            let body = try receiveBytes(0..<length)
            let code = NBDErrorCode(rawValue: NBDWire.load(UInt32.self, at: 0, in: body))
            let messageLength = Int(NBDWire.load(UInt16.self, at: 4, in: body))
            guard code != .success, messageLength == length - 6 - extra else {
                throw violation("has error 0 or a message length (\(messageLength)) that does not fit")
            }
            let message = String(decoding: body[6..<6 + messageLength], as: UTF8.self)
            let at = extra > 0 ? NBDWire.load(UInt64.self, at: 6 + messageLength, in: body) : nil
            if pending[i].error == nil {
                pending[i].error = requestError(request, code, message: message, at: at)
            }
        default:
            guard header.type.isError, length >= 4, length <= Self.maxErrorMessage + 64 else {
                throw violation("has a type the protocol does not define, so the stream cannot be followed")
            }
            let body = try receiveBytes(0..<length)
            let code = NBDErrorCode(rawValue: NBDWire.load(UInt32.self, at: 0, in: body))
            if pending[i].error == nil { pending[i].error = requestError(request, code, message: nil, at: nil) }
        }
        guard header.flags.contains(.done) else { return nil }
        let finished = pending.remove(at: i)
        if let error = finished.error { return error }
        if finished.command == .read && finished.covered != UInt64(finished.length) {
            throw violation("ends the reply with \(finished.covered) of \(finished.length) bytes answered")
        }
        if finished.command == .blockStatus && !statusSeen {
            throw violation("ends the reply without extents for the context asked for")
        }
        return nil
    }

    private func takeStatus(length: Int, violation: (String) -> CairnError) throws(CairnError) {
        let body = bounceBuffer(length)
        try receive(into: UnsafeMutableRawBufferPointer(rebasing: body[0..<length]))
        let raw = UnsafeRawBufferPointer(body)
        let id = NBDWire.load(UInt32.self, at: 0, in: raw)
        guard id == statusContextID else {
            guard contexts.values.contains(id) else { throw violation("names context id \(id), never selected") }
            return  // another selected context's extents: not asked for
        }
        guard !statusSeen else { throw violation("repeats the extents of one context") }
        statusSeen = true
        var at = 4
        while at < length {
            let extentLength = NBDWire.load(UInt32.self, at: at, in: raw)
            let flags = NBDWire.load(UInt32.self, at: at + 4, in: raw)
            guard extentLength > 0 else { throw violation("has an extent of length 0") }
            statusExtents.append(NBDExtent(length: UInt64(extentLength), flags: flags))
            at += 8
        }
    }

    /// The line for a request the server failed.
    private func requestError(
        _ request: PendingRequest, _ code: NBDErrorCode, message: String?, at: UInt64?
    ) -> CairnError {
        let verb = request.command == .read ? "reading" : "block status of"
        let place = at ?? request.offset
        var text = "the server failed \(verb) \(request.length) bytes at offset \(place) with \(code)"
        if let message, !message.isEmpty { text += ": \(errorText(Array(message.utf8)))" }
        return CairnError(.io, "\(subject): \(text)")
    }
}
