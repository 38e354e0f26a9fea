import CairnCore
import Foundation

/// Deterministic raw test images: compressible text, random data, holes and scattered writes.
public struct TestImage {
    private var state: UInt64

    public init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    public mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    public mutating func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= raw.count {
                raw.storeBytes(of: next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < raw.count {
                raw[i] = UInt8(truncatingIfNeeded: next())
                i += 1
            }
        }
        return bytes
    }

    public mutating func textBytes(_ count: Int) -> [UInt8] {
        let words = ["alpha ", "beta ", "gamma ", "delta ", "qcow2 ", "cluster ", "block\n", "zero "]
        var out: [UInt8] = []
        out.reserveCapacity(count + 16)
        while out.count < count { out += Array(words[Int(next() % 8)].utf8) }
        return Array(out[0..<count])
    }

    /// A sparse image of `size` bytes: every `stride` bytes, an extent of text or random data.
    public mutating func makeImage(at path: String, size: UInt64, extent: Int = 256 << 10, stride: UInt64 = 1 << 20)
        throws
    {
        let file = try File.open(path, .createOrTruncate)
        try file.truncate(to: size)
        var offset: UInt64 = 0
        while offset < size {
            let length = Int(min(UInt64(extent), size - offset))
            let bytes = next() % 3 == 0 ? randomBytes(length) : textBytes(length)
            try file.write(bytes, at: offset)
            offset += stride
        }
    }

    /// An 8 MiB sparse image with 1 MiB of seeded random bytes (incompressible, so an
    /// unencrypted repository or archive holds them verbatim) at 3 MiB: the marker the
    /// encryption tests search every stored file for. Returns the marker.
    public mutating func makeMarkedImage(at path: String) throws -> [UInt8] {
        let marker = randomBytes(1 << 20)
        try makeImage(at: path, size: 8 << 20, extent: 128 << 10, stride: 1 << 20)
        try File.open(path, .readWrite).write(marker, at: 3 << 20)
        return marker
    }

    /// Writes `count` extents of 4-256 KiB at 4 KiB-aligned random offsets; returns bytes written.
    @discardableResult
    public mutating func scatterWrites(at path: String, count: Int) throws -> UInt64 {
        let file = try File.open(path, .readWrite)
        let size = try file.size()
        var total: UInt64 = 0
        for _ in 0..<count {
            let length = Int(4096 * (1 + next() % 64))
            let offset = (next() % (size - UInt64(length))) & ~4095
            try file.write(randomBytes(length), at: offset)
            total += UInt64(length)
        }
        return total
    }

    public static func sha256(of path: String) throws -> String {
        try SHA256Hasher.digest(ofFile: path).hex
    }

    /// Bytes the file really occupies on disk (holes excluded).
    public static func allocatedBytes(of path: String) -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else { return 0 }
        return UInt64(st.st_blocks) * 512
    }

    /// Total size of every file under `path`.
    public static func treeSize(_ path: String) -> UInt64 {
        guard let e = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total: UInt64 = 0
        while let name = e.nextObject() as? String {
            if let attrs = try? FileManager.default.attributesOfItem(atPath: "\(path)/\(name)"),
                attrs[.type] as? FileAttributeType == .typeRegular, let size = attrs[.size] as? UInt64
            {
                total += size
            }
        }
        return total
    }

    /// Relative path → (size, SHA-256) of every file under `path`: a repository's state.
    public static func snapshotTree(_ path: String) -> [String: String] {
        guard let e = FileManager.default.enumerator(atPath: path) else { return [:] }
        var out: [String: String] = [:]
        while let name = e.nextObject() as? String {
            let full = "\(path)/\(name)"
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue {
                if name.hasPrefix("locks/") { continue }
                out[name] = (try? sha256(of: full)) ?? "unreadable"
            }
        }
        return out
    }
}
