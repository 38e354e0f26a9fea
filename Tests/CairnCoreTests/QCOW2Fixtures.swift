import CairnCore
import CairnTestSupport
import Foundation

/// The committed qcow2 fixtures (TestImages/, made by TestImages/make-images.sh) and helpers to read them.
enum QCOW2Fixtures {
    /// TestImages/, found from this source file so the tests do not depend on the working directory.
    static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()  // CairnCoreTests
        url.deleteLastPathComponent()  // Tests
        return url.deletingLastPathComponent().appendingPathComponent("TestImages").path
    }()

    struct Entry: Sendable, CustomStringConvertible {
        var name: String
        var snapshot: String?
        var digest: String
        var virtualSize: UInt64
        var description: String { snapshot.map { "\(name)@\($0)" } ?? name }
    }

    /// MANIFEST lines: `NAME[@SNAPSHOT] SHA256 VIRTUAL-SIZE`.
    static let manifest: [Entry] = {
        guard let text = try? String(contentsOfFile: directory + "/MANIFEST", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 3, let size = UInt64(fields[2]) else { return nil }
            let parts = fields[0].split(separator: "@", maxSplits: 1)
            return Entry(
                name: String(parts[0]), snapshot: parts.count > 1 ? String(parts[1]) : nil, digest: String(fields[1]),
                virtualSize: size)
        }
    }()

    static func path(_ name: String) -> String { directory + "/" + name }

    /// SHA-256 of the whole guest view, read in `chunk`-byte pieces (odd sizes cross clusters).
    static func guestDigest(_ image: any DiskImage, chunk: Int = 300_000) throws -> String {
        let hasher = SHA256Hasher()
        hasher.start()
        var buffer = [UInt8](repeating: 0, count: chunk)
        var offset: UInt64 = 0
        while offset < image.virtualSize {
            let n = Int(min(UInt64(chunk), image.virtualSize - offset))
            try buffer.withUnsafeMutableBytes { raw in
                let part = UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])
                try image.read(into: part, at: offset)
                hasher.update(UnsafeRawBufferPointer(part))
            }
            offset += UInt64(n)
        }
        return hasher.finish().hex
    }

    /// Walks the extents and returns the zero ranges whose guest bytes are not all zero (should be
    /// none), plus how many bytes were reported zero.
    static func checkZeroExtents(_ image: any DiskImage) throws -> (wrong: [UInt64], zeroBytes: UInt64) {
        var wrong: [UInt64] = []
        var zeroBytes: UInt64 = 0
        var offset: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while offset < image.virtualSize {
            let extent = try image.extent(at: offset, maxLength: 1 << 20)
            precondition(extent.length > 0 && extent.length <= 1 << 20)
            if extent.isZero {
                zeroBytes += extent.length
                let allZero = try buffer.withUnsafeMutableBytes { raw in
                    let part = UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(extent.length)])
                    try image.read(into: part, at: offset)
                    return UnsafeRawBufferPointer(part).isAllZero
                }
                if !allZero { wrong.append(offset) }
            }
            offset += extent.length
        }
        return (wrong, zeroBytes)
    }
}
