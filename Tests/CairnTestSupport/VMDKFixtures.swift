import CairnCore
import Foundation

/// VMDK test images made at test time by qemu-img and qemu-io, and byte patches of them.
public enum VMDKFixtures {
    /// Runs a shell command in `directory`; throws with its output unless it exits 0.
    @discardableResult
    public static func sh(_ command: String, in directory: String) throws -> String {
        let outcome = Subprocess.shell("cd '\(directory)' && \(command)")
        guard outcome.status == 0 else {
            throw QemuToolError(message: "\(command) failed (\(outcome.status)): \(outcome.stdout)\(outcome.stderr)")
        }
        return outcome.stdout
    }

    /// `qemu-img create -f vmdk -o subformat=...` of `size` bytes, then qemu-io pattern writes
    /// that cross the 2 GiB split when the image is big enough, and a zero write (`write -z`).
    public static func make(
        _ name: String, subformat: String, zeroedGrain: Bool = false, size: UInt64, in directory: String
    ) throws {
        var options = "subformat=\(subformat)"
        if zeroedGrain { options += ",zeroed_grain=on" }
        try sh("qemu-img create -q -f vmdk -o \(options) \(name) \(size)", in: directory)
        var writes = [
            "write -P 0x5a 0 64k", "write -P 0x6b 70000 5000", "write -z 65536 4096", "write -P 0x7c 1m 200k",
        ]
        if size > (2 << 30) + (1 << 20) {
            writes.append("write -P 0x33 \((2 << 30) - 50000) 100000")  // across the first extent split
        }
        writes.append("write -P 0x44 \(size - 3000) 3000")  // the last, partial grain
        writes.append("write -z 1m 64k")  // a zeroed grain (or explicit zeros) over data
        let commands = writes.map { "-c '\($0)'" }.joined(separator: " ")
        try sh("qemu-io -f vmdk \(commands) \(name) > /dev/null", in: directory)
    }

    /// Writes `bytes` at `offset` of `path`.
    public static func patch(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
        let file = try File.open(path, .readWrite)
        try file.write(bytes, at: offset)
    }

    public static func patchU32(_ path: String, at offset: UInt64, _ value: UInt32) throws {
        try patch(path, at: offset, withUnsafeBytes(of: value.littleEndian) { Array($0) })
    }

    public static func patchU64(_ path: String, at offset: UInt64, _ value: UInt64) throws {
        try patch(path, at: offset, withUnsafeBytes(of: value.littleEndian) { Array($0) })
    }

    public static func readU32(_ path: String, at offset: UInt64) throws -> UInt32 {
        let bytes = try File.open(path, .readOnly).readBytes(count: 4, at: offset)
        return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
    }

    public static func readU64(_ path: String, at offset: UInt64) throws -> UInt64 {
        let bytes = try File.open(path, .readOnly).readBytes(count: 8, at: offset)
        return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    /// Byte offset of the first grain table of a sparse extent (through its grain directory).
    public static func firstGrainTable(_ path: String, redundant: Bool = false) throws -> UInt64 {
        let directory = try readU64(path, at: redundant ? 48 : 56) * 512
        return UInt64(try readU32(path, at: directory)) * 512
    }

    /// Rewrites the embedded descriptor of a sparse file (or a descriptor file) with `edit`.
    public static func editDescriptor(_ path: String, _ edit: (String) -> String) throws {
        let file = try File.open(path, .readWrite)
        let head = try file.readBytes(count: 4, at: 0)
        if head == Array("KDMV".utf8) {
            let offset = try readU64(path, at: 28) * 512
            let size = Int(try readU64(path, at: 36) * 512)
            let bytes = try file.readBytes(count: size, at: offset)
            let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            var edited = Array(edit(text).utf8)
            precondition(edited.count <= size, "edited descriptor does not fit")
            edited += [UInt8](repeating: 0, count: size - edited.count)
            try file.write(edited, at: offset)
        } else {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            try file.truncate(to: 0)
            try file.write(Array(edit(text).utf8), at: 0)
        }
    }

    /// Converts a streamOptimized image made by QEMU (grain directory at the front, no end marker)
    /// into VMware's layout: gdOffset "at the end" in the header; after the grains, each grain
    /// table behind a GT marker, the grain directory behind a GD marker, a footer marker, the
    /// footer (the header with the real gdOffset) and the end-of-stream marker.
    public static func toVMwareStreamLayout(_ source: String, _ target: String) throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)))
        func u32(_ at: Int) -> UInt32 {
            bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
        }
        func u64(_ at: Int) -> UInt64 {
            bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) }
        }
        func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        func marker(_ sectors: UInt64, _ type: UInt32) -> [UInt8] {
            le(sectors) + le(UInt32(0)) + le(type) + [UInt8](repeating: 0, count: 496)
        }
        let capacity = u64(12)
        let grain = u64(20)
        let directoryOffset = Int(u64(56)) * 512
        let entries = Int((capacity + grain * 512 - 1) / (grain * 512))
        // Drop the trailing padding QEMU leaves, then append the metadata at the next sector.
        while bytes.count % 512 != 0 { bytes.append(0) }
        var tables: [UInt32] = []
        for index in 0..<entries {
            let table = Int(u32(directoryOffset + index * 4)) * 512
            bytes += marker(4, 1)
            tables.append(UInt32(bytes.count / 512))
            bytes += Array(bytes[table..<table + 2048])
        }
        let directorySectors = UInt64((entries * 4 + 511) / 512)
        bytes += marker(directorySectors, 2)
        let newDirectory = UInt64(bytes.count / 512)
        var directory = tables.flatMap { le($0) }
        directory += [UInt8](repeating: 0, count: Int(directorySectors) * 512 - directory.count)
        bytes += directory
        var footer = Array(bytes[0..<512])
        footer.replaceSubrange(56..<64, with: le(newDirectory))
        footer.replaceSubrange(48..<56, with: le(UInt64(0)))
        footer.replaceSubrange(8..<12, with: le(u32(8) & ~UInt32(2)))  // no redundant directory
        bytes += marker(1, 3) + footer + [UInt8](repeating: 0, count: 512)
        bytes.replaceSubrange(56..<64, with: le(UInt64.max))
        bytes.replaceSubrange(48..<56, with: le(UInt64(0)))
        bytes.replaceSubrange(8..<12, with: le(u32(8) & ~UInt32(2)))
        try Data(bytes).write(to: URL(fileURLWithPath: target))
    }
}
