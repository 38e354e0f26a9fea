/// The Network Block Device protocol's wire constants and fixed-size headers, shared by Cairn's
/// NBD client and server.
///
/// Everything here follows the NBD spec (`NetworkBlockDevice/nbd` `doc/proto.md`, "Handshake",
/// "Transmission", "Values"); research notes: `../shared/research/live-vm.md` §1. All integers on
/// the wire are big-endian. Code values are open structs rather than enums so a peer's unknown
/// value can be carried, named in an error, and answered (`NBD_REP_ERR_UNSUP`, `NBD_EINVAL`)
/// instead of failing to decode.
public enum NBDProtocol {
    /// `NBDMAGIC`: the first 8 bytes every server sends.
    public static let initMagic: UInt64 = 0x4E42_444D_4147_4943
    /// `IHAVEOPT`: the second 8 bytes of a newstyle server, and the prefix of every client option.
    public static let optionMagic: UInt64 = 0x4948_4156_454F_5054
    /// The second 8 bytes of an oldstyle server (unsupported by the spec since nbd 3.10: refuse it).
    public static let oldstyleMagic: UInt64 = 0x0000_4202_8186_1253
    /// The prefix of every option reply in the handshake.
    public static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9

    /// The first 4 bytes of a compact (non-extended) request.
    public static let requestMagic: UInt32 = 0x2560_9513
    /// The first 4 bytes of a simple reply.
    public static let simpleReplyMagic: UInt32 = 0x6744_6698
    /// The first 4 bytes of a structured reply chunk.
    public static let structuredReplyMagic: UInt32 = 0x668E_33EF
    /// The first 4 bytes of an extended request (after `NBD_OPT_EXTENDED_HEADERS`; not on Debian 12).
    public static let extendedRequestMagic: UInt32 = 0x21E4_1C71
    /// The first 4 bytes of an extended reply chunk (after `NBD_OPT_EXTENDED_HEADERS`).
    public static let extendedReplyMagic: UInt32 = 0x6E8A_278C

    /// The IANA port for `nbd://` URIs without a port.
    public static let defaultPort: UInt16 = 10809

    /// Option header a client sends: 8 magic, 4 option, 4 data length.
    public static let optionHeaderSize = 16
    /// Option reply header a server sends: 8 magic, 4 option, 4 reply type, 4 data length.
    public static let optionReplyHeaderSize = 20
    /// The answer to `NBD_OPT_EXPORT_NAME`: 8 size, 2 transmission flags, then 124 zero bytes
    /// unless `NO_ZEROES` was agreed.
    public static let exportNameReplySize = 10
    /// The zero padding after an `NBD_OPT_EXPORT_NAME` reply when `NO_ZEROES` was not agreed.
    public static let exportNameReplyPadding = 124

    /// Compact request: 4 magic, 2 flags, 2 type, 8 cookie, 8 offset, 4 length.
    public static let requestHeaderSize = 28
    /// Simple reply: 4 magic, 4 error, 8 cookie (then the data of a successful READ).
    public static let simpleReplyHeaderSize = 16
    /// Structured reply chunk: 4 magic, 2 flags, 2 type, 8 cookie, 4 payload length.
    public static let structuredReplyHeaderSize = 20
    /// Extended request: 4 magic, 2 flags, 2 type, 8 cookie, 8 offset, 8 length.
    public static let extendedRequestHeaderSize = 32
    /// Extended reply chunk: 4 magic, 2 flags, 2 type, 8 cookie, 8 offset, 8 length.
    public static let extendedReplyHeaderSize = 32

    /// The longest string (export name, context name, error message) the spec lets a peer send
    /// and expects to be accepted; longer ones may be refused.
    public static let maxStringLength = 4096
    /// The largest READ/WRITE payload a client may use when the server did not say
    /// (`NBD_INFO_BLOCK_SIZE` absent): 32 MiB, the spec's "interoperable" bound and QEMU's buffer.
    public static let defaultMaxPayload: UInt32 = 32 << 20
    /// Alignment a client uses for requests when the server gave no minimum block size.
    public static let defaultMinimumBlock: UInt32 = 1
    /// A server SHOULD NOT send more extents than this in one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk.
    public static let maxExtentsPerChunk = 1 << 20
    /// `NBD_INFO_BLOCK_SIZE`'s maximum payload value meaning "no limit beyond the protocol's".
    public static let unlimitedPayload: UInt32 = 0xFFFF_FFFF

