import Foundation

/// A key file as text to print and keep on paper (`cairn key export --paper`), and back
/// (`cairn key import`). docs/FORMAT.md, "Paper keys".
///
/// The paper form carries the sealed key, not the master key: the passphrase is still needed.
/// Its 136 bytes (below) are written in base32 (RFC 4648, no padding), 32 characters a line in
/// groups of four, each line numbered and ended by a checksum (the first four hex digits of
/// the CRC-32 of its number and characters), so a mistyped line is named. `created` and `hint`
/// are not carried.
///
///     0 version 1 (1)   1 repository id (16)   17 key id (8)   25 log2 N (1)   26 r (1)
///     27 p (1)   28 salt (32)   60 nonce (12)   72 wrapped key and tag (48)   120 fingerprint (16)
public enum PaperKey {
    static let version: UInt8 = 1
    static let byteCount = 136
    static let charactersPerLine = 32
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// The printable text of `file`.
    public static func text(of file: KeyFile) -> String {
        var writer = ByteWriter(capacity: byteCount)
        writer.le(version)
        writer.append(Hex.decode(file.repository, count: 16)!)
        writer.append(Hex.decode(file.id, count: KeyFile.idSize)!)
        writer.le(UInt8(file.kdf.n.trailingZeroBitCount))
        writer.le(UInt8(file.kdf.r))
        writer.le(UInt8(file.kdf.p))
        writer.append(Hex.decode(file.kdf.salt, count: KeyFile.saltSize)!)
        writer.append(Hex.decode(file.nonce, count: AESGCM.nonceSize)!)
        writer.append(Hex.decode(file.wrapped, count: SecretKey.byteCount + AESGCM.tagSize)!)
        writer.append(Hex.decode(file.fingerprint, count: 16)!)
        let encoded = Array(base32(writer.bytes).utf8)
        var lines = [
            "Cairn paper key (format 1)",
            "repository   \(file.repository)",
            "key          \(file.id)" + (file.hint.map { "  (\($0))" } ?? ""),
            "fingerprint  \(file.fingerprint)",
            "created      \(file.created)",
            "",
            "This is a key file of the repository, still sealed by its passphrase: keep the passphrase",
            "elsewhere. To use it, type the numbered lines into a file and run `cairn key import FILE`.",
            "Each line ends with a checksum, so a mistyped line is named.",
            "",
        ]
        var start = 0
        var number = 1
        while start < encoded.count {
            let chunk = Array(encoded[start..<min(start + charactersPerLine, encoded.count)])
            let groups = stride(from: 0, to: chunk.count, by: 4).map {
                String(decoding: chunk[$0..<min($0 + 4, chunk.count)], as: UTF8.self)
            }
            let label = number < 10 ? "0\(number)" : "\(number)"
            let padded = groups.joined(separator: " ").padding(toLength: 39, withPad: " ", startingAt: 0)
            lines.append("\(label)  \(padded)  \(checksum(label, chunk))")
            start += charactersPerLine
            number += 1
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The key file a paper form's numbered lines describe; `.damaged` naming the first line
    /// whose checksum fails, or what else is wrong. Lines not starting with a number are ignored.
    public static func parse(_ text: String, created: String) throws(CairnError) -> KeyFile {
        var characters = [UInt8]()
        var expected = 1
        for raw in text.split(whereSeparator: \.isNewline) {
            let fields = raw.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard let first = fields.first, first.count == 2, let number = Int(first), fields.count >= 3 else {
                continue
            }
            guard number == expected else {
                throw CairnError(.damaged, "the paper key's line \(first) comes where line \(expected) should")
            }
            let chunk = Array(fields[1..<(fields.count - 1)].joined().uppercased().utf8)
            guard checksum(first, chunk) == fields[fields.count - 1].lowercased() else {
                throw CairnError(.damaged, "the paper key's line \(first) does not match its checksum: it is mistyped")
            }
            characters += chunk
            expected += 1
        }
        guard expected > 1 else { throw CairnError(.damaged, "the text holds no numbered lines of a paper key") }
        guard let bytes = decodeBase32(characters), bytes.count == byteCount, bytes[0] == version else {
            throw CairnError(.damaged, "the paper key's lines do not make a key (a line is missing or extra)")
        }
        func hex(_ range: Range<Int>) -> String { Hex.encode(Array(bytes[range])) }
        guard bytes[25] < 64 else { throw CairnError(.damaged, "the paper key's scrypt N is out of range") }
        let file = KeyFile(
            format: KeyFile.formatName, version: KeyFile.currentVersion, repository: hex(1..<17), id: hex(17..<25),
            created: created, hint: "paper",
            kdf: KeyFile.KDF(
                name: "scrypt", n: UInt64(1) << UInt64(bytes[25]), r: UInt32(bytes[26]), p: UInt32(bytes[27]),
                salt: hex(28..<60)),
            cipher: KeyFile.cipherName, nonce: hex(60..<72), wrapped: hex(72..<120), fingerprint: hex(120..<136))
        // Checked as a key file read from disk is (parameters within bounds).
        return try KeyFile.parse(try file.fileBytes(), name: "the paper key")
    }

    static func checksum(_ label: String, _ characters: [UInt8]) -> String {
        let crc = CRC32.checksum(Array(label.utf8) + characters)
        return String(Hex.encode([UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF)]))
    }

    static func base32(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decodeBase32(_ characters: [UInt8]) -> [UInt8]? {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for c in characters {
            guard let value = alphabet.firstIndex(of: c) else { return nil }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return out
    }
}
