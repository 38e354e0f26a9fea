/// The header as the restore writers lay it out, the inverse of `parse`.
extension VMDKSparseHeader {
    /// The 512 header bytes: magic, the fields at their offsets (docs/FORMAT.md, "VMDK output"),
    /// a clean-shutdown byte, the newline test bytes and zero padding.
    func encoded() -> [UInt8] {
        var bytes = ByteWriter(capacity: Self.size)
        bytes.append(Self.magic)
        bytes.le(version)
        bytes.le(flags)
        bytes.le(capacity)
        bytes.le(grainSectors)
        bytes.le(descriptorOffset)
        bytes.le(descriptorSectors)
        bytes.le(UInt32(Self.entriesPerTable))
        bytes.le(redundantDirectoryOffset)
        bytes.le(directoryOffset)
        bytes.le(overhead)
        bytes.le(UInt8(0))  // uncleanShutdown
        bytes.append([0x0A, 0x20, 0x0D, 0x0A])
        bytes.le(compressAlgorithm)
        bytes.zeros(Self.size - bytes.count)
        return bytes.bytes
    }
}

/// The descriptor text a restored VMDK embeds, in the form QEMU and VMware write it.
extension VMDKDescriptor {
    /// A descriptor for one sparse extent `fileName` of `sectors` sectors, with a fresh content id.
    ///
    /// The adapter is lsilogic (what `vmkfstools -i` and OVF imports expect of a SCSI disk; both
    /// can be told another) with the geometry VMware derives for it: 255 heads, 63 sectors per track.
    static func text(createType: String, sectors: UInt64, fileName: String, cid: UInt32) -> String {
        let cylinders = min(sectors / (255 * 63), 65535)
        return """
            # Disk DescriptorFile
            version=1
            CID=\(vmdkHex32(cid))
            parentCID=ffffffff
            createType="\(createType)"

            # Extent description
            RW \(sectors) SPARSE "\(fileName)"

            # The Disk Data Base
            #DDB

            ddb.virtualHWVersion = "4"
            ddb.geometry.cylinders = "\(cylinders)"
            ddb.geometry.heads = "255"
            ddb.geometry.sectors = "63"
            ddb.adapterType = "lsilogic"

            """
    }
}
