/// A disk read from an NBD export (`qemu-nbd`, `qemu-storage-daemon`, libvirt's pull-mode backup
/// export, `nbdkit`), seen by the backup as any other `DiskImage`.
///
/// The guest bytes are the export's bytes, so the restore point records the format `raw`. With
/// `base:allocation` selected, extents the server reports as reading zeros (`NBD_STATE_ZERO`,
/// holes included) are skipped without being read, as qcow2's unallocated and zero clusters
/// are; a server without structured replies or block status is read in full.
public final class NBDImage: DiskImage {
    public let client: NBDClient
    public var virtualSize: UInt64 { client.size }
    public var info: SourceImageInfo {
        SourceImageInfo(format: "raw", path: client.uri.text, virtualSize: client.size, kind: "nbd")
    }
    /// True if the server reports allocation (`base:allocation`), so zero extents are skipped.
    public var hasAllocationMap: Bool { allocationContext != nil }

    private let allocationContext: String?
    /// The last block status answer: extents from `cacheStart`, `cacheIndex` the one last used.
    private var cache: [NBDExtent] = []
    private var cacheStart: UInt64 = 0
    private var cacheIndex = 0
    private var cacheIndexStart: UInt64 = 0
    private var cacheEnd: UInt64 = 0

    /// How much one block status request asks about (servers may answer less).
    static let statusSpan: UInt64 = 1 << 32

    public init(client: NBDClient) {
        self.client = client
        allocationContext = client.contexts[NBDMetaContext.baseAllocation] != nil ? NBDMetaContext.baseAllocation : nil
    }

    /// Connects to `uri` asking for structured replies and `base:allocation` (plus `extraContexts`).
    public convenience init(
        uri: NBDURI, extraContexts: [String] = [], timeout: Double = NBDClient.Configuration.defaultTimeout
    ) throws(CairnError) {
        let configuration = NBDClient.Configuration(
            metaContexts: [NBDMetaContext.baseAllocation] + extraContexts, timeout: timeout)
        self.init(client: try NBDClient(uri: uri, configuration: configuration))
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        let limit = min(maxLength, virtualSize - offset)
        guard let context = allocationContext else { return ImageExtent(length: limit, isZero: false) }
        if !cacheCovers(offset) {
            cache = try client.blockStatus(context: context, offset: offset, length: max(limit, Self.statusSpan))
            cacheStart = offset
            cacheIndex = 0
            cacheIndexStart = offset
            cacheEnd = cache.reduce(offset) { $0 + $1.length }
        }
        // Move to the extent holding `offset` (reads go forward; restart from the front otherwise).
        if offset < cacheIndexStart {
            cacheIndex = 0
            cacheIndexStart = cacheStart
        }
        while offset >= cacheIndexStart + cache[cacheIndex].length {
            cacheIndexStart += cache[cacheIndex].length
            cacheIndex += 1
        }
        let isZero = Self.readsAsZero(cache[cacheIndex])
        var end = cacheIndexStart + cache[cacheIndex].length
        var next = cacheIndex + 1
        while end - offset < limit, next < cache.count, Self.readsAsZero(cache[next]) == isZero {
            end += cache[next].length
            next += 1
        }
        return ImageExtent(length: min(limit, end - offset), isZero: isZero)
    }

    private func cacheCovers(_ offset: UInt64) -> Bool { offset >= cacheStart && offset < cacheEnd }

    /// `NBD_STATE_ZERO` means the range reads as zeros; a hole without it is "undefined" and read.
    private static func readsAsZero(_ extent: NBDExtent) -> Bool {
        NBDAllocationState(rawValue: extent.flags).contains(.zero)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        try client.read(into: buffer, at: offset)
    }
}