    /// Length of `NBD_INFO_EXPORT`'s reply body after its 2-byte type: 8 size, 2 flags.
    public static let infoExportBodySize = 10
    /// Length of `NBD_INFO_BLOCK_SIZE`'s reply body after its 2-byte type: 4 min, 4 preferred, 4 max.
    public static let infoBlockSizeBodySize = 12
}

/// Well-known metadata context names (spec "Metadata querying"; QEMU `docs/interop/nbd.rst`).
public enum NBDMetaContext {
    /// Allocation status: `NBDAllocationState` bits per extent.
    public static let baseAllocation = "base:allocation"
    /// Prefix of a QEMU dirty bitmap context; the bitmap's name follows (`qemu:dirty-bitmap:b0`).
    public static let qemuDirtyBitmapPrefix = "qemu:dirty-bitmap:"
    /// QEMU's backing-chain depth per extent (0 unallocated, 1 top layer, 2 first backing file, …).
    public static let qemuAllocationDepth = "qemu:allocation-depth"

    /// The context name of QEMU dirty bitmap `name`.
    public static func qemuDirtyBitmap(_ name: String) -> String { qemuDirtyBitmapPrefix + name }
}

/// The 16-bit handshake flags a newstyle server sends after `IHAVEOPT`.
public struct NBDHandshakeFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_FLAG_FIXED_NEWSTYLE`: the server answers unknown options instead of hanging up.
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_NO_ZEROES`: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// The 32-bit flags a client answers the handshake flags with. A server MUST drop the connection
/// on a bit it does not know.
public struct NBDClientFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_C_NO_ZEROES` (only if the server offered `noZeroes`).
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)
}

/// An option number in the handshake (`NBD_OPT_*`).
public struct NBDOption: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Legacy entry into transmission; has no option reply and cannot report errors.
    public static let exportName = NBDOption(rawValue: 1)
    public static let abort = NBDOption(rawValue: 2)
    public static let list = NBDOption(rawValue: 3)
    /// Withdrawn from the spec; never to be reused.
    public static let peekExport = NBDOption(rawValue: 4)
    /// Resets all earlier negotiation state.
    public static let startTLS = NBDOption(rawValue: 5)
    public static let info = NBDOption(rawValue: 6)
    public static let go = NBDOption(rawValue: 7)
    /// After its `ACK` the server MUST use structured replies for READ.
    public static let structuredReply = NBDOption(rawValue: 8)
    public static let listMetaContext = NBDOption(rawValue: 9)
    /// Replaces earlier selections, even on failure; needs structured replies first.
    public static let setMetaContext = NBDOption(rawValue: 10)
    /// Experimental in the spec (QEMU 8.2, libnbd 1.18).
    public static let extendedHeaders = NBDOption(rawValue: 11)

    public var description: String {
        switch self {
        case .exportName: return "NBD_OPT_EXPORT_NAME"
        case .abort: return "NBD_OPT_ABORT"
        case .list: return "NBD_OPT_LIST"
        case .peekExport: return "NBD_OPT_PEEK_EXPORT"
        case .startTLS: return "NBD_OPT_STARTTLS"
        case .info: return "NBD_OPT_INFO"
        case .go: return "NBD_OPT_GO"
        case .structuredReply: return "NBD_OPT_STRUCTURED_REPLY"
        case .listMetaContext: return "NBD_OPT_LIST_META_CONTEXT"
        case .setMetaContext: return "NBD_OPT_SET_META_CONTEXT"
        case .extendedHeaders: return "NBD_OPT_EXTENDED_HEADERS"
        default: return "NBD option \(rawValue)"
        }
    }
}

/// The type of an option reply (`NBD_REP_*`). Bit 31 marks an error; its payload is human text.
public struct NBDOptionReplyType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The final reply of a successful option.
    public static let ack = NBDOptionReplyType(rawValue: 1)
    /// One export in answer to `NBD_OPT_LIST`: 4 name length, name, optional description.
    public static let server = NBDOptionReplyType(rawValue: 2)
    /// One `NBD_INFO_*` item in answer to `NBD_OPT_INFO` / `NBD_OPT_GO`: 2 info type, body.
    public static let info = NBDOptionReplyType(rawValue: 3)
    /// One selected (or listed) context: 4 context id, name.
    public static let metaContext = NBDOptionReplyType(rawValue: 4)

    static let errorBit: UInt32 = 1 << 31
    /// The option is not known or not supported.
    public static let errUnsupported = NBDOptionReplyType(rawValue: errorBit | 1)
    /// Forbidden by the server's policy.
    public static let errPolicy = NBDOptionReplyType(rawValue: errorBit | 2)
    /// Syntactically or semantically invalid.
    public static let errInvalid = NBDOptionReplyType(rawValue: errorBit | 3)
    /// Not supported on this platform.
    public static let errPlatform = NBDOptionReplyType(rawValue: errorBit | 4)
    /// The server requires TLS first.
    public static let errTLSRequired = NBDOptionReplyType(rawValue: errorBit | 5)
    /// The export does not exist.
    public static let errUnknown = NBDOptionReplyType(rawValue: errorBit | 6)
    /// The server is shutting down.
    public static let errShutdown = NBDOptionReplyType(rawValue: errorBit | 7)
    /// The server requires the client to ask for `NBD_INFO_BLOCK_SIZE`.
    public static let errBlockSizeRequired = NBDOptionReplyType(rawValue: errorBit | 8)
    /// The request or reply would be too large.
    public static let errTooBig = NBDOptionReplyType(rawValue: errorBit | 9)
    /// The server requires extended headers.
    public static let errExtendedHeadersRequired = NBDOptionReplyType(rawValue: errorBit | 10)

    /// True for every `NBD_REP_ERR_*`, known or not.
    public var isError: Bool { rawValue & Self.errorBit != 0 }

    public var description: String {
        switch self {
        case .ack: return "NBD_REP_ACK"
        case .server: return "NBD_REP_SERVER"
        case .info: return "NBD_REP_INFO"
        case .metaContext: return "NBD_REP_META_CONTEXT"
        case .errUnsupported: return "NBD_REP_ERR_UNSUP"
        case .errPolicy: return "NBD_REP_ERR_POLICY"
        case .errInvalid: return "NBD_REP_ERR_INVALID"
        case .errPlatform: return "NBD_REP_ERR_PLATFORM"
        case .errTLSRequired: return "NBD_REP_ERR_TLS_REQD"
        case .errUnknown: return "NBD_REP_ERR_UNKNOWN"
        case .errShutdown: return "NBD_REP_ERR_SHUTDOWN"
        case .errBlockSizeRequired: return "NBD_REP_ERR_BLOCK_SIZE_REQD"
        case .errTooBig: return "NBD_REP_ERR_TOO_BIG"
        case .errExtendedHeadersRequired: return "NBD_REP_ERR_EXT_HEADER_REQD"
        default: return isError ? "NBD option error \(rawValue & ~Self.errorBit)" : "NBD option reply \(rawValue)"
        }
    }
}

/// An information item requested in `NBD_OPT_INFO` / `NBD_OPT_GO` and returned in `NBD_REP_INFO`.
public struct NBDInfoType: RawRepresentable, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// 8 export size, 2 transmission flags. Mandatory before the `ACK`.
    public static let export = NBDInfoType(rawValue: 0)
    /// The export's canonical name (string, rest of the payload).
    public static let name = NBDInfoType(rawValue: 1)
    /// A human description (string, rest of the payload).
    public static let description = NBDInfoType(rawValue: 2)
    /// 4 minimum block, 4 preferred block, 4 maximum payload. A client that asked for it MUST obey it.
    public static let blockSize = NBDInfoType(rawValue: 3)
}

/// The block size constraints of `NBD_INFO_BLOCK_SIZE`.
///
/// The spec's rules: minimum is a power of two, at most 64 KiB; preferred is a power of two, at
/// least max(minimum, 512); maximum payload is a multiple of minimum, at least preferred (or
/// `NBDProtocol.unlimitedPayload`).
public struct NBDBlockSize: Sendable, Hashable {
    public var minimum: UInt32
    public var preferred: UInt32
    public var maximum: UInt32

    public init(minimum: UInt32, preferred: UInt32, maximum: UInt32) {
        self.minimum = minimum
        self.preferred = preferred
        self.maximum = maximum
    }

    /// What a client assumes when the server sent nothing: byte granularity, 4 KiB preferred,
    /// 32 MiB payloads.
    public static let assumed = NBDBlockSize(minimum: 1, preferred: 4096, maximum: NBDProtocol.defaultMaxPayload)

    /// Why these values break the spec's rules, or nil if they keep them.
    public var violation: String? {
        if minimum == 0 || minimum & (minimum - 1) != 0 || minimum > 65536 {
            return "minimum block size \(minimum) is not a power of two up to 64 KiB"
        }
        if preferred == 0 || preferred & (preferred - 1) != 0 || preferred < max(minimum, 512) {
            return "preferred block size \(preferred) is not a power of two of at least max(minimum, 512)"
        }
        if maximum != NBDProtocol.unlimitedPayload && (maximum < preferred || maximum % minimum != 0) {
            return "maximum payload \(maximum) is below the preferred block size or not a multiple of the minimum"
        }
        return nil
    }
}

/// The 16-bit transmission flags of an export (`NBD_INFO_EXPORT` or the `EXPORT_NAME` answer).
/// A client MUST NOT use a feature the server did not advertise.
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Always set by a conforming server.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    /// The server honours `NBDCommandFlags.dontFragment` on READ.
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    /// Several connections to this export see one coherent disk.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
    /// Experimental resize extension.
    public static let sendResize = NBDTransmissionFlags(rawValue: 1 << 9)
    public static let sendCache = NBDTransmissionFlags(rawValue: 1 << 10)
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 1 << 11)
    /// Extended headers only: BLOCK_STATUS may carry a payload naming contexts.
    public static let blockStatusPayload = NBDTransmissionFlags(rawValue: 1 << 12)
}

/// A transmission-phase command type (`NBD_CMD_*`).
public struct NBDCommand: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let read = NBDCommand(rawValue: 0)
    public static let write = NBDCommand(rawValue: 1)
    /// Soft disconnect: no reply; offset and length are 0.
    public static let disconnect = NBDCommand(rawValue: 2)
    public static let flush = NBDCommand(rawValue: 3)
    public static let trim = NBDCommand(rawValue: 4)
    public static let cache = NBDCommand(rawValue: 5)
    public static let writeZeroes = NBDCommand(rawValue: 6)
    public static let blockStatus = NBDCommand(rawValue: 7)
    /// Experimental resize extension.
    public static let resize = NBDCommand(rawValue: 8)

    public var description: String {
        switch self {
        case .read: return "NBD_CMD_READ"
        case .write: return "NBD_CMD_WRITE"
        case .disconnect: return "NBD_CMD_DISC"
        case .flush: return "NBD_CMD_FLUSH"
        case .trim: return "NBD_CMD_TRIM"
        case .cache: return "NBD_CMD_CACHE"
        case .writeZeroes: return "NBD_CMD_WRITE_ZEROES"
        case .blockStatus: return "NBD_CMD_BLOCK_STATUS"
        case .resize: return "NBD_CMD_RESIZE"
        default: return "NBD command \(rawValue)"
        }
    }
}

/// The 16-bit flags of a request (`NBD_CMD_FLAG_*`).
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Force unit access (writes).
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    /// WRITE_ZEROES: do not punch a hole.
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    /// READ: answer with at most one data chunk (only if `sendDF` was advertised).
    public static let dontFragment = NBDCommandFlags(rawValue: 1 << 2)
    /// BLOCK_STATUS: exactly one extent per context, never longer than the request.
    public static let requestOne = NBDCommandFlags(rawValue: 1 << 3)
    /// WRITE_ZEROES: fail fast rather than write zeros slowly.
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
    /// Extended headers: the length field is a payload length.
    public static let payloadLength = NBDCommandFlags(rawValue: 1 << 5)
}

/// The 16-bit flags of a structured reply chunk.
public struct NBDReplyFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_REPLY_FLAG_DONE`: the last chunk for this cookie.
    public static let done = NBDReplyFlags(rawValue: 1 << 0)
}

