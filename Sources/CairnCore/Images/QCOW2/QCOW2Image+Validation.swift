/// Checks of every offset the reader takes from the file, before it is used.
///
/// QEMU reads zeros past the end of the file and does not check alignment or overlaps on read;
/// a backup must refuse instead (reference §0 rule 3), so each check names the field and offset.
extension QCOW2Image {
    /// Bits of an L1 or standard L2 entry that hold a host offset (bits 9–55).
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    /// "Refcount is exactly 1": meaningless for reading, but part of a valid entry.
    static let copiedFlag: UInt64 = 1 << 63
    static let compressedFlag: UInt64 = 1 << 62
    /// Standard L2 entries only: the cluster reads as zeros.
    static let zeroFlag: UInt64 = 1

    func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(file.path): qcow2 \(message)") }

    /// Checks the L1 entries that cover the disk: no reserved bits, and each L2 table aligned,
    /// inside the file, and clear of cluster 0, the L1 table and the refcount table.
    func checkL1Entries(l1Field: String, l1Offset: UInt64) throws(CairnError) {
        for (index, entry) in l1.enumerated() {
            let reserved = entry & ~(Self.offsetMask | Self.copiedFlag)
            guard reserved == 0 else {
                throw bad(
                    "L1 entry \(index) (at 0x\(qcow2Hex(l1Offset + UInt64(index) * 8))) has reserved bits set: 0x\(qcow2Hex(entry))"
                )
            }
            let l2Offset = entry & Self.offsetMask
            guard l2Offset != 0 else { continue }
            guard l2Offset % clusterSize == 0 else {
                throw bad(
                    "L2 table offset 0x\(qcow2Hex(l2Offset)) in L1 entry \(index) is not aligned to the cluster size 0x\(qcow2Hex(clusterSize))"
                )
            }
            guard l2Offset <= fileSize, clusterSize <= fileSize - l2Offset else {
                throw bad(
                    "L2 table at 0x\(qcow2Hex(l2Offset)) (L1 entry \(index)) lies beyond the end of the file "
                        + "(size 0x\(qcow2Hex(fileSize))): the image is truncated")
            }
            if let overlap = metadataOverlap(l2Offset) {
                throw bad("L2 table at 0x\(qcow2Hex(l2Offset)) (L1 entry \(index)) overlaps the \(overlap)")
            }
        }
    }

    /// Checks the refcount table's entries as `qemu-img check` does: each refcount block offset
    /// has no reserved bits (0–8), is cluster aligned, lies inside the file and clear of the
    /// header, the L1 table and the refcount table. Refcounts are not needed to read, but a
    /// broken table means damaged metadata, and QEMU flags the image as corrupt on its first use.
    func checkRefcountTable(at offset: UInt64, bytes: UInt64) throws(CairnError) {
        let table = try file.readBytes(count: Int(bytes), at: offset)
        for index in 0..<Int(bytes / 8) {
            let entry = table.withUnsafeBytes {
                UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
            }
            guard entry != 0 else { continue }
            let at = "refcount table entry \(index) (at 0x\(qcow2Hex(offset + UInt64(index) * 8)))"
            guard entry & 0x1FF == 0, entry % clusterSize == 0 else {
                throw bad(
                    "\(at) is 0x\(qcow2Hex(entry)): a refcount block offset must be aligned to the cluster size "
                        + "0x\(qcow2Hex(clusterSize)) with no reserved bits")
            }
            guard entry <= fileSize, clusterSize <= fileSize - entry else {
                throw bad(
                    "\(at) places a refcount block at 0x\(qcow2Hex(entry)), beyond the end of the file "
                        + "(size 0x\(qcow2Hex(fileSize))): the image is truncated")
            }
            if let overlap = metadataOverlap(entry) {
                throw bad("\(at) places a refcount block at 0x\(qcow2Hex(entry)), on the \(overlap)")
            }
        }
    }

    /// Names the metadata a host cluster at `offset` overlaps, if any.
    func metadataOverlap(_ offset: UInt64) -> String? {
        let names = ["header cluster", "L1 table", "refcount table"]
        for (name, range) in zip(names, metadata) where !range.isEmpty && range.overlaps(offset..<offset + clusterSize)
        {
            return name
        }
        return nil
    }

    /// Checks the host cluster offset an L2 entry carries, whatever the cluster reads as (data,
    /// zeros over a preallocated cluster, or an unallocated subcluster range): aligned, and with
    /// an external data file equal to the guest offset. QEMU fails the read of any such entry
    /// ("Cluster allocation offset unaligned", "External data file host cluster offset does not
    /// match"), so a backup must not read past it as zeros.
    func checkHostCluster(_ host: UInt64, l2Offset: UInt64, guest: UInt64) throws(CairnError) {
        guard host % clusterSize == 0 else {
            throw bad(
                "data cluster offset 0x\(qcow2Hex(host)) for guest offset 0x\(qcow2Hex(guest)) (L2 table at "
                    + "0x\(qcow2Hex(l2Offset))) is not aligned to the cluster size 0x\(qcow2Hex(clusterSize))")
        }
        if dataFile != nil {
            // An external data file maps every guest cluster to the same offset in the data file:
            // anything else is damage, not a mapping to follow.
            let guestCluster = guest & ~(clusterSize - 1)
            guard host == guestCluster else {
                throw bad(
                    "data cluster for guest offset 0x\(qcow2Hex(guestCluster)) (L2 table at 0x\(qcow2Hex(l2Offset))) "
                        + "is at 0x\(qcow2Hex(host)) in the external data file, not at the guest offset as the format requires"
                )
            }
        }
    }

    /// Checks a data cluster that is about to be read from this file: clear of metadata.
    /// Bounds are checked per read (`checkDataBounds`), because an extended-L2 host cluster may
    /// legitimately end before the cluster does.
    func checkDataCluster(_ host: UInt64, l2Offset: UInt64, guest: UInt64) throws(CairnError) {
        guard dataFile == nil else { return }
        if let overlap = metadataOverlap(host) ?? (host == l2Offset ? "L2 table that maps it" : nil) {
            throw bad(
                "data cluster at 0x\(qcow2Hex(host)) for guest offset 0x\(qcow2Hex(guest)) overlaps the \(overlap)")
        }
    }

    /// Refuses a data read that would run past the end of the file holding the data.
    func checkDataBounds(host: UInt64, count: UInt64, guest: UInt64) throws(CairnError) {
        let limit = dataFile == nil ? fileSize : dataFileSize
        guard host <= limit, count <= limit - host else {
            let which = dataFile.map { "external data file \($0.path)" } ?? "the file"
            throw bad(
                "data for guest offset 0x\(qcow2Hex(guest)) at host offset 0x\(qcow2Hex(host)) (\(count) bytes) lies "
                    + "beyond the end of \(which) (size 0x\(qcow2Hex(limit))): the image is truncated")
        }
    }
}
