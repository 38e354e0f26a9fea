import Dispatch

/// A disk read from an NBD export (`qemu-nbd`, `qemu-storage-daemon`, libvirt's pull-mode backup
/// export, `nbdkit`), seen by the backup as any other `DiskImage`.
///
/// The guest bytes are the export's bytes, so the restore point records the format `raw`. With
/// `base:allocation` selected, extents the server reports as reading zeros (`NBD_STATE_ZERO`,
/// holes included) are skipped without being read, as qcow2's unallocated and zero clusters
/// are; a server without structured replies or block status is read in full.
///
/// When the server allows several connections to one export (`NBD_FLAG_CAN_MULTI_CONN`: QEMU's
/// read-only exports, `qemu-nbd --shared=N`), the backup's workers read at once, each over a
/// connection of its own, so the server's copies and the client's hashing overlap; the first
/// connection keeps asking for block status. Without the flag a second connection may never be
/// answered (`qemu-nbd`'s default admits one client), so everything goes over the one.
public final class NBDImage: DiskImage {
    public let client: NBDClient
    public var virtualSize: UInt64 { client.size }
    public var info: SourceImageInfo {
        SourceImageInfo(format: .raw, path: client.uri.text, virtualSize: client.size, kind: .nbd)
    }

    private var allocation: NBDStatusCursor?

    /// How much one block status request asks about (servers may answer less).
    static let statusSpan: UInt64 = 1 << 32

    /// Connections at most beside the first, for concurrent reads.
    static let maxReaders = 4

    /// How reader connections negotiate; nil when they are not to be opened.
    private let readerConfiguration: NBDClient.Configuration?
    /// Idle reader connections; `readerSlots` lets at most `maxReaders` be in use (or opening).
    private let readers = NSLockBox<[NBDClient]>([])
    private let readerSlots = DispatchSemaphore(value: NBDImage.maxReaders)

    public var supportsConcurrentReads: Bool {
        readerConfiguration != nil && client.transmissionFlags.contains(.canMultiConn)
    }

    public convenience init(client: NBDClient) {
        self.init(client: client, readerConfiguration: nil)
    }

    private init(client: NBDClient, readerConfiguration: NBDClient.Configuration?) {
        self.client = client
        self.readerConfiguration = readerConfiguration
        if client.contexts[NBDMetaContext.baseAllocation] != nil {
            allocation = NBDStatusCursor(context: NBDMetaContext.baseAllocation)
        }
    }

    /// Connects to `uri` asking for structured replies and `base:allocation` (plus `extraContexts`).
    public convenience init(
        uri: NBDURI, extraContexts: [String] = [], timeout: Double = NBDClient.Configuration.defaultTimeout
    ) throws(CairnError) {
        let configuration = NBDClient.Configuration(
            metaContexts: [NBDMetaContext.baseAllocation] + extraContexts, timeout: timeout)
        self.init(
            client: try NBDClient(uri: uri, configuration: configuration),
            readerConfiguration: NBDClient.Configuration(metaContexts: [], timeout: timeout))
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        let limit = min(maxLength, virtualSize - offset)
        guard var cursor = allocation else { return ImageExtent(length: limit, isZero: false) }
        defer { allocation = cursor }
        guard try cursor.seek(offset, limit: limit, client: client) else {
            return ImageExtent(length: limit, isZero: false)
        }
        let extents = cursor.extents
        let isZero = Self.readsAsZero(extents[cursor.index])
        var end = cursor.indexStart + extents[cursor.index].length
        var next = cursor.index + 1
        while end - offset < limit, next < extents.count, Self.readsAsZero(extents[next]) == isZero {
            end += extents[next].length
            next += 1
        }
        return ImageExtent(length: min(limit, end - offset), isZero: isZero)
    }

    /// `NBD_STATE_ZERO` means the range reads as zeros; a hole without it is "undefined" and read.
    private static func readsAsZero(_ extent: NBDExtent) -> Bool {
        NBDAllocationState(rawValue: extent.flags).contains(.zero)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        guard supportsConcurrentReads else { return try client.read(into: buffer, at: offset) }
        readerSlots.wait()
        defer { readerSlots.signal() }
        let reader: NBDClient
        if let idle = readers.withLock({ $0.popLast() }) {
            reader = idle
        } else {
            reader = try openReader()
        }
        try reader.read(into: buffer, at: offset)
        // A connection that failed is dead (NBDClient's rule): only a good one goes back.
        readers.withLock { $0.append(reader) }
    }

    /// A new reader connection, checked to see the same export.
    private func openReader() throws(CairnError) -> NBDClient {
        let reader = try NBDClient(uri: client.uri, configuration: readerConfiguration!)
        guard reader.size == client.size else {
            throw CairnError(
                .badImage,
                "NBD server \(client.uri): a second connection to the export reports \(reader.size) bytes, the first \(client.size)"
            )
        }
        return reader
    }
}