/// The type of a structured reply chunk (`NBD_REPLY_TYPE_*`). Bit 15 marks an error chunk; an
/// unknown non-error type forces a hard disconnect.
public struct NBDReplyType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Empty payload; must carry `done`.
    public static let none = NBDReplyType(rawValue: 0)
    /// 8 offset, then data.
    public static let offsetData = NBDReplyType(rawValue: 1)
    /// 8 offset, 4 hole size: that range reads as zeros.
    public static let offsetHole = NBDReplyType(rawValue: 2)
    /// 4 context id, then n × {4 length (≠ 0), 4 status flags}.
    public static let blockStatus = NBDReplyType(rawValue: 5)
    /// Extended headers: 4 context id, 4 count, n × {8 length, 8 status flags}.
    public static let blockStatusExtended = NBDReplyType(rawValue: 6)

    static let errorBit: UInt16 = 1 << 15
    /// 4 error (≠ 0), 2 message length (≤ 4096), message.
    public static let error = NBDReplyType(rawValue: errorBit | 1)
    /// As `error`, then 8 offset of the failure.
    public static let errorOffset = NBDReplyType(rawValue: errorBit | 2)

    /// True for every error chunk type, known or not.
    public var isError: Bool { rawValue & Self.errorBit != 0 }

    public var description: String {
        switch self {
        case .none: return "NBD_REPLY_TYPE_NONE"
        case .offsetData: return "NBD_REPLY_TYPE_OFFSET_DATA"
        case .offsetHole: return "NBD_REPLY_TYPE_OFFSET_HOLE"
        case .blockStatus: return "NBD_REPLY_TYPE_BLOCK_STATUS"
        case .blockStatusExtended: return "NBD_REPLY_TYPE_BLOCK_STATUS_EXT"
        case .error: return "NBD_REPLY_TYPE_ERROR"
        case .errorOffset: return "NBD_REPLY_TYPE_ERROR_OFFSET"
        default: return "NBD reply chunk type \(rawValue)"
        }
    }
}

