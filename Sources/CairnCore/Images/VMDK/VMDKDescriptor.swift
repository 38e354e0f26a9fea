/// A VMDK descriptor: the text that names a disk's extents, its content id and its parent.
///
/// It is a separate small file (monolithicFlat, twoGbMax*, vmfs, ESXi's vmfsSparse and seSparse
/// snapshot deltas) or text embedded in a hosted sparse extent (monolithicSparse,
/// streamOptimized). Parsed strictly, unlike QEMU (which finds keys with `strstr` and silently
/// skips extent lines it does not know, shortening the disk): every line is a comment, a header
/// key, an extent line or a `ddb.` line, each key once, or the descriptor is refused naming the
/// line. Format: VMware "Virtual Disk Format 5.0" and
/// `/work/shared/research/encryption-and-vmdk.md` B.1; docs/FORMAT.md, "VMDK sources".
struct VMDKDescriptor: Equatable {
    /// Descriptors larger than this are refused (QEMU reads at most 1 MiB too).
    static let maxBytes = 1 << 20
    /// More extents than this are refused: twoGbMaxExtent* reach 2 TiB with 1024, and each is an open file.
    static let maxExtents = 1024
    /// `parentCID` of a disk without a parent.
    static let noParent: UInt32 = 0xFFFF_FFFF

    /// The createTypes read; others (device-backed, raw-device, custom) are refused by name.
    static let createTypes: Set<String> = [
        "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized",
        "vmfs", "vmfsThin", "vmfsPreallocated", "vmfsEagerZeroedThick", "vmfsSparse", "seSparse",
    ]
    static let sparseCreateTypes: Set<String> = ["monolithicSparse", "twoGbMaxExtentSparse", "streamOptimized"]

    /// The extent types a descriptor of `createType` may hold: hosted sparse disks SPARSE
    /// extents, ESXi's snapshot deltas only their own format, flat disks FLAT and VMFS ones;
    /// any of them ZERO extents except the deltas.
    static func extentTypes(for createType: String) -> [ExtentType] {
        switch createType {
        case "vmfsSparse": return [.vmfsSparse]
        case "seSparse": return [.seSparse]
        case _ where sparseCreateTypes.contains(createType): return [.sparse, .zero]
        default: return [.flat, .vmfs, .zero]
        }
    }

    enum Access: String, Equatable {
        case readWrite = "RW"
        case readOnly = "RDONLY"
    }

    enum ExtentType: String, Equatable {
        case flat = "FLAT"
        case vmfs = "VMFS"
        case sparse = "SPARSE"
        case vmfsSparse = "VMFSSPARSE"
        case seSparse = "SESPARSE"
        case zero = "ZERO"
    }

    struct Extent: Equatable {
        var access: Access
        /// Length in 512-byte sectors.
        var sectors: UInt64
        var type: ExtentType
        /// The file, relative to the descriptor's directory; nil for ZERO extents.
        var fileName: String?
        /// Flat extents only: where the extent starts in its file, in sectors.
        var offset: UInt64
    }

    var version: Int
    var cid: UInt32
    var parentCID: UInt32
    var createType: String
    var parentFileNameHint: String?
    var extents: [Extent]
    /// The disk database (`ddb.adapterType`, `ddb.geometry.*`, ...): kept, never needed to read.
    var ddb: [String: String]

    /// Total length of the extents in sectors (bounded: each extent is at most 2^40 sectors).
    var sectors: UInt64 { extents.reduce(0) { $0 + $1.sectors } }

    /// True if `bytes` start like a text descriptor.
    static func looksLikeDescriptor(_ bytes: [UInt8]) -> Bool {
        bytes.starts(with: Array("# Disk DescriptorFile".utf8))
    }

