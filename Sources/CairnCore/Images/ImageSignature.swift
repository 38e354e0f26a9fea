/// What an image's own bytes say it is: qcow2, VMDK, a format Cairn does not read, or nothing.
///
/// A raw disk has no signature, so "no signature" is the only evidence for raw. Reading a VMDK,
/// VHDX or LUKS container as raw would back up its container bytes as if they were the guest's
/// disk, and a qcow2 whose magic was damaged would silently become a raw disk; so every
/// format below is recognised by its magic and refused by name (`--format raw` overrides).
/// The magics and where they live are those QEMU's own probes use (`block/*.c`, `*_probe`),
/// plus the VHD footer at the end of a fixed VHD and the DMG `koly` trailer, which QEMU only
/// finds by file name.
public enum ImageSignature: Equatable, Sendable {
    case qcow2
    /// A hosted sparse extent (`KDMV`), a text descriptor, or an ESXi delta extent (`COWD`,
    /// SEsparse): read by the VMDK reader.
    case vmdk
    case foreign(ForeignImageFormat)
    /// No known signature: the bytes are taken as a raw disk.
    case none

    /// Bytes read from the start of the file to identify it.
    static let headLength = 512
    /// The VHD footer and the DMG trailer are the last 512 bytes of the file.
    static let tailLength = 512

    /// Identifies `file` (whose size is `size`) from its first and last 512 bytes.
    static func identify(_ file: File, size: UInt64) throws(CairnError) -> ImageSignature {
        let head = try file.readBytes(count: Int(min(size, UInt64(headLength))), at: 0)
        var tail: [UInt8] = []
        if size >= UInt64(headLength + tailLength) {
            tail = try file.readBytes(count: tailLength, at: size - UInt64(tailLength))
        }
        return identify(head: head, tail: tail)
    }

    /// Identifies an image from its first bytes (`head`, up to 512) and, when the file holds at
    /// least 1 KiB, its last 512 bytes (`tail`, else empty).
    static func identify(head: [UInt8], tail: [UInt8]) -> ImageSignature {
        func starts(_ magic: String) -> Bool { head.starts(with: Array(magic.utf8)) }
        if head.starts(with: DiskImageOpener.qcow2Magic) {
            // QFI\xfb is shared by qcow (version 1) and qcow2 (2 and 3); the qcow2 reader refuses
            // versions it does not know, so only version 1 is told apart here.
            if head.count >= 8, head[4...7].elementsEqual([0, 0, 0, 1]) { return .foreign(.qcow1) }
            return .qcow2
        }
        if head.starts(with: VMDKSparseHeader.magic) || VMDKDescriptor.looksLikeDescriptor(head) { return .vmdk }
        // ESXi's snapshot delta extents (vmfsSparse, SEsparse): the VMDK reader reads them
        // through their descriptor, and says so when given the extent alone.
        if head.starts(with: VMDKCOWDHeader.magic) || VMDKImage.isSESparse(head) { return .vmdk }
        if starts("vhdxfile") { return .foreign(.vhdx) }
        if head.starts(with: [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]) { return .foreign(.luks) }
        if head.starts(with: [0x51, 0x45, 0x44, 0x00]) { return .foreign(.qed) }
        if starts("conectix") { return .foreign(.vpc) }
        if starts("WithoutFreeSpace") || starts("WithouFreSpacExt") { return .foreign(.parallels) }
        if starts("Bochs Virtual HD Image") { return .foreign(.bochs) }
        // VDI: the signature 0xbeda107f, little-endian, at offset 0x40.
        if head.count >= 0x44, head[0x40..<0x44].elementsEqual([0x7F, 0x10, 0xDA, 0xBE]) { return .foreign(.vdi) }
        if tail.count == tailLength {
            if isVHDFooter(tail) { return .foreign(.vpc) }
            // DMG: "koly", version 4, header size 512 (big-endian).
            if tail.starts(with: Array("koly".utf8) + [0, 0, 0, 4, 0, 0, 2, 0]) { return .foreign(.dmg) }
        }
        return .none
    }

    /// A fixed VHD is raw data followed by a 512-byte footer: "conectix", and a checksum at offset
    /// 64 that is the one's complement of the sum of the footer's other bytes. Both must hold, so
    /// that a raw disk whose last sector merely contains the word is not taken for one.
    static func isVHDFooter(_ footer: [UInt8]) -> Bool {
        guard footer.count == 512, footer.starts(with: Array("conectix".utf8)) else { return false }
        var sum: UInt32 = 0
        for (index, byte) in footer.enumerated() where !(64..<68).contains(index) { sum &+= UInt32(byte) }
        let stored = footer[64..<68].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return stored == ~sum
    }

    /// The format a file name claims by its extension (`vm.qcow2`, `disk.vmdk`), if any.
    static func claimed(byName path: String) -> ImageSignature? {
        let name = FileSystem.baseName(path)
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return nil }
        switch name[name.index(after: dot)...].lowercased() {
        case "qcow2": return .qcow2
        case "vmdk": return .vmdk
        case "vhdx": return .foreign(.vhdx)
        case "vdi": return .foreign(.vdi)
        case "qed": return .foreign(.qed)
        case "vhd", "vpc": return .foreign(.vpc)
        default: return nil
        }
    }

    /// How messages name it ("qcow2", "a VMDK image").
    var name: String {
        switch self {
        case .qcow2: return "qcow2"
        case .vmdk: return "VMDK"
        case .foreign(let format): return format.name
        case .none: return "raw"
        }
    }
}

/// Image formats Cairn recognises only to refuse them.
public enum ForeignImageFormat: String, Sendable, CaseIterable {
    case qcow1 = "qcow"
    case vmdk
    case vhdx
    case vdi
    case luks
    case qed
    case vpc
    case parallels
    case dmg
    case bochs

    /// The name people know the format by.
    public var name: String {
        switch self {
        case .qcow1: return "qcow (version 1)"
        // No longer returned: COWD deltas are read through their descriptor (the case stays, as
        // public API).
        case .vmdk: return "VMDK vmfsSparse (COWD) delta"
        case .vhdx: return "VHDX"
        case .vdi: return "VDI"
        case .luks: return "LUKS"
        case .qed: return "QED"
        case .vpc: return "VHD (vpc)"
        case .parallels: return "Parallels"
        case .dmg: return "DMG"
        case .bochs: return "Bochs"
        }
    }
}
