/// Writes a streamOptimized VMDK in VMware's layout, one grain after another in guest order:
/// what OVF/OVA imports (vSphere, `ovftool`, VirtualBox) read.
///
/// Layout, in sectors: the header (version 3, compressed and marker flags, gdOffset "at the
/// end"), the embedded descriptor, then from sector 128 each non-zero grain as a marker
/// {lba u64, size u32} followed by its zlib stream, padded to a sector; after the grains of each
/// grain table's range, a GT marker and that table; at the end a GD marker and the directory, a
/// footer marker, the footer (the header with the real gdOffset) and the end-of-stream marker.
/// Ranges without a grain get no table (directory entry 0). QEMU's writer puts the directory at
/// the front and adds no end-of-stream marker, which ESXi refuses (QEMU issue 1357); VMware
/// rejects stream versions below 3.
///
/// Memory: one grain table, the directory (4 bytes per 32 MiB of disk), one compressed grain and
/// a 1 MiB output buffer, whatever the disk's size.
final class VMDKStreamWriter {
    static let grainSectors = VMDKSparseWriter.grainSectors
    static let grainBytes = VMDKSparseWriter.grainBytes
    /// Where the first grain goes: after the header and the descriptor, one grain in.
    static let overhead: UInt64 = 128
    static let flags =
        VMDKSparseHeader.flagNewlineTest | VMDKSparseHeader.flagCompressed | VMDKSparseHeader.flagMarkers

    let path: String
    let capacity: UInt64
    private let file: File
    private let deflater: Deflater
    /// Bytes not yet written, which start at sector `bufferSector`.
    private var buffer: [UInt8] = []
    private var bufferSector: UInt64
    /// One grain's marker and zlib stream, padded to a sector; owned for the writer's life.
    private let compressed: UnsafeMutableRawBufferPointer
    private var directory: [UInt32]
    private var table = [UInt32](repeating: 0, count: Int(VMDKSparseHeader.entriesPerTable))
    private var tableIndex: Int?
    private var nextGrain: UInt64 = 0

    /// Creates `path` (a temporary the caller renames) and writes the header and the descriptor
    /// for a disk of `virtualSize` bytes, whose descriptor names the extent `fileName`.
    init(path: String, virtualSize: UInt64, fileName: String, level: Int32 = 6) throws(CairnError) {
        capacity = (virtualSize + 511) / 512
        guard capacity <= VMDKSparseHeader.maxCapacity else {
            throw CairnError(
                .usage,
                "a \(virtualSize)-byte disk is larger than the 2 TiB a VMDK stream holds: restore it as raw or qcow2")
        }
        try VMDKSparseWriter.checkFileName(fileName)
        self.path = path
        deflater = Deflater(level: level)
        compressed = UnsafeMutableRawBufferPointer.allocate(
            byteCount: 12 + deflater.bound(Int(Self.grainBytes)) + 511, alignment: 8)
        compressed.initializeMemory(as: UInt8.self, repeating: 0)
        let span = Self.grainSectors * VMDKSparseHeader.entriesPerTable
        directory = [UInt32](repeating: 0, count: Int((capacity + span - 1) / span))
        do { file = try File.open(path, .createOrTruncate) } catch {
            compressed.deallocate()
            throw error
        }
        bufferSector = 0
        buffer.reserveCapacity(1 << 20)
        var head = header(directoryOffset: VMDKSparseHeader.gdAtEnd).encoded()
        head += Array(
            VMDKDescriptor.text(
                createType: "streamOptimized", sectors: capacity, fileName: fileName, cid: VMDKSparseWriter.newCID()
            ).utf8)
        head += [UInt8](repeating: 0, count: Int(Self.overhead * 512) - head.count)
        buffer.append(contentsOf: head)
    }

    deinit { compressed.deallocate() }

    private func header(directoryOffset: UInt64) -> VMDKSparseHeader {
        VMDKSparseHeader(
            version: 3, flags: Self.flags, capacity: capacity, grainSectors: Self.grainSectors,
            descriptorOffset: 1, descriptorSectors: VMDKSparseWriter.descriptorSectors, redundantDirectoryOffset: 0,
            directoryOffset: directoryOffset, overhead: Self.overhead, compressAlgorithm: 1)
    }

