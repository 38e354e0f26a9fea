/// The fixed qcow2 header plus what cluster 0 carries after it (header extensions, backing name).
///
/// Layout: QEMU `docs/interop/qcow2.txt`, summarised with the reader rules Cairn applies in
/// `/work/shared/qcow2-reference.md` §1–§3. All integers on disk are big-endian.
/// `parse` checks every field it reads; nothing else in the reader trusts a header value unchecked.
struct QCOW2Header {
    static let magic: UInt32 = 0x5146_49FB
    static let version2Length: UInt32 = 72
    static let version3MinimumLength: UInt32 = 104
    static let maxBackingNameLength = 1023

    enum Incompatible {
        static let dirty: UInt64 = 1 << 0
        static let corrupt: UInt64 = 1 << 1
        static let externalDataFile: UInt64 = 1 << 2
        static let compressionType: UInt64 = 1 << 3
        static let extendedL2: UInt64 = 1 << 4
        static let known: UInt64 = 0x1F
    }

    enum Autoclear {
        static let bitmaps: UInt64 = 1 << 0
        static let rawDataFile: UInt64 = 1 << 1
    }

    enum Extension {
        static let end: UInt32 = 0
        static let backingFormat: UInt32 = 0xE279_2ACA
        static let featureNames: UInt32 = 0x6803_F857
        static let bitmaps: UInt32 = 0x2385_2875
        static let fullDiskEncryption: UInt32 = 0x0537_BE77
        static let dataFile: UInt32 = 0x4441_5441
    }

    enum CompressionType: UInt8 {
        case deflate = 0
        case zstd = 1
    }

    var version: UInt32
    var backingFileOffset: UInt64
    var backingFileSize: UInt32
    var clusterBits: UInt32
    var size: UInt64
    var cryptMethod: UInt32
    var l1Size: UInt32
    var l1TableOffset: UInt64
    var refcountTableOffset: UInt64
    var refcountTableClusters: UInt32
    var snapshotCount: UInt32
    var snapshotsOffset: UInt64
    var incompatibleFeatures: UInt64 = 0
    var compatibleFeatures: UInt64 = 0
    var autoclearFeatures: UInt64 = 0
    var refcountOrder: UInt32 = 4
    var headerLength: UInt32 = QCOW2Header.version2Length
    var compressionType: CompressionType = .deflate

    var backingFile: String?
    var backingFormat: String?
    var dataFile: String?
    /// Incompatible feature names from the feature name table, by bit, for error messages.
    var incompatibleFeatureNames: [UInt8: String] = [:]
    var hasEncryptionHeaderPointer = false
    /// The bitmaps extension's fields, as stored (checked by `QCOW2BitmapDirectory.read`).
    var bitmapsExtension: BitmapsExtension?

    struct BitmapsExtension: Equatable {
        var count: UInt32
        var reserved: UInt32
        var directorySize: UInt64
        var directoryOffset: UInt64
        /// Where the extension's data starts in the file, for messages.
        var position: Int
    }

    var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    var hasExtendedL2: Bool { incompatibleFeatures & Incompatible.extendedL2 != 0 }
    var hasDataFile: Bool { incompatibleFeatures & Incompatible.externalDataFile != 0 }
    var isDataFileRaw: Bool { autoclearFeatures & Autoclear.rawDataFile != 0 }
}

extension QCOW2Header {
    /// Reads and checks the header and cluster 0 of `file` (whose size is `fileSize`).
    static func parse(_ file: File, fileSize: UInt64) throws(CairnError) -> QCOW2Header {
        let path = file.path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): qcow2 \(message)") }