    /// Parses descriptor text; `source` names where it came from in errors.
    static func parse(_ bytes: [UInt8], source: String) throws(CairnError) -> VMDKDescriptor {
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(source): vmdk descriptor \(message)") }
        guard bytes.count <= maxBytes else {
            throw bad("is \(bytes.count) bytes, more than the \(maxBytes) allowed")
        }
        // An embedded descriptor ends at its first NUL; the rest of its sectors are padding.
        let text = bytes.firstIndex(of: 0).map { bytes[..<$0] } ?? bytes[...]
        guard let string = String(validating: text, as: UTF8.self) else {
            throw bad("is not UTF-8 text")
        }

        var header: [String: String] = [:]
        var extents: [Extent] = []
        var ddb: [String: String] = [:]
        var lineNumber = 0
        for rawLine in string.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            func badLine(_ why: String) -> CairnError { bad("line \(lineNumber) (\"\(line.prefix(80))\") \(why)") }
            let firstWord = line.prefix { $0 != " " && $0 != "\t" }
            if ["RW", "RDONLY", "NOACCESS"].contains(firstWord) {
                guard extents.count < maxExtents else {
                    throw badLine("is one extent more than the \(maxExtents) allowed")
                }
                extents.append(try parseExtent(line, badLine))
                continue
            }
            guard let equals = line.firstIndex(of: "=") else { throw badLine("is not a key=value, extent or ddb line") }
            let key = String(line[..<equals].trimmingWhitespace())
            let value = try unquote(line[line.index(after: equals)...].trimmingWhitespace(), badLine)
            if key.hasPrefix("ddb.") {
                guard ddb.updateValue(value, forKey: key) == nil else { throw badLine("repeats \(key)") }
                continue
            }
            guard
                [
                    "version", "CID", "parentCID", "createType", "parentFileNameHint", "encoding", "isNativeSnapshot",
                    "changeTrackPath",
                ].contains(key)
            else { throw badLine("has an unknown key \(key)") }
            guard extents.isEmpty, ddb.isEmpty else { throw badLine("puts header key \(key) after the extents") }
            guard header.updateValue(value, forKey: key) == nil else { throw badLine("repeats \(key)") }
        }

