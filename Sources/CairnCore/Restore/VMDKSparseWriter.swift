/// Writes a fresh monolithicSparse VMDK (hosted sparse extent, version 1) holding only the grains
/// set in a `ClusterBitmap`, the form `vmkfstools -i` imports onto an ESXi datastore.
///
/// As `QCOW2Writer` does, all metadata is laid out up front so guest data can be written in any
/// order and from several threads (plain pwrites at computed offsets). Host layout, in sectors,
/// as QEMU's `vmdk_init_extent` lays it out:
///
///     header | descriptor (20) | redundant GD | redundant GTs | GD | GTs | pad to a grain | grains
///
/// Every grain directory entry has its table (VMware's hosted sparse extents preallocate them
/// all); tables without a set grain are zero and stay holes. Grains follow in guest order, so
/// guest grain `g` is at `overHead + rank(g) * grainSectors`. Unset grains have entry 0 (read
/// as zeros). The file is written as a temporary beside `path` and renamed into place by
/// `finish`, after an fsync. Memory: the bitmap plus one prefix count per 512 grains, and one
/// grain directory (4 bytes per 32 MiB of disk).
/// `@unchecked Sendable`: restore workers call `write` from several threads at once, each at
/// its own grains (positional `pwrite` on one `File`, itself safe to share); the one mutable
/// field, `file`, is set only by `init` and cleared by `finish`/`discard`, which run after every
/// worker has returned.
final class VMDKSparseWriter: @unchecked Sendable {
    static let grainSectors: UInt64 = 128
    static let grainBytes: UInt64 = grainSectors * 512
    /// Sectors reserved for the embedded descriptor, as QEMU reserves.
    static let descriptorSectors: UInt64 = 20

    let path: String
    let temporaryPath: String
    let virtualSize: UInt64
    private let ranks: ClusterRanks
    private let overhead: UInt64
    /// Set to nil by `finish`; `write` must not run concurrently with it.
    private var file: File?

    /// Creates the temporary file, writes header, descriptor, both directories and the tables of
    /// the set grains, and sizes the file for every set grain. `allocated` has one bit per 64 KiB
    /// grain of `virtualSize`.
    init(path: String, virtualSize: UInt64, allocated: ClusterBitmap) throws(CairnError) {
        let capacity = (virtualSize + 511) / 512
        guard capacity <= VMDKSparseHeader.maxCapacity else {
            throw CairnError(
                .usage,
                "a \(virtualSize)-byte disk is larger than the 2 TiB a VMDK sparse extent holds: restore it as raw or qcow2"
            )
        }
        let grains = (capacity + Self.grainSectors - 1) / Self.grainSectors
        precondition(allocated.clusterCount == grains, "the grain bitmap is sized for another disk")
        let fileName = FileSystem.baseName(path)
        try VMDKSparseWriter.checkFileName(fileName)
        self.path = path
        self.virtualSize = virtualSize
        temporaryPath = FileSystem.temporaryName(for: path)

        let perTable = VMDKSparseHeader.entriesPerTable
        let tables = (grains + perTable - 1) / perTable
        let directorySectors = (tables * 4 + 511) / 512
        let tableSectors = perTable * 4 / 512
        let redundantDirectory = 1 + Self.descriptorSectors
        let redundantTables = redundantDirectory + directorySectors
        let directory = redundantTables + tables * tableSectors
        let primaryTables = directory + directorySectors
        let end = primaryTables + tables * tableSectors
        overhead = (end + Self.grainSectors - 1) / Self.grainSectors * Self.grainSectors
        let totalSectors = overhead + allocated.setCount * Self.grainSectors
        guard totalSectors <= UInt64(UInt32.max) else {
            throw CairnError(
                .usage,
                "the disk's \(allocated.setCount) allocated grains do not fit a monolithicSparse VMDK (32-bit sector offsets reach 2 TiB): restore it as raw or qcow2"
            )
        }
        ranks = ClusterRanks(allocated)

        let header = VMDKSparseHeader(
            version: 1, flags: VMDKSparseHeader.flagNewlineTest | VMDKSparseHeader.flagRedundantDirectory,
            capacity: capacity, grainSectors: Self.grainSectors, descriptorOffset: 1,
            descriptorSectors: Self.descriptorSectors, redundantDirectoryOffset: redundantDirectory,
            directoryOffset: directory, overhead: overhead, compressAlgorithm: 0)
        let descriptor = Array(
            VMDKDescriptor.text(
                createType: "monolithicSparse", sectors: capacity, fileName: fileName, cid: VMDKSparseWriter.newCID()
            ).utf8)

        let file = try File.open(temporaryPath, .createOrTruncate)
        self.file = file
        do {
            try file.write(header.encoded(), at: 0)
            try file.write(descriptor, at: 512)
            // Both directories list every table; tables are written only where a grain is set.
            var primary = ByteWriter(capacity: Int(directorySectors * 512))
            var redundant = ByteWriter(capacity: Int(directorySectors * 512))
            for table in 0..<tables {
                primary.le(UInt32(primaryTables + table * tableSectors))
                redundant.le(UInt32(redundantTables + table * tableSectors))
            }
            try file.write(primary.bytes, at: directory * 512)
            try file.write(redundant.bytes, at: redundantDirectory * 512)
            var entries = [UInt8](repeating: 0, count: Int(perTable * 4))
            let wordsPerTable = Int(perTable / 64)
            let words = allocated.words
            for table in 0..<Int(tables) {
                let first = table * wordsPerTable
                let slice = words[first..<min(words.count, first + wordsPerTable)]
                guard slice.contains(where: { $0 != 0 }) else { continue }
                for i in entries.indices { entries[i] = 0 }
                for (wordIndex, word) in zip(slice.indices, slice) where word != 0 {
                    var bits = word
                    while bits != 0 {
                        let grain = UInt64(wordIndex) * 64 + UInt64(bits.trailingZeroBitCount)
                        bits &= bits - 1
                        let sector = UInt32(overhead + ranks.rank(grain) * Self.grainSectors)
                        let at = Int(grain % perTable) * 4
                        withUnsafeBytes(of: sector.littleEndian) { entries.replaceSubrange(at..<at + 4, with: $0) }
                    }
                }
                try file.write(entries, at: (primaryTables + UInt64(table) * tableSectors) * 512)
                try file.write(entries, at: (redundantTables + UInt64(table) * tableSectors) * 512)
            }
            try file.truncate(to: totalSectors * 512)
        } catch {
            self.file = nil
            try? FileSystem.remove(temporaryPath)
            throw error
        }
    }