/// An error value in a simple reply or an error chunk (`NBD_E*`, numbered as on Linux).
/// A receiver treats unknown values as `invalid`.
public struct NBDErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let success = NBDErrorCode(rawValue: 0)
    public static let permission = NBDErrorCode(rawValue: 1)
    public static let io = NBDErrorCode(rawValue: 5)
    public static let noMemory = NBDErrorCode(rawValue: 12)
    public static let invalid = NBDErrorCode(rawValue: 22)
    public static let noSpace = NBDErrorCode(rawValue: 28)
    /// The request was too large; a client retries smaller.
    public static let overflow = NBDErrorCode(rawValue: 75)
    public static let notSupported = NBDErrorCode(rawValue: 95)
    /// The server is shutting down; the client should soft-disconnect.
    public static let shutdown = NBDErrorCode(rawValue: 108)

    public var description: String {
        switch self {
        case .success: return "success"
        case .permission: return "NBD_EPERM (operation not permitted)"
        case .io: return "NBD_EIO (input/output error)"
        case .noMemory: return "NBD_ENOMEM (out of memory)"
        case .invalid: return "NBD_EINVAL (invalid argument)"
        case .noSpace: return "NBD_ENOSPC (no space left)"
        case .overflow: return "NBD_EOVERFLOW (request too large)"
        case .notSupported: return "NBD_ENOTSUP (not supported)"
        case .shutdown: return "NBD_ESHUTDOWN (server shutting down)"
        default: return "NBD error \(rawValue)"
        }
    }
}

