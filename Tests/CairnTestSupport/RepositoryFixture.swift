import CairnCore
import Foundation

/// Helpers the integrity tests share: JSON output, byte flips, copies of repositories.
public enum Fixture {
    public static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    public static func jsonArray(_ text: String) -> [[String: Any]] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [[String: Any]] ?? []
    }

    /// XORs the byte at `offset` of `path` with `mask` (non-zero); calling it twice restores the file.
    public static func flip(_ path: String, at offset: UInt64, mask: UInt8 = 0x01) throws {
        let file = try File.open(path, .readWrite)
        var byte = try file.readBytes(count: 1, at: offset)
        byte[0] ^= mask
        try file.write(byte, at: offset)
    }

    public static func fileSize(_ path: String) -> UInt64 {
        (try? File.open(path, .readOnly).size()) ?? 0
    }

    /// Files under `dir` (relative to it) whose names end with `suffix`.
    public static func files(under dir: String, suffix: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let name = e.nextObject() as? String {
            if name.hasSuffix(suffix) && !FileSystem.baseName(name).hasPrefix(".") { out.append("\(dir)/\(name)") }
        }
        return out.sorted()
    }

    /// Names of temporary files an interrupted run left behind anywhere under `dir`.
    public static func temporaryFiles(under dir: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let name = e.nextObject() as? String {
            if FileSystem.baseName(name).contains(".tmp-") { out.append(name) }
        }
        return out
    }

    /// A repository config's text with its checksum made to match (docs/FORMAT.md, "config"),
    /// computed by `sha256sum`, not by Cairn.
    public static func sealedConfig(_ text: String) -> String {
        let placeholder = "sha256:" + String(repeating: "0", count: 64)
        let unsealed = text.replacingOccurrences(
            of: #""checksum" : "sha256:[0-9a-f]{64}""#, with: "\"checksum\" : \"\(placeholder)\"",
            options: .regularExpression)
        let dir = TemporaryDirectory()
        try? Data(unsealed.utf8).write(to: URL(fileURLWithPath: dir.file("c")))
        let digest = Subprocess.shell("sha256sum '\(dir.file("c"))' | cut -c1-64").stdout.trimmingCharacters(
            in: .whitespacesAndNewlines)
        return unsealed.replacingOccurrences(of: placeholder, with: "sha256:\(digest)")
    }

    public static func copyTree(_ from: String, to: String) {
        Subprocess.shell("rm -rf '\(to)' && cp -a '\(from)' '\(to)'")
    }
}