    /// Writes guest bytes at a guest offset. Every grain the range touches must be set.
    func write(_ bytes: UnsafeRawBufferPointer, atGuestOffset offset: UInt64) throws(CairnError) {
        guard let file else { preconditionFailure("a VMDK writer was written to after finish") }
        let count = UInt64(bytes.count)
        guard offset <= virtualSize, count <= virtualSize - offset else {
            throw CairnError(
                .usage, "\(path): write of \(count) bytes at \(offset) runs past the disk's end at \(virtualSize)")
        }
        let bitmap = ranks.bitmap
        var done: UInt64 = 0
        while done < count {
            let guest = offset + done
            let grain = guest / Self.grainBytes
            guard bitmap.contains(grain) else {
                throw CairnError(
                    .usage, "\(path): guest grain \(grain) (offset \(guest)) was not reserved in the grain bitmap")
            }
            // Consecutive set grains are consecutive on the host: write them in one call.
            var end = (grain + 1) * Self.grainBytes
            while end < offset + count && bitmap.contains(end / Self.grainBytes) { end += Self.grainBytes }
            let length = min(end, offset + count) - guest
            let host = (overhead + ranks.rank(grain) * Self.grainSectors) * 512 + guest % Self.grainBytes
            try file.write(UnsafeRawBufferPointer(rebasing: bytes[Int(done)..<Int(done + length)]), at: host)
            done += length
        }
    }

    /// fsyncs, renames the file into place and syncs its directory: complete after this.
    func finish() throws(CairnError) {
        guard let file else { return }
        try file.sync()
        self.file = nil
        try FileSystem.rename(temporaryPath, to: path)
        try FileSystem.syncDirectory(FileSystem.directoryName(path))
    }

    /// Removes the unfinished file.
    func discard() {
        file = nil
        try? FileSystem.remove(temporaryPath)
    }

    /// The descriptor names the extent file in double quotes on one line.
    static func checkFileName(_ name: String) throws(CairnError) {
        guard !name.isEmpty, !name.contains(where: { $0 == "\"" || $0.isNewline || $0 == "\0" }) else {
            throw CairnError(
                .usage,
                "a VMDK's descriptor cannot name the file \(name): choose an output name without quotes or newlines")
        }
    }

    /// A random content id (CID), never `ffffffff` (which means "no parent").
    static func newCID() -> UInt32 {
        var cid = UInt32.random(in: 0..<UInt32.max)
        if cid == VMDKDescriptor.noParent { cid = 1 }
        return cid
    }
}