        guard fileSize >= UInt64(version2Length) else {
            throw bad("header is truncated: the file is \(fileSize) bytes, a header needs at least \(version2Length)")
        }
        let fixed = try file.readBytes(count: Int(min(fileSize, UInt64(version3MinimumLength + 8))), at: 0)
        var r = ByteReader(fixed, context: "\(path): qcow2 header")
        guard try r.be(UInt32.self) == magic else { throw bad("magic at offset 0 is wrong: this is not a qcow2 image") }
        let version: UInt32 = try r.be()
        guard version == 2 || version == 3 else {
            throw bad("version at offset 4 is \(version): only versions 2 and 3 are supported")
        }
        var h = QCOW2Header(
            version: version, backingFileOffset: try r.be(), backingFileSize: try r.be(), clusterBits: try r.be(),
            size: try r.be(), cryptMethod: try r.be(), l1Size: try r.be(), l1TableOffset: try r.be(),
            refcountTableOffset: try r.be(), refcountTableClusters: try r.be(), snapshotCount: try r.be(),
            snapshotsOffset: try r.be())
        guard (9...21).contains(h.clusterBits) else {
            throw bad("cluster_bits at offset 20 is \(h.clusterBits): it must be 9 to 21 (512 B to 2 MiB clusters)")
        }
        let cs = h.clusterSize
        if version == 3 {
            guard fileSize >= UInt64(version3MinimumLength) else {
                throw bad("version 3 header is truncated: the file is \(fileSize) bytes, the header needs 104")
            }
            h.incompatibleFeatures = try r.be()
            h.compatibleFeatures = try r.be()
            h.autoclearFeatures = try r.be()
            h.refcountOrder = try r.be()
            h.headerLength = try r.be()
            guard h.headerLength >= version3MinimumLength, h.headerLength % 8 == 0, UInt64(h.headerLength) <= cs else {
                throw bad(
                    "header_length at offset 100 is \(h.headerLength): it must be at least 104, a multiple of 8 "
                        + "and at most the cluster size \(cs)")
            }
            guard fileSize >= UInt64(h.headerLength) else {
                throw bad("header is truncated: header_length is \(h.headerLength) but the file is \(fileSize) bytes")
            }
            if h.headerLength > version3MinimumLength {
                let raw: UInt8 = try r.be()
                guard let type = CompressionType(rawValue: raw) else {
                    throw bad("compression_type at offset 104 is \(raw): only 0 (deflate) and 1 (zstd) exist")
                }
                h.compressionType = type
            }
        }
        guard h.refcountOrder <= 6 else {
            throw bad("refcount_order at offset 96 is \(h.refcountOrder): it must be at most 6")
        }