/// Status bits of the `base:allocation` context. 0 (data) is always a safe answer.
public struct NBDAllocationState: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_STATE_HOLE`: not allocated (contents undefined unless `zero` is set too).
    public static let hole = NBDAllocationState(rawValue: 1 << 0)
    /// `NBD_STATE_ZERO`: reads as zeros.
    public static let zero = NBDAllocationState(rawValue: 1 << 1)
}

/// Status bits of a `qemu:dirty-bitmap:NAME` context.
public struct NBDDirtyState: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_STATE_DIRTY`: changed since the bitmap was started.
    public static let dirty = NBDDirtyState(rawValue: 1 << 0)
}

/// A compact transmission request header (28 bytes), as sent by a client.
public struct NBDRequestHeader: Sendable, Hashable {
    public var flags: NBDCommandFlags
    public var command: NBDCommand
    /// Opaque to the server; echoed in the reply so replies can be matched out of order.
    public var cookie: UInt64
    public var offset: UInt64
    public var length: UInt32

    public init(flags: NBDCommandFlags = [], command: NBDCommand, cookie: UInt64, offset: UInt64, length: UInt32) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.length = length
    }

    /// Writes the header into the first `NBDProtocol.requestHeaderSize` bytes of `buffer`.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= NBDProtocol.requestHeaderSize)
        NBDWire.store(NBDProtocol.requestMagic, at: 0, in: buffer)
        NBDWire.store(flags.rawValue, at: 4, in: buffer)
        NBDWire.store(command.rawValue, at: 6, in: buffer)
        NBDWire.store(cookie, at: 8, in: buffer)
        NBDWire.store(offset, at: 16, in: buffer)
        NBDWire.store(length, at: 24, in: buffer)
    }

    /// Reads a header from the first `NBDProtocol.requestHeaderSize` bytes; nil if the magic is wrong.
    public init?(decoding buffer: UnsafeRawBufferPointer) {
        guard buffer.count >= NBDProtocol.requestHeaderSize,
            NBDWire.load(UInt32.self, at: 0, in: buffer) == NBDProtocol.requestMagic
        else { return nil }
        flags = NBDCommandFlags(rawValue: NBDWire.load(UInt16.self, at: 4, in: buffer))
        command = NBDCommand(rawValue: NBDWire.load(UInt16.self, at: 6, in: buffer))
        cookie = NBDWire.load(UInt64.self, at: 8, in: buffer)
        offset = NBDWire.load(UInt64.self, at: 16, in: buffer)
        length = NBDWire.load(UInt32.self, at: 24, in: buffer)
    }
}

