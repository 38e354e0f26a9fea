/// A qcow2 image's persistent bitmaps: the bitmaps header extension and the bitmap directory.
///
/// Layout: QEMU `docs/interop/qcow2.txt`, "Bitmaps extension" and "Bitmap directory"; reader
/// rules in `/work/shared/qcow2-reference.md` §9 and `/work/shared/research/live-vm.md` §4.
/// Everything is checked, for every entry (not only the one asked for), and with the limits
/// QEMU's own loader applies: a directory QEMU would refuse is refused here, so Cairn never
/// trusts a bitmap that QEMU itself would call broken. Every length is bounded before it is
/// used in arithmetic or allocation.
public struct QCOW2BitmapDirectory: Sendable {
    /// QEMU's limits (`block/qcow2-bitmap.c`, `block/qcow2.h`).
    static let maxBitmaps: UInt32 = 65535
    static let maxDirectoryBytes: UInt64 = 1024 * 65535
    static let maxTableEntries: UInt32 = 0x800_0000
    static let maxBitmapBytes: UInt64 = 512 << 20
    static let maxNameLength = 1023
    static let granularityBits: ClosedRange<UInt8> = 9...31

    /// One bitmap directory entry.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var tableOffset: UInt64
        public var tableSize: UInt32
        public var flags: UInt32
        public var type: UInt8
        public var granularityBits: UInt8
        public var extraDataSize: UInt32
        /// Where the entry starts in the file, for messages.
        public var position: UInt64

        static let inUseFlag: UInt32 = 1 << 0
        static let autoFlag: UInt32 = 1 << 1
        static let extraDataCompatibleFlag: UInt32 = 1 << 2

        /// Not saved cleanly (QEMU holds the image, or crashed): contents may be outdated.
        public var isInUse: Bool { flags & Self.inUseFlag != 0 }
        /// "auto": every write to the image is recorded in it.
        public var isEnabled: Bool { flags & Self.autoFlag != 0 }
        /// Bytes of guest disk per bit.
        public var granularity: UInt64 { 1 << UInt64(granularityBits) }
        /// Unknown extra data without the "compatible" flag forbids using the bitmap (spec).
        public var hasIncompatibleExtraData: Bool { extraDataSize != 0 && flags & Self.extraDataCompatibleFlag == 0 }
    }

    /// False when the bitmaps extension is present but autoclear bit 0 is clear: a program that
    /// does not know bitmaps wrote the image, so every bitmap is stale. `entries` is then empty.
    public var isConsistent: Bool
    public var entries: [Entry]

    public func entry(named name: String) -> Entry? { entries.first { $0.name == name } }

    /// Table entries a bitmap of `granularityBits` needs for a disk of `size` bytes.
    static func tableEntriesNeeded(size: UInt64, granularityBits: UInt8, clusterSize: UInt64) -> UInt64 {
        let granularity = UInt64(1) << UInt64(granularityBits)
        let bits = size / granularity + (size % granularity == 0 ? 0 : 1)
        let bytes = bits / 8 + (bits % 8 == 0 ? 0 : 1)
        return bytes / clusterSize + (bytes % clusterSize == 0 ? 0 : 1)
    }
}