        // Cluster 0 holds the extensions and the backing name; nothing there may lie beyond it.
        let clusterZeroLength = Int(min(cs, fileSize))
        let clusterZero = try file.readBytes(count: clusterZeroLength, at: 0)
        try h.parseExtensions(clusterZero, clusterSize: cs, fileSize: fileSize, bad: bad)
        try h.parseBackingName(clusterZero, clusterSize: cs, fileSize: fileSize, bad: bad)
        try h.checkFeatures(bad: bad)
        return h
    }

    private mutating func parseExtensions(
        _ clusterZero: [UInt8], clusterSize: UInt64, fileSize: UInt64, bad: (String) -> CairnError
    ) throws(CairnError) {
        var position = Int(headerLength)
        var seen: Set<UInt32> = []
        // QEMU reads extensions only up to the backing file name when there is one ("Header
        // extension too large" past it), so an extension may not run into or past the name.
        let limit = backingFileOffset != 0 ? min(backingFileOffset, clusterSize) : clusterSize
        func pastBackingName(_ end: Int) -> Bool { backingFileOffset != 0 && UInt64(end) > limit }
        while true {
            if pastBackingName(position + 8) {
                throw bad(
                    "header extension at offset 0x\(qcow2Hex(position)) runs into the backing file name at "
                        + "backing_file_offset 0x\(qcow2Hex(backingFileOffset))")
            }
            guard position + 8 <= clusterZero.count else {
                if UInt64(position + 8) > clusterSize {
                    throw bad(
                        "header extensions at offset 0x\(qcow2Hex(position)) run past the end of cluster 0 without an end marker"
                    )
                }
                throw bad(
                    "header extension at offset 0x\(qcow2Hex(position)) lies beyond the end of the file (size \(fileSize)): the image is truncated"
                )
            }
            var r = ByteReader(clusterZero, context: "qcow2 header extension", position: position)
            let type: UInt32 = try r.be()
            let length: UInt32 = try r.be()
            if type == Extension.end { return }
            let dataStart = position + 8
            let padded = (UInt64(length) + 7) / 8 * 8
            guard UInt64(dataStart) + padded <= UInt64(clusterZero.count) else {
                throw bad(
                    "header extension 0x\(qcow2Hex(type)) at offset 0x\(qcow2Hex(position)) has length \(length), which runs past "
                        + "the end of cluster 0 or of the file")
            }
            if pastBackingName(dataStart + Int(length)) {
                throw bad(
                    "header extension 0x\(qcow2Hex(type)) at offset 0x\(qcow2Hex(position)) has length \(length), which runs "
                        + "into the backing file name at backing_file_offset 0x\(qcow2Hex(backingFileOffset))")
            }
            let data = Array(clusterZero[dataStart..<dataStart + Int(length)])
            let known: Set<UInt32> = [
                Extension.backingFormat, Extension.featureNames, Extension.bitmaps, Extension.fullDiskEncryption,
                Extension.dataFile,
            ]
            if known.contains(type) {
                guard seen.insert(type).inserted else {
                    throw bad("header extension 0x\(qcow2Hex(type)) at offset 0x\(qcow2Hex(position)) appears twice")
                }
            }
            switch type {
            case Extension.backingFormat:
                backingFormat = try Self.string(data, field: "backing format extension", at: position, bad: bad)
            case Extension.dataFile:
                dataFile = try Self.string(data, field: "external data file name extension", at: position, bad: bad)
            case Extension.featureNames:
                var entry = 0
                while entry + 48 <= data.count {
                    if data[entry] == 0 {
                        let nameBytes = data[(entry + 2)..<(entry + 48)].prefix { $0 != 0 }
                        incompatibleFeatureNames[data[entry + 1]] = String(decoding: nameBytes, as: UTF8.self)
                    }
                    entry += 48
                }
            case Extension.fullDiskEncryption:
                hasEncryptionHeaderPointer = true
            case Extension.bitmaps:
                // Bitmaps are not used to read; they are checked only as far as QEMU would refuse the image.
                guard length >= 24 else {
                    throw bad("bitmaps extension at offset 0x\(qcow2Hex(position)) is \(length) bytes, it needs 24")
                }
                var b = ByteReader(data, context: "qcow2 bitmaps extension")
                let count: UInt32 = try b.be()
                let reserved: UInt32 = try b.be()
                let directorySize: UInt64 = try b.be()
                let directoryOffset: UInt64 = try b.be()
                bitmapsExtension = BitmapsExtension(
                    count: count, reserved: reserved, directorySize: directorySize, directoryOffset: directoryOffset,
                    position: position)
                if autoclearFeatures & Autoclear.bitmaps != 0 {
                    guard count >= 1, count <= 65535 else {
                        throw bad(
                            "bitmaps extension at offset 0x\(qcow2Hex(position)) counts \(count) bitmaps: it must be 1 to 65535"
                        )
                    }
                    guard directoryOffset % clusterSize == 0, directoryOffset != 0,
                        directoryOffset <= fileSize, directorySize <= fileSize - directoryOffset
                    else {
                        throw bad(
                            "bitmap directory at 0x\(qcow2Hex(directoryOffset)) (size \(directorySize)) is misaligned or lies "
                                + "beyond the end of the file (size 0x\(qcow2Hex(fileSize)))")
                    }
                }
            default:
                break  // Unknown extensions are optional by definition: skip them.
            }
            position = dataStart + Int(padded)
        }
    }

    private static func string(
        _ bytes: [UInt8], field: String, at offset: Int, bad: (String) -> CairnError
    ) throws(CairnError) -> String {
        guard bytes.count <= maxBackingNameLength else {
            throw bad(
                "\(field) at offset 0x\(qcow2Hex(offset)) is \(bytes.count) bytes long: at most \(maxBackingNameLength) are allowed"
            )
        }
        guard !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) else {
            throw bad("\(field) at offset 0x\(qcow2Hex(offset)) contains a NUL byte or is not UTF-8")
        }
        return text
    }

    private mutating func parseBackingName(
        _ clusterZero: [UInt8], clusterSize: UInt64, fileSize: UInt64, bad: (String) -> CairnError
    ) throws(CairnError) {
        guard backingFileOffset != 0 else { return }
        let length = UInt64(backingFileSize)
        guard length <= UInt64(Self.maxBackingNameLength) else {
            throw bad("backing_file_size at offset 16 is \(backingFileSize): a backing name is at most 1023 bytes")
        }
        guard backingFileOffset < clusterSize, length <= clusterSize - backingFileOffset else {
            throw bad(
                "backing file name at backing_file_offset 0x\(qcow2Hex(backingFileOffset)) (length \(length)) does not lie "
                    + "inside cluster 0 (size 0x\(qcow2Hex(clusterSize)))")
        }
        guard backingFileOffset + length <= UInt64(clusterZero.count) else {
            throw bad(
                "backing file name at backing_file_offset 0x\(qcow2Hex(backingFileOffset)) lies beyond the end of the file "
                    + "(size \(fileSize)): the image is truncated")
        }
        guard length > 0 else { return }
        let start = Int(backingFileOffset)
        backingFile = try Self.string(
            Array(clusterZero[start..<start + Int(length)]), field: "backing file name", at: start, bad: bad)
    }

    private func checkFeatures(bad: (String) -> CairnError) throws(CairnError) {
        let unknown = incompatibleFeatures & ~Incompatible.known
        if unknown != 0 {
            let bit = UInt8(unknown.trailingZeroBitCount)
            let name = incompatibleFeatureNames[bit].map { " \"\($0)\"" } ?? ""
            throw bad(
                "incompatible_features at offset 72 has unknown bit \(bit)\(name) set (0x\(qcow2Hex(incompatibleFeatures))): "
                    + "this image needs a feature Cairn does not support")
        }
        if incompatibleFeatures & Incompatible.corrupt != 0 {
            throw bad(
                "incompatible_features at offset 72 has the corrupt bit set: QEMU found damaged metadata; "
                    + "run `qemu-img check -r all` on a copy first")
        }
        let compressionBit = incompatibleFeatures & Incompatible.compressionType != 0
        if compressionBit != (compressionType != .deflate) {
            throw bad(
                "compression type bit (incompatible_features bit 3) and compression_type at offset 104 "
                    + "(\(compressionType.rawValue)) disagree")
        }
        if hasExtendedL2 && clusterBits < 14 {
            throw bad("extended L2 entries need clusters of at least 16 KiB, but cluster_bits is \(clusterBits)")
        }
        switch cryptMethod {
        case 0: break
        case 1:
            throw bad(
                "image is encrypted (crypt_method 1, legacy AES): a key is required to read it, and Cairn does not take one"
            )
        case 2:
            throw bad(
                "image is encrypted (crypt_method 2, LUKS): a key is required to read it, and Cairn does not take one")
        default: throw bad("crypt_method at offset 32 is \(cryptMethod): only 0, 1 (AES) and 2 (LUKS) exist")
        }
        if hasEncryptionHeaderPointer && cryptMethod != 2 {
            throw bad(
                "has a full disk encryption header extension but crypt_method at offset 32 is \(cryptMethod), not 2 (LUKS)"
            )
        }
        if hasDataFile && dataFile == nil {
            throw bad(
                "external data file bit is set (incompatible_features bit 2) but no data file name extension is present"
            )
        }
        if isDataFileRaw && !hasDataFile {
            throw bad("autoclear bit 1 (raw external data) is set without an external data file")
        }
        if isDataFileRaw && backingFile != nil {
            throw bad("has both a raw external data file and a backing file, which the qcow2 format forbids")
        }
    }
}

/// Lower-case hexadecimal without a prefix, for offsets in messages ("0x" is written by the caller).
func qcow2Hex<T: BinaryInteger>(_ value: T) -> String { String(value, radix: 16) }