    /// The sector the next appended byte lands on (the buffer always ends on a sector).
    private var position: UInt64 { bufferSector + UInt64(buffer.count / 512) }

    /// Appends grain `grain` (indices must increase): `bytes` is the whole grain, 64 KiB, zero
    /// padded past the disk's end. An all-zero grain is left out (it reads as zeros).
    func append(grain: UInt64, _ bytes: UnsafeRawBufferPointer) throws(CairnError) {
        precondition(bytes.count == Int(Self.grainBytes), "a stream grain is 64 KiB")
        // The restore walk appends grains in order within the disk: anything else is a bug here.
        precondition(
            grain >= nextGrain && grain * Self.grainSectors < capacity, "grain appended out of order or past the end")
        nextGrain = grain + 1
        if Self.isZero(bytes) { return }
        let index = Int(grain / VMDKSparseHeader.entriesPerTable)
        if tableIndex != index {
            try flushTable()
            tableIndex = index
        }
        let sector = position
        guard sector <= UInt64(UInt32.max) else {
            throw CairnError(.usage, "\(path): the stream passes 2 TiB, beyond what 32-bit grain offsets address")
        }
        table[Int(grain % VMDKSparseHeader.entriesPerTable)] = UInt32(sector)
        let body = UnsafeMutableRawBufferPointer(rebasing: compressed[12..<(compressed.count - 511)])
        let length = try deflater.compress(bytes, into: body)
        compressed.storeBytes(of: (grain * Self.grainSectors).littleEndian, toByteOffset: 0, as: UInt64.self)
        compressed.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 8, as: UInt32.self)
        let padded = (12 + length + 511) / 512 * 512
        UnsafeMutableRawBufferPointer(rebasing: compressed[(12 + length)..<padded])
            .initializeMemory(as: UInt8.self, repeating: 0)
        buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: compressed[0..<padded]))
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Writes the pending grain table behind its marker and records it in the directory.
    private func flushTable() throws(CairnError) {
        guard let index = tableIndex else { return }
        let tableSectors = VMDKSparseHeader.entriesPerTable * 4 / 512
        try emit(Self.marker(sectors: tableSectors, type: 1)[...])
        directory[index] = UInt32(position)
        var bytes = ByteWriter(capacity: Int(tableSectors * 512))
        for entry in table { bytes.le(entry) }
        try emit(bytes.bytes[...])
        for i in table.indices { table[i] = 0 }
        tableIndex = nil
    }

    /// Writes the last table, the directory, the footer and the end-of-stream marker, and fsyncs.
    func finish() throws(CairnError) {
        try flushTable()
        let directorySectors = (UInt64(directory.count) * 4 + 511) / 512
        try emit(Self.marker(sectors: directorySectors, type: 2)[...])
        let directoryOffset = position
        var bytes = ByteWriter(capacity: Int(directorySectors * 512))
        for entry in directory { bytes.le(entry) }
        bytes.zeros(Int(directorySectors * 512) - bytes.count)
        try emit(bytes.bytes[...])
        try emit(Self.marker(sectors: 1, type: 3)[...])
        try emit(header(directoryOffset: directoryOffset).encoded()[...])
        try emit([UInt8](repeating: 0, count: 512)[...])
        try flush()
        try file.sync()
    }

    private func emit(_ bytes: ArraySlice<UInt8>) throws(CairnError) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 20 { try flush() }
    }

    private func flush() throws(CairnError) {
        guard !buffer.isEmpty else { return }
        try file.write(buffer, at: bufferSector * 512)
        bufferSector = position
        buffer.removeAll(keepingCapacity: true)
    }

    /// A metadata marker: {sectors u64, size 0 u32, type u32}, padded to a sector.
    private static func marker(sectors: UInt64, type: UInt32) -> [UInt8] {
        var bytes = ByteWriter(capacity: 512)
        bytes.le(sectors)
        bytes.le(UInt32(0))
        bytes.le(type)
        bytes.zeros(512 - bytes.count)
        return bytes.bytes
    }

    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let words = bytes.count / 8
        for i in 0..<words where bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
        for i in (words * 8)..<bytes.count where bytes[i] != 0 { return false }
        return true
    }
}