extension QCOW2BitmapDirectory {
    /// Reads and checks the bitmap directory of `image`; nil if it has no bitmaps extension.
    static func read(_ image: QCOW2Image) throws(CairnError) -> QCOW2BitmapDirectory? {
        let header = image.header
        guard let ext = header.bitmapsExtension else {
            if header.autoclearFeatures & QCOW2Header.Autoclear.bitmaps != 0 {
                throw image.bad("autoclear bit 0 (bitmaps) is set but there is no bitmaps extension")
            }
            return nil
        }
        guard header.autoclearFeatures & QCOW2Header.Autoclear.bitmaps != 0 else {
            return QCOW2BitmapDirectory(isConsistent: false, entries: [])
        }
        let at = "bitmaps extension at offset 0x\(qcow2Hex(ext.position))"
        guard header.version >= 3 else { throw image.bad("\(at) is in a version 2 image; bitmaps need version 3") }
        guard ext.reserved == 0 else {
            throw image.bad("\(at): reserved field at byte 4 is 0x\(qcow2Hex(ext.reserved)), it must be zero")
        }
        guard (1...maxBitmaps).contains(ext.count) else {
            throw image.bad("\(at) counts \(ext.count) bitmaps: it must be 1 to \(maxBitmaps)")
        }
        let size = ext.directorySize
        let offset = ext.directoryOffset
        let cs = image.clusterSize
        guard size >= 24 * UInt64(ext.count), size <= maxDirectoryBytes else {
            throw image.bad(
                "\(at): bitmap_directory_size is \(size) bytes for \(ext.count) bitmaps; it must be at least "
                    + "\(24 * UInt64(ext.count)) and at most \(maxDirectoryBytes)")
        }
        guard offset % cs == 0, offset >= cs, offset <= image.fileSize, size <= image.fileSize - offset else {
            throw image.bad(
                "bitmap directory at 0x\(qcow2Hex(offset)) (\(size) bytes) is misaligned, inside the header cluster, "
                    + "or beyond the end of the file (size 0x\(qcow2Hex(image.fileSize)))")
        }
        let bytes = try image.file.readBytes(count: Int(size), at: offset)
        var entries: [Entry] = []
        var names: Set<String> = []
        var position = 0
        // The active layer's size, as QEMU sees it (rounded down to 512).
        let diskSize = header.size / 512 * 512
        while position < bytes.count {
            let place = "bitmap directory entry \(entries.count) at 0x\(qcow2Hex(offset + UInt64(position)))"
            guard entries.count < Int(ext.count) else {
                throw image.bad("bitmap directory holds more entries than the \(ext.count) the extension counts")
            }
            guard bytes.count - position >= 24 else {
                throw image.bad("\(place) is cut off by the end of the directory (size \(size))")
            }
            var r = ByteReader(bytes, context: place, position: position)
            let tableOffset: UInt64 = try r.be()
            let tableSize: UInt32 = try r.be()
            let flags: UInt32 = try r.be()
            let type: UInt8 = try r.be()
            let granularityBits: UInt8 = try r.be()
            let nameSize: UInt16 = try r.be()
            let extraSize: UInt32 = try r.be()
            // 24 + extra (< 2^32) + name (< 2^16), rounded up to 8: fits in UInt64 without overflow.
            let unpadded = 24 + UInt64(extraSize) + UInt64(nameSize)
            let entrySize = (unpadded + 7) / 8 * 8
            guard entrySize <= UInt64(bytes.count - position) else {
                throw image.bad(
                    "\(place) (extra_data_size \(extraSize), name_size \(nameSize)) runs past the end of the directory "
                        + "(size \(size))")
            }
            guard nameSize >= 1, Int(nameSize) <= maxNameLength else {
                throw image.bad("\(place) has name_size \(nameSize): it must be 1 to \(maxNameLength)")
            }
            let nameStart = position + 24 + Int(extraSize)
            let nameBytes = Array(bytes[nameStart..<nameStart + Int(nameSize)])
            guard let name = String(validating: nameBytes, as: UTF8.self), !nameBytes.contains(0) else {
                throw image.bad("\(place) has a name that is not UTF-8 or contains a NUL byte")
            }
            let entryAt = "bitmap \"\(name)\" (\(place))"
            guard bytes[(nameStart + Int(nameSize))..<(position + Int(entrySize))].allSatisfy({ $0 == 0 }) else {
                throw image.bad("\(entryAt) has non-zero padding")
            }
            guard names.insert(name).inserted else { throw image.bad("\(entryAt) repeats a name already used") }
            guard type == 1 else {
                throw image.bad("\(entryAt) has type \(type): only 1 (dirty tracking) exists")
            }
            guard flags & ~(Entry.inUseFlag | Entry.autoFlag | Entry.extraDataCompatibleFlag) == 0 else {
                throw image.bad("\(entryAt) has reserved flag bits set: 0x\(qcow2Hex(flags))")
            }
            guard Self.granularityBits.contains(granularityBits) else {
                throw image.bad("\(entryAt) has granularity_bits \(granularityBits): it must be 9 to 31")
            }
            guard tableOffset != 0, tableOffset % cs == 0 else {
                throw image.bad(
                    "\(entryAt) has bitmap_table_offset 0x\(qcow2Hex(tableOffset)): it must be a non-zero multiple "
                        + "of the cluster size 0x\(qcow2Hex(cs))")
            }
            guard tableSize >= 1, tableSize <= maxTableEntries,
                UInt64(tableSize) * cs <= maxBitmapBytes
            else {
                throw image.bad(
                    "\(entryAt) has bitmap_table_size \(tableSize): it must be 1 to \(maxTableEntries) and describe "
                        + "at most 512 MiB of bitmap")
            }
            guard tableOffset <= image.fileSize, UInt64(tableSize) * 8 <= image.fileSize - tableOffset else {
                throw image.bad(
                    "\(entryAt): bitmap table at 0x\(qcow2Hex(tableOffset)) (\(tableSize) entries) lies beyond the end "
                        + "of the file (size 0x\(qcow2Hex(image.fileSize)))")
            }
            let needed = tableEntriesNeeded(size: diskSize, granularityBits: granularityBits, clusterSize: cs)
            // QEMU tolerates a wrong size only on an in_use bitmap (one not saved after a resize).
            let inUse = flags & Entry.inUseFlag != 0
            guard inUse || UInt64(tableSize) == needed else {
                throw image.bad(
                    "\(entryAt) has \(tableSize) bitmap table entries, but a disk of \(diskSize) bytes at granularity "
                        + "\(UInt64(1) << UInt64(granularityBits)) needs \(needed)")
            }
            entries.append(
                Entry(
                    name: name, tableOffset: tableOffset, tableSize: tableSize, flags: flags, type: type,
                    granularityBits: granularityBits, extraDataSize: extraSize, position: offset + UInt64(position)))
            position += Int(entrySize)
        }
        guard entries.count == Int(ext.count) else {
            throw image.bad("bitmap directory holds \(entries.count) entries, but the extension counts \(ext.count)")
        }
        return QCOW2BitmapDirectory(isConsistent: true, entries: entries)
    }
}