/// A simple reply header (16 bytes). A successful READ's data follows it.
public struct NBDSimpleReplyHeader: Sendable, Hashable {
    public var error: NBDErrorCode
    public var cookie: UInt64

    public init(error: NBDErrorCode, cookie: UInt64) {
        self.error = error
        self.cookie = cookie
    }

    /// Writes the header into the first `NBDProtocol.simpleReplyHeaderSize` bytes of `buffer`.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= NBDProtocol.simpleReplyHeaderSize)
        NBDWire.store(NBDProtocol.simpleReplyMagic, at: 0, in: buffer)
        NBDWire.store(error.rawValue, at: 4, in: buffer)
        NBDWire.store(cookie, at: 8, in: buffer)
    }

    /// Reads the 12 bytes after the magic (error, cookie) of a simple reply, from
    /// `buffer[0..<16]` whose first 4 bytes the caller already matched against the magic.
    public init(decoding buffer: UnsafeRawBufferPointer) {
        precondition(buffer.count >= NBDProtocol.simpleReplyHeaderSize)
        error = NBDErrorCode(rawValue: NBDWire.load(UInt32.self, at: 4, in: buffer))
        cookie = NBDWire.load(UInt64.self, at: 8, in: buffer)
    }
}

/// A structured reply chunk header (20 bytes). `length` payload bytes follow it.
public struct NBDStructuredReplyHeader: Sendable, Hashable {
    public var flags: NBDReplyFlags
    public var type: NBDReplyType
    public var cookie: UInt64
    public var length: UInt32

    public init(flags: NBDReplyFlags, type: NBDReplyType, cookie: UInt64, length: UInt32) {
        self.flags = flags
        self.type = type
        self.cookie = cookie
        self.length = length
    }

    /// Writes the header into the first `NBDProtocol.structuredReplyHeaderSize` bytes of `buffer`.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= NBDProtocol.structuredReplyHeaderSize)
        NBDWire.store(NBDProtocol.structuredReplyMagic, at: 0, in: buffer)
        NBDWire.store(flags.rawValue, at: 4, in: buffer)
        NBDWire.store(type.rawValue, at: 6, in: buffer)
        NBDWire.store(cookie, at: 8, in: buffer)
        NBDWire.store(length, at: 16, in: buffer)
    }

    /// Reads a chunk header from `buffer[0..<20]` whose first 4 bytes the caller already matched
    /// against the magic.
    public init(decoding buffer: UnsafeRawBufferPointer) {
        precondition(buffer.count >= NBDProtocol.structuredReplyHeaderSize)
        flags = NBDReplyFlags(rawValue: NBDWire.load(UInt16.self, at: 4, in: buffer))
        type = NBDReplyType(rawValue: NBDWire.load(UInt16.self, at: 6, in: buffer))
        cookie = NBDWire.load(UInt64.self, at: 8, in: buffer)
        length = NBDWire.load(UInt32.self, at: 16, in: buffer)
    }
}

/// Big-endian loads and stores at byte offsets of raw buffers, for the NBD headers.
public enum NBDWire {
    /// The big-endian integer at `offset` (the caller checked `offset + size <= buffer.count`).
    @inlinable
    public static func load<T: FixedWidthInteger>(_: T.Type, at offset: Int, in buffer: UnsafeRawBufferPointer) -> T {
        T(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// Stores `value` big-endian at `offset` (the caller checked `offset + size <= buffer.count`).
    @inlinable
    public static func store<T: FixedWidthInteger>(
        _ value: T, at offset: Int, in buffer: UnsafeMutableRawBufferPointer
    ) {
        buffer.storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
    }
}