        guard let versionText = header["version"] else { throw bad("has no version line") }
        guard let version = Int(versionText), (1...3).contains(version) else {
            throw bad("version is \"\(versionText)\": only 1, 2 and 3 are known")
        }
        func hex32(_ key: String) throws(CairnError) -> UInt32 {
            guard let text = header[key] else { throw bad("has no \(key) line") }
            // VMware writes 8 digits; QEMU drops leading zeros.
            guard (1...8).contains(text.utf8.count),
                text.utf8.allSatisfy({ $0 != UInt8(ascii: "-") && $0 != UInt8(ascii: "+") }),
                let value = UInt32(text, radix: 16)
            else {
                throw bad("\(key) is \"\(text)\": it must be 1 to 8 hex digits")
            }
            return value
        }
        let cid = try hex32("CID")
        let parentCID = try hex32("parentCID")
        guard let createType = header["createType"] else { throw bad("has no createType line") }
        guard createTypes.contains(createType) else {
            throw bad(
                "createType is \"\(createType)\": Cairn reads \(createTypes.sorted().joined(separator: ", ")) "
                    + "(device-backed and raw-device disks are not read)")
        }
        if let encoding = header["encoding"], !["UTF-8", "utf-8", "windows-1252"].contains(encoding) {
            throw bad("encoding is \"\(encoding)\": only UTF-8 is read")
        }
        let hint = header["parentFileNameHint"]
        if parentCID != noParent && hint == nil {
            throw bad("parentCID is \(vmdkHex32(parentCID)) but there is no parentFileNameHint naming the parent")
        }
        if parentCID == noParent && hint != nil {
            throw bad("names a parentFileNameHint but parentCID is ffffffff (no parent)")
        }
        guard !extents.isEmpty else { throw bad("has no extent lines") }
        let allowed = extentTypes(for: createType)
        for (index, extent) in extents.enumerated() {
            guard allowed.contains(extent.type) else {
                throw bad(
                    "extent \(index + 1) is \(extent.type.rawValue), which createType \"\(createType)\" cannot hold")
            }
        }
        if createType == "monolithicSparse" || createType == "streamOptimized" {
            guard extents.count == 1 else {
                throw bad("createType \"\(createType)\" has \(extents.count) extents: it must have exactly one")
            }
        }
        return VMDKDescriptor(
            version: version, cid: cid, parentCID: parentCID, createType: createType, parentFileNameHint: hint,
            extents: extents, ddb: ddb)
    }

    /// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
    private static func parseExtent(
        _ line: Substring, _ badLine: (String) -> CairnError
    ) throws(CairnError) -> Extent {
        // Split off the quoted file name first: it may hold spaces.
        var words: [Substring] = []
        var fileName: String?
        var rest = line[...]
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "\t" }
            if rest.isEmpty { break }
            if rest.first == "\"" {
                guard fileName == nil, words.count == 3 else { throw badLine("has a quoted name in the wrong place") }
                let inner = rest.dropFirst()
                guard let close = inner.firstIndex(of: "\"") else { throw badLine("has an unterminated file name") }
                fileName = String(inner[..<close])
                rest = inner[inner.index(after: close)...]
                words.append("\"\"")
                continue
            }
            let word = rest.prefix { $0 != " " && $0 != "\t" }
            words.append(word)
            rest = rest[word.endIndex...]
        }
        guard words.count >= 3, words.count <= 5 else { throw badLine("is not ACCESS SECTORS TYPE \"FILE\" [OFFSET]") }
        let accessWord = String(words[0])
        guard let access = Access(rawValue: accessWord) else {
            throw badLine("has access \(accessWord): a NOACCESS extent cannot be read")
        }
        // At most 2^40 sectors (512 TiB) per extent, so sums of up to 1024 extents cannot overflow.
        guard let sectors = UInt64(words[1]), sectors > 0, sectors <= 1 << 40 else {
            throw badLine("has extent size \(words[1]): it must be 1 to 2^40 sectors")
        }
        let typeWord = String(words[2])
        guard let type = ExtentType(rawValue: typeWord) else {
            if ["VMFSRDM", "VMFSRAW"].contains(typeWord) {
                throw badLine("is a \(typeWord) extent: raw-device and device-backed disks are not read")
            }
            throw badLine("has an unknown extent type \(typeWord)")
        }
        if type == .zero {
            guard words.count == 3 else { throw badLine("is a ZERO extent with a file or offset") }
            return Extent(access: access, sectors: sectors, type: type, fileName: nil, offset: 0)
        }
        guard words.count >= 4, let name = fileName else { throw badLine("has no quoted file name") }
        var offset: UInt64 = 0
        if words.count == 5 {
            guard type == .flat || type == .vmfs else { throw badLine("gives an offset, which only flat extents take") }
            guard let parsed = UInt64(words[4]), parsed <= 1 << 40 else {
                throw badLine("has offset \(words[4]): it must be 0 to 2^40 sectors")
            }
            offset = parsed
        }
        return Extent(access: access, sectors: sectors, type: type, fileName: name, offset: offset)
    }

    private static func unquote(_ value: Substring, _ badLine: (String) -> CairnError) throws(CairnError) -> String {
        guard value.hasPrefix("\"") else { return String(value) }
        guard value.count >= 2, value.hasSuffix("\""), !value.dropFirst().dropLast().contains("\"") else {
            throw badLine("has a badly quoted value")
        }
        return String(value.dropFirst().dropLast())
    }
}

extension Substring {
    /// The line without leading and trailing blanks (spaces, tabs, a CR from a CRLF file).
    fileprivate func trimmingWhitespace() -> Substring {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let first = firstIndex(where: { !isBlank($0) }), let last = lastIndex(where: { !isBlank($0) }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }
}

/// `value` as 8 lower-case hex digits (a CID as descriptors write it).
func vmdkHex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
